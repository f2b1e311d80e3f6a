"""Anthropic request → Chat Completions request, the answer back, errors and the count estimate:
one golden test per mapping rule (input dict → exact expected dict), plus properties of the tool-name
mapping and a smoke run over a real Claude Code request."""

from __future__ import annotations

import json
import logging
import os

import pytest
from hypothesis import given, settings, strategies as st

from shunt_lib.capabilities import Capabilities
from shunt_lib.openai_answer import anthropic_message, anthropic_usage, openai_error_to_anthropic
from shunt_lib.to_openai import chat_request
from shunt_lib.token_estimate import estimate_tokens
from shunt_lib.tool_names import ToolNames, is_valid_openai_name

CAPS = Capabilities()
FIXTURES = "/work/shared/fixtures"


def translate(body, caps=CAPS, stream=False, model="gpt-x"):
    return chat_request({"model": "claude-sonnet-4-6", "max_tokens": 100, **body}, model, caps, stream=stream)


def messages_of(body, caps=CAPS):
    return translate(body, caps).body["messages"]


# --- request: envelope and sampling fields ---------------------------------------------------------

def test_a_plain_request_keeps_only_allowed_fields():
    t = translate({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "top_p": 0.9})
    assert t.body == {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
                      "temperature": 0.5, "top_p": 0.9}
    assert t.degraded == []


def test_max_tokens_goes_to_the_providers_field():
    t = translate({"messages": []}, Capabilities(max_tokens_field="max_completion_tokens"))
    assert t.body == {"model": "gpt-x", "messages": [], "max_completion_tokens": 100}


def test_unknown_top_level_fields_are_named_and_never_sent():
    t = translate({"messages": [], "top_k": 5, "service_tier": "auto", "container": "c", "mcp_servers": [],
                   "context_management": {}, "cache_control": {"type": "ephemeral"}, "inference_geo": "us"})
    assert t.body == {"model": "gpt-x", "messages": [], "max_tokens": 100}
    assert t.degraded == ["top_k", "service_tier", "container", "mcp_servers", "context_management",
                          "cache_control", "inference_geo"]


def test_stream_asks_for_usage_only_where_the_provider_takes_it():
    assert translate({"messages": []}, stream=True).body == {
        "model": "gpt-x", "messages": [], "max_tokens": 100, "stream": True, "stream_options": {"include_usage": True}}
    assert translate({"messages": [], "stream": True}, Capabilities(stream_usage=False), stream=True).body == {
        "model": "gpt-x", "messages": [], "max_tokens": 100, "stream": True}
    assert "stream" not in translate({"messages": [], "stream": True}).body  # the caller decides


def test_stop_sequences_up_to_four_then_degraded():
    assert translate({"messages": [], "stop_sequences": ["a", "b"]}).body["stop"] == ["a", "b"]
    t = translate({"messages": [], "stop_sequences": ["1", "2", "3", "4", "5"]})
    assert t.body["stop"] == ["1", "2", "3", "4"]
    assert t.degraded == ["stop_sequences"]
    assert "stop" not in translate({"messages": [], "stop_sequences": []}).body


def test_metadata_user_id_becomes_user_and_other_metadata_is_named():
    t = translate({"messages": [], "metadata": {"user_id": "u-1", "tenant": "x"}})
    assert t.body["user"] == "u-1"
    assert t.degraded == ["metadata.tenant"]


# --- request: system ---------------------------------------------------------------------------------

def test_system_string_is_a_first_message_with_the_providers_role():
    assert messages_of({"system": "be brief", "messages": [{"role": "user", "content": "hi"}]},
                       Capabilities(system_role="developer")) == [
        {"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_system_blocks_are_joined_and_cache_control_is_named():
    t = translate({"system": [{"type": "text", "text": "a"},
                              {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}], "messages": []})
    assert t.body["messages"] == [{"role": "system", "content": "a\nb"}]
    assert t.degraded == ["cache_control"]


# --- request: user content -----------------------------------------------------------------------------

def test_one_text_block_is_a_string_several_are_parts():
    assert messages_of({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}) == [
        {"role": "user", "content": "x"}]
    assert messages_of({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"},
                                                                  {"type": "text", "text": "y"}]}]}) == [
        {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]


def test_images_base64_as_data_url_and_url_as_is():
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
               {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
               {"type": "text", "text": "what is this?"}]
    t = translate({"messages": [{"role": "user", "content": content}]})
    assert t.body["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is this?"}]}]
    assert t.degraded == []


def test_images_without_vision_become_a_placeholder_and_are_named():
    t = translate({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}},
        {"type": "text", "text": "hi"}]}]}, Capabilities(vision=False))
    assert t.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "[image not sent: this model does not accept images]"}, {"type": "text", "text": "hi"}]}]
    assert t.degraded == ["image"]


def test_image_file_source_is_named():
    t = translate({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f1"}}]}]})
    assert t.body["messages"] == [{"role": "user", "content": "[image not sent: file sources are not supported]"}]
    assert t.degraded == ["image"]


def test_text_documents_are_sent_as_text_and_pdfs_are_named():
    t = translate({"messages": [{"role": "user", "content": [
        {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain", "data": "abc"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}},
        {"type": "document", "title": "report.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]}]})
    assert t.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "notes\n\nabc"}, {"type": "text", "text": "inner"},
        {"type": "text", "text": "[document not sent: report.pdf]"}]}]
    assert t.degraded == ["document"]


def test_malformed_content_is_named_never_raised():
    t = translate({"system": ["x"], "messages": ["m", {"role": "user", "content": [1, {"type": "tool_result",
                   "tool_use_id": "t", "content": [2]}]}, {"role": "assistant", "content": [None]}],
                   "tools": ["t"]})
    assert t.body["messages"] == [{"role": "tool", "tool_call_id": "t", "content": ""},
                                  {"role": "assistant", "content": ""}]
    assert t.degraded == ["block.invalid", "message.invalid", "assistant_prefill", "tools.invalid"]


def test_unknown_blocks_are_named_not_sent():
    t = translate({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s"},
                                                             {"type": "text", "text": "hi"}]}]})
    assert t.body["messages"] == [{"role": "user", "content": "hi"}]
    assert t.degraded == ["block.search_result"]


# --- request: assistant turns, tool use and results --------------------------------------------------

def test_tool_use_becomes_tool_calls_with_ids_and_json_arguments():
    assert messages_of({"messages": [{"role": "assistant", "content": [
        {"type": "text", "text": "let me look"},
        {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "/a", "n": 1}},
        {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"},
                                     {"type": "tool_result", "tool_use_id": "toolu_2", "content": "y"}]}]}) == [
        {"role": "assistant", "content": "let me look", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "Read", "arguments": '{"path": "/a", "n": 1}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "x"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "y"}]


def test_an_assistant_turn_of_only_tool_calls_has_null_content():
    assert messages_of({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "Bash", "input": {"c": "ls"}}]}, {"role": "user", "content": "ok"}]})[0] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "Bash", "arguments": '{"c": "ls"}'}}]}


def test_tool_results_come_first_then_moved_images_then_the_users_text():
    t = translate({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "and now?"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
         "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"},
                     {"type": "image", "source": {"type": "url", "url": "https://e.com/s.png"}}]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": []}]}]})
    assert t.body["messages"] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: line 1\nline 2"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "[images returned by tool call toolu_1]"},
                                     {"type": "image_url", "image_url": {"url": "https://e.com/s.png"}},
                                     {"type": "text", "text": "and now?"}]}]
    assert t.degraded == ["tool_result.image"]


def test_an_empty_error_result_says_error():
    assert messages_of({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "is_error": True}]}]}) == [
        {"role": "tool", "tool_call_id": "t", "content": "Error"}]


def test_thinking_in_history_is_dropped_and_named_only_when_present():
    t = translate({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "redacted_thinking", "data": "x"},
        {"type": "text", "text": "answer"}]}, {"role": "user", "content": "more"}]})
    assert t.body["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"},
                                  {"role": "user", "content": "more"}]
    assert t.degraded == ["thinking_history"]
    assert translate({"messages": [{"role": "user", "content": "q"}]}).degraded == []


def test_a_trailing_assistant_message_is_named_as_a_prefill():
    t = translate({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "{"}]})
    assert t.body["messages"][-1] == {"role": "assistant", "content": "{"}
    assert t.degraded == ["assistant_prefill"]


def test_raw_arguments_from_an_earlier_answer_go_back_as_they_came():
    msgs = messages_of({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "Bash", "input": {"_raw_arguments": "{not json"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "bad input"}]}]})
    assert msgs[0]["tool_calls"][0]["function"]["arguments"] == "{not json"


# --- request: tools and tool_choice -----------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


def test_tools_become_functions_and_extra_tool_fields_are_named():
    t = translate({"messages": [], "tools": [
        {"name": "search", "description": "find", "input_schema": SCHEMA, "cache_control": {"type": "ephemeral"}},
        {"name": "later", "input_schema": SCHEMA, "defer_loading": True},
        {"type": "web_search_20250305", "name": "web_search"}]})
    assert t.body["tools"] == [
        {"type": "function", "function": {"name": "search", "description": "find", "parameters": SCHEMA}},
        {"type": "function", "function": {"name": "later", "parameters": SCHEMA}}]
    assert t.degraded == ["cache_control", "tools.defer_loading", "tools.web_search_20250305"]


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "search"}, {"type": "function", "function": {"name": "search"}})])
def test_tool_choice(choice, expected):
    t = translate({"messages": [], "tools": [{"name": "search", "input_schema": SCHEMA}], "tool_choice": choice})
    assert t.body["tool_choice"] == expected
    assert "parallel_tool_calls" not in t.body and t.degraded == []


def test_disable_parallel_tool_use_only_where_the_provider_takes_it():
    body = {"messages": [], "tools": [{"name": "s", "input_schema": SCHEMA}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}
    assert translate(body).body["parallel_tool_calls"] is False
    t = translate(body, Capabilities(parallel_tool_calls=False))
    assert "parallel_tool_calls" not in t.body
    assert t.degraded == ["disable_parallel_tool_use"]


def test_a_forced_tool_choice_without_sendable_tools_is_named():
    t = translate({"messages": [], "tools": [{"type": "bash_20250124", "name": "bash"}], "tool_choice": {"type": "any"}})
    assert "tools" not in t.body and "tool_choice" not in t.body
    assert t.degraded == ["tools.bash_20250124", "tool_choice"]


def test_renamed_tools_are_renamed_everywhere_in_the_request():
    t = translate({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "mcp.fs/read", "input": {}}]}],
        "tools": [{"name": "mcp.fs/read", "input_schema": SCHEMA}], "tool_choice": {"type": "tool", "name": "mcp.fs/read"}})
    sent = t.body["tools"][0]["function"]["name"]
    assert sent != "mcp.fs/read" and is_valid_openai_name(sent) and sent.startswith("mcp_fs_read_")
    assert t.body["tool_choice"]["function"]["name"] == sent
    assert t.body["messages"][0]["tool_calls"][0]["function"]["name"] == sent
    assert t.tool_names.original(sent) == "mcp.fs/read"


# --- request: thinking and effort ---------------------------------------------------------------------------

REASONING = Capabilities(reasoning=True)


@pytest.mark.parametrize("budget, level", [(1024, "low"), (4095, "low"), (4096, "medium"), (16383, "medium"),
                                           (16384, "high"), (64000, "high")])
def test_a_thinking_budget_becomes_an_effort_level(budget, level):
    t = translate({"messages": [], "thinking": {"type": "enabled", "budget_tokens": budget}}, REASONING)
    assert t.body["reasoning_effort"] == level
    assert t.degraded == ["thinking.budget_tokens"]


@pytest.mark.parametrize("effort, level, degraded", [("low", "low", []), ("medium", "medium", []),
                                                     ("high", "high", []), ("xhigh", "high", ["effort"]),
                                                     ("max", "high", ["effort"])])
def test_effort_becomes_reasoning_effort_and_wins_over_a_budget(effort, level, degraded):
    t = translate({"messages": [], "thinking": {"type": "enabled", "budget_tokens": 1024},
                   "output_config": {"effort": effort}}, REASONING)
    assert t.body["reasoning_effort"] == level
    assert t.degraded == degraded


def test_adaptive_thinking_leaves_the_providers_default_and_omitted_display_is_named():
    t = translate({"messages": [], "thinking": {"type": "adaptive", "display": "omitted"}}, REASONING)
    assert "reasoning_effort" not in t.body
    assert t.degraded == ["thinking.display"]


def test_thinking_and_effort_on_a_provider_without_reasoning_are_named():
    t = translate({"messages": [], "thinking": {"type": "enabled", "budget_tokens": 2000},
                   "output_config": {"effort": "low", "format": {"type": "json_schema"}}})
    assert "reasoning_effort" not in t.body
    assert t.degraded == ["output_config.format", "thinking", "effort"]


def test_disabled_thinking_is_quiet_without_reasoning_and_named_with_it():
    assert translate({"messages": [], "thinking": {"type": "disabled"}}).degraded == []
    assert translate({"messages": [], "thinking": {"type": "disabled"}}, REASONING).degraded == ["thinking"]


# --- request: a real Claude Code request ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["claude-code-2.1.328-turn1.json", "claude-code-2.1.328-turn2.json"])
def test_a_real_claude_code_request(name):
    path = os.path.join(FIXTURES, name)
    if not os.path.exists(path):
        pytest.skip("the recorded Claude Code request is not on this machine")
    with open(path, encoding="utf-8") as f:
        body = json.load(f)["body"]
    t = chat_request(body, "gpt-x", REASONING, stream=True)
    sent = [tool["function"]["name"] for tool in t.body["tools"]]
    assert [t.tool_names.original(n) for n in sent] == [tool["name"] for tool in body["tools"]]
    assert all(is_valid_openai_name(n) for n in sent)
    assert t.degraded == ["cache_control", "tools.defer_loading", "thinking.display", "context_management"]
    assert t.body["reasoning_effort"] == "high"
    assert t.body["messages"][0]["role"] == "system"
    assert t.body["messages"][0]["content"].startswith("x-anthropic-billing-header")
    assert set(t.body) == {"model", "messages", "max_tokens", "tools", "reasoning_effort", "user", "stream",
                           "stream_options"}
    json.dumps(t.body)  # serialisable as it is
    assert estimate_tokens(body) > 15000


# --- tool names ------------------------------------------------------------------------------------------------

def test_valid_names_are_kept_and_invalid_ones_mapped():
    names = ToolNames(["Bash", "mcp.server/tool", "x" * 70, ""])
    assert names.openai("Bash") == "Bash"
    for name in ("mcp.server/tool", "x" * 70, ""):
        assert is_valid_openai_name(names.openai(name)) and names.original(names.openai(name)) == name
    assert names.openai("mcp.server/tool").startswith("mcp_server_tool_")
    assert names.original("never_seen") == "never_seen"


def test_a_mapped_name_never_collides_with_a_kept_name():
    taken = ToolNames(["a.b"]).openai("a.b")
    names = ToolNames(["a.b", taken])
    assert names.openai(taken) == taken
    assert names.openai("a.b") != taken
    assert names.original(names.openai("a.b")) == "a.b"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=8))
def test_tool_names_property(names_in):
    names_in = names_in + [ToolNames([n]).openai(n) for n in names_in[:2]]  # names that look like mapped ones
    names = ToolNames(names_in)
    mapped = {name: names.openai(name) for name in names_in}
    assert all(is_valid_openai_name(m) for m in mapped.values())
    assert all(names.original(m) == name for name, m in mapped.items())
    assert len(set(mapped.values())) == len(mapped)
    assert {n: ToolNames(reversed(names_in)).openai(n) for n in names_in} == mapped  # the order does not matter


# --- answer ---------------------------------------------------------------------------------------------------

def answer(message, finish="stop", usage=None, **choice):
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}],
            **({"usage": usage} if usage is not None else {})}


ZERO = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def test_a_text_answer():
    assert anthropic_message(answer({"content": "Hello"}, usage={"prompt_tokens": 10, "completion_tokens": 2}),
                             "claude-sonnet-4-6", ToolNames(), []) == {
        "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 2, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}}


def test_reasoning_then_text_then_tool_calls_with_ids_and_original_names():
    names = ToolNames(["mcp.fs/read", "Bash"])
    result = anthropic_message(answer({
        "content": "Reading.", "reasoning_content": "I should read it",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": names.openai("mcp.fs/read"), "arguments": '{"path": "/a"}'}},
                       {"id": "call_2", "type": "function", "function": {"name": "Bash", "arguments": ""}}]},
        finish="tool_calls"), "m", names, [])
    assert result["content"] == [
        {"type": "thinking", "thinking": "I should read it", "signature": ""},
        {"type": "text", "text": "Reading."},
        {"type": "tool_use", "id": "call_1", "name": "mcp.fs/read", "input": {"path": "/a"}},
        {"type": "tool_use", "id": "call_2", "name": "Bash", "input": {}}]
    assert result["stop_reason"] == "tool_use"


def test_openrouter_reasoning_field_is_read():
    assert anthropic_message(answer({"content": "x", "reasoning": "r"}), "m", ToolNames(), [])["content"][0] == {
        "type": "thinking", "thinking": "r", "signature": ""}


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"just a string"'])
def test_arguments_that_are_not_a_json_object_are_logged_and_passed_as_they_came(arguments, caplog):
    with caplog.at_level(logging.WARNING, logger="shunt.translate"):
        result = anthropic_message(answer({"content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": arguments}}]},
            finish="tool_calls"), "m", ToolNames(["Bash"]), [])
    assert result["content"] == [{"type": "tool_use", "id": "call_1", "name": "Bash",
                                  "input": {"_raw_arguments": arguments}}]
    assert "call_1" in caplog.text and arguments not in caplog.text  # the log names the call, not its text
    back = chat_request({"messages": [{"role": "assistant", "content": result["content"]}]}, "m", CAPS, stream=False)
    assert back.body["messages"][0]["tool_calls"][0]["function"]["arguments"] == arguments


@pytest.mark.parametrize("finish, stop_reason", [("stop", "end_turn"), ("length", "max_tokens"),
                                                 ("tool_calls", "tool_use"), ("function_call", "tool_use"),
                                                 ("content_filter", "refusal"), (None, "end_turn"),
                                                 ("insufficient_system_resource", "end_turn")])
def test_finish_reasons(finish, stop_reason):
    result = anthropic_message(answer({"content": "x"}, finish=finish), "m", ToolNames(), ["END"])
    assert (result["stop_reason"], result["stop_sequence"]) == (stop_reason, None)


def test_tool_calls_with_a_stop_finish_read_tool_use():
    result = anthropic_message(answer({"content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}]}, finish="stop"),
        "m", ToolNames(), [])
    assert result["stop_reason"] == "tool_use"


def test_a_stop_sequence_at_the_text_tail_is_detected_and_cut():
    result = anthropic_message(answer({"content": "The answer is 4.\nEND"}), "m", ToolNames(), ["STOP", "END"])
    assert (result["stop_reason"], result["stop_sequence"]) == ("stop_sequence", "END")
    assert result["content"] == [{"type": "text", "text": "The answer is 4.\n"}]


def test_a_stop_sequence_the_provider_names_is_used():
    result = anthropic_message(answer({"content": "The answer is 4."}, stop_reason="END"), "m", ToolNames(), ["END"])
    assert (result["stop_reason"], result["stop_sequence"]) == ("stop_sequence", "END")
    assert result["content"] == [{"type": "text", "text": "The answer is 4."}]


def test_a_refusal_becomes_text_with_stop_reason_refusal():
    result = anthropic_message(answer({"content": None, "refusal": "I can't help with that."}), "m", ToolNames(), [])
    assert result["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert result["stop_reason"] == "refusal"


def test_usage_counts_cached_tokens_once():
    assert anthropic_usage({"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
                            "prompt_tokens_details": {"cached_tokens": 800}}) == {
        "input_tokens": 200, "output_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 800}


def test_deepseek_cache_hits_count_once():
    assert anthropic_usage({"prompt_tokens": 1000, "completion_tokens": 5, "prompt_cache_hit_tokens": 900,
                            "prompt_cache_miss_tokens": 100}) == {
        "input_tokens": 100, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 900}


def test_missing_or_odd_usage_is_zero():
    assert anthropic_usage(None) == ZERO
    assert anthropic_usage({"prompt_tokens": "x", "completion_tokens": -1}) == ZERO
    assert anthropic_message({"choices": []}, "m", ToolNames(), [])["usage"] == ZERO


def test_an_answer_without_choices_is_an_empty_message():
    result = anthropic_message({}, "m", ToolNames(), [])
    assert result["content"] == [] and result["stop_reason"] == "end_turn" and result["id"].startswith("msg_")


# --- errors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, error_type", [
    (400, "invalid_request_error"), (401, "authentication_error"), (402, "billing_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (422, "invalid_request_error"), (429, "rate_limit_error"),
    (500, "api_error"), (502, "api_error"), (503, "overloaded_error"), (504, "timeout_error"),
    (529, "overloaded_error")])
def test_errors_by_status_keep_the_providers_message(status, error_type):
    body = json.dumps({"error": {"message": "You exceeded your quota", "type": "insufficient_quota",
                                 "param": None, "code": "insufficient_quota"}}).encode()
    assert json.loads(openai_error_to_anthropic(status, body)) == {
        "type": "error", "error": {"type": error_type, "message": "You exceeded your quota"}}


@pytest.mark.parametrize("body, message", [
    (b'{"error": "model not found"}', "model not found"),      # Ollama
    (b'{"detail": "bad request"}', "bad request"),              # FastAPI servers
    (b'{"object": "error", "message": "too long"}', "too long"),  # vLLM
    (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
    (b"", "HTTP 502 from the provider")])
def test_error_messages_from_other_shapes(body, message):
    assert json.loads(openai_error_to_anthropic(502, body))["error"]["message"] == message


def test_a_long_error_body_is_cut():
    message = json.loads(openai_error_to_anthropic(500, b"x" * 5000))["error"]["message"]
    assert message == "x" * 2000 + "…"


# --- count_tokens estimate -------------------------------------------------------------------------------------

def test_estimate_counts_text_bytes_overheads_images_and_tools():
    body = {"system": "x" * 40, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "y" * 40},
                                     {"type": "image", "source": {"type": "url", "url": "u"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "ab", "input": {"k": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "z" * 8},
                                     {"type": "document", "source": {"type": "base64", "data": "JVBE"}}]}],
        "tools": [{"name": "ab", "description": "dd", "input_schema": {}}]}
    text_bytes = 40 + 40 + 2 + len('{"k":1}') + 8 + 2 + 2 + 2
    assert estimate_tokens(body) == 3 + 3 * 4 + 1600 + 1600 + -(-text_bytes // 4)


def test_estimate_of_an_empty_body():
    assert estimate_tokens({}) == 3
