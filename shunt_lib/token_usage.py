"""Client tokens' budgets on disk: the ``token_usage`` table of ``tokens.db`` (SQLite, WAL, mode 0600).

One row per token and UTC day: ``tokens`` (input + output + cache writes, what the token budgets and
``tpm`` count), ``cache_read_tokens`` (counted, not limited), ``cost_usd`` (API-equivalent,
:mod:`shunt_lib.pricing`; an unpriced model adds 0) and ``requests``. A month's use is the sum of its
days. The table lives beside the token store's own table in the same file; each is created
idempotently by whoever opens the file first, with its own connection.

Request threads never touch the database: :class:`~shunt_lib.client_meter.ClientMeter` queues each
charge for :class:`UsageWriter`, whose thread adds a batch every :data:`BATCH_INTERVAL_S` in one
transaction. A committed WAL transaction survives ``kill -9``, so a crash loses at most the last
quarter second of charges. At start the meter loads today's and this month's totals
(:func:`load_totals`); :func:`read_usage` is the same for another process (``shunt token list``).
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import time
from typing import NamedTuple

from .client_limits import day_key, month_key
from .loop import Loop
from .fsutil import create_private, query_read_only

log = logging.getLogger("shunt.limits")

BATCH_INTERVAL_S = 0.25  # how often queued charges are written (a kill -9 loses at most this much)
MAX_QUEUED = 100_000  # charges kept while the database cannot be written; the oldest go first
THREAD_NAME = "shunt-token-usage"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS token_usage (
    token_id TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (token_id, day)) WITHOUT ROWID;
"""
_UPSERT = ("INSERT INTO token_usage (token_id, day, tokens, cache_read_tokens, cost_usd, requests) "
           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_id, day) DO UPDATE SET "
           "tokens = tokens + excluded.tokens, cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens, "
           "cost_usd = cost_usd + excluded.cost_usd, requests = requests + excluded.requests")


class Charge(NamedTuple):
    """One finished request's charge to ``token_id`` on UTC ``day`` (``YYYY-MM-DD``)."""

    token_id: str
    day: str
    tokens: int
    cache_read_tokens: int
    cost_usd: float
    requests: int = 1


class TokenUsage(NamedTuple):
    """A client token's use: today (UTC), this UTC month, and (from a running server only, else 0) the
    last minute and the requests in flight now."""

    day_tokens: int = 0
    day_cache_read_tokens: int = 0
    day_cost_usd: float = 0.0
    day_requests: int = 0
    month_tokens: int = 0
    month_cache_read_tokens: int = 0
    month_cost_usd: float = 0.0
    month_requests: int = 0
    minute_requests: int = 0
    minute_tokens: int = 0
    inflight: int = 0

    def as_dict(self) -> dict:
        """A JSON-ready mapping (for ``/status`` and ``shunt token list --json``)."""
        return {"today": {"tokens": self.day_tokens, "cache_read_tokens": self.day_cache_read_tokens,
                          "cost_usd": round(self.day_cost_usd, 6), "requests": self.day_requests},
                "month": {"tokens": self.month_tokens, "cache_read_tokens": self.month_cache_read_tokens,
                          "cost_usd": round(self.month_cost_usd, 6), "requests": self.month_requests},
                "last_minute": {"requests": self.minute_requests, "tokens": self.minute_tokens},
                "inflight": self.inflight}


def open_db(path: str) -> sqlite3.Connection:
    """Open (creating, mode 0600) ``tokens.db`` for writing, WAL, with the ``token_usage`` table.

    :raises sqlite3.Error: / :raises OSError:
    """
    create_private(path)  # never opens an existing database: that would drop its connections' locks
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process crash, not a power cut
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def write_charges(conn: sqlite3.Connection, charges: list[Charge]) -> None:
    """Add ``charges`` (summed per token and day first) in one transaction."""
    summed: dict[tuple[str, str], list] = {}
    for c in charges:
        row = summed.setdefault((c.token_id, c.day), [0, 0, 0.0, 0])
        row[0] += c.tokens
        row[1] += c.cache_read_tokens
        row[2] += c.cost_usd
        row[3] += c.requests
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_UPSERT, [(t, d, *v) for (t, d), v in summed.items()])


def load_totals(conn: sqlite3.Connection, now_s: float) -> dict[str, TokenUsage]:
    """Today's and this month's totals per token id at ``now_s`` (UTC), from ``conn``."""
    today, month = day_key(now_s), month_key(now_s)
    out: dict[str, TokenUsage] = {}
    rows = conn.execute("SELECT token_id, day, tokens, cache_read_tokens, cost_usd, requests FROM token_usage "
                        "WHERE day >= ? AND day < ?", (month + "-01", month + "-99")).fetchall()
    for token_id, day, tokens, cache_read, cost, requests in rows:
        u = out.get(token_id, TokenUsage())
        u = u._replace(month_tokens=u.month_tokens + tokens, month_cache_read_tokens=u.month_cache_read_tokens + cache_read,
                       month_cost_usd=u.month_cost_usd + cost, month_requests=u.month_requests + requests)
        if day == today:
            u = u._replace(day_tokens=tokens, day_cache_read_tokens=cache_read, day_cost_usd=cost, day_requests=requests)
        out[token_id] = u
    return out


def read_usage(path: str, now_s: float) -> dict[str, TokenUsage]:
    """Per token id: its use today and this month (UTC) as recorded in ``path`` (``Paths.tokens_db``),
    read-only; {} if the file or the table does not exist yet. The last minute and in-flight counts are
    known only to the running server (:meth:`ClientMeter.usage <shunt_lib.client_meter.ClientMeter.usage>`)."""
    return query_read_only(path, lambda conn: load_totals(conn, now_s), {})


class UsageWriter(Loop):
    """The background writer of ``token_usage``: :meth:`add` from any thread (an append to a queue);
    the thread writes what was queued every ``interval_s``; :meth:`stop` writes the rest and closes
    the database on the writer thread (no other thread ever touches its connection)."""

    def __init__(self, path: str, *, interval_s: float = BATCH_INTERVAL_S):
        super().__init__(THREAD_NAME)
        self.path, self.interval_s = path, interval_s
        self._queue: collections.deque[Charge] = collections.deque(maxlen=MAX_QUEUED)
        self._conn: sqlite3.Connection | None = None
        self._failed_at: float | None = None
        self.batches = 0  #: transactions committed (tests)

    def add(self, charge: Charge) -> None:
        """Queue a charge for the next batch (any thread; no I/O)."""
        self._queue.append(charge)

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.safe_tick()
        self.safe_tick()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def tick(self) -> None:
        if not self._queue:
            return
        try:
            if self._conn is None:
                self._conn = open_db(self.path)
            batch = []
            while self._queue:
                batch.append(self._queue.popleft())
            try:
                write_charges(self._conn, batch)
            except BaseException:
                self._queue.extendleft(reversed(batch))
                raise
            self.batches += 1
        except (sqlite3.Error, OSError) as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            now = time.monotonic()
            if self._failed_at is None or now - self._failed_at >= 60:
                self._failed_at = now
                log.warning("cannot write client token usage to %s: %s (kept in memory; logged once a minute)",
                            self.path, exc)
