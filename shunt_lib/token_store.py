"""The client tokens in ``tokens.db`` (SQLite, WAL, mode 0600): the allow-list.

A token works only while its row exists, is not revoked and not expired; only the SHA-256 of its
secret is stored (:mod:`shunt_lib.token_format`). Every writer (``shunt token ...``, ``/admin/tokens``,
the server's batched ``last_used_s``) opens its own connection; a running ``serve`` notices other
processes' commits by ``PRAGMA data_version`` (:mod:`shunt_lib.token_index`). The schema is created
with ``IF NOT EXISTS`` and only the ``tokens`` table is touched: other tables in the file (the
limits' usage) are left alone. ``changed_s`` (added to older files when opened for writing) is when a
row was last created, revoked or rotated: with several shunts sharing their tokens, the newer record
wins (:mod:`shunt_lib.cluster_tokens`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Callable, Iterable, NamedTuple

from . import token_format
from .clients import TokenBinding, TokenLimits, TokenRecord
from .token_input import TokenSpec
from .fsutil import create_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created_s REAL NOT NULL,
    expires_s REAL,
    revoked_s REAL,
    last_used_s REAL,
    rpm INTEGER,
    tpm INTEGER,
    daily_tokens INTEGER,
    monthly_usd REAL,
    max_concurrent INTEGER,
    accounts TEXT NOT NULL DEFAULT '[]',
    kinds TEXT NOT NULL DEFAULT '[]',
    models TEXT NOT NULL DEFAULT '[]',
    changed_s REAL
)
"""
COLUMNS = ("id, label, secret_sha256, created_s, expires_s, revoked_s, last_used_s, rpm, tpm, daily_tokens, "
           "monthly_usd, max_concurrent, accounts, kinds, models")


class TokenError(ValueError):
    """A token operation that cannot be done (unknown id, duplicate label, already revoked); the message says why."""


class UnknownToken(TokenError):
    """No token has the id asked for."""


def open_db(path: str) -> sqlite3.Connection:
    """Open ``path`` for writing, creating it with mode 0600 before anything is written, in WAL mode,
    with the ``tokens`` table. Autocommit: callers use ``BEGIN IMMEDIATE`` around read-modify-write."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    create_private(path)  # never opens an existing database: that would drop its connections' locks
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(SCHEMA)
        if "changed_s" not in {row[1] for row in conn.execute("PRAGMA table_info(tokens)")}:
            conn.execute("ALTER TABLE tokens ADD COLUMN changed_s REAL")  # a file written before it existed
    except BaseException:
        conn.close()
        raise
    return conn


def _names(text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def record_from_row(row: tuple) -> tuple[TokenRecord, bytes]:
    """A ``tokens`` row (in :data:`COLUMNS` order) → (its record, the secret's stored hash)."""
    (tid, label, digest, created, expires, revoked, last_used, rpm, tpm, daily, usd, conc, accounts, kinds,
     models) = row
    record = TokenRecord(tid, label, created, expires, revoked, last_used,
                         TokenLimits(rpm, tpm, daily, usd, conc),
                         TokenBinding(_names(accounts), _names(kinds), _names(models)))
    return record, bytes(digest)


def read_all(conn: sqlite3.Connection) -> dict[str, tuple[TokenRecord, bytes]]:
    """Every token row: id → (record, secret hash). An empty dict if the table does not exist yet."""
    try:
        rows = conn.execute(f"SELECT {COLUMNS} FROM tokens").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    return {row[0]: record_from_row(row) for row in rows}


def is_live(record: TokenRecord, now_s: float) -> bool:
    """Not revoked and not expired at ``now_s``."""
    return record.revoked_s is None and (record.expires_s is None or now_s < record.expires_s)


def state(record: TokenRecord, now_s: float) -> str:
    """``live``, ``expired`` or ``revoked``."""
    if record.revoked_s is not None:
        return "revoked"
    return "live" if is_live(record, now_s) else "expired"


class Entry(NamedTuple):
    """A token row as another shunt needs it: the record, the secret's SHA-256 and when the row last
    changed (epoch s: created, revoked or rotated)."""

    record: TokenRecord
    secret_sha256: bytes
    changed_s: float


class TokenStore:
    """The ``tokens`` table of one ``tokens.db``. One connection, opened on first use; not for the
    request path (the server reads :class:`~shunt_lib.token_index.ClientTokens`).

    :param mirror: called with a token's id after each create, revoke or rotate has committed (not
        after :meth:`put` or :meth:`touch`): how a change reaches the other shunts of a cluster.
    """

    def __init__(self, path: str, *, mirror: Callable[[str], None] | None = None):
        self.path = path
        self.mirror = mirror
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_db(self.path)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "TokenStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, action):
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = action(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def list(self) -> list[TokenRecord]:
        """Every token (live, expired and revoked), oldest first."""
        return sorted((r for r, _ in read_all(self.conn).values()), key=lambda r: (r.created_s, r.id))

    def get(self, token_id: str) -> TokenRecord:
        """:raises UnknownToken: no token has that id."""
        row = self.conn.execute(f"SELECT {COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            raise UnknownToken(f"no client token has the id {token_id[:40]!r} (see `shunt token list`)")
        return record_from_row(row)[0]

    def create(self, spec: TokenSpec, now_s: float) -> tuple[TokenRecord, str]:
        """Store a new token. :returns: (its record, the token itself: shown once, never stored).
        :raises TokenError: a live token already has that label."""
        secret = token_format.new_secret()

        def insert(conn: sqlite3.Connection) -> TokenRecord:
            for other, _ in read_all(conn).values():
                if other.label == spec.label and is_live(other, now_s):
                    raise TokenError(f"a live client token is already labelled {spec.label!r} (id {other.id}); "
                                     "revoke it or pick another label")
            ids = {row[0] for row in conn.execute("SELECT id FROM tokens")}
            token_id = token_format.new_id()
            while token_id in ids:
                token_id = token_format.new_id()
            record = TokenRecord(token_id, spec.label, now_s, None if spec.ttl_s is None else now_s + spec.ttl_s,
                                 limits=spec.limits, binding=spec.binding)
            lim, bind = record.limits, record.binding
            conn.execute(f"INSERT INTO tokens ({COLUMNS}, changed_s) VALUES ({', '.join('?' * 16)})",
                         (token_id, record.label, token_format.hash_secret(secret), record.created_s, record.expires_s,
                          None, None, lim.rpm, lim.tpm, lim.daily_tokens, lim.monthly_usd, lim.max_concurrent,
                          json.dumps(list(bind.accounts)), json.dumps(list(bind.kinds)), json.dumps(list(bind.models)),
                          now_s))
            return record

        record = self._write(insert)
        self._mirror(record.id)
        return record, token_format.make_token(record.id, secret)

    def revoke(self, token_id: str, now_s: float) -> TokenRecord:
        """Revoke a token now (its row stays, shown as revoked). :raises TokenError: unknown or already revoked."""
        def update(conn: sqlite3.Connection) -> TokenRecord:
            record = self.get(token_id)
            if record.revoked_s is not None:
                raise TokenError(f"client token {token_id} ({record.label}) is already revoked")
            conn.execute("UPDATE tokens SET revoked_s = ?, changed_s = ? WHERE id = ?", (now_s, now_s, token_id))
            return record._replace(revoked_s=now_s)

        record = self._write(update)
        self._mirror(token_id)
        return record

    def rotate(self, token_id: str, now_s: float | None = None) -> tuple[TokenRecord, str]:
        """Give a token a new secret: the same id, label, expiry, limits and binding; the old secret stops
        working at once. ``now_s``: the time of the change (default: now).
        :returns: (its record, the new token). :raises TokenError: unknown or revoked."""
        secret = token_format.new_secret()
        now_s = time.time() if now_s is None else now_s

        def update(conn: sqlite3.Connection) -> TokenRecord:
            record = self.get(token_id)
            if record.revoked_s is not None:
                raise TokenError(f"client token {token_id} ({record.label}) is revoked; create a new one")
            conn.execute("UPDATE tokens SET secret_sha256 = ?, changed_s = ? WHERE id = ?",
                         (token_format.hash_secret(secret), now_s, token_id))
            return record

        record = self._write(update)
        self._mirror(token_id)
        return record, token_format.make_token(record.id, secret)

    def _mirror(self, token_id: str) -> None:
        if self.mirror is not None:
            self.mirror(token_id)

    def entries(self) -> dict[str, Entry]:
        """Every token row as an :class:`Entry` (``changed_s`` of a row written before it was kept: its
        revocation, else its creation)."""
        rows = self.conn.execute(f"SELECT {COLUMNS}, changed_s FROM tokens").fetchall()
        out = {}
        for row in rows:
            record, digest = record_from_row(row[:-1])
            changed = row[-1] if row[-1] is not None else (record.revoked_s or record.created_s)
            out[record.id] = Entry(record, digest, changed)
        return out

    def put(self, entry: Entry) -> None:
        """Write ``entry`` as it is (a token created or changed by another shunt of the cluster), keeping
        this file's ``last_used_s``. Not mirrored."""
        record, lim, bind = entry.record, entry.record.limits, entry.record.binding
        values = (record.id, record.label, entry.secret_sha256, record.created_s, record.expires_s, record.revoked_s,
                  lim.rpm, lim.tpm, lim.daily_tokens, lim.monthly_usd, lim.max_concurrent,
                  json.dumps(list(bind.accounts)), json.dumps(list(bind.kinds)), json.dumps(list(bind.models)),
                  entry.changed_s)
        self._write(lambda conn: conn.execute(
            "INSERT INTO tokens (id, label, secret_sha256, created_s, expires_s, revoked_s, rpm, tpm, daily_tokens, "
            "monthly_usd, max_concurrent, accounts, kinds, models, changed_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET label = excluded.label, secret_sha256 = excluded.secret_sha256, "
            "created_s = excluded.created_s, expires_s = excluded.expires_s, revoked_s = excluded.revoked_s, "
            "rpm = excluded.rpm, tpm = excluded.tpm, daily_tokens = excluded.daily_tokens, "
            "monthly_usd = excluded.monthly_usd, max_concurrent = excluded.max_concurrent, "
            "accounts = excluded.accounts, kinds = excluded.kinds, models = excluded.models, "
            "changed_s = excluded.changed_s", values))

    def touch(self, last_used: Iterable[tuple[str, float]]) -> None:
        """Record when tokens were last used (one transaction for a batch; never moves a time backwards)."""
        rows = [(t, i) for i, t in last_used]
        if rows:
            self._write(lambda conn: conn.executemany(
                "UPDATE tokens SET last_used_s = max(coalesce(last_used_s, 0), ?) WHERE id = ?", rows))


def record_doc(record: TokenRecord, now_s: float) -> dict:
    """A token as JSON for ``shunt token list --json`` and ``GET /admin/tokens`` (never a secret):
    ``id``, ``label``, ``state`` (``live`` / ``expired`` / ``revoked``), the times (epoch s or null),
    ``limits`` and ``binding`` (unset ones left out)."""
    return {
        "id": record.id, "label": record.label, "state": state(record, now_s),
        "created_s": record.created_s, "expires_s": record.expires_s, "revoked_s": record.revoked_s,
        "last_used_s": record.last_used_s,
        "limits": {k: v for k, v in record.limits._asdict().items() if v is not None},
        "binding": {k: list(v) for k, v in record.binding._asdict().items() if v},
    }
