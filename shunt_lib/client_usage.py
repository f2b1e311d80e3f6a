"""Per-client usage today, in memory, for ``GET /status``'s ``clients`` list (and ``shunt status``,
the monitor and the dashboard, which read it there).

A :class:`ClientUsage` is fed by two small hooks, never by the request path calling it directly:
:meth:`ClientUsage.in_flight` (a context manager the handler enters around a proxied request: it
counts the request in flight and remembers the client's token record) and :meth:`ClientUsage.add`
(a :attr:`Finish.listeners <shunt_lib.finish.Finish.listeners>` listener: each finished request's
count, tokens and API-equivalent cost, priced by the pool's :class:`~shunt_lib.pricing.PriceBook`).
Counts are for the current UTC day (the day a client token's ``daily_tokens`` limit counts) and
start again at UTC midnight; in-flight counts carry over.

Memory is bounded: at most :data:`MAX_CLIENTS` names a day; the requests of any later name are
counted under :data:`OTHER`. :meth:`ClientUsage.snapshot` lists at most ``limit`` clients, most
active first. A client token's limits and its budget's usage come from whoever enforces them (the
``limits`` hook: token id → ``{name: used}``); where there is no such hook the
configured limits of the token record are shown alone.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping

from .clients import Client
from .pricing import PriceBook
from .record import RequestRecord

MAX_CLIENTS = 100  #: distinct client names counted a day; the rest are counted under OTHER
OTHER = "other"
STATUS_LIMIT = 20  #: clients listed in ``/status`` (the most active)
DAY_S = 86400

#: token id → ``{limit name: used}`` (how much of each of a client token's limits is used now; the
#: limits themselves come from its record), from the limits' enforcement (:meth:`~shunt_lib.client_meter.ClientMeter.used`).
LimitsHook = Callable[[str], "Mapping[str, float] | None"]

_FIELDS = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class _Tally:
    __slots__ = ("token_id", "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
                 "cache_write_tokens", "cost_usd", "unpriced_requests", "in_flight", "last_s", "limits")

    def __init__(self, token_id: str | None) -> None:
        self.token_id = token_id
        self.requests = self.errors = self.input_tokens = self.output_tokens = 0
        self.cache_read_tokens = self.cache_write_tokens = self.unpriced_requests = self.in_flight = 0
        self.cost_usd = 0.0
        self.last_s = 0.0
        self.limits: dict[str, float] = {}  # the token record's configured limits (non-None ones)


class _InFlight:
    """The context manager of :meth:`ClientUsage.in_flight` (a class: entered once per request)."""

    __slots__ = ("usage", "client")

    def __init__(self, usage: "ClientUsage", client: Client) -> None:
        self.usage, self.client = usage, client

    def __enter__(self) -> None:
        self.usage._started(self.client)

    def __exit__(self, *exc) -> None:
        self.usage._ended(self.client)


class ClientUsage:
    """Requests, tokens and API-equivalent cost per client today. Thread-safe: request threads feed
    it, ``/status`` reads it.

    :param prices: the prices in use (a callable: the pool's book is replaced on reload);
    :param clock: epoch seconds; :param max_clients: names counted a day before :data:`OTHER`.
    """

    def __init__(self, prices: Callable[[], PriceBook] = PriceBook, clock: Callable[[], float] = time.time,
                 max_clients: int = MAX_CLIENTS) -> None:
        self._prices, self._clock, self.max_clients = prices, clock, max_clients
        self._lock = threading.Lock()
        self._day = int(clock()) // DAY_S
        self._by_name: dict[str, _Tally] = {}
        self.limits: LimitsHook | None = None  #: token id → limits and their usage (see :data:`LimitsHook`)

    def in_flight(self, client: Client) -> _InFlight:
        """A context manager counting a request of ``client`` in flight while its block runs."""
        return _InFlight(self, client)

    def _tally(self, name: str, token_id: str | None, now_s: float) -> _Tally:
        """The tally of ``name`` today (call under the lock)."""
        self._roll(now_s)
        t = self._by_name.get(name)
        if t is None:
            if len(self._by_name) >= self.max_clients and name != OTHER:
                return self._tally(OTHER, None, now_s)
            t = self._by_name[name] = _Tally(token_id)
        return t

    def _roll(self, now_s: float) -> None:
        """Start a new day's counts at UTC midnight (call under the lock)."""
        day = int(now_s) // DAY_S
        if day != self._day:
            self._day = day
            self._by_name = {n: _carry(t) for n, t in self._by_name.items() if t.in_flight > 0}

    def _started(self, client: Client) -> None:
        now = self._clock()
        with self._lock:
            t = self._tally(client.name, client.token_id, now)
            t.in_flight += 1
            t.last_s = now
            if client.token is not None:
                t.limits = {k: v for k, v in client.token.limits._asdict().items() if v is not None}

    def _ended(self, client: Client) -> None:
        with self._lock:
            t = self._by_name.get(client.name) or self._by_name.get(OTHER)
            if t is not None and t.in_flight > 0:
                t.in_flight -= 1

    def add(self, record: RequestRecord) -> None:
        """Count one finished request (a :class:`~shunt_lib.finish.Finish` listener)."""
        cost = self._prices().cost_usd(record)  # outside the lock
        now = self._clock()
        with self._lock:
            t = self._tally(record.get("client") or "local", record.get("token_id"), now)
            t.requests += 1
            t.errors += record["status"] >= 400
            t.input_tokens += record["input_tokens"]
            t.output_tokens += record["output_tokens"]
            t.cache_read_tokens += record["cache_read_tokens"]
            t.cache_write_tokens += record["cache_creation_tokens"]
            t.last_s = max(t.last_s, record["ts_s"])
            if cost is None:
                if record["input_tokens"] or record["output_tokens"]:
                    t.unpriced_requests += 1
            else:
                t.cost_usd += cost

    def snapshot(self, limit: int = STATUS_LIMIT) -> list[dict]:
        """The ``clients`` list of ``/status``: at most ``limit`` clients, most active first (requests
        in flight, then requests today, then the latest request), each ``{"name", "token_id",
        "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_write_tokens", "cost_usd", "unpriced_requests", "in_flight", "last_s"}``, plus
        ``"limits"`` for a client token with limits: ``{name: {"limit": L, "used": U or None}}``."""
        now = self._clock()
        with self._lock:
            self._roll(now)
            rows = [{"name": n, "token_id": t.token_id, **{k: getattr(t, k) for k in _FIELDS},
                     "cost_usd": round(t.cost_usd, 6), "unpriced_requests": t.unpriced_requests,
                     "in_flight": t.in_flight, "last_s": int(t.last_s), "_limits": dict(t.limits)}
                    for n, t in self._by_name.items()]
        rows.sort(key=lambda r: (-r["in_flight"], -r["requests"], -r["last_s"], r["name"]))
        rows = rows[:max(0, limit)]
        for r in rows:
            limits = {k: {"limit": v, "used": None} for k, v in r.pop("_limits").items()}
            hook = self.limits
            if hook is not None and r["token_id"] is not None:
                try:
                    for k, used in (hook(r["token_id"]) or {}).items():
                        if k in limits:
                            limits[k]["used"] = used
                except Exception:  # noqa: BLE001 - another module's hook never breaks /status
                    pass
            if limits:
                r["limits"] = limits
        return rows


def _carry(t: _Tally) -> _Tally:
    """A new day's tally of a client with requests still in flight: only those, and its limits."""
    fresh = _Tally(t.token_id)
    fresh.in_flight, fresh.limits, fresh.last_s = t.in_flight, t.limits, t.last_s
    return fresh
