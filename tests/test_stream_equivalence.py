"""A translated stream, split at random byte boundaries and reassembled, gives the same message as
the translated non-streaming answer (issue 10, Proof), in both directions:

1. provider Chat Completions → Anthropic: ``openai_answer.anthropic_message`` vs
   ``openai_stream.AnthropicFromChatStream`` collected with ``stream_collect.collect``;
2. Anthropic → Chat Completions (the OpenAI front door): ``from_chat.chat_completion`` vs
   ``chat_stream.ChatChunksFromAnthropic``'s chunks reassembled as the ``openai`` SDK does.

The generators (tests/answer_gen.py) draw ONE answer and write it in both forms.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shunt_lib.openai_answer import anthropic_message
from shunt_lib.openai_stream import AnthropicFromChatStream
from shunt_lib.stream_collect import collect
from shunt_lib.tool_names import ToolNames
from tests.answer_gen import byte_pieces, chat_answers

PROPERTY = settings(max_examples=120, deadline=None)


# -- 1. provider → Anthropic --------------------------------------------------------------------------

def streamed_message(stream: bytes, pieces: list[bytes], stop_sequences: list[str], names: ToolNames) -> dict:
    machine = AnthropicFromChatStream("claude-asked", "msg_stream", names.original, stop_sequences, input_tokens=7)
    events = []
    for piece in pieces:
        events += machine.feed(piece)
    events += machine.finish()
    assert b"".join(pieces) == stream
    return collect(events)


@PROPERTY
@given(answer=chat_answers(), data=st.data())
def test_provider_stream_split_anywhere_gives_the_non_streaming_message(answer, data):
    names = ToolNames(["get_weather", "Read", "bash-run", "f"])
    expected = anthropic_message(answer.completion, "claude-asked", names, answer.stop_sequences)
    got = streamed_message(answer.stream, byte_pieces(data.draw, answer.stream), answer.stop_sequences, names)
    # The message id is made per response: the non-streaming one from the provider's id, the streamed
    # one by the caller before the first chunk arrives (it goes out in message_start).
    expected["id"] = got["id"] = "msg_normalised"
    if not answer.include_usage:
        # Without stream_options.include_usage the provider streams no usage at all; the non-streaming
        # answer always carries it. Only the streamed form lacks the information.
        assert got["usage"] == {"input_tokens": 7, "output_tokens": 0}
        expected["usage"] = got["usage"]
    assert got == expected
