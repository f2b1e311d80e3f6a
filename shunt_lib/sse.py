"""Server-sent events: the framing, and the events shunt writes itself (ping, error).

An event is ``event: NAME`` and ``data: JSON`` lines ended by a blank line; Anthropic's stream sends
``ping`` events and ends a failed stream with an ``error`` event carrying the error envelope
(https://docs.anthropic.com/en/docs/build-with-claude/streaming, ``docs/protocol.md`` §5).
"""

from __future__ import annotations

import json

from .errors import error_body

#: The keep-alive event Anthropic's own streams send; shunt sends it while a streaming request is held.
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def event(name: str, data: bytes) -> bytes:
    """One SSE event: ``event: NAME``, ``data: DATA`` (one line of JSON), a blank line."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def json_event(name: str, obj: object) -> bytes:
    """One SSE event whose data is ``obj`` as JSON (``json.dumps`` defaults, as the simulators use)."""
    return event(name, json.dumps(obj).encode())


def comment(text: str) -> bytes:
    """An SSE comment line (ignored by clients): ``: TEXT`` and a blank line."""
    return b": " + text.encode() + b"\n\n"


def error_event(body: bytes) -> bytes:
    """An ``error`` event carrying ``body``: compacted to one line if it is JSON, else wrapped in an
    ``api_error`` envelope (at most 500 characters of it)."""
    try:
        payload = json.dumps(json.loads(body), separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        payload = error_body("api_error", body.decode(errors="replace")[:500])
    return event("error", payload)
