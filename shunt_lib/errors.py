"""Every exception shunt defines, in one tree.

Tree::

    Exception
    ├── ShuntError                  an error shunt answers itself: ``status`` + Anthropic ``error_type``
    │   ├── BadRequest              400 invalid_request_error (malformed HTTP, bad JSON on a control path)
    │   ├── Unauthorized            401 authentication_error (missing or wrong ``remote_key``; no accounts)
    │   ├── PermissionDenied        403 permission_error (a Host or browser Origin shunt does not answer)
    │   ├── NotFound                404 not_found_error (paths outside /v1/ and the control API)
    │   ├── MethodNotAllowed        405 invalid_request_error (a control path with the wrong method)
    │   ├── RequestTimeout          408 invalid_request_error (a request not sent in time; the connection closes)
    │   ├── BodyTooLarge            413 request_too_large (over ``max_body_bytes``)
    │   ├── URITooLong              414 invalid_request_error (a request line over 64 KiB)
    │   ├── UnsupportedMediaType    415 invalid_request_error (a control POST that is not application/json)
    │   ├── PoolRateLimited         429 rate_limit_error (every account out of quota past ``max_wait_s``)
    │   ├── HeadersTooLarge         431 invalid_request_error (a header line over 64 KiB, > 100 headers)
    │   ├── UnsupportedCoding       501 invalid_request_error (a transfer coding other than chunked)
    │   ├── UpstreamUnreachable     502 api_error (no account's upstream could be reached)
    │   ├── ServiceUnavailable      503 overloaded_error (over ``max_connections``; the connection closes)
    │   ├── UpstreamTimeout         504 timeout_error (the upstream sent no response head in time)
    │   ├── ShuttingDown            529 overloaded_error (shunt is stopping: retry, on the next process)
    │   └── VersionNotSupported     505 invalid_request_error (HTTP/2 or later on the HTTP/1.1 port)
    ├── ConfigError                 bad config, credentials or command input; the message names the key
    ├── UpstreamError               trouble on the upstream side, raised by :mod:`shunt_lib.upstream` only
    │   ├── UpstreamConnectError    no response head arrived (also a SafeToRetry)
    │   │   └── UpstreamHeadTimeout the request went out, and no head came within the first-byte timeout
    │   └── UpstreamStreamError     the body broke off after the head arrived
    ├── SafeToRetry                 marker: nothing reached the client, another account may be tried
    ├── UpstreamRequestInvalid      (a ValueError) the request cannot be sent as given: a client error
    └── ConnectionError (builtin)
        ├── ClientGone              writing to the client failed: it hung up
        └── ClientDisconnected      the client closed before sending its whole request

Upstream error bodies are never wrapped in these: they are forwarded unchanged (see
``docs/protocol.md`` §3). The shape of shunt's own errors is Anthropic's error envelope
``{"type":"error","error":{"type":"...","message":"..."}}``
(https://docs.anthropic.com/en/api/errors).
"""

from __future__ import annotations

import errno
import json

from .openai_errors import openai_error_body


def error_body(error_type: str, message: str) -> bytes:
    """The Anthropic error envelope as UTF-8 JSON bytes."""
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


class ShuntError(Exception):
    """An error shunt answers itself. ``status`` is the HTTP status, ``error_type`` Anthropic's type.

    :param headers: extra response headers (``retry-after`` on a 429).
    """

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


class InvalidOpenAIRequest(BadRequest):
    """An OpenAI-dialect request (``/v1/chat/completions``, ``/v1/responses``) shunt cannot translate
    for an Anthropic account. ``param`` names the field (``messages[2].tool_calls[0].function.arguments``);
    :meth:`body` is OpenAI's error envelope (:mod:`shunt_lib.openai_errors`), since the client speaks it."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def body(self) -> bytes:
        return openai_error_body(self.status, self.message, "invalid_request_error", self.param)


class Unauthorized(ShuntError):
    status = 401
    error_type = "authentication_error"


class PermissionDenied(ShuntError):
    status = 403
    error_type = "permission_error"


class NotFound(ShuntError):
    status = 404
    error_type = "not_found_error"


class MethodNotAllowed(ShuntError):
    """Give the ``allow`` header (RFC 9110 §15.5.6) in ``headers``."""

    status = 405
    error_type = "invalid_request_error"


class RequestTimeout(ShuntError):
    status = 408
    error_type = "invalid_request_error"


class BodyTooLarge(ShuntError):
    status = 413
    error_type = "request_too_large"


class URITooLong(ShuntError):
    status = 414
    error_type = "invalid_request_error"


class UnsupportedMediaType(ShuntError):
    status = 415
    error_type = "invalid_request_error"


class PoolRateLimited(ShuntError):
    status = 429
    error_type = "rate_limit_error"


class HeadersTooLarge(ShuntError):
    status = 431
    error_type = "invalid_request_error"


class UnsupportedCoding(ShuntError):
    status = 501
    error_type = "invalid_request_error"


class UpstreamUnreachable(ShuntError):
    status = 502
    error_type = "api_error"


class ServiceUnavailable(ShuntError):
    status = 503
    error_type = "overloaded_error"


class UpstreamTimeout(ShuntError):
    status = 504
    error_type = "timeout_error"


class ShuttingDown(ShuntError):
    """shunt is stopping. ``overloaded_error`` is Anthropic's type for a temporary condition the request
    did not cause (docs/protocol.md §5.4, §5.5); clients retry it, and the retry reaches the next process."""

    status = 529
    error_type = "overloaded_error"


class VersionNotSupported(ShuntError):
    status = 505
    error_type = "invalid_request_error"


#: The one class for each status shunt answers itself (the standard library's error path maps through it).
BY_STATUS: dict[int, type[ShuntError]] = {cls.status: cls for cls in (
    BadRequest, Unauthorized, PermissionDenied, NotFound, MethodNotAllowed, RequestTimeout, BodyTooLarge, URITooLong,
    UnsupportedMediaType, PoolRateLimited, HeadersTooLarge, UnsupportedCoding, UpstreamUnreachable, ServiceUnavailable,
    UpstreamTimeout, ShuttingDown, VersionNotSupported)}


class ConfigError(Exception):
    """The config, credentials or a command's input is invalid; the message names the key or file."""


class SafeToRetry(Exception):
    """Marker: the request never produced an upstream answer, so another account may take it."""


class UpstreamError(Exception):
    """Trouble on the upstream side. Raised by :mod:`shunt_lib.upstream` only, translated from urllib3."""


class UpstreamConnectError(UpstreamError, SafeToRetry):
    """The request could not be sent or no response head arrived. Nothing reached the client,
    so the request is safe to retry on another account."""


class UpstreamHeadTimeout(UpstreamConnectError):
    """The request was sent and no response head arrived within the first-byte timeout."""


class UpstreamStreamError(UpstreamError):
    """The upstream body broke off after its head arrived (bytes may already be with the client)."""


class UpstreamRequestInvalid(ValueError):
    """The request cannot be sent as given (``http.client`` refused a header name or value): a client error.
    Its message never quotes the header (the value may be a credential)."""


class ClientGone(ConnectionError):
    """Writing to the client failed: it hung up. Raised for the client side only, never for upstream trouble."""


class ClientDisconnected(ConnectionError):
    """The client closed its connection before sending its whole request (body or chunk)."""


_CLIENT_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ENOTCONN, errno.ESHUTDOWN,
                            errno.ETIMEDOUT})


def client_caused(exc: BaseException | None) -> bool:
    """Whether an exception that ended a client connection is the client's doing, not shunt's: a
    reset, a broken pipe, a timeout, a hang-up (:class:`ConnectionError`, :class:`TimeoutError`, or an
    ``OSError`` with one of those errno values)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _CLIENT_ERRNOS
