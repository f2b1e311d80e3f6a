"""Which request paths shunt accepts: no dot segments, plain or percent-encoded.

shunt forwards every path under ``/v1/`` with an account's credential, byte for byte as the client
sent it. A path such as ``/v1/../x`` starts with ``/v1/`` but names ``/x`` once a server removes its
dot segments (RFC 3986 §5.2.4, https://www.rfc-editor.org/rfc/rfc3986#section-5.2.4), so it would
carry the credential outside the API. Rather than rewrite the client's path (forwarding sends what the
client sent), such paths are refused. No Anthropic API path has a dot segment, an encoded slash or a
backslash in it.
"""

from __future__ import annotations

from urllib.parse import unquote

from .errors import BadRequest

_DECODE_ROUNDS = 4  # "%252e" is "%2e" once decoded; a few rounds cover any intermediary that decodes again


def _suspicious(segment: str) -> bool:
    """Whether one path segment is, or may turn into, a dot segment or more than one segment."""
    for _ in range(_DECODE_ROUNDS):
        name = segment.split(";", 1)[0]  # "..;" is ".." to servers that take ";" as a parameter separator
        if name in (".", "..") or "/" in segment or "\\" in segment:
            return True
        if "%" not in segment:
            return False
        decoded = unquote(segment)
        if decoded == segment:
            return False
        segment = decoded
    return True  # still percent-encoded after several rounds: nobody sends that in good faith


def check_path(route: str) -> None:
    """Refuse a request path that could leave the directory it names.

    :param route: the request target's path (without the query string), as sent.
    :raises BadRequest: a segment that is ``.`` or ``..`` (also with a ``;`` parameter), or becomes
        one, or contains ``/`` or ``\\``, once percent-decoded (``%2e%2e``, ``%2f``, ``%5c``, and the
        same encoded twice).
    """
    if "." not in route and "%" not in route and "\\" not in route:
        return  # the common case, decided without splitting
    for segment in route.split("/"):
        if segment and _suspicious(segment):
            raise BadRequest(f"path {route[:200]!r} has a dot segment, an encoded slash or a backslash; "
                             "shunt forwards only plain paths")
