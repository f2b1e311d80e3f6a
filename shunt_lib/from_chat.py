"""OpenAI Chat Completions → Anthropic Messages, for ``/v1/chat/completions`` served by an Anthropic
``api_key`` account: the request (:func:`messages_request`) and the non-streaming answer
(:func:`chat_completion`). Streaming answers are :mod:`shunt_lib.chat_stream`.

The mapping, field by field, with its sources, is ``docs/protocol.md`` §9.3 (OpenAI:
https://platform.openai.com/docs/api-reference/chat/create and
https://platform.openai.com/docs/api-reference/chat/object; Anthropic:
https://platform.claude.com/docs/en/api/messages).
"""

from __future__ import annotations

import json

from .openai_parts import (DEFAULT_MAX_TOKENS, Turns, apply_effort, apply_sampling, apply_tool_choice, bad,
                           content_blocks, max_tokens_value, output_tokens, prompt_tokens, tool_choice,
                           tool_definition, tool_result_content)

#: Fields with no Anthropic counterpart: dropped, and named in the degraded list when they are set
#: to something other than their no-op value.
DROPPED_FIELDS = ("logprobs", "top_logprobs", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
                  "store", "metadata", "service_tier", "prediction", "verbosity", "prompt_cache_key")

#: Fields whose meaning cannot be kept at all: a 400 naming the field.
REFUSED_FIELDS = {"audio": "audio output is not supported", "modalities": "only text output is supported",
                  "web_search_options": "web search is not supported on this path"}

#: Fields that are read (or are harmless) and never reported.
KNOWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
                          "temperature", "top_p", "stop", "n", "user", "safety_identifier", "tools", "functions",
                          "tool_choice", "function_call", "parallel_tool_calls", "reasoning_effort",
                          "response_format"})

#: Anthropic ``stop_reason`` → OpenAI ``finish_reason``.
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def include_usage(chat_body: dict) -> bool:
    """Whether a streaming request asked for the final usage chunk (``stream_options.include_usage``)."""
    options = chat_body.get("stream_options") if isinstance(chat_body, dict) else None
    return isinstance(options, dict) and options.get("include_usage") is True


def tool_input(arguments: object, where: str) -> dict:
    """A tool call's ``arguments`` (a JSON string; empty means ``{}``) → the ``input`` object."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise bad(f"{where} is not a JSON object", where)
    return value


def _conversation(messages: object, degraded: list[str]) -> tuple[str, list[dict]]:
    """``messages`` → (system text, Anthropic messages). System and developer messages join into
    ``system`` with blank lines between; a system message after the conversation started is moved
    there too (degraded). Legacy ``function_call`` / ``role: function`` history gets ids
    ``call_legacy_N`` paired in order."""
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list", "messages")
    system: list[str] = []
    turns = Turns()
    started = False
    legacy_ids: list[str] = []
    for i, msg in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad(f"{at} must be an object", at)
        role = msg.get("role")
        if msg.get("name") is not None:
            degraded.append(f"{at}.name")
        if role in ("system", "developer"):
            texts = [b for b in content_blocks(msg.get("content"), f"{at}.content", degraded)]
            if any(b["type"] != "text" for b in texts):
                raise bad(f"{at}.content: a {role} message may hold text only", f"{at}.content")
            if started:
                degraded.append(f"{at}.role")
            system.extend(b["text"] for b in texts)
            continue
        started = True
        if role == "user":
            turns.add("user", content_blocks(msg.get("content"), f"{at}.content", degraded))
        elif role == "assistant":
            blocks = content_blocks(msg.get("content"), f"{at}.content", degraded)
            if msg.get("reasoning_content"):
                degraded.append(f"{at}.reasoning_content")
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                raise bad(f"{at}.tool_calls must be a list", f"{at}.tool_calls")
            for j, call in enumerate(calls):
                cat = f"{at}.tool_calls[{j}]"
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(call.get("id"), str) or not call["id"]:
                    raise bad(f"{cat} needs an id and a function", cat)
                if not isinstance(fn.get("name"), str) or not fn["name"]:
                    raise bad(f"{cat}.function.name is missing", f"{cat}.function.name")
                blocks.append({"type": "tool_use", "id": call["id"], "name": fn["name"],
                               "input": tool_input(fn.get("arguments"), f"{cat}.function.arguments")})
            legacy = msg.get("function_call")
            if isinstance(legacy, dict):
                legacy_ids.append(f"call_legacy_{len(legacy_ids)}")
                blocks.append({"type": "tool_use", "id": legacy_ids[-1], "name": str(legacy.get("name") or ""),
                               "input": tool_input(legacy.get("arguments"), f"{at}.function_call.arguments")})
            turns.add("assistant", blocks)
        elif role in ("tool", "function"):
            if role == "tool":
                call_id = msg.get("tool_call_id")
                if not isinstance(call_id, str) or not call_id:
                    raise bad(f"{at}.tool_call_id is missing", f"{at}.tool_call_id")
            elif legacy_ids:
                call_id = legacy_ids.pop(0)
            else:
                raise bad(f"{at}: a function result follows no function_call", f"{at}.role")
            turns.add("user", [{"type": "tool_result", "tool_use_id": call_id,
                                "content": tool_result_content(msg.get("content"), f"{at}.content", degraded)}])
        else:
            raise bad(f"{at}.role: {role!r} is not a chat role", f"{at}.role")
    return "\n\n".join(t for t in system if t), turns.messages()


def _tools(body: dict, out: dict) -> set[str]:
    """``tools`` (or legacy ``functions``) → Anthropic tools; returns their names."""
    defined = []
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad("tools must be a list", "tools")
        for i, tool in enumerate(tools):
            at = f"tools[{i}]"
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"),
                                                                                                 dict):
                raise bad(f"{at}.type: only function tools are supported", f"{at}.type")
            fn = tool["function"]
            defined.append(tool_definition(fn.get("name"), fn.get("description"), fn.get("parameters"),
                                           fn.get("strict"), f"{at}.function"))
    functions = body.get("functions")
    if isinstance(functions, list):
        for i, fn in enumerate(functions):
            at = f"functions[{i}]"
            if not isinstance(fn, dict):
                raise bad(f"{at} must be an object", at)
            defined.append(tool_definition(fn.get("name"), fn.get("description"), fn.get("parameters"), None, at))
    if defined:
        out["tools"] = defined
    return {t["name"] for t in defined}


def _legacy_function_call(choice: object) -> object:
    """Legacy ``function_call`` (``none`` / ``auto`` / ``{name}``) in ``tool_choice`` terms."""
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def messages_request(chat_body: dict) -> tuple[dict, list[str]]:
    """A Chat Completions request body → (Anthropic Messages body, degraded field names).

    ``degraded`` names, in order, every field dropped or approximated (for the ``x-shunt-degraded``
    header). Raises :class:`~shunt_lib.errors.InvalidOpenAIRequest` (400, OpenAI's envelope, ``param``
    naming the field) for what cannot be translated: ``n`` > 1, non-function tools, invalid
    tool-call arguments, unsupported content parts, audio output. ``stream_options`` is not sent;
    read it with :func:`include_usage`. The mapping is ``docs/protocol.md`` §9.3.
    """
    if not isinstance(chat_body, dict):
        raise bad("the request body must be a JSON object", None)
    model = chat_body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model is required", "model")
    for key, why in REFUSED_FIELDS.items():
        if chat_body.get(key) not in (None, ["text"]):
            raise bad(f"{key}: {why}", key)
    n = chat_body.get("n")
    if n is not None and n != 1:
        raise bad("n: only one choice per request is supported", "n")
    degraded: list[str] = []
    system, messages = _conversation(chat_body.get("messages"), degraded)
    out: dict = {"model": model}
    if system:
        out["system"] = system
    out["messages"] = messages
    explicit_max = max_tokens_value(chat_body.get("max_completion_tokens"), "max_completion_tokens")
    if explicit_max is None:
        explicit_max = max_tokens_value(chat_body.get("max_tokens"), "max_tokens")
    out["max_tokens"] = explicit_max or DEFAULT_MAX_TOKENS
    names = _tools(chat_body, out)
    choice = chat_body.get("tool_choice")
    if choice is None and chat_body.get("function_call") is not None:
        choice = _legacy_function_call(chat_body["function_call"])
    if names:
        apply_tool_choice(out, tool_choice(choice, names, "tool_choice"), chat_body.get("parallel_tool_calls"))
    elif choice not in (None, "none", "auto"):
        raise bad("tool_choice: no tools are defined", "tool_choice")
    stop = chat_body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise bad("stop must be a string or a list of strings", "stop")
        out["stop_sequences"] = stop
    apply_sampling(out, chat_body.get("temperature"), chat_body.get("top_p"), degraded)
    user = chat_body.get("user") or chat_body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    apply_response_format(chat_body.get("response_format"), out, degraded)
    apply_effort(out, chat_body.get("reasoning_effort"), explicit_max, "reasoning_effort", degraded)
    if chat_body.get("stream") is True:
        out["stream"] = True
    for key in DROPPED_FIELDS:
        if chat_body.get(key) not in (None, False, 0, {}, [], "auto", "default"):
            degraded.append(key)
    degraded.extend(k for k in chat_body if k not in KNOWN_FIELDS and k not in DROPPED_FIELDS)
    return out, degraded


def apply_response_format(fmt: object, out: dict, degraded: list[str], where: str = "response_format") -> None:
    """``response_format`` (or the Responses API's flat ``text.format``): ``json_schema`` →
    ``output_config.format`` (Anthropic structured outputs,
    https://platform.claude.com/docs/en/build-with-claude/structured-outputs); ``json_object`` has no
    counterpart (``where`` is degraded); ``text`` is the default."""
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_schema":
        spec = fmt.get("json_schema", fmt)
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad(f"{where}: a json_schema format needs a schema object", where)
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif kind == "json_object":
        degraded.append(where)
    else:
        raise bad(f"{where}.type: {kind!r} is not supported", f"{where}.type")


def finish_reason(stop_reason: object) -> str | None:
    """Anthropic ``stop_reason`` → OpenAI ``finish_reason`` (:data:`FINISH_REASONS`; unknown → ``stop``)."""
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(str(stop_reason), "stop")


def chat_usage(usage: object) -> dict:
    """Anthropic ``usage`` → OpenAI's: ``prompt_tokens`` = input + cache reads + cache writes,
    ``prompt_tokens_details.cached_tokens`` = cache reads, ``completion_tokens`` = output."""
    usage = usage if isinstance(usage, dict) else {}
    prompt, cached = prompt_tokens(usage)
    completion = output_tokens(usage)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def chat_completion(anthropic_message: dict, model: str, created_s: int) -> dict:
    """A non-streaming Anthropic message → a ``chat.completion`` object.

    Texts join (no separator) into ``message.content`` (``null`` when there is none); ``tool_use``
    blocks become ``message.tool_calls`` (ids kept, ``input`` as a JSON string); thinking texts join
    into ``message.reasoning_content`` (the field DeepSeek and others use; signatures are dropped, so
    thinking cannot be given back to Anthropic through the OpenAI dialect); other blocks (redacted
    thinking, server tools) are left out. ``model`` is the name the client asked for; ``created_s``
    epoch seconds; the id is ``chatcmpl-`` + Anthropic's message id.
    """
    text, reasoning, calls = [], [], []
    for block in anthropic_message.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
    message: dict = {"role": "assistant", "content": "".join(text) if text else None, "refusal": None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return {"id": "chatcmpl-" + str(anthropic_message.get("id") or ""), "object": "chat.completion",
            "created": created_s, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason(anthropic_message.get("stop_reason"))}],
            "usage": chat_usage(anthropic_message.get("usage"))}
