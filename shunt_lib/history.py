"""Usage history: every finished request in ``usage.db`` (SQLite, WAL) in shunt's home.

Request threads only append their record to a queue (:meth:`HistoryWriter.add`: no I/O, no
SQLite). The writer thread owns the only writing connection: every :data:`BATCH_INTERVAL_S` it
writes what was queued in one transaction (raw rows and their minute rollups, see
:mod:`shunt_lib.history_rollup`), and prunes old rows once an hour. A committed transaction in WAL
mode survives ``kill -9`` of the process, so a crash loses at most the batch not yet written
(https://www.sqlite.org/wal.html). A database SQLite cannot open or finds malformed is moved aside
to ``usage.db.corrupt-<epoch s>`` with a warning and a new one started; serving never waits for it.
"""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
import time
from typing import Callable

from .history_rollup import RAW_COLUMNS, ROLLUP_COUNTERS, UNNAMED_CLIENT, cutoffs, raw_row, rollup
from .loop import Loop
from .record import RequestRecord
from .fsutil import create_private

log = logging.getLogger("shunt.history")

DB_NAME = "usage.db"
BATCH_INTERVAL_S = 0.5  # how often queued records are written (a kill -9 loses at most this much)
PRUNE_INTERVAL_S = 3600.0
MAX_QUEUED = 100_000  # records kept while the database cannot be written; the oldest go first
THREAD_NAME = "shunt-history"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS requests (
    ts_s INTEGER NOT NULL, account TEXT, model TEXT NOT NULL, status INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL, cache_write_1h_tokens INTEGER NOT NULL, duration_ms INTEGER NOT NULL, held_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL, client TEXT);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts_s);
"""
_ROLLUP_TABLE = f"""
CREATE TABLE IF NOT EXISTS rollup_minute (
    minute_s INTEGER NOT NULL, account TEXT NOT NULL, model TEXT NOT NULL, client TEXT NOT NULL,
    {", ".join(f"{c} INTEGER NOT NULL" for c in ROLLUP_COUNTERS)},
    PRIMARY KEY (minute_s, account, model, client)) WITHOUT ROWID;
"""
_INSERT_RAW = f"INSERT INTO requests ({', '.join(RAW_COLUMNS)}) VALUES ({', '.join('?' * len(RAW_COLUMNS))})"
_UPSERT_ROLLUP = (f"INSERT INTO rollup_minute (minute_s, account, model, client, {', '.join(ROLLUP_COUNTERS)}) "
                  f"VALUES (?, ?, ?, ?, {', '.join('?' * len(ROLLUP_COUNTERS))}) "
                  f"ON CONFLICT (minute_s, account, model, client) DO UPDATE SET "
                  + ", ".join(f"{c} = {c} + excluded.{c}" for c in ROLLUP_COUNTERS))


def db_path(home: str) -> str:
    """``usage.db`` in shunt's home ``home``."""
    return os.path.join(home, DB_NAME)


def open_db(path: str, now_s: float) -> sqlite3.Connection:
    """Open (creating, mode 0600) the history database at ``path`` for writing, in WAL mode, with its
    tables. A file SQLite cannot use (not a database, malformed) is moved aside to
    ``<path>.corrupt-<int(now_s)>`` (with its ``-wal``/``-shm``) with a warning, and a new one made.

    :raises sqlite3.Error: / :raises OSError: if even a new database cannot be made (unwritable home).
    """
    try:
        return _open(path)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
            raise  # locked, unwritable, disk full: not the file's fault
        _move_aside(path, now_s, exc)
        return _open(path)


def _open(path: str) -> sqlite3.Connection:
    create_private(path)  # never opens an existing database: that would drop its connections' locks
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process crash, not a power cut
        conn.execute("PRAGMA cache_size=-256")  # KiB: rows are appended, not read back; the 2 MiB default is RSS for nothing
        row = conn.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({row[0] if row else 'no answer'})")
        conn.executescript(_SCHEMA)
        _add_missing_columns(conn)
        _key_rollups_by_client(conn)
        conn.executescript(_ROLLUP_TABLE)
    except BaseException:
        conn.close()
        raise
    return conn


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Add the counters a database made by an older shunt lacks (as 0 for the rows it holds)."""
    for table, columns in (("requests", RAW_COLUMNS), ("rollup_minute", ROLLUP_COUNTERS)):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if have and column not in have and column.endswith("_tokens"):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")


def _key_rollups_by_client(conn: sqlite3.Connection) -> None:
    """Rebuild the minute rollups of a database made before they were kept per client (a primary key
    cannot be altered in place): in one transaction, every old row becomes its own row of client
    ``local`` (:data:`~shunt_lib.history_rollup.UNNAMED_CLIENT`: shunt served only its user's own
    clients then)."""
    have = [row[1] for row in conn.execute("PRAGMA table_info(rollup_minute)")]
    if not have or "client" in have:
        return
    counters = ", ".join(ROLLUP_COUNTERS)
    with conn:
        conn.execute("BEGIN")
        conn.execute("ALTER TABLE rollup_minute RENAME TO rollup_minute_old")
        conn.execute(_ROLLUP_TABLE)
        conn.execute(f"INSERT INTO rollup_minute (minute_s, account, model, client, {counters}) "
                     f"SELECT minute_s, account, model, ?, {counters} FROM rollup_minute_old", (UNNAMED_CLIENT,))
        conn.execute("DROP TABLE rollup_minute_old")
    log.info("usage history: minute rollups now kept per client (older ones counted as %s)", UNNAMED_CLIENT)


def write_batch(conn: sqlite3.Connection, records: list[RequestRecord]) -> None:
    """Write finished requests as raw rows and add them into their minute rollups, in one transaction."""
    rows = [raw_row(r) for r in records]
    with conn:
        conn.execute("BEGIN")
        conn.executemany(_INSERT_RAW, rows)
        conn.executemany(_UPSERT_ROLLUP, [(*key, *counters) for key, counters in rollup(rows).items()])


def prune(conn: sqlite3.Connection, now_s: float, raw_days: int, rollup_days: int) -> tuple[int, int]:
    """Delete raw rows older than ``raw_days`` and rollups older than ``rollup_days`` before ``now_s``.
    :returns: ``(raw rows deleted, rollup rows deleted)``."""
    raw_before, rollup_before = cutoffs(now_s, raw_days, rollup_days)
    with conn:
        conn.execute("BEGIN")
        raw = conn.execute("DELETE FROM requests WHERE ts_s < ?", (raw_before,)).rowcount
        rolled = conn.execute("DELETE FROM rollup_minute WHERE minute_s < ?", (rollup_before,)).rowcount
    return raw, rolled


class HistoryWriter(Loop):
    """The background writer of ``usage.db``: :meth:`add` from any thread (an append to a queue);
    the thread writes the queue every ``interval_s`` and prunes every :data:`PRUNE_INTERVAL_S`.
    :meth:`stop` writes what is left and closes the database, on the writer thread itself: no other
    thread ever touches its connection.

    :param path: the database file; :param raw_days: / :param rollup_days: how long raw rows and
        minute rollups are kept; :param clock: epoch seconds (for pruning and the corrupt file's name).
    """

    def __init__(self, path: str, *, raw_days: int = 7, rollup_days: int = 90, interval_s: float = BATCH_INTERVAL_S,
                 clock: Callable[[], float] = time.time):
        super().__init__(THREAD_NAME)
        self.path, self.raw_days, self.rollup_days, self.interval_s, self.clock = (
            path, raw_days, rollup_days, interval_s, clock)
        self._queue: collections.deque[RequestRecord] = collections.deque(maxlen=MAX_QUEUED)
        self._conn: sqlite3.Connection | None = None
        self._next_prune_s = float("-inf")  # monotonic
        self._failed_at: float | None = None  # monotonic s of the last failure logged
        self.batches = 0  #: transactions committed (tests)
        self.written = threading.Event()  #: set after each committed batch (tests wait on it)

    def add(self, record: RequestRecord) -> None:
        """Queue a finished request for the next batch (any thread; no I/O)."""
        self._queue.append(record)

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.safe_tick()
        self.safe_tick()  # what was queued before the stop
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def tick(self) -> None:
        if self._conn is None:
            try:
                self._conn = open_db(self.path, self.clock())
            except (sqlite3.Error, OSError) as exc:
                self._report(f"cannot open usage history {self.path}: {exc}")
                return
        if time.monotonic() >= self._next_prune_s:
            self._next_prune_s = time.monotonic() + PRUNE_INTERVAL_S
            self._guard(lambda conn: prune(conn, self.clock(), self.raw_days, self.rollup_days))
        batch = []
        while self._queue:
            batch.append(self._queue.popleft())
        if not batch:
            return
        if self._guard(lambda conn: write_batch(conn, batch)):
            self.batches += 1
            self.written.set()
        elif self._conn is not None:  # not the file's fault (disk full, locked): try again next tick
            self._queue.extendleft(reversed(batch))

    def _guard(self, action: Callable[[sqlite3.Connection], object]) -> bool:
        """Run ``action`` on the connection; a corrupt database is closed to be moved aside at the next
        tick, other failures are logged (once a minute). :returns: whether it succeeded."""
        assert self._conn is not None
        try:
            action(self._conn)
            return True
        except sqlite3.DatabaseError as exc:
            self._report(f"usage history {self.path}: {exc}")
            if not isinstance(exc, sqlite3.OperationalError) or "malformed" in str(exc):
                self._conn.close()
                self._conn = None
                _move_aside(self.path, self.clock(), exc)
            return False

    def _report(self, message: str) -> None:
        now = time.monotonic()
        if self._failed_at is None or now - self._failed_at >= 60:
            self._failed_at = now
            log.warning("%s (requests are still served; logged once a minute)", message)


def _move_aside(path: str, now_s: float, reason: Exception) -> None:
    """Move ``path`` (and its ``-wal``/``-shm``) to ``<path>.corrupt-<int(now_s)>``, with a warning."""
    aside = f"{path}.corrupt-{int(now_s)}"
    log.warning("usage history %s is unusable (%s): moved aside to %s; starting a new one", path, reason, aside)
    for suffix in ("", "-wal", "-shm"):
        try:
            os.replace(path + suffix, aside + suffix)
        except FileNotFoundError:
            pass
