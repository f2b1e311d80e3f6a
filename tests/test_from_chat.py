"""Chat Completions → Anthropic Messages: one golden test per mapping rule (docs/protocol.md §9.3)."""

import json

import pytest

from shunt_lib.errors import InvalidOpenAIRequest
from shunt_lib.from_chat import chat_completion, include_usage, messages_request
from shunt_lib.model_list import models_list
from shunt_lib.openai_errors import anthropic_error_to_openai, openai_error_body

PNG = "iVBORw0KGgo="


def req(messages, **extra):
    return messages_request({"model": "claude-x", "messages": messages, **extra})


def user(text="hi"):
    return {"role": "user", "content": text}


def bad_param(body):
    with pytest.raises(InvalidOpenAIRequest) as caught:
        messages_request(body)
    assert caught.value.status == 400
    error = json.loads(caught.value.body())["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    return error["param"]


def test_minimal_request_gets_the_default_max_tokens():
    assert req([user()]) == ({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}],
                              "max_tokens": 4096}, [])


def test_system_and_developer_messages_join_into_system():
    body, degraded = req([{"role": "system", "content": "A"},
                          {"role": "developer", "content": [{"type": "text", "text": "B"}]}, user()])
    assert body["system"] == "A\n\nB" and body["messages"] == [{"role": "user", "content": "hi"}]
    assert degraded == []


def test_a_late_system_message_moves_to_system_and_is_reported():
    body, degraded = req([user(), {"role": "system", "content": "late"}])
    assert body["system"] == "late" and degraded == ["messages[1].role"]


def test_multipart_user_content_with_data_url_and_http_images():
    body, _ = req([{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "auto"}}]}])
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]


def test_image_detail_other_than_auto_is_degraded():
    _, degraded = req([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://e.com/a.png", "detail": "low"}}]}])
    assert degraded == ["messages[0].content[0].image_url.detail"]


@pytest.mark.parametrize("url", ["data:image/tiff;base64,AAAA", "data:image/png,rawtext", "ftp://x/y.png",
                                 "data:image/png;base64,@@@@"])
def test_images_anthropic_cannot_take_are_a_400(url):
    assert bad_param({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]}) == "messages[0].content[0].image_url"


def test_pdf_file_part_becomes_a_document_and_audio_is_refused():
    body, _ = req([{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]}])
    assert body["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]
    assert bad_param({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}) == "messages[0].content[0].type"


def test_assistant_tool_calls_become_tool_use_blocks():
    body, _ = req([user(), {"role": "assistant", "content": "checking", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}}]}])
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "checking"},
        {"type": "tool_use", "id": "call_1", "name": "get", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}]}


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_tool_call_arguments_that_are_not_a_json_object_are_a_400(arguments):
    assert bad_param({"model": "m", "messages": [user(), {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]}]}) \
        == "messages[1].tool_calls[0].function.arguments"


def test_tool_results_and_the_next_user_message_merge_into_one_user_turn():
    body, _ = req([user(), {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "one"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "and?"}])
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "a", "content": "one"},
        {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "two"}]},
        {"type": "text", "text": "and?"}]}
    assert len(body["messages"]) == 3


def test_consecutive_same_role_messages_merge():
    body, _ = req([user("a"), user("b"), {"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]


def test_legacy_function_call_history_pairs_ids_in_order():
    body, _ = req([user(), {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                   {"role": "function", "name": "f", "content": "done"}],
                  functions=[{"name": "f", "parameters": {"type": "object"}}], function_call={"name": "f"})
    assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "call_legacy_0", "name": "f", "input": {}}]
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "call_legacy_0",
                                               "content": "done"}]
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "tool", "name": "f"}


def test_tools_map_to_name_description_input_schema_and_strict():
    body, _ = req([user()], tools=[
        {"type": "function", "function": {"name": "get", "description": "d", "parameters": {"type": "object"},
                                          "strict": True}},
        {"type": "function", "function": {"name": "bare"}}])
    assert body["tools"] == [
        {"name": "get", "description": "d", "input_schema": {"type": "object"}, "strict": True},
        {"name": "bare", "input_schema": {"type": "object", "properties": {}}}]


def test_non_function_tools_are_a_400():
    assert bad_param({"model": "m", "messages": [user()], "tools": [{"type": "custom", "custom": {}}]}) \
        == "tools[0].type"


TOOLS = [{"type": "function", "function": {"name": "f"}}]


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}), ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"})])
def test_tool_choice(choice, expected):
    assert req([user()], tools=TOOLS, tool_choice=choice)[0]["tool_choice"] == expected


def test_tool_choice_naming_an_unknown_function_is_a_400():
    assert bad_param({"model": "m", "messages": [user()], "tools": TOOLS,
                      "tool_choice": {"type": "function", "function": {"name": "g"}}}) == "tool_choice"


def test_parallel_tool_calls_false_disables_parallel_tool_use():
    assert req([user()], tools=TOOLS, parallel_tool_calls=False)[0]["tool_choice"] == {
        "type": "auto", "disable_parallel_tool_use": True}
    assert req([user()], tools=TOOLS, tool_choice="required", parallel_tool_calls=False)[0]["tool_choice"] == {
        "type": "any", "disable_parallel_tool_use": True}
    assert req([user()], tools=TOOLS, tool_choice="none", parallel_tool_calls=False)[0]["tool_choice"] == {
        "type": "none"}


def test_max_completion_tokens_wins_over_max_tokens():
    assert req([user()], max_tokens=10, max_completion_tokens=20)[0]["max_tokens"] == 20
    assert req([user()], max_tokens=10)[0]["max_tokens"] == 10
    assert bad_param({"model": "m", "messages": [user()], "max_tokens": 0}) == "max_tokens"


def test_temperature_is_clamped_to_one_and_reported():
    assert req([user()], temperature=0.3) == ({"model": "claude-x", "messages": [user()], "max_tokens": 4096,
                                               "temperature": 0.3}, [])
    body, degraded = req([user()], temperature=1.7)
    assert body["temperature"] == 1.0 and degraded == ["temperature"]


def test_top_p_passes_alone_and_is_dropped_beside_temperature():
    assert req([user()], top_p=0.9)[0]["top_p"] == 0.9
    body, degraded = req([user()], top_p=0.9, temperature=0.5)
    assert "top_p" not in body and degraded == ["top_p"]


def test_stop_string_or_list_becomes_stop_sequences():
    assert req([user()], stop="END")[0]["stop_sequences"] == ["END"]
    assert req([user()], stop=["a", "b"])[0]["stop_sequences"] == ["a", "b"]


def test_user_becomes_metadata_user_id():
    assert req([user()], user="u-1")[0]["metadata"] == {"user_id": "u-1"}


def test_reasoning_effort_becomes_a_thinking_budget():
    body, degraded = req([user()], reasoning_effort="medium")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 8192 + 4096 and degraded == []
    body, _ = req([user()], reasoning_effort="high", max_completion_tokens=5000)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4999} and body["max_tokens"] == 5000
    assert "thinking" not in req([user()], reasoning_effort="none")[0]


def test_reasoning_effort_is_dropped_where_anthropic_refuses_thinking():
    body, degraded = req([user()], reasoning_effort="low", max_tokens=500)
    assert "thinking" not in body and degraded == ["reasoning_effort"]
    body, degraded = req([user()], reasoning_effort="low", tools=TOOLS, tool_choice="required")
    assert "thinking" not in body and degraded == ["reasoning_effort"]
    body, degraded = req([user()], reasoning_effort="low", temperature=0.2)
    assert body["thinking"]["budget_tokens"] == 2048 and "temperature" not in body and degraded == ["temperature"]


def test_reasoning_effort_is_dropped_inside_a_tool_loop():
    body, degraded = req([user(), {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "r"}], tools=TOOLS, reasoning_effort="low")
    assert "thinking" not in body and body["max_tokens"] == 4096 and degraded == ["reasoning_effort"]


def test_response_format_json_schema_becomes_output_config_format():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body, degraded = req([user()], response_format={"type": "json_schema",
                                                    "json_schema": {"name": "x", "schema": schema, "strict": True}})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}} and degraded == []
    assert req([user()], response_format={"type": "json_object"})[1] == ["response_format"]


def test_n_above_one_is_a_400_naming_n():
    assert bad_param({"model": "m", "messages": [user()], "n": 2}) == "n"
    assert req([user()], n=1)[1] == []


def test_sampling_extras_are_dropped_and_reported():
    body, degraded = req([user()], logprobs=True, seed=7, presence_penalty=0.5, frequency_penalty=0.1,
                         logit_bias={"1": 2}, something_new=1)
    assert set(body) == {"model", "messages", "max_tokens"}
    assert degraded == ["logprobs", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "something_new"]
    assert req([user()], presence_penalty=0, logprobs=False)[1] == []


def test_stream_is_kept_and_include_usage_remembered_not_sent():
    chat = {"model": "m", "messages": [user()], "stream": True, "stream_options": {"include_usage": True}}
    body, degraded = messages_request(chat)
    assert body["stream"] is True and "stream_options" not in body and degraded == []
    assert include_usage(chat) and not include_usage({"stream": True})


def test_a_bad_role_or_missing_model_names_the_field():
    assert bad_param({"model": "m", "messages": [{"role": "robot", "content": "x"}]}) == "messages[0].role"
    assert bad_param({"messages": [user()]}) == "model"
    assert bad_param({"model": "m", "messages": []}) == "messages"


# --- the non-streaming answer --------------------------------------------------------------------

def message(content, stop_reason="end_turn", usage=None):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage or {"input_tokens": 10, "output_tokens": 5}}


def test_chat_completion_text_and_usage():
    got = chat_completion(message([{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
                                  usage={"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                                         "cache_creation_input_tokens": 20}), "gpt-x", 1700000000)
    assert got == {"id": "chatcmpl-msg_1", "object": "chat.completion", "created": 1700000000, "model": "gpt-x",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None},
                                "logprobs": None, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                             "prompt_tokens_details": {"cached_tokens": 100}}}


def test_chat_completion_tool_calls_and_reasoning():
    got = chat_completion(message([{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                   {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"c": "é"}}],
                                  "tool_use"), "gpt-x", 1)
    msg = got["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": None, "refusal": None, "reasoning_content": "hmm",
                   "tool_calls": [{"id": "toolu_1", "type": "function",
                                   "function": {"name": "get", "arguments": '{"c": "é"}'}}]}
    assert got["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("stop, finish", [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                                          ("tool_use", "tool_calls"), ("refusal", "content_filter")])
def test_finish_reasons(stop, finish):
    assert chat_completion(message([], stop), "m", 0)["choices"][0]["finish_reason"] == finish


# --- errors and model lists ----------------------------------------------------------------------

def test_openai_error_body_shape():
    assert json.loads(openai_error_body(404, "no such model", param="model")) == {
        "error": {"message": "no such model", "type": "not_found_error", "param": "model", "code": None}}


@pytest.mark.parametrize("status, anthropic_type, type_, code", [
    (400, "invalid_request_error", "invalid_request_error", None),
    (401, "authentication_error", "authentication_error", "invalid_api_key"),
    (403, "permission_error", "permission_error", None),
    (429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
    (402, "billing_error", "insufficient_quota", "insufficient_quota"),
    (529, "overloaded_error", "server_error", "overloaded")])
def test_anthropic_errors_keep_their_message_in_openai_shape(status, anthropic_type, type_, code):
    body = json.dumps({"type": "error", "error": {"type": anthropic_type, "message": "upstream says"}}).encode()
    assert json.loads(anthropic_error_to_openai(status, body)) == {
        "error": {"message": "upstream says", "type": type_, "param": None, "code": code}}


def test_a_non_json_upstream_error_keeps_its_text():
    assert json.loads(anthropic_error_to_openai(502, b"Bad gateway")) == {
        "error": {"message": "Bad gateway", "type": "server_error", "param": None, "code": None}}


def test_models_list_in_both_shapes():
    models = [("claude-a", "Claude A", 1739923200), ("claude-b", "Claude B", 0)]
    assert models_list(models, anthropic=True) == {
        "data": [{"type": "model", "id": "claude-a", "display_name": "Claude A", "created_at": "2025-02-19T00:00:00Z"},
                 {"type": "model", "id": "claude-b", "display_name": "Claude B", "created_at": "1970-01-01T00:00:00Z"}],
        "has_more": False, "first_id": "claude-a", "last_id": "claude-b"}
    assert models_list(models, anthropic=False) == {"object": "list", "data": [
        {"id": "claude-a", "object": "model", "created": 1739923200, "owned_by": "anthropic"},
        {"id": "claude-b", "object": "model", "created": 0, "owned_by": "anthropic"}]}
    assert models_list([], anthropic=True) == {"data": [], "has_more": False, "first_id": None, "last_id": None}
