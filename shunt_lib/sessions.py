"""Which conversation a request belongs to (pure).

Order (anthropic-protocol.md §3.2, §7.3; shunt-proxy.md §2.4):

1. the ``x-claude-code-session-id`` header (documented stickiness key) — the body is not parsed;
2. ``session_id`` inside the JSON string ``metadata.user_id`` (or the legacy ``..._session_<uuid>``);
3. a SHA-256 of the system text, the first user message's text and the sorted tool names.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

SESSION_HEADER = "x-claude-code-session-id"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
                       and isinstance(b.get("text"), str))
    return ""


def session_from_body(data: Any) -> str | None:
    """Return the session key of a parsed Messages request body, or None if it has no identity."""
    if not isinstance(data, dict):
        return None
    metadata = data.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and user_id:
        if user_id.startswith("{"):
            try:
                sid = json.loads(user_id).get("session_id")
            except (ValueError, AttributeError):
                sid = None
            if isinstance(sid, str) and sid:
                return "s:" + sid
        elif "_session_" in user_id:
            return "s:" + user_id.rsplit("_session_", 1)[1]
    messages = data.get("messages")
    if not isinstance(messages, list):
        return None
    system_text = _text_of(data.get("system"))
    first_user = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
    user_text = _text_of(first_user.get("content")) if first_user else ""
    if not system_text and not user_text:
        return None
    tools = data.get("tools")
    names = sorted(t.get("name", "") for t in tools if isinstance(t, dict)) if isinstance(tools, list) else []
    digest = hashlib.sha256("\0".join((system_text, user_text, ",".join(names))).encode()).hexdigest()
    return "h:" + digest[:32]


def session_key(headers: Mapping[str, str], body: bytes) -> str | None:
    """The session key of a request: ``"s:<id>"`` from the header or metadata, ``"h:<hash>"`` from content.

    The body is parsed only when the header is absent. Returns None if nothing identifies it.
    """
    sid = headers.get(SESSION_HEADER)
    if sid:
        return "s:" + sid.strip()
    if not body or body[:1] not in (b"{", b" ", b"\n", b"\r", b"\t"):
        return None
    try:
        return session_from_body(json.loads(body))
    except (ValueError, TypeError, RecursionError):  # odd bodies get no session, never an exception
        return None
