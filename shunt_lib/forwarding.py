"""What crosses the proxy, pure: which request headers go up, which response headers come back, the head.

Forwarding keeps the client's request as it is: method, path, query and body byte for byte; every
header but the hop-by-hop ones (RFC 9110 §7.6.1), ``host``, ``content-length`` (recomputed) and the
client's own credential. ``accept-encoding`` is narrowed to what the standard library can decode, so
usage can be read from compressed answers. The account's credential is added: ``Authorization:
Bearer`` plus the ``oauth-2025-04-20`` beta for subscription tokens, ``x-api-key`` for API keys
(``docs/protocol.md`` §3). Responses come back with their status, reason and headers, minus
hop-by-hop headers and the upstream's ``access-control-*`` headers, framed anew for the client, plus
``x-shunt-account``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import NamedTuple

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade"})
DROP_REQUEST = HOP_BY_HOP | {"host", "content-length", "authorization", "x-api-key", "accept-encoding"}
#: The upstream's CORS answer (https://fetch.spec.whatwg.org/#http-responses) describes the upstream's origin;
#: shunt gives browsers its own (:mod:`shunt_lib.cors`).
CORS_RESPONSE = frozenset({"access-control-allow-origin", "access-control-allow-credentials",
                           "access-control-allow-methods", "access-control-allow-headers",
                           "access-control-expose-headers", "access-control-max-age",
                           "access-control-allow-private-network"})
DROP_RESPONSE = HOP_BY_HOP | CORS_RESPONSE | {"content-length", "x-shunt-account"}
DECODABLE = ("gzip", "deflate")  # what the standard library's zlib can decode
#: The beta a subscription (OAuth) access token needs on the Messages API (docs/protocol.md §3).
OAUTH_BETA = "oauth-2025-04-20"
ACCOUNT_HEADER = "x-shunt-account"

#: Reason phrases: the standard library's, plus Anthropic's 529 ``overloaded_error``
#: (https://docs.anthropic.com/en/api/errors), which no registry names.
_PHRASES = {int(s): s.phrase for s in HTTPStatus} | {529: "Overloaded"}


def reason_phrase(status: int) -> str:
    """The reason phrase of ``status`` ('' for codes neither the standard library nor Anthropic names)."""
    return _PHRASES.get(status, "")


class ResponseHead(NamedTuple):
    """An upstream response's status line and headers.

    ``items``: ``(name, value)`` pairs in order as received; ``by_name``: lower-case name → value (for a
    repeated name, the last one; only single-valued headers are looked up); ``reason``: the upstream's
    reason phrase, passed through to the client.
    """

    status: int
    reason: str
    items: list[tuple[str, str]]
    by_name: dict[str, str]

    @classmethod
    def from_items(cls, status: int, reason: str, items: list[tuple[str, str]]) -> "ResponseHead":
        """A head from a status, a reason and ``(name, value)`` pairs."""
        return cls(status, reason, items, {k.lower(): v for k, v in items})


def narrow_accept_encoding(value: str) -> str | None:
    """Keep only encodings the standard library decodes (gzip, deflate, identity); None if none remain."""
    keep = []
    for part in value.split(","):
        token = part.split(";")[0].strip().lower()
        if token in DECODABLE or token == "identity":
            keep.append(part.strip())
    return ", ".join(keep) if keep else None


def upstream_headers(client_headers: list[tuple[str, str]], kind: str, secret: str) -> dict[str, str]:
    """Client headers as forwarded: the client's list minus hop-by-hop fields, ``host``, the client's
    credential and the fields named by ``Connection``; ``accept-encoding`` narrowed; the account's
    credential added.

    :param client_headers: ``(name, value)`` pairs as the client sent them.
    :param kind: the account's kind, ``oauth`` (``Authorization: Bearer`` and :data:`OAUTH_BETA` appended
        to ``anthropic-beta`` if missing) or ``api_key`` (``x-api-key``).
    :param secret: the account's access token or API key.
    :returns: a plain dict in the client's spelling of each name (cheaper for urllib3 than a
        multi-dict); a name the client sent twice is joined with ", " (RFC 9110 §5.3).
    """
    out: dict[str, str] = {}
    lower_names: dict[str, str] = {}
    connection_named: set[str] | tuple = ()
    for k, v in client_headers:
        lk = k.lower()
        if lk in DROP_REQUEST:
            if lk == "connection":
                connection_named = {t.strip().lower() for t in v.split(",")}
            elif lk == "accept-encoding":
                narrowed = narrow_accept_encoding(v)
                if narrowed:
                    out[k] = narrowed
                    lower_names[lk] = k
            continue
        prev = lower_names.get(lk)
        if prev is None:
            out[k] = v
            lower_names[lk] = k
        else:
            out[prev] = out[prev] + ", " + v
    for lk in connection_named:
        if lk in lower_names:
            del out[lower_names.pop(lk)]
    if kind == "oauth":
        out["authorization"] = "Bearer " + secret
        beta_name = lower_names.get("anthropic-beta")
        if beta_name is None:
            out["anthropic-beta"] = OAUTH_BETA
        elif OAUTH_BETA not in (t.strip() for t in out[beta_name].split(",")):
            out[beta_name] = out[beta_name] + "," + OAUTH_BETA
    else:
        out["x-api-key"] = secret
    return out


def response_head(head: ResponseHead, account: str | None, *, content_length: int | str | None = None,
                  chunked: bool = False, close: bool = False) -> bytes:
    """The HTTP/1.1 head shunt sends the client for an upstream answer.

    Status and reason as received (the known phrase, e.g. ``529 Overloaded``, when the upstream sent
    none: HTTP/2 has no reason phrases); headers minus hop-by-hop ones and ``content-length``; then
    ``x-shunt-account: ACCOUNT`` (if given) and the framing shunt chose: ``transfer-encoding: chunked``,
    or ``content-length``, and ``connection: close`` for a close-delimited body.
    """
    lines = [f"HTTP/1.1 {head.status} {head.reason or reason_phrase(head.status)}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in head.items if k.lower() not in DROP_RESPONSE]
    if account is not None:
        lines.append(f"{ACCOUNT_HEADER}: {account}\r\n")
    if chunked:
        lines.append("transfer-encoding: chunked\r\n")
    elif content_length is not None:
        lines.append(f"content-length: {content_length}\r\n")
    if close:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", errors="replace")


def json_head(status: int, content_length: int, headers: dict[str, str] | None = None, *,
              close: bool = False, content_type: str = "application/json") -> bytes:
    """The head of an answer shunt writes itself (its own errors, the control answers): JSON unless
    ``content_type`` says otherwise."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"HTTP/1.1 {status} {reason_phrase(status)}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {content_length}\r\n{extra}" + ("connection: close\r\n" if close else "") + "\r\n").encode()
