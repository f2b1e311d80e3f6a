"""Reading the usage history (``usage.db``): buckets for ``GET /history`` and totals for ``shunt usage``.

Both read the minute rollups through a read-only connection of their own, so they work while shunt
writes (WAL readers do not block the writer) and with shunt stopped. A missing database reads as empty.
"""

from __future__ import annotations

import os
import sqlite3

from .history_rollup import MINUTE_S, ROLLUP_COUNTERS, UNNAMED_CLIENT

BY = ("account", "model", "client")
MAX_BUCKETS = 10_000


def _connect(path: str) -> sqlite3.Connection | None:
    """A read-only connection to ``path``, or None if there is no database yet."""
    if not os.path.exists(path):
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)


def _key(conn: sqlite3.Connection, by: str) -> str:
    """The SQL of the key ``by``: a column; ``client`` of a database not yet migrated to rollups per
    client (an older shunt wrote it and no newer one has opened it for writing) reads as ``local``."""
    if by == "client" and "client" not in {r[1] for r in conn.execute("PRAGMA table_info(rollup_minute)")}:
        return f"'{UNNAMED_CLIENT}'"
    return by


def _sums() -> str:
    return ", ".join(f"SUM({c})" for c in ROLLUP_COUNTERS)


def buckets(path: str, since_s: int, until_s: int, step_s: int, by: str) -> list[dict]:
    """Totals per ``step_s``-wide bucket from ``since_s`` (inclusive) to ``until_s`` (exclusive), one
    entry per bucket and key (an account, ``""`` for requests no account answered, a model, or a client:
    a client token's label, ``local`` or ``admin``):
    ``{"start_s", "key", <each of ROLLUP_COUNTERS>}``, ordered by start then key. Empty buckets are left out.

    :param by: ``"account"``, ``"model"`` or ``"client"``. :raises ValueError: a bad ``by``, ``step_s`` not a positive
        multiple of 60, ``until_s <= since_s`` or more than :data:`MAX_BUCKETS` buckets.
    :raises sqlite3.Error: an unreadable database.
    """
    if by not in BY:
        raise ValueError("by must be account, model or client")
    if step_s <= 0 or step_s % MINUTE_S:
        raise ValueError("step_s must be a positive multiple of 60")
    if until_s <= since_s:
        raise ValueError("until_s must be after since_s")
    if (until_s - since_s) // step_s > MAX_BUCKETS:
        raise ValueError(f"at most {MAX_BUCKETS} buckets: use a larger step_s")
    conn = _connect(path)
    if conn is None:
        return []
    try:
        key = _key(conn, by)
        rows = conn.execute(f"SELECT ? + (minute_s - ?) / ? * ? AS start, {key} AS k, {_sums()} FROM rollup_minute "
                            f"WHERE minute_s >= ? AND minute_s < ? GROUP BY start, k ORDER BY start, k",
                            (since_s, since_s, step_s, step_s, since_s, until_s)).fetchall()
    finally:
        conn.close()
    return [{"start_s": r[0], "key": r[1], **dict(zip(ROLLUP_COUNTERS, r[2:]))} for r in rows]


def totals(path: str, since_s: int, by: str) -> list[dict]:
    """Totals since ``since_s`` per key and model: ``{"key", "model", <each of ROLLUP_COUNTERS>}``.

    :param by: ``"account"``, ``"model"``, ``"client"`` or ``"day"`` (the local date, ``YYYY-MM-DD``). The model is
        kept apart in every row so that a cost can be priced per model (see :mod:`shunt_lib.usage_view`).
    :raises ValueError: a bad ``by``. :raises sqlite3.Error: an unreadable database.
    """
    key = {"account": "account", "model": "model", "client": "client",
           "day": "date(minute_s, 'unixepoch', 'localtime')"}.get(by)
    if key is None:
        raise ValueError("by must be account, model, client or day")
    conn = _connect(path)
    if conn is None:
        return []
    try:
        if by == "client":
            key = _key(conn, by)
        rows = conn.execute(f"SELECT {key} AS k, model, {_sums()} FROM rollup_minute WHERE minute_s >= ? "
                            "GROUP BY k, model ORDER BY k, model", (since_s,)).fetchall()
    finally:
        conn.close()
    return [{"key": r[0], "model": r[1], **dict(zip(ROLLUP_COUNTERS, r[2:]))} for r in rows]
