"""Anthropic stream → OpenAI chat.completion.chunk lines (docs/protocol.md §9.4): golden tests per
rule, and properties: any byte split gives the same lines, and the collected chunks equal the
non-streaming translation of the same message."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shunt_lib.chat_stream import ChatChunksFromAnthropic, SSEEvents
from shunt_lib.from_chat import chat_completion


def ev(name, data):
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def start(usage=None):
    return ev("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage or {"input_tokens": 10, "output_tokens": 1}}})


def stream_of(message, piece=3):
    """The Anthropic stream for ``message`` (texts, thinking and tool inputs cut into ``piece``-character deltas)."""
    out = [start(message["usage"] | {"output_tokens": 1})]
    for i, block in enumerate(message["content"]):
        kind = block["type"]
        empty = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": ""},
                 "tool_use": {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}}
        out.append(ev("content_block_start", {"type": "content_block_start", "index": i, "content_block": empty[kind]}))
        if kind == "tool_use":
            text, dtype, key = json.dumps(block["input"], ensure_ascii=False), "input_json_delta", "partial_json"
            text = "" if text == "{}" else text
        else:
            text, dtype, key = block[kind], f"{kind}_delta", kind
        for j in range(0, len(text), piece):
            out.append(ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                                  "delta": {"type": dtype, key: text[j:j + piece]}}))
        out.append(ev("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(ev("ping", {"type": "ping"}))
    out.append(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                                       "stop_sequence": None},
                                    "usage": message["usage"]}))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def run(data, include_usage=True, pieces=None):
    machine = ChatChunksFromAnthropic("gpt-x", "chatcmpl-1", 1700000000, include_usage)
    out = []
    for piece in pieces or [data]:
        out.extend(machine.feed(piece))
    return out, machine


def chunks(lines):
    return [json.loads(line[6:]) for line in lines if line.startswith(b"data: {")]


def test_text_stream_golden():
    data = stream_of({"content": [{"type": "text", "text": "Héllo"}], "stop_reason": "end_turn",
                      "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 4}})
    lines, machine = run(data)
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-x"}

    def choice(delta, finish=None):
        return dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                    usage=None)
    assert chunks(lines) == [
        choice({"role": "assistant"}),
        choice({"content": "Hél"}), choice({"content": "lo"}),
        choice({}, "stop"),
        dict(base, choices=[], usage={"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21,
                                      "prompt_tokens_details": {"cached_tokens": 4}})]
    assert lines[-1] == b"data: [DONE]\n\n" and b": ping\n\n" in lines and machine.finished


def test_a_tool_only_answer_streams_no_content_so_it_reassembles_to_null():
    # Regression: the role chunk carried content "", so a client accumulating the deltas (the openai
    # SDK concatenates strings; a missing value stays null) got content "" where the non-streaming
    # answer has null. Text answers are unchanged: null/absent followed by "ok" accumulates to "ok".
    message = {"content": [{"type": "tool_use", "id": "toolu_a", "name": "get", "input": {}}],
               "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}
    deltas = [c["choices"][0]["delta"] for c in chunks(run(stream_of(message), include_usage=False)[0])]
    assert deltas[0] == {"role": "assistant"} and all("content" not in d for d in deltas)
    assert chat_completion(dict(message, id="msg_1"), "gpt-x", 1)["choices"][0]["message"]["content"] is None


def test_without_include_usage_there_is_no_usage_anywhere():
    data = stream_of({"content": [{"type": "text", "text": "hi"}], "stop_reason": "max_tokens",
                      "usage": {"input_tokens": 1, "output_tokens": 1}})
    got = chunks(run(data, include_usage=False)[0])
    assert all("usage" not in c for c in got) and got[-1]["choices"][0]["finish_reason"] == "length"


def test_tool_calls_are_indexed_from_zero_after_a_text_block():
    data = stream_of({"content": [{"type": "text", "text": "ok"},
                                  {"type": "tool_use", "id": "toolu_a", "name": "get", "input": {"q": 1}},
                                  {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}}],
                      "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}, piece=100)
    deltas = [c["choices"][0]["delta"] for c in chunks(run(data, include_usage=False)[0])]
    assert deltas[1:] == [
        {"content": "ok"},
        {"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "get", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": 1}'}}]},
        {"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "now", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {}]


def test_thinking_deltas_become_reasoning_content():
    data = stream_of({"content": [{"type": "thinking", "thinking": "abc"}, {"type": "text", "text": "x"}],
                      "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}})
    deltas = [c["choices"][0]["delta"] for c in chunks(run(data)[0]) if c["choices"]]
    assert deltas[1:3] == [{"reasoning_content": "abc"}, {"content": "x"}]


def test_a_mid_stream_error_is_an_openai_error_line_and_no_done():
    data = start() + ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}}) + \
        ev("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}) + \
        ev("message_stop", {"type": "message_stop"})
    lines, machine = run(data)
    assert lines[-1] == b'data: {"error":{"message":"Overloaded","type":"server_error","param":null,' \
                        b'"code":"overloaded"}}\n\n'
    assert b"data: [DONE]\n\n" not in lines and machine.finished and machine.feed(start()) == []


def test_close_before_the_end_reports_a_broken_stream():
    _, machine = run(start())
    assert json.loads(machine.close()[0][6:])["error"]["code"] == "stream_incomplete"
    assert machine.close() == []


def test_sse_events_accept_crlf_comments_and_multiline_data():
    parser = SSEEvents()
    assert parser.feed(b": hi\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\ndata: c") == [("x", "a\nb")]
    assert parser.feed(b"\n\n") == [("message", "c")]


# --- properties ------------------------------------------------------------------------------------

texts = st.text(alphabet=st.sampled_from("aé€😀 \n\"\\{}"), max_size=12)
blocks = st.lists(st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts.filter(bool)),
    st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "s"}, texts.filter(bool)),
    st.builds(lambda n, v: {"type": "tool_use", "id": f"toolu_{n}", "name": "f", "input": v},
              st.integers(0, 99), st.dictionaries(st.sampled_from(["a", "ü"]), texts, max_size=2))), max_size=5)
messages = st.builds(lambda content, stop, inp, out, cached: {
    "id": "msg_1", "type": "message", "role": "assistant", "content": content, "stop_reason": stop,
    "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": cached}},
    blocks, st.sampled_from(["end_turn", "tool_use", "max_tokens", "stop_sequence"]),
    st.integers(0, 999), st.integers(0, 999), st.integers(0, 999))


def collect(lines):
    """Concatenate the deltas of a chunk stream into a chat.completion message and usage."""
    content, reasoning, calls, finish, usage = [], [], {}, None, None
    for c in chunks(lines):
        usage = c.get("usage") or usage
        for choice in c["choices"]:
            d = choice["delta"]
            finish = choice["finish_reason"] or finish
            content.append(d.get("content") or "")
            reasoning.append(d.get("reasoning_content") or "")
            for call in d.get("tool_calls", []):
                slot = calls.setdefault(call["index"], {"id": None, "type": "function",
                                                        "function": {"name": None, "arguments": ""}})
                slot["id"] = call.get("id") or slot["id"]
                slot["function"]["name"] = call.get("function", {}).get("name") or slot["function"]["name"]
                slot["function"]["arguments"] += call.get("function", {}).get("arguments", "")
    message = {"role": "assistant", "content": "".join(content) or None, "refusal": None}
    if "".join(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [calls[k] for k in sorted(calls)]
    return message, finish, usage


@settings(max_examples=60, deadline=None)
@given(messages, st.lists(st.integers(0, 10_000), max_size=8), st.integers(1, 5))
def test_random_byte_splits_give_the_same_lines_and_the_non_streaming_answer(message, cuts, piece):
    data = stream_of(message, piece)
    whole, _ = run(data)
    bounds = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0] + bounds, bounds + [len(data)])]
    split, _ = run(data, pieces=pieces)
    assert split == whole
    got, finish, usage = collect(whole)
    expected = chat_completion(message, "gpt-x", 1700000000)
    assert got == expected["choices"][0]["message"]
    assert finish == expected["choices"][0]["finish_reason"] and usage == expected["usage"]
