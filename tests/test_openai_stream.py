"""The Chat Completions stream → Anthropic Messages stream translation (shunt_lib/openai_stream.py).

Golden event sequences per recorded-shape fixture (tests/fixtures/openai_streams, sources in its
README), one test per rule, and properties: any split of the provider's bytes gives the same events
as the whole body, and the events always form a valid Anthropic stream whose message holds exactly
what the provider sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shunt_lib.openai_stream import AnthropicFromChatStream, anthropic_usage, stop_reason_for
from shunt_lib.stream_collect import collect, parse_events

FIXTURES = Path(__file__).parent / "fixtures" / "openai_streams"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.sse"))
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def machine(**kw) -> AnthropicFromChatStream:
    return AnthropicFromChatStream(kw.pop("model", "claude-sonnet-4-5"), kw.pop("message_id", "msg_test1"), **kw)


def run(body: bytes, splits=None, **kw) -> list[bytes]:
    """Feed ``body`` (whole, or cut at ``splits``) and finish."""
    m = machine(**kw)
    cuts = [0, *sorted(splits or []), len(body)]
    out = []
    for a, b in zip(cuts, cuts[1:]):
        out += m.feed(body[a:b])
    return out + m.finish()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def chunk(delta=None, finish=None, usage=None, choices=True) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def tool(index, args=None, id=None, name=None) -> dict:
    frag = {"index": index, "function": {}}
    if id:
        frag.update(id=id, type="function")
    if name:
        frag["function"]["name"] = name
    if args is not None:
        frag["function"]["arguments"] = args
    return {"tool_calls": [frag]}


DONE = b"data: [DONE]\n\n"


def start(usage_in=0):
    return ("message_start", {"type": "message_start", "message": {
        "id": "msg_test1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": usage_in, "output_tokens": 0}}})


def block_start(i, block):
    return ("content_block_start", {"type": "content_block_start", "index": i, "content_block": block})


def delta(i, kind, text):
    key = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}[kind]
    return ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": kind, key: text}})


def stop(i):
    return ("content_block_stop", {"type": "content_block_stop", "index": i})


def end(stop_reason, usage, stop_sequence=None):
    return [("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                               "usage": usage}),
            ("message_stop", {"type": "message_stop"})]


def events_of(out: list[bytes]):
    return parse_events(b"".join(out))


# -- golden sequences per fixture ------------------------------------------------------------------

def test_openai_text_with_usage_chunk_after_finish():
    assert events_of(run(fixture("openai_text.sse"))) == [
        start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, "text_delta", "Hello"),
        delta(0, "text_delta", "! Déjà vu — 日本"),
        stop(0),
        *end("end_turn", {"input_tokens": 210, "output_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024}),
    ]


def test_openai_parallel_tool_calls_first_live_second_whole():
    assert events_of(run(fixture("openai_parallel_tools.sse"))) == [
        start(),
        block_start(0, {"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "input": {}}),
        delta(0, "input_json_delta", '{"lo'),
        delta(0, "input_json_delta", 'cation": "Paris"}'),
        stop(0),
        block_start(1, {"type": "tool_use", "id": "call_ABCDEFghijk123", "name": "get_time", "input": {}}),
        delta(1, "input_json_delta", '{"tz": "Europe/Paris"}'),
        stop(1),
        *end("tool_use", {"input_tokens": 82, "output_tokens": 41, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}),
    ]


def test_openai_content_filter_is_refusal():
    assert events_of(run(fixture("openai_content_filter.sse"))) == [
        start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, "text_delta", "I can help with part"),
        stop(0),
        *end("refusal", {"input_tokens": 30, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}),
    ]


def test_deepseek_reasoning_content_is_a_thinking_block_first():
    thinking = {"type": "thinking", "thinking": "", "signature": ""}
    assert events_of(run(fixture("deepseek_reasoner.sse"))) == [
        start(),
        block_start(0, thinking),
        delta(0, "thinking_delta", "Compare 9.11 and 9.8: "),
        delta(0, "thinking_delta", "0.80 > 0.11."),
        stop(0),
        block_start(1, {"type": "text", "text": ""}),
        delta(1, "text_delta", "9.8 is greater."),
        stop(1),
        *end("end_turn", {"input_tokens": 18, "output_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}),
    ]


def test_ollama_whole_tool_call_in_one_chunk_and_no_usage():
    assert events_of(run(fixture("ollama_tool_call.sse"))) == [
        start(),
        block_start(0, {"type": "tool_use", "id": "call_hk81qg8b", "name": "run_command", "input": {}}),
        delta(0, "input_json_delta", '{"command":"ls -la"}'),
        stop(0),
        *end("tool_use", {"output_tokens": 0}),
    ]


def test_llamacpp_usage_in_the_finish_chunk_and_stop_sequence_from_the_text_tail():
    assert events_of(run(fixture("llamacpp_usage_in_last_choice.sse"), stop_sequences=["STOP", "END"])) == [
        start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, "text_delta", "A "),  # the last 4 characters (the longest sequence) are held back
        delta(0, "text_delta", "stop here."),
        delta(0, "text_delta", " "),  # ... until the finish_reason: the kept sequence is cut, as non-streaming
        stop(0),
        *end("stop_sequence", {"input_tokens": 21, "output_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}, "END"),
    ]


def test_a_kept_stop_sequence_is_cut_from_the_streamed_text_and_the_longest_match_wins():
    # Regression: the stream reported the first listed sequence and left it in the text, while the
    # non-streaming answer (openai_answer.stop_reason) cuts the longest match.
    body = chunk({"content": "x a"}) + chunk({"content": "b"}) + chunk(finish="stop") + DONE
    message = collect(run(body, stop_sequences=["b", "ab"]))
    assert message["content"] == [{"type": "text", "text": "x "}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "ab")


def test_a_text_that_is_only_the_stop_sequence_gives_no_text_block():
    body = chunk({"content": "###"}) + chunk(finish="stop") + DONE
    message = collect(run(body, stop_sequences=["###"]))
    assert message["content"] == [] and message["stop_sequence"] == "###"


def test_held_back_text_goes_out_before_a_tool_call_that_follows_it():
    body = chunk({"content": "see ###"}) + chunk({"tool_calls": [tool(0, "{}", "call_1", "f")]}) + \
        chunk(finish="tool_calls") + DONE
    message = collect(run(body, stop_sequences=["###"]))
    assert [b.get("text") for b in message["content"]] == ["see ###", None] and message["stop_reason"] == "tool_use"


def test_a_stop_sequence_named_by_the_provider_is_stop_sequence():
    # Regression: vLLM names the matched sequence in the finish chunk's choice.stop_reason (SGLang:
    # matched_stop) and leaves it out of the text; only the non-streaming translation read it.
    vllm = chunk({"content": "done"}) + \
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop","stop_reason":"END"}]}\n\n' + DONE
    sglang = vllm.replace(b'"stop_reason"', b'"matched_stop"')
    for body in (vllm, sglang):
        message = collect(run(body, stop_sequences=["END"]))
        assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")
        assert message["content"] == [{"type": "text", "text": "done"}]


def test_streamed_usage_has_the_non_streaming_fields():
    # Regression: the stream's message_delta lacked cache_creation_input_tokens (the non-streaming
    # answer has it, 0), from a second copy of the usage rule.
    body = chunk(finish="stop") + chunk(choices=False, usage={"prompt_tokens": 5, "completion_tokens": 1}) + DONE
    assert collect(run(body))["usage"] == {"input_tokens": 5, "output_tokens": 1, "cache_creation_input_tokens": 0,
                                           "cache_read_input_tokens": 0}


def test_openrouter_comments_reasoning_field_and_cached_usage():
    assert collect(run(fixture("openrouter_reasoning.sse"))) == {
        "id": "msg_test1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "thinking", "thinking": "The user wants a haiku. Five, seven, five.", "signature": ""},
                    {"type": "text", "text": "Quiet proxy hums"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 6, "output_tokens": 22, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8},
    }


def test_openrouter_error_mid_stream_is_an_error_event_and_nothing_after():
    events = events_of(run(fixture("openrouter_error.sse")))
    assert events == [
        start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, "text_delta", "Partial ans"),
        ("error", {"type": "error", "error": {"type": "api_error", "message": "Provider disconnected unexpectedly"}}),
    ]


# -- rules ------------------------------------------------------------------------------------------

def test_interleaved_parallel_tool_calls_come_out_as_separate_complete_blocks():
    body = (chunk({"role": "assistant", "content": None}) + chunk(tool(0, "", "call_a", "read")) + chunk(tool(1, "", "call_b", "grep"))
            + chunk(tool(0, '{"path": ')) + chunk(tool(1, '{"pattern": "x"')) + chunk(tool(2, '{}', "call_c", "ls"))
            + chunk(tool(0, '"a.py"}')) + chunk(tool(1, ', "n": 2}')) + chunk(finish="tool_calls") + DONE)
    out = run(body, tool_name_original=lambda n: "mcp__" + n)
    message = collect(out)
    assert message["content"] == [
        {"type": "tool_use", "id": "call_a", "name": "mcp__read", "input": {"path": "a.py"}},
        {"type": "tool_use", "id": "call_b", "name": "mcp__grep", "input": {"pattern": "x", "n": 2}},
        {"type": "tool_use", "id": "call_c", "name": "mcp__ls", "input": {}},
    ]
    # the first call streamed live as its fragments came; the others came whole after it closed
    assert [e for e in events_of(out) if e[0] == "content_block_delta"][:2] == [
        delta(0, "input_json_delta", '{"path": '), delta(0, "input_json_delta", '"a.py"}')]


def test_reasoning_then_tool_call_then_text_never_share_an_index():
    body = (chunk({"reasoning_content": "think"}) + chunk(tool(0, '{"q":', "call_1", "search"))
            + chunk({"content": "late text"}) + chunk(tool(0, '1}')) + chunk(finish="tool_calls") + DONE)
    assert collect(run(body))["content"] == [
        {"type": "thinking", "thinking": "think", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "search", "input": {"q": 1}},
        {"type": "text", "text": "late text"},
    ]


def test_usage_after_finish_reason_is_held_for_message_delta():
    m = machine()
    first = events_of(m.feed(chunk({"content": "hi"}) + chunk(finish="stop")))
    assert [name for name, _ in first] == ["message_start", "content_block_start", "content_block_delta", "content_block_stop"]
    last = events_of(m.feed(chunk(choices=False, usage={"prompt_tokens": 50, "completion_tokens": 3,
                                                       "prompt_tokens_details": {"cached_tokens": 20}}) + DONE))
    assert last == end("end_turn", {"input_tokens": 30, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20})
    assert m.ended and m.finish() == [] and m.feed(chunk({"content": "after"})) == []


def test_body_ending_after_finish_without_done_still_completes():
    assert collect(run(chunk({"content": "ok"}) + chunk(finish="length")))["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("body", [
    chunk({"content": "cut off"}),                 # body ends, no finish_reason, no [DONE]
    chunk({"content": "cut off"}) + DONE,          # [DONE] without a finish_reason
    chunk({"content": "cut off"}) + b'data: {"choices": [{"index": 0, "delta": {"content": "x"}\n\n',  # broken JSON
], ids=["eof", "done-without-finish", "unreadable"])
def test_a_stream_that_ends_without_finish_is_an_error_event(body):
    events = events_of(run(body))
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    assert "message_stop" not in [name for name, _ in events]
    assert collect(run(body))["type"] == "error"


def test_fail_mid_stream_gives_one_error_event_then_nothing():
    m = machine()
    m.feed(chunk({"content": "partial"}))
    out = m.fail("upstream read timed out", "overloaded_error")
    assert events_of(out) == [("error", {"type": "error", "error": {"type": "overloaded_error", "message": "upstream read timed out"}})]
    assert m.fail("again") == [] and m.finish() == [] and m.feed(DONE) == []


def test_utf8_character_split_across_network_chunks():
    body = chunk({"content": "日本語 ✓"}) + chunk(finish="stop") + DONE
    cut = body.index("本".encode()) + 1  # inside the three bytes of 本
    assert collect(run(body, splits=[cut, cut + 1]))["content"] == [{"type": "text", "text": "日本語 ✓"}]


def test_crlf_lines_comments_and_other_fields_are_read():
    body = (b": keep-alive\r\n\r\nevent: chunk\r\nid: 7\r\n" + chunk({"content": "a"}).replace(b"\n", b"\r\n")
            + b"retry: 10\r\ndata:" + chunk(finish="stop")[len(b"data: "):] + DONE.replace(b"\n", b"\r\n"))
    assert collect(run(body))["content"] == [{"type": "text", "text": "a"}]


def test_refusal_delta_is_text_with_stop_reason_refusal():
    body = chunk({"content": None, "refusal": "I can't help with that."}) + chunk(finish="stop") + DONE
    message = collect(run(body))
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}] and message["stop_reason"] == "refusal"


def test_a_tool_call_without_id_gets_one_and_name_arriving_late_is_waited_for():
    body = (chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})
            + chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ": 1}"}}]})
            + chunk(finish="tool_calls") + DONE)
    assert collect(run(body))["content"] == [{"type": "tool_use", "id": "toolu_test1_0", "name": "f", "input": {"a": 1}}]


def test_only_the_first_choice_is_read_and_unknown_fields_are_ignored():
    other = b'data: {"choices": [{"index": 1, "delta": {"content": "other"}}], "x_new": {"a": 1}}\n\n'
    body = other + chunk({"content": "first", "audio": None, "annotations": []}) + chunk(finish="stop") + DONE
    assert collect(run(body))["content"] == [{"type": "text", "text": "first"}]


def test_ping_is_an_anthropic_ping_event():
    assert parse_events(machine().ping()) == [("ping", {"type": "ping"})]


def test_input_tokens_estimate_goes_into_message_start():
    assert events_of(run(chunk(finish="stop") + DONE, input_tokens=123))[0] == start(123)


def test_usage_counts_cached_tokens_once():
    assert anthropic_usage({"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}) == \
        {"input_tokens": 40, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60}
    assert anthropic_usage({"prompt_tokens": 100, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}) == \
        {"input_tokens": 36, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64}
    assert anthropic_usage({"prompt_tokens": None, "completion_tokens": "3"}) == \
        {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


@pytest.mark.parametrize("finish,kw,expected", [
    ("stop", {}, ("end_turn", None)),
    ("length", {}, ("max_tokens", None)),
    ("tool_calls", {"tool_calls": True}, ("tool_use", None)),
    ("stop", {"tool_calls": True}, ("tool_use", None)),
    ("content_filter", {}, ("refusal", None)),
    ("stop", {"text": "done.\n###"}, ("stop_sequence", "###")),
    ("stop", {"text": "### done"}, ("end_turn", None)),
    ("something_new", {}, ("end_turn", None)),
])
def test_finish_reason_mapping(finish, kw, expected):
    args = {"tool_calls": False, "refused": False, "text": "", "stop_sequences": ["###"], **kw}
    assert stop_reason_for(finish, **args) == expected


def test_collect_rejects_streams_anthropic_never_sends():
    ok = run(chunk({"content": "a"}) + chunk(finish="stop") + DONE)
    with pytest.raises(ValueError):
        collect(ok[:-1])  # no message_stop
    with pytest.raises(ValueError):
        collect([ok[0], ok[1], ok[1]])  # block 0 opened twice
    with pytest.raises(ValueError):
        collect(ok[1:])  # no message_start


# -- properties ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_FIXTURES)
@PROPERTY
@given(data=st.data())
def test_any_split_of_a_fixture_gives_the_same_events(name, data):
    body = fixture(name)
    whole = run(body)
    splits = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    assert run(body, splits) == whole
    result = collect(whole)  # and the events form a valid Anthropic stream
    assert result["type"] == ("error" if name == "openrouter_error.sse" else "message")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


@PROPERTY
@given(data=st.data())
def test_generated_streams_split_anywhere_give_exactly_what_the_provider_sent(data):
    thinking = data.draw(st.lists(st.text(min_size=1, max_size=6), max_size=3), "thinking")
    text = data.draw(st.lists(st.text(min_size=1, max_size=6), max_size=4), "text")
    inputs = data.draw(st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=3), max_size=3), "inputs")
    pieces = []
    for i, value in enumerate(inputs):
        raw = json.dumps(value, ensure_ascii=False)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=4)))
        parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
        pieces.append([tool(i, parts[0], f"call_{i}", f"tool_{i}")] + [tool(i, p) for p in parts[1:]])
    body = b"".join(chunk({"reasoning_content": t}) for t in thinking) + b"".join(chunk({"content": t}) for t in text)
    started = [False] * len(pieces)
    while any(pieces):  # interleave the calls' fragments; each call's own order kept, calls begin in index order
        i = data.draw(st.sampled_from([k for k, p in enumerate(pieces) if p and (k == 0 or started[k - 1])]))
        started[i] = True
        body += chunk(pieces[i].pop(0))
    body += chunk(finish="tool_calls" if inputs else "stop") + chunk(choices=False, usage={"prompt_tokens": 9, "completion_tokens": 4}) + DONE

    whole = run(body)
    splits = data.draw(st.lists(st.integers(0, len(body)), max_size=30), "splits")
    assert run(body, splits) == whole
    message = collect(whole)
    expected = ([{"type": "thinking", "thinking": "".join(thinking), "signature": ""}] if thinking else []) \
        + ([{"type": "text", "text": "".join(text)}] if text else []) \
        + [{"type": "tool_use", "id": f"call_{i}", "name": f"tool_{i}", "input": value} for i, value in enumerate(inputs)]
    assert message["content"] == expected
    assert message["stop_reason"] == ("tool_use" if inputs else "end_turn")
    assert message["usage"] == {"input_tokens": 9, "output_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
