"""A translated stream, split at random byte boundaries and reassembled, gives the same message as
the translated non-streaming answer (issue 10, Proof), in both directions:

1. provider Chat Completions → Anthropic: ``openai_answer.anthropic_message`` vs
   ``openai_stream.AnthropicFromChatStream`` collected with ``stream_collect.collect``;
2. Anthropic → Chat Completions (the OpenAI front door): ``from_chat.chat_completion`` vs
   ``chat_stream.ChatChunksFromAnthropic``'s chunks reassembled as the ``openai`` SDK does.

The generators (tests/answer_gen.py) draw ONE answer and write it in both forms.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shunt_lib.chat_stream import ChatChunksFromAnthropic
from shunt_lib.from_chat import chat_completion
from shunt_lib.openai_answer import anthropic_message
from shunt_lib.openai_stream import AnthropicFromChatStream
from shunt_lib.stream_collect import collect
from shunt_lib.tool_names import ToolNames
from tests.answer_gen import anthropic_answers, byte_pieces, chat_answers

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
# -- 2. Anthropic → Chat Completions ------------------------------------------------------------------

def accumulate(acc: dict, delta: dict) -> dict:
    """The ``openai`` SDK's delta accumulation (``openai.lib.streaming._deltas.accumulate_delta``):
    a missing or null value is replaced, strings concatenate, ``index`` and ``type`` are replaced,
    lists of indexed objects merge entry by entry on ``index``."""
    for key, value in delta.items():
        if acc.get(key) is None:
            if isinstance(value, list) and any(isinstance(e, dict) and "index" in e for e in value):
                acc[key] = []
            else:
                acc[key] = value
                continue
        if key in ("index", "type"):
            acc[key] = value
        elif isinstance(acc[key], str) and isinstance(value, str):
            acc[key] += value
        elif isinstance(acc[key], dict) and isinstance(value, dict):
            accumulate(acc[key], value)
        elif isinstance(acc[key], list) and isinstance(value, list):
            for entry in value:
                if entry["index"] < len(acc[key]):
                    accumulate(acc[key][entry["index"]], entry)
                else:
                    acc[key].insert(entry["index"], json.loads(json.dumps(entry)))
    return acc


def reassembled_completion(lines: list[bytes]) -> dict:
    """A chunk stream as the ``chat.completion`` the SDK's ``get_final_completion()`` gives: id,
    created and model from the chunks, the accumulated message (``content`` and ``refusal`` default
    to null, as in the SDK's message model; ``index`` dropped from tool calls, which completions do not carry), the
    last ``finish_reason``, the usage chunk's usage."""
    body = b"".join(lines)
    assert body.endswith(b"data: [DONE]\n\n")
    completion: dict = {"usage": None}
    message: dict = {}
    finish = None
    for event in body.split(b"\n\n"):
        if not event.startswith(b"data: {"):
            assert event in (b"", b": ping", b"data: [DONE]"), event
            continue
        chunk = json.loads(event[len(b"data: "):])
        assert chunk["object"] == "chat.completion.chunk"
        completion.update(id=chunk["id"], object="chat.completion", created=chunk["created"], model=chunk["model"])
        if chunk.get("usage") is not None:
            completion["usage"] = chunk["usage"]
        for choice in chunk["choices"]:
            accumulate(message, choice["delta"])
            finish = choice["finish_reason"] or finish
    message.setdefault("content", None)
    message.setdefault("refusal", None)
    for call in message.get("tool_calls", []):
        call.pop("index")
    completion["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
    return completion


def parsed_arguments(completion: dict) -> dict:
    """``completion`` with each tool call's arguments parsed: the stream relays Anthropic's own JSON
    text fragment by fragment while the non-streaming answer serialises ``input`` again, so the two
    strings may differ in spacing and escaping (``é`` vs ``\\u00e9``) but never in value."""
    completion = json.loads(json.dumps(completion))
    for call in completion["choices"][0]["message"].get("tool_calls", []):
        call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return completion


@PROPERTY
@given(answer=anthropic_answers(), data=st.data())
def test_anthropic_stream_split_anywhere_gives_the_non_streaming_completion(answer, data):
    expected = chat_completion(answer.message, "gpt-asked", 1700000000)
    machine = ChatChunksFromAnthropic("gpt-asked", "chatcmpl-stream", 1700000000, include_usage=True)
    lines = []
    for piece in byte_pieces(data.draw, answer.stream):
        lines += machine.feed(piece)
    lines += machine.close()
    got = reassembled_completion(lines)
    # The completion id is made per response: the non-streaming one from Anthropic's message id, the
    # streamed one before the first event arrives (every chunk carries it).
    expected["id"] = got["id"] = "chatcmpl-normalised"
    assert parsed_arguments(got) == parsed_arguments(expected)
