"""Usage rollups shared by the shunts of a cluster: what the whole pool served, per UTC day.

Redis keeps one hash per UTC day, ``N:usage:YYYY-MM-DD`` (:meth:`Keys.usage
<shunt_lib.cluster_keys.Keys.usage>`), with one field per instance, account, client and model (the
field is the JSON list ``[instance, account, client, model]``; ``account`` is ``""`` for requests no
account answered) holding that instance's totals of the day as a JSON list in :data:`COUNTERS` order.
Each instance keeps its totals of today and yesterday in memory (seeded at start from its own
``usage.db``, then counting each finished request into the day of its ``ts_s``: a request stamped
before midnight that ends after it still counts in its day) and *rewrites* its fields
(asynchronously, coalesced per field), never increments them: a rejoin rewrites them all, so a Redis
restarted empty is rebuilt and nothing is counted twice. A day's hash expires after :data:`KEEP_DAYS`.

:func:`read_rows` sums the fields of a span of days per account, client, model, day or instance, in
the shape of ``shunt usage`` (:func:`~shunt_lib.usage_view.usage_rows`; the cost is priced when read,
as ``shunt usage`` prices ``usage.db``): ``shunt usage --cluster``.
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING

from .client_limits import day_key
from .fsutil import query_read_only
from .history import db_path
from .record import RequestRecord

if TYPE_CHECKING:
    from .cluster_link import Link
    from .serving import ClusterHost

log = logging.getLogger("shunt.cluster")

#: The totals kept per field, in order.
COUNTERS = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
            "cache_write_1h_tokens")
KEEP_DAYS = 400
BY = ("account", "client", "model", "day", "instance")
DAY_S = 86400


def counters_of(r: RequestRecord) -> list[int]:
    """A finished request's contribution, in :data:`COUNTERS` order."""
    return [1, int(r["status"] >= 400), r["input_tokens"], r["output_tokens"], r["cache_read_tokens"],
            r["cache_creation_tokens"], r.get("cache_write_1h_tokens", 0)]


def field(instance: str, account: str, client: str, model: str) -> str:
    """The hash field of one instance's totals for ``account``, ``client`` and ``model``."""
    return json.dumps([instance, account, client, model], separators=(",", ":"))


def seed(path: str, since_s: int) -> dict[str, dict[tuple[str, str, str], list[int]]]:
    """This instance's totals since ``since_s`` (the start of a UTC day) from its ``usage.db`` (``path``)
    per UTC day (``YYYY-MM-DD``) and (account, client, model); {} without a database.
    :raises sqlite3.Error: an unreadable one."""
    sums = ", ".join(f"SUM({c})" for c in COUNTERS)
    rows = query_read_only(path, lambda conn: conn.execute(
        f"SELECT minute_s / {DAY_S}, account, client, model, {sums} FROM rollup_minute WHERE minute_s >= ? "
        f"GROUP BY minute_s / {DAY_S}, account, client, model", (since_s,)).fetchall(), [])
    out: dict[str, dict[tuple[str, str, str], list[int]]] = {}
    for d, a, c, m, *rest in rows:
        out.setdefault(day_key(int(d) * DAY_S), {})[(a or "", c or "local", m or "")] = [int(v or 0) for v in rest]
    return out


def day_before(day: str) -> str:
    """The UTC day (``YYYY-MM-DD``) before ``day``."""
    return (datetime.date.fromisoformat(day) - datetime.timedelta(days=1)).isoformat()


class SharedUsage:
    """This instance's part in the cluster's usage rollups (see the module docstring)."""

    def __init__(self, link: "Link", srv: "ClusterHost"):
        self.link = link
        self.srv = srv
        self._lock = threading.Lock()
        now = srv.clock.time()
        today = day_key(now)
        try:
            seeded = seed(db_path(srv.paths.home), int(now) // DAY_S * DAY_S - DAY_S)
        except sqlite3.Error as exc:
            log.warning("cluster %s: cannot read today's usage from usage.db: %s (counting from now)",
                        link.cfg.cluster_name, exc)
            seeded = {}
        #: day → (account, client, model) → totals: today and yesterday (a request stamped before midnight
        #: may end after it), guarded by _lock
        self._days = {d: seeded.get(d, {}) for d in (day_before(today), today)}

    @classmethod
    def attach(cls, link: "Link", srv: "ClusterHost") -> "SharedUsage":
        """Count ``srv``'s finished requests into the cluster's rollups."""
        part = cls(link, srv)
        srv.relay.finish.listeners.append(part.add)
        link.on_rejoin(part._rejoin)
        return part

    def stop(self) -> None:
        """Stop counting."""
        try:
            self.srv.relay.finish.listeners.remove(self.add)
        except ValueError:
            pass

    def add(self, record: RequestRecord) -> None:
        """Count a finished request (a finish listener: on the request's thread, no I/O)."""
        day = day_key(record["ts_s"])
        key = (record["account"] or "", record.get("client") or "local", record["model"] or "")
        with self._lock:
            totals = self._days.get(day)
            if totals is None:
                if day < min(self._days):
                    return  # stamped before yesterday: its day is no longer kept here
                totals = self._days[day] = {}  # the day turned: keep it and the day before it
                self._days = {d: t for d, t in self._days.items() if d >= day_before(max(self._days))}
            row = totals.setdefault(key, [0] * len(COUNTERS))
            for i, v in enumerate(counters_of(record)):
                row[i] += v
        self.link.later(("usage", day, key), lambda p: self._write(p, day, [key]), lazy=True)

    def _write(self, pipe, day: str, keys) -> None:
        """Rewrite this instance's fields of ``keys`` for ``day`` (the totals as they are now)."""
        with self._lock:
            totals = self._days.get(day, {})
            values = {field(self.link.instance_id, *k): json.dumps(totals[k]) for k in keys if k in totals}
        if values:
            name = self.link.keys.usage(day)
            pipe.hset(name, mapping=values)
            pipe.expire(name, KEEP_DAYS * DAY_S)

    def _rejoin(self) -> None:
        with self._lock:
            days = {d: list(t) for d, t in self._days.items()}
        pipe = self.link.client.pipeline(transaction=False)
        for day, keys in days.items():
            self._write(pipe, day, keys)
        pipe.execute()


def days_between(since_s: float, now_s: float) -> list[str]:
    """The UTC days (``YYYY-MM-DD``) from the one holding ``since_s`` to the one holding ``now_s``."""
    out, t = [], int(since_s) // DAY_S * DAY_S
    while t <= now_s:
        out.append(day_key(t))
        t += DAY_S
    return out


def read_rows(client, keys, days: list[str], by: str) -> list[dict]:
    """The cluster's totals over ``days`` per key ``by`` (one of :data:`BY`) and model, summed over the
    instances: ``{"key", "model", <each of COUNTERS>}``, ordered by key and model (the input of
    :func:`~shunt_lib.usage_view.usage_rows`).

    :raises ValueError: a bad ``by``. :raises redis.RedisError: / :raises OSError: Redis did not answer.
    """
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    pipe = client.pipeline(transaction=False)
    for day in days:
        pipe.hgetall(keys.usage(day))
    out: dict[tuple[str, str], list[int]] = {}
    for day, fields in zip(days, pipe.execute()):
        for raw_field, raw_value in fields.items():
            try:
                instance, account, who, model = json.loads(raw_field)
                values = [int(v) for v in json.loads(raw_value)]
            except (ValueError, TypeError):
                continue
            key = {"account": account, "client": who, "model": model, "day": day, "instance": instance}[by]
            row = out.setdefault((key, model), [0] * len(COUNTERS))
            for i, v in enumerate(values[:len(COUNTERS)]):
                row[i] += v
    return [{"key": k, "model": m, **dict(zip(COUNTERS, v))} for (k, m), v in sorted(out.items())]


def usage_document(config, since_s: int, by: str, price, now_s: float | None = None) -> dict:
    """``shunt usage --cluster``: ``{"since_s", "by", "scope": "cluster", "days", "rows"}`` from the
    cluster's Redis (whole UTC days from the one holding ``since_s``), rows as
    :func:`~shunt_lib.usage_view.usage_rows` makes them.

    :raises ConfigError: no ``[cluster]``, no ``redis`` package, or Redis did not answer.
    """
    from .cluster_config import check_security  # noqa: PLC0415 - only with [cluster]
    from .cluster_keys import Keys  # noqa: PLC0415
    from .cluster_link import connect, import_redis  # noqa: PLC0415
    from .errors import ConfigError  # noqa: PLC0415
    from .usage_view import usage_rows  # noqa: PLC0415

    cfg = config.cluster
    if not cfg.enabled:
        raise ConfigError("--cluster needs [cluster] redis_url in config.toml")
    check_security(cfg)
    days = days_between(since_s, time.time() if now_s is None else now_s)
    client = connect(cfg)
    try:
        per_model = read_rows(client, Keys(cfg.cluster_name), days, by)
    except (import_redis().RedisError, OSError) as exc:
        raise ConfigError(f"cannot read the cluster's usage from Redis: {type(exc).__name__}") from None
    finally:
        client.close()
    return {"since_s": since_s, "by": by, "scope": "cluster", "days": days, "rows": usage_rows(per_model, price)}
