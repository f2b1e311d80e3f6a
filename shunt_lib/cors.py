"""CORS: the answers shunt gives browsers for the origins :mod:`shunt_lib.guard` allows.

shunt is the browser's server, so shunt, not the upstream, says which origins may read its answers
(the Fetch standard's CORS protocol, https://fetch.spec.whatwg.org/#http-cors-protocol):

* A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered here and never
  forwarded: 204 with ``access-control-allow-*`` for an allowed origin (a foreign one was refused
  before); a plain ``OPTIONS`` without ``Origin`` gets 204 with ``allow``.
* Every other answer to an allowed origin carries ``access-control-allow-origin`` (the origin itself,
  with ``vary: Origin``) and exposes every header (``x-shunt-account``, the rate-limit headers).
  The upstream's own ``access-control-*`` headers never reach the client
  (:data:`~shunt_lib.forwarding.DROP_RESPONSE`): they describe the upstream's origin, not shunt's.

No ``access-control-allow-credentials``: shunt uses no cookies, and ``remote_key`` travels in a
request header, which the preflight allows by name.

The ``Origin`` header itself is forwarded upstream like every other header the client sent. The
Anthropic API answers a request with an ``Origin`` only if it also says
``anthropic-dangerous-direct-browser-access: true``, as a browser talking to it directly must
(the TypeScript SDK sends it when ``dangerouslyAllowBrowser`` is set,
https://github.com/anthropics/anthropic-sdk-typescript); shunt does not add it for the page: that is
the page's statement to make, and forwarding sends what the client sent.
"""

from __future__ import annotations

import re
from typing import Mapping

PREFLIGHT_MAX_AGE_S = 600  # browsers cache a preflight answer this long, seconds (Chromium caps it at 7200)
METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110 §5.6.2): a method or a field name


def preflight_fields(origin: str | None, headers: Mapping[str, str]) -> dict[str, str]:
    """The header fields of shunt's 204 answer to ``OPTIONS``.

    :param origin: the request's allowed ``Origin`` (from :func:`~shunt_lib.guard.check_request`), or
        None for an ``OPTIONS`` that is not a browser's (it gets ``allow`` only).
    :param headers: lower-case name → value; ``access-control-request-method`` / ``-headers`` /
        ``-private-network`` are answered (the method and field names echoed when they are tokens).
    """
    if origin is None:
        return {"allow": METHODS}
    fields = {"access-control-allow-origin": origin,
              "access-control-max-age": str(PREFLIGHT_MAX_AGE_S),
              "vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
    method = (headers.get("access-control-request-method") or "").strip()
    fields["access-control-allow-methods"] = method if _TOKEN.fullmatch(method) else METHODS
    names = [n.strip() for n in (headers.get("access-control-request-headers") or "").split(",") if n.strip()]
    if names and all(_TOKEN.fullmatch(n) for n in names):
        fields["access-control-allow-headers"] = ", ".join(names)
    # Chromium's Private Network Access asks before a public page reaches a loopback server
    # (https://wicg.github.io/private-network-access/#headers); an origin the user allowed may.
    if (headers.get("access-control-request-private-network") or "").lower() == "true":
        fields["access-control-allow-private-network"] = "true"
    return fields


def preflight_head(fields: dict[str, str], *, close: bool = False) -> bytes:
    """The whole 204 answer to ``OPTIONS`` (no body, so no ``content-length``: RFC 9110 §8.6)."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return ("HTTP/1.1 204 No Content\r\n" + lines + ("connection: close\r\n" if close else "") + "\r\n").encode("latin-1")


def response_fields(origin: str) -> bytes:
    """The header lines added to every other answer for the allowed ``origin`` (CRLF after each)."""
    return (f"access-control-allow-origin: {origin}\r\naccess-control-expose-headers: *\r\n"
            "vary: Origin\r\n").encode("latin-1")


class HeadFields:
    """A handler's ``wfile`` that adds ``fields`` to the first response head written through it.

    Every answer shunt writes (its own JSON, a relayed upstream head, a held stream's 200) starts a
    write with its status line, so the fields go right after the first ``\\r\\n`` of the first write;
    the rest passes unchanged. Used for one request, by the request's thread.
    """

    __slots__ = ("_out", "_fields", "_pending")

    def __init__(self, out, fields: bytes):
        self._out = out
        self._fields = fields
        self._pending = True

    def write(self, data: bytes) -> int:
        """Write ``data``, with the fields inserted if it is the first response head."""
        if self._pending and data:
            self._pending = False
            if data.startswith(b"HTTP/"):
                end = data.find(b"\r\n") + 2
                data = data[:end] + self._fields + data[end:]
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()
