"""Responses API subset → Anthropic and back (docs/protocol.md §9.3): golden tests per rule, the
400s naming the field, the event sequence, and that the streamed final response equals the
non-streaming one whatever the byte split."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shunt_lib.errors import InvalidOpenAIRequest
from shunt_lib.responses_api import ResponsesEventsFromAnthropic, messages_request, response_object
from tests.test_chat_stream import ev, messages, stream_of


def bad_param(body):
    with pytest.raises(InvalidOpenAIRequest) as caught:
        messages_request({"model": "m", "input": "hi", **body})
    return caught.value.param


def test_string_input_and_instructions():
    assert messages_request({"model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 50}) == (
        {"model": "m", "system": "be brief", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}, [])


def test_message_items_function_calls_and_outputs():
    body, degraded = messages_request({"model": "m", "input": [
        {"role": "developer", "content": "dev"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://e.com/a.png", "detail": "auto"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get", "arguments": '{"q": 1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "It is 42"}]}]})
    assert body["system"] == "dev" and degraded == []
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get", "input": {"q": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "42"}]},
        {"role": "assistant", "content": "It is 42"}]


def test_function_tools_choice_and_parallel():
    body, _ = messages_request({"model": "m", "input": "hi", "tools": [
        {"type": "function", "name": "get", "description": "d", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "get"}, "parallel_tool_calls": False})
    assert body["tools"] == [{"name": "get", "description": "d", "input_schema": {"type": "object"}, "strict": True}]
    assert body["tool_choice"] == {"type": "tool", "name": "get", "disable_parallel_tool_use": True}


def test_text_format_reasoning_and_dropped_fields():
    body, degraded = messages_request({"model": "m", "input": "hi", "store": True, "include": ["x"],
                                       "reasoning": {"effort": "low", "summary": "auto"},
                                       "text": {"format": {"type": "json_schema", "name": "n",
                                                           "schema": {"type": "object"}}}})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert degraded == ["reasoning.summary", "store", "include"]
    assert messages_request({"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}})[1] == [
        "text.format"]


@pytest.mark.parametrize("body, param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]}, "input[0].arguments"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
])
def test_unsupported_fields_are_a_400_naming_them(body, param):
    assert bad_param(body) == param


def anthropic_message(content, stop="end_turn"):
    return {"id": "msg_1", "type": "message", "role": "assistant", "content": content, "stop_reason": stop,
            "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 5}}


def test_response_object_golden():
    got = response_object(anthropic_message([
        {"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"a": 1}}], "tool_use"), "gpt-x", 1700000000)
    assert got == {
        "id": "resp_msg_1", "object": "response", "created_at": 1700000000, "status": "completed", "model": "gpt-x",
        "output": [
            {"type": "message", "id": "msg_msg_1_0", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Hi", "annotations": []}]},
            {"type": "function_call", "id": "fc_toolu_1", "call_id": "toolu_1", "name": "get",
             "arguments": '{"a": 1}', "status": "completed"}],
        "error": None, "incomplete_details": None, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "metadata": {},
        "usage": {"input_tokens": 8, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 4,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 12}}


def test_max_tokens_makes_the_response_incomplete():
    got = response_object(anthropic_message([{"type": "text", "text": "x"}], "max_tokens"), "m", 0)
    assert got["status"] == "incomplete" and got["incomplete_details"] == {"reason": "max_output_tokens"}


def events(lines):
    return [json.loads(line.split(b"\ndata: ", 1)[1]) for line in lines if line.startswith(b"event: ")]


def run(data, pieces=None):
    machine = ResponsesEventsFromAnthropic("gpt-x", "resp_", 1700000000)
    out = []
    for piece in pieces or [data]:
        out.extend(machine.feed(piece))
    return out


def test_stream_event_sequence():
    message = anthropic_message([{"type": "text", "text": "Hello"},
                                 {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"a": 1}}], "tool_use")
    got = events(run(stream_of(message, piece=3)))
    assert [e["type"] for e in got] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert got[4] == {"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_msg_1_0",
                      "output_index": 0, "content_index": 0, "delta": "Hel"}
    assert got[13]["arguments"] == '{"a": 1}' and got[13]["output_index"] == 1
    assert got[-1]["response"] == response_object(message, "gpt-x", 1700000000)


def test_stream_error_gives_error_and_failed_events():
    data = stream_of(anthropic_message([]))[:300].split(b"\n\n")[0] + b"\n\n" + ev(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    got = events(run(data))
    assert [e["type"] for e in got] == ["response.created", "response.in_progress", "error", "response.failed"]
    assert got[2]["code"] == "overloaded" and got[2]["message"] == "Overloaded"
    assert got[3]["response"]["status"] == "failed"


@settings(max_examples=40, deadline=None)
@given(messages, st.lists(st.integers(0, 10_000), max_size=6), st.integers(1, 4))
def test_streamed_final_response_equals_the_non_streaming_one(message, cuts, piece):
    data = stream_of(message, piece)
    whole = run(data)
    bounds = sorted({c % (len(data) + 1) for c in cuts})
    assert run(data, [data[a:b] for a, b in zip([0] + bounds, bounds + [len(data)])]) == whole
    final = events(whole)[-1]
    assert final["type"] in ("response.completed", "response.incomplete")
    assert final["response"] == response_object(message, "gpt-x", 1700000000)
