"""Which conversation a request belongs to (pure), and which account each conversation is bound to.

A request's session key, in order (``docs/protocol.md`` §3.3, §3.4):

1. the ``x-claude-code-session-id`` header Claude Code sends — the body is not parsed;
2. ``session_id`` inside the JSON string ``metadata.user_id`` (or the older ``..._session_<uuid>``);
3. a SHA-256 of the system text, the first user message's text and the sorted tool names.

:class:`SessionTable` binds each key to an account with a sliding TTL, so a conversation keeps its
account (and its prompt cache) while that account can serve it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping, NamedTuple

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


class SessionEntry(NamedTuple):
    """One binding: the ``account`` a session is on, until ``expires_at_s`` (epoch s) unless used again."""

    account: str
    expires_at_s: float


class SessionTable:
    """Session key → :class:`SessionEntry`, with a sliding TTL and a size cap.

    Not thread-safe: its owner (:class:`~shunt_lib.state.Pool`) calls it under its lock.

    :param ttl_s: how long a binding lives after its last use, seconds.
    :param max_entries: when full, expired bindings are pruned; if still full, all are dropped
        (a session that loses its binding is routed afresh, nothing breaks).
    """

    def __init__(self, ttl_s: float, max_entries: int = 20000):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, SessionEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def account(self, key: str | None, now_s: float) -> str | None:
        """The account ``key`` is bound to, or None (no key, no binding, or expired)."""
        if key is None:
            return None
        entry = self._entries.get(key)
        return entry.account if entry is not None and entry.expires_at_s > now_s else None

    def bind(self, key: str, account: str, now_s: float) -> None:
        """Bind ``key`` to ``account`` (or renew the binding) for another ``ttl_s``."""
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self.prune(now_s)
        self._entries[key] = SessionEntry(account, now_s + self.ttl_s)

    def prune(self, now_s: float) -> None:
        """Drop expired bindings; if the table is still full, drop them all."""
        self._entries = {k: e for k, e in self._entries.items() if e.expires_at_s > now_s}
        if len(self._entries) >= self.max_entries:
            self._entries.clear()

    def active_counts(self, names: Iterable[str], now_s: float) -> dict[str, int]:
        """Live sessions per account, for every name in ``names`` (0 where none)."""
        counts = dict.fromkeys(names, 0)
        for account, exp in self._entries.values():
            if exp > now_s and account in counts:
                counts[account] += 1
        return counts

    def keep_accounts(self, names: set[str] | frozenset[str]) -> None:
        """Drop every binding to an account not in ``names`` (accounts removed by a reload)."""
        self._entries = {k: e for k, e in self._entries.items() if e.account in names}

    def to_json(self, now_s: float) -> dict:
        """Live bindings as ``{key: {"account": NAME, "expires_at_s": EPOCH_S}}``."""
        return {k: {"account": e.account, "expires_at_s": e.expires_at_s}
                for k, e in self._entries.items() if e.expires_at_s > now_s}

    def load_json(self, data: object, accounts: set[str] | frozenset[str], now_s: float) -> None:
        """Restore bindings saved by :meth:`to_json`; malformed, expired or unknown-account ones are skipped."""
        if not isinstance(data, dict):
            return
        for key, s in data.items():
            if isinstance(key, str) and isinstance(s, dict) and s.get("account") in accounts:
                exp = s.get("expires_at_s")
                if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp > now_s:
                    self._entries[key] = SessionEntry(s["account"], float(exp))
