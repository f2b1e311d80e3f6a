"""A Chat Completions answer as an Anthropic message, and a provider's error in Anthropic's shape.

Rules and sources: ``docs/protocol.md`` §9.1. The Chat Completions object is documented at
https://platform.openai.com/docs/api-reference/chat/object, the Anthropic message at
https://platform.claude.com/docs/en/api/messages, the error envelope at
https://platform.claude.com/docs/en/api/errors.
"""

from __future__ import annotations

import json
import logging
import uuid

from shunt_lib.errors import error_body
from shunt_lib.to_openai import RAW_ARGUMENTS_KEY
from shunt_lib.tool_names import ToolNames

log = logging.getLogger("shunt.translate")

#: ``finish_reason`` → ``stop_reason``; ``stop`` is ``end_turn`` unless a stop sequence is found (see
#: :func:`stop_reason`). Values not listed (e.g. DeepSeek's ``insufficient_system_resource``) → ``end_turn``.
FINISH_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                  "function_call": "tool_use", "content_filter": "refusal"}

#: The longest provider error message kept (the rest is cut, marked with ``…``).
MAX_ERROR_MESSAGE = 2000


def stop_reason(finish_reason: str | None, text: str, stop_sequences: list[str], *, has_tool_calls: bool,
                matched: object = None) -> tuple[str, str | None, str]:
    """The Anthropic ``(stop_reason, stop_sequence, text)`` for an OpenAI ``finish_reason``.

    A ``stop`` becomes ``stop_sequence`` when the provider names the stop string it matched
    (``matched``: vLLM's ``choice.stop_reason``, SGLang's ``matched_stop``) and it is one of the
    request's ``stop_sequences``, or when the text ends with one of them (a provider that keeps the
    sequence); the sequence is then cut from the text, as Anthropic does not include it. OpenAI itself
    drops the sequence from the text and does not name it, so its answers read ``end_turn``. Tool calls
    with ``stop`` or no ``finish_reason`` (some local servers) read ``tool_use``.
    """
    if finish_reason in (None, "stop") and has_tool_calls:
        return "tool_use", None, text
    if finish_reason == "stop" and stop_sequences:
        if isinstance(matched, str) and matched in stop_sequences:
            return "stop_sequence", matched, text.removesuffix(matched)
        for sequence in sorted(stop_sequences, key=len, reverse=True):
            if sequence and text.endswith(sequence):
                return "stop_sequence", sequence, text[: -len(sequence)]
    if finish_reason not in FINISH_REASONS and finish_reason is not None:
        log.warning("unknown finish_reason %r from the provider; answering end_turn", str(finish_reason)[:40])
    return FINISH_REASONS.get(finish_reason, "end_turn"), None, text


def anthropic_usage(usage: dict | None) -> dict:
    """Chat Completions ``usage`` as Anthropic's, cached tokens counted once.

    ``input_tokens = prompt_tokens − cached``, ``cache_read_input_tokens = cached`` (Anthropic's
    ``input_tokens`` excludes cache reads), ``cache_creation_input_tokens = 0`` (no provider reports
    writes), ``output_tokens = completion_tokens`` (reasoning tokens included, as Anthropic counts
    thinking). ``cached`` is ``prompt_tokens_details.cached_tokens`` (OpenAI) or
    ``prompt_cache_hit_tokens`` (DeepSeek: https://api-docs.deepseek.com/guides/kv_cache).
    """
    usage = usage if isinstance(usage, dict) else {}
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    cached = _int(details.get("cached_tokens")) if details.get("cached_tokens") is not None \
        else _int(usage.get("prompt_cache_hit_tokens"))
    cached = min(cached, prompt)
    return {"input_tokens": prompt - cached, "output_tokens": _int(usage.get("completion_tokens")),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def tool_input(arguments, *, call_id: str = "", name: str = "") -> dict:
    """A tool call's ``arguments`` string as ``tool_use.input``.

    Empty → ``{}``; a JSON object → itself. Anything else (invalid JSON, or JSON that is not an
    object) is logged (lengths and ids only, never the text) and passed as it came, as
    ``{"_raw_arguments": "<the string>"}``: Anthropic clients require ``input`` to be an object, the
    client's schema check then reports the bad call to the model, and the string goes back to the
    provider unchanged when the client replays the turn (``to_openai``).
    """
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, dict):
        return arguments
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        log.warning("tool call %s (%s): arguments are not valid JSON (%d chars, %s); passed as they came",
                    call_id, name, len(text), type(exc).__name__)
        return {RAW_ARGUMENTS_KEY: text}
    if isinstance(parsed, dict):
        return parsed
    log.warning("tool call %s (%s): arguments are JSON %s, not an object; passed as they came",
                call_id, name, type(parsed).__name__)
    return {RAW_ARGUMENTS_KEY: text}


def _text_of(content) -> str:
    """``message.content``: a string, or a list of parts (some providers) whose texts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def anthropic_message(chat_response: dict, model_requested: str, tool_names: ToolNames,
                      stop_sequences: list[str]) -> dict:
    """A non-streaming Chat Completions answer as an Anthropic Messages answer.

    Reads ``choices[0]`` only. Content order: a ``thinking`` block from ``message.reasoning_content``
    (DeepSeek, vLLM) or ``message.reasoning`` (OpenRouter, newer vLLM) with ``signature: ""`` (there is
    none to give; Anthropic would refuse it if replayed there); the text (``message.refusal`` when there
    is no text); ``tool_use`` blocks with the provider's ids and the client's tool names. ``id`` is
    ``msg_`` + the provider's id; ``model`` is the model the client asked for.
    """
    choices = chat_response.get("choices") if isinstance(chat_response.get("choices"), list) else []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    text = _text_of(message.get("content"))
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else ""
    reason, sequence, text = stop_reason(choice.get("finish_reason"), text, stop_sequences or [],
                                         has_tool_calls=bool(calls),
                                         matched=choice.get("stop_reason") or choice.get("matched_stop"))
    content: list[dict] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text:
        content.append({"type": "text", "text": text})
    elif refusal:
        content.append({"type": "text", "text": refusal})
        reason = "refusal"
    for call in calls:
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        name = tool_names.original(function.get("name") or "")
        call_id = call.get("id") or f"toolu_{uuid.uuid4().hex}"
        content.append({"type": "tool_use", "id": call_id, "name": name,
                        "input": tool_input(function.get("arguments"), call_id=call_id, name=name)})
    upstream_id = chat_response.get("id")
    return {"id": f"msg_{upstream_id}" if isinstance(upstream_id, str) and upstream_id else f"msg_{uuid.uuid4().hex}",
            "type": "message", "role": "assistant", "model": model_requested, "content": content,
            "stop_reason": reason, "stop_sequence": sequence, "usage": anthropic_usage(chat_response.get("usage"))}


def error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status (table: ``docs/protocol.md`` §5.5; 503 is OpenAI's
    "engine overloaded", https://platform.openai.com/docs/guides/error-codes)."""
    named = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
             403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
             503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}
    if status in named:
        return named[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def openai_error_to_anthropic(status: int, body: bytes) -> bytes:
    """A provider's error answer as an Anthropic error body, keeping the provider's message.

    The message is read from ``error.message`` (OpenAI's envelope), ``error`` when it is a string,
    ``message`` or ``detail`` (vLLM, Ollama); otherwise the body's text, cut to
    :data:`MAX_ERROR_MESSAGE` characters; an empty body gives ``HTTP <status> from the provider``.
    The status itself is the caller's to keep.
    """
    text = body.decode("utf-8", "replace").strip()
    message = None
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        candidates = (error.get("message") if isinstance(error, dict) else error, parsed.get("message"),
                      parsed.get("detail"))
        message = next((c for c in candidates if isinstance(c, str) and c), None)
    if message is None:
        message = text or f"HTTP {status} from the provider"
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[:MAX_ERROR_MESSAGE] + "…"
    return error_body(error_type(status), message)
