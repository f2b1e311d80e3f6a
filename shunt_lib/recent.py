"""The last finished requests, kept in memory for the live views (``GET /recent``, ``shunt monitor``,
the dashboard's feed).

A :class:`RecentRequests` is a :class:`~shunt_lib.finish.Finish` listener: it keeps the last
``maxlen`` request records, each numbered in order so that a view can ask for only the new ones.
"""

from __future__ import annotations

import collections
import threading

from .record import RequestRecord

#: The fields of a request record a view shows (no request body, no header, nothing secret).
FEED_FIELDS = ("ts_s", "account", "model", "status", "input_tokens", "output_tokens", "cache_read_tokens",
               "cache_creation_tokens", "duration_ms", "held_ms", "attempts", "broke", "request_id", "client")


class RecentRequests:
    """A ring of the last ``maxlen`` finished requests. Thread-safe: request threads call :meth:`add`,
    control requests call :meth:`after`."""

    def __init__(self, maxlen: int = 200):
        self._lock = threading.Lock()
        self._rows: collections.deque[tuple[int, RequestRecord]] = collections.deque(maxlen=maxlen)
        self._seq = 0

    def add(self, record: RequestRecord) -> None:
        """Keep one finished request (the listener hook, on the request's thread: the record is kept as
        it is and shaped for a view only when asked); the oldest falls off when the ring is full."""
        with self._lock:
            self._seq += 1
            self._rows.append((self._seq, record))

    def after(self, seq: int = 0, limit: int = 50) -> dict:
        """The requests numbered above ``seq``, oldest first, at most the newest ``limit`` of them.

        :returns: ``{"last_seq": int, "requests": [{"seq", "ts_s", "account", "model", "status",
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "duration_ms",
            "held_ms", "attempts", "broke", "request_id", "client", "held", "moved"}, ...]}``; ``client``: who
            sent it (a client token's label, ``local`` or ``admin``); ``held``: it waited
            for an account; ``moved``: it took more than one upstream attempt (failover).
        """
        with self._lock:
            kept = [(n, r) for n, r in self._rows if n > seq]
            last = self._seq
        return {"last_seq": last, "requests": [_row(n, r) for n, r in kept[-limit:]] if limit > 0 else []}


def _row(seq: int, record: RequestRecord) -> dict:
    row = {k: record.get(k) for k in FEED_FIELDS}
    row.update(seq=seq, held=record.get("held_ms", 0) > 0, moved=record.get("attempts", 1) > 1)
    return row
