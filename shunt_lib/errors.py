"""Errors shunt itself answers with, in Anthropic's error shape.

Tree::

    ShuntError                      a client-visible error: ``status`` + Anthropic ``error_type``
    ├── BadRequest                  400 invalid_request_error (malformed HTTP, bad JSON on /use)
    ├── Unauthorized                401 authentication_error (missing or wrong ``remote_key``)
    ├── NotFound                    404 not_found_error (paths outside /v1/ and the control API)
    ├── BodyTooLarge                413 request_too_large (over ``max_body_bytes``)
    ├── HeadersTooLarge             431 invalid_request_error (a header line over 64 KiB, >100 headers)
    ├── PoolRateLimited             429 rate_limit_error (every account out of quota past max_wait_s)
    └── UpstreamUnreachable         502 api_error (no account's upstream could be reached)

Upstream error bodies are never wrapped in these: they are forwarded unchanged (llm-gateway-protocol:
"Forward error bodies unmodified").  The shape is the envelope from Anthropic's ``api/errors.md``:
``{"type":"error","error":{"type":"...","message":"..."}}``.
"""

from __future__ import annotations

import json


def error_body(error_type: str, message: str) -> bytes:
    """Return the Anthropic error envelope as UTF-8 JSON bytes."""
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


class ShuntError(Exception):
    """An error shunt answers itself. ``status`` is the HTTP status, ``error_type`` Anthropic's type."""

    status = 500
    error_type = "api_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        """The JSON body for this error (Anthropic error envelope)."""
        return error_body(self.error_type, self.message)


class BadRequest(ShuntError):
    status = 400
    error_type = "invalid_request_error"


class Unauthorized(ShuntError):
    status = 401
    error_type = "authentication_error"


class NotFound(ShuntError):
    status = 404
    error_type = "not_found_error"


class BodyTooLarge(ShuntError):
    status = 413
    error_type = "request_too_large"


class HeadersTooLarge(ShuntError):
    status = 431
    error_type = "invalid_request_error"


class PoolRateLimited(ShuntError):
    status = 429
    error_type = "rate_limit_error"


class UpstreamUnreachable(ShuntError):
    status = 502
    error_type = "api_error"


class ConfigError(Exception):
    """The config, credentials or a command's input is invalid; the message names the key or file."""
