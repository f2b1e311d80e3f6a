"""The running server's view of ``tokens.db``: an in-memory index the request path reads, kept fresh
by a background thread.

:class:`ClientTokens` holds id → (record, secret hash). :meth:`ClientTokens.check` is all a request
costs: one parse, one dict lookup, one SHA-256 and :func:`hmac.compare_digest` (no SQLite, no lock).
:class:`TokenWatcher` (``shunt-tokens``) asks SQLite every :data:`POLL_S` whether another connection
committed (``PRAGMA data_version``, https://www.sqlite.org/pragma.html#pragma_data_version; a missing,
replaced or deleted file is noticed by its inode) and swaps in a new index, so a ``shunt token revoke``
in another process takes effect within a second. It also writes the tokens' ``last_used_s`` in
batches (every :data:`TOUCH_INTERVAL_S` and at stop), never on the request path.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from typing import Callable

from . import token_format
from .clients import TokenRecord
from .loop import Loop
from .token_store import TokenStore, read_all

log = logging.getLogger("shunt.tokens")

POLL_S = 0.25
TOUCH_INTERVAL_S = 15.0

#: Why a client token was refused: the token is not shaped like one, no live record has its id and
#: secret, its record is past its expiry, or it was revoked.
MALFORMED, UNKNOWN, EXPIRED, REVOKED = "malformed", "unknown", "expired", "revoked"


class ClientTokens:
    """The index of ``tokens.db`` at ``path`` (empty while the file does not exist)."""

    def __init__(self, path: str):
        self.path = path
        self._index: dict[str, tuple[TokenRecord, bytes]] = {}  # replaced whole, never mutated: read without a lock
        self._used: dict[str, float] = {}  # id → last use, not yet written (a plain dict store per request)
        self._lock = threading.Lock()  # guards the read connection and the reload
        self._flush_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None
        self._version: int | None = None
        self._writer: TokenStore | None = None
        self._problem: str | None = None  # the last read error, warned about once
        #: called (no arguments, on the thread that polled) after each reload of a changed file: with
        #: [cluster], the push of changes another process made (shunt_lib.cluster_tokens)
        self.listeners: list[Callable[[], None]] = []

    # -- the request path ------------------------------------------------------------------------
    def check(self, token: str, now_s: float) -> TokenRecord | str:
        """The record of a valid token, else why not: :data:`MALFORMED`, :data:`UNKNOWN` (no such id, or
        the wrong secret for it), :data:`EXPIRED` or :data:`REVOKED` (said only to the secret's holder)."""
        parsed = token_format.parse(token)
        if parsed is None:
            return MALFORMED
        entry = self._index.get(parsed.id)
        if entry is None or not token_format.verify(parsed.secret, entry[1]):
            return UNKNOWN
        record = entry[0]
        if record.revoked_s is not None:
            return REVOKED
        if record.expires_s is not None and now_s >= record.expires_s:
            return EXPIRED
        self._used[record.id] = now_s
        return record

    def records(self) -> list[TokenRecord]:
        """Every token the index holds (live, expired, revoked)."""
        return [r for r, _ in self._index.values()]

    def known(self, token_id: str) -> bool:
        """Whether a token with this id is in the index (live, expired or revoked)."""
        return token_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    # -- keeping it fresh --------------------------------------------------------------------------
    def poll(self) -> bool:
        """Reload the index if ``tokens.db`` changed since the last look. :returns: whether it was reloaded.
        A file SQLite cannot read empties the index (an allow-list fails closed), with one warning."""
        try:
            changed = self._poll()
        except sqlite3.Error as exc:
            with self._lock:
                self._close_reader()
                self._index = {}
            if self._problem != str(exc):
                self._problem = str(exc)
                log.warning("cannot read the client tokens in %s: %s; no client token is accepted until it can "
                            "be read", self.path, exc)
            return False
        if self._problem is not None:
            self._problem = None
            log.info("client tokens readable again in %s", self.path)
        if changed:
            for listener in list(self.listeners):
                try:
                    listener()
                except Exception:  # noqa: BLE001 - a listener's failure must not stop the index's updates
                    log.exception("a listener of the client tokens' changes failed")
        return changed

    def _poll(self) -> bool:
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._close_reader()
                changed = bool(self._index)
                self._index = {}
                return changed
            ident = (st.st_dev, st.st_ino)
            if self._conn is None or ident != self._ident:
                self._close_reader()
                uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=rw"  # never create it
                self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0, check_same_thread=False)
                self._ident = ident
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return False
            index = read_all(self._conn)
            self._version = version
            old, self._index = self._index, index
        for tid, (record, _) in index.items():
            before = old.get(tid)
            if record.revoked_s is not None and before is not None and before[0].revoked_s is None:
                log.info("client token %s (%s) revoked", tid, record.label)
        return True

    def refresh(self) -> None:
        """Reload now, not at the next poll (after ``/admin/tokens`` wrote: its answer must hold at once)."""
        with self._lock:
            self._version = None
        self.poll()

    def _close_reader(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._ident, self._version = None, None, None

    def flush_used(self) -> None:
        """Write the tokens' last uses gathered since the last flush (one transaction)."""
        with self._flush_lock:
            used, self._used = self._used, {}
            if not used or not os.path.exists(self.path):
                return
            if self._writer is None:
                self._writer = TokenStore(self.path)
            try:
                self._writer.touch(used.items())
            except sqlite3.Error as exc:
                log.warning("cannot record when client tokens were last used in %s: %s", self.path, exc)
                self._writer.close()
                self._writer = None

    def close(self) -> None:
        """Write what is pending and close the connections."""
        self.flush_used()
        with self._flush_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._lock:
            self._close_reader()


class TokenWatcher(Loop):
    """``shunt-tokens``: polls ``tokens.db`` every ``poll_s`` (:meth:`ClientTokens.poll`) and writes last
    uses every ``touch_interval_s``; at stop, writes the rest and closes the index's connections."""

    def __init__(self, tokens: ClientTokens, *, poll_s: float = POLL_S, touch_interval_s: float = TOUCH_INTERVAL_S,
                 monotonic: Callable[[], float] = time.monotonic):
        super().__init__("shunt-tokens")
        self.tokens, self.poll_s, self.touch_interval_s, self.monotonic = tokens, poll_s, touch_interval_s, monotonic
        self._next_touch = monotonic() + touch_interval_s

    def tick(self) -> None:
        self.tokens.poll()
        if self.monotonic() >= self._next_touch:
            self._next_touch = self.monotonic() + self.touch_interval_s
            self.tokens.flush_used()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.safe_tick()
            self.stopping.wait(self.poll_s)
        try:
            self.tokens.close()
        except Exception:
            log.exception("shunt-tokens: closing failed")
