"""Which conversation a request belongs to (pure), and which account each conversation is bound to.

A request's session key, in order (``docs/protocol.md`` §3.3, §3.4):

1. the ``x-claude-code-session-id`` header Claude Code sends — the body is not parsed;
2. ``session_id`` inside the JSON string ``metadata.user_id`` (or the older ``..._session_<uuid>``);
3. a SHA-256 of the system text, the first user message's text and the sorted tool names.

A key is always 34 characters whatever the client sent: a session id is hashed where it is read
(``"s:"`` + the first 32 hex digits of its SHA-256), content is hashed anyway (``"h:"`` + 32 hex).

:class:`SessionTable` binds each key to an account with a sliding TTL, so a conversation keeps its
account (and its prompt cache) while that account can serve it. The table is capped: a new session
in a full table evicts the least recently used binding, never the others.
"""

from __future__ import annotations

import collections
import hashlib
import json
from typing import Any, Iterable, Mapping, NamedTuple

SESSION_HEADER = "x-claude-code-session-id"
KEY_HEX_DIGITS = 32  # 128 bits of SHA-256: collisions are not a concern at 20,000 live sessions
MAX_SESSIONS = 20000


def id_key(session_id: str) -> str:
    """The fixed-size key of a client's session id: ``"s:"`` + 32 hex digits of its SHA-256."""
    return "s:" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:KEY_HEX_DIGITS]


def is_key(key: str) -> bool:
    """Whether ``key`` has the shape :func:`session_key` produces (``s:``/``h:`` + 32 lower-case hex)."""
    return (len(key) == 2 + KEY_HEX_DIGITS and key[:2] in ("s:", "h:")
            and all(c in "0123456789abcdef" for c in key[2:]))


def migrate_key(key: str) -> str:
    """A key from a ``state.json`` written before keys were hashed (version 1: ``"s:<raw id>"``) as
    :func:`session_key` makes it today, so bindings survive the upgrade; ``"h:"`` keys were hashed already."""
    return id_key(key[2:]) if key.startswith("s:") else key


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
                return id_key(sid)
        elif "_session_" in user_id:
            return id_key(user_id.rsplit("_session_", 1)[1])
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
    return "h:" + digest[:KEY_HEX_DIGITS]


def session_key(headers: Mapping[str, str], body: bytes) -> str | None:
    """The session key of a request: ``"s:<hash of the id>"`` from the header or metadata,
    ``"h:<hash>"`` from content; 34 characters either way (see :func:`id_key`).

    The body is parsed only when the header is absent. Returns None if nothing identifies it.
    """
    sid = headers.get(SESSION_HEADER)
    if sid:
        return id_key(sid.strip())
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
    """Session key → :class:`SessionEntry`, with a sliding TTL, a size cap and live counts per account.

    Not thread-safe: its owner (:class:`~shunt_lib.state.Pool`) calls it under its lock.

    Entries are kept in order of last use (an ``OrderedDict``). With one TTL for all, that is also
    the order of expiry, so expired bindings are dropped from the front as time passes, and the number
    of bindings per account is kept as they come and go: counting never walks the table. (After a
    reload shortens ``ttl_s`` an entry may expire before older ones; it is then counted until those
    go, and :meth:`account` never returns it.)

    :param ttl_s: how long a binding lives after its last use, seconds.
    :param max_entries: the cap; binding a new session in a full table first drops expired
        bindings, then evicts the least recently used one (that session is routed afresh).
    """

    def __init__(self, ttl_s: float, max_entries: int = MAX_SESSIONS):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, SessionEntry] = collections.OrderedDict()
        self._counts: collections.Counter[str] = collections.Counter()  # bindings per account in _entries

    def __len__(self) -> int:
        return len(self._entries)

    def account(self, key: str | None, now_s: float) -> str | None:
        """The account ``key`` is bound to, or None (no key, no binding, or expired)."""
        if key is None:
            return None
        entry = self._entries.get(key)
        return entry.account if entry is not None and entry.expires_at_s > now_s else None

    def bind(self, key: str, account: str, now_s: float) -> None:
        """Bind ``key`` to ``account`` (or renew the binding) for another ``ttl_s``; O(1) amortised."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._counts[old.account] -= 1
        else:
            self.expire(now_s)
            while len(self._entries) >= self.max_entries:
                self._drop_oldest()
        self._entries[key] = SessionEntry(account, now_s + self.ttl_s)
        self._counts[account] += 1

    def _drop_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self._counts[entry.account] -= 1

    def expire(self, now_s: float) -> None:
        """Drop the expired bindings at the front (least recently used end) of the table."""
        while self._entries:
            entry = next(iter(self._entries.values()))
            if entry.expires_at_s > now_s:
                return
            self._drop_oldest()

    def active_counts(self, names: Iterable[str], now_s: float) -> dict[str, int]:
        """Live sessions per account, for every name in ``names`` (0 where none); O(len(names))."""
        self.expire(now_s)
        return {n: max(0, self._counts.get(n, 0)) for n in names}

    def keep_accounts(self, names: set[str] | frozenset[str]) -> None:
        """Drop every binding to an account not in ``names`` (accounts removed by a reload)."""
        self._entries = collections.OrderedDict((k, e) for k, e in self._entries.items() if e.account in names)
        self._counts = collections.Counter(e.account for e in self._entries.values())

    def to_json(self, now_s: float) -> dict:
        """Live bindings as ``{key: {"account": NAME, "expires_at_s": EPOCH_S}}``, least recently used first."""
        return {k: {"account": e.account, "expires_at_s": e.expires_at_s}
                for k, e in self._entries.items() if e.expires_at_s > now_s}

    def load_json(self, data: object, accounts: set[str] | frozenset[str], now_s: float, *,
                  migrate: bool = False) -> None:
        """Restore bindings saved by :meth:`to_json`; malformed, expired or unknown-account ones are
        skipped, and at most ``max_entries`` of the most recently used are kept.

        :param migrate: the file predates hashed keys: hash its ``"s:"`` keys (:func:`migrate_key`).
        """
        if not isinstance(data, dict):
            return
        loaded = []
        for key, s in data.items():
            if isinstance(key, str) and isinstance(s, dict) and isinstance(s.get("account"), str) \
                    and s["account"] in accounts:
                exp = s.get("expires_at_s")
                if isinstance(exp, (int, float)) and not isinstance(exp, bool) and now_s < exp <= now_s + 366 * 86400:
                    key = migrate_key(key) if migrate else key
                    if is_key(key):
                        loaded.append((float(exp), key, s["account"]))
        loaded.sort()  # by expiry: the order of last use
        for exp, key, account in loaded[-self.max_entries:]:
            old = self._entries.pop(key, None)
            if old is not None:
                self._counts[old.account] -= 1
            self._entries[key] = SessionEntry(account, exp)
            self._counts[account] += 1
