"""OpenAI's error envelope, for answers on the OpenAI front door (``/v1/chat/completions``,
``/v1/responses``) when the request went to an Anthropic account.

Shape (https://platform.openai.com/docs/guides/error-codes, and the ``openai`` SDK's
``APIError(message, body=error)`` which reads ``error.message/type/param/code``)::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": null}}

The mapping from Anthropic's error types (https://platform.claude.com/docs/en/api/errors,
``docs/protocol.md`` §5.5) is in :data:`TYPE_FROM_ANTHROPIC`; the HTTP status is kept as the upstream
sent it, and so is its message.
"""

from __future__ import annotations

import json

#: Anthropic ``error.type`` → (OpenAI ``error.type``, OpenAI ``error.code``).
TYPE_FROM_ANTHROPIC: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "permission_error": ("permission_error", None),
    "not_found_error": ("not_found_error", None),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "api_error": ("server_error", None),
    "timeout_error": ("server_error", "timeout"),
    "overloaded_error": ("server_error", "overloaded"),
}


def type_for_status(status: int) -> str:
    """The OpenAI ``error.type`` for an HTTP status when the body names none."""
    if status == 401:
        return "authentication_error"
    if status == 402:
        return "insufficient_quota"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    """The inner ``error`` object: ``{"message", "type", "param", "code"}``."""
    return {"message": message, "type": type_, "param": param, "code": code}


def openai_error_body(status: int, message: str, type_: str | None = None, param: str | None = None,
                      code: str | None = None) -> bytes:
    """OpenAI's error envelope as UTF-8 JSON bytes; ``type_`` defaults to :func:`type_for_status`."""
    return json.dumps({"error": openai_error(message, type_ or type_for_status(status), param, code)}).encode()


def error_from_anthropic(status: int, body: bytes | str | dict | None) -> dict:
    """The inner OpenAI ``error`` object for an Anthropic error ``body`` (raw bytes, text or the parsed
    envelope ``{"type": "error", "error": {"type", "message"}}``). A body that is not that envelope keeps
    its text (at most 500 characters) as the message; the type then comes from ``status``."""
    parsed = body
    if isinstance(body, (bytes, str)):
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
    inner = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        type_, code = TYPE_FROM_ANTHROPIC.get(str(inner.get("type")), (type_for_status(status), None))
        return openai_error(inner["message"], type_, None, code)
    if isinstance(body, bytes):
        text = body.decode("utf-8", "replace")
    elif isinstance(body, str):
        text = body
    else:
        text = json.dumps(body) if body is not None else ""
    return openai_error(text[:500] or f"upstream answered HTTP {status}", type_for_status(status))


def anthropic_error_to_openai(status: int, body: bytes | str | dict | None) -> bytes:
    """OpenAI's envelope for an Anthropic error answer (see :func:`error_from_anthropic`), as bytes."""
    return json.dumps({"error": error_from_anthropic(status, body)}).encode()
