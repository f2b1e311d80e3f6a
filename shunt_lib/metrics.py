"""The counters and histograms ``GET /metrics`` shows, kept in memory while shunt runs.

A :class:`Metrics` is fed by three small hooks, never by the request path calling it directly:

* :meth:`Metrics.add_request`, a :attr:`Finish.listeners <shunt_lib.finish.Finish.listeners>`
  listener: every finished request's count and tokens (by account, model, status and client), whether it was
  held and for how long, and how long its upstream took;
* :meth:`Metrics.add_failover`, a :attr:`Relay.failover_listeners
  <shunt_lib.relay.Relay.failover_listeners>` listener: why a request moved to another account;
* :meth:`Metrics.add_refresh`, a :attr:`TokenManager.listeners <shunt_lib.oauth.TokenManager.listeners>`
  listener: each call to the OAuth token endpoint and how it ended.

Each hook takes one short lock (a few dictionary updates); :meth:`Metrics.counts` copies everything
under it for a scrape. The gauges about accounts are not kept here: :mod:`shunt_lib.metrics_text`
reads them from the pool's snapshot at scrape time.
"""

from __future__ import annotations

import bisect
import threading
from typing import TYPE_CHECKING, NamedTuple

from .record import RequestRecord

if TYPE_CHECKING:
    from .oauth import TokenManager
    from .relay import Relay

#: Upper bounds of the ``shunt_held_seconds`` buckets, seconds (a hold lasts up to ``max_wait_s``, 300 by default).
HELD_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Upper bounds of the ``shunt_upstream_duration_seconds`` buckets, seconds (a model answers in
#: under a second to several minutes).
UPSTREAM_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Token kinds (``shunt_tokens_total``'s ``kind``) and the request record field each one counts.
TOKEN_KINDS = (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read_tokens"),
               ("cache_write", "cache_creation_tokens"))
NO_ACCOUNT = "-"  # the account label of a request no account answered (shunt's own error, a client gone early)
MAX_MODELS = 100  # distinct model labels kept; later ones are counted as OTHER_MODEL (clients choose the name)
OTHER_MODEL = "other"
MAX_CLIENTS = 100  # distinct client labels kept (one per client token in use); later ones are counted as OTHER_CLIENT
OTHER_CLIENT = "other"
UNKNOWN_MODEL = "unknown"  # a request whose model is not known


class HistogramCounts(NamedTuple):
    """One histogram at one instant: ``bounds`` (upper bounds, seconds, ascending, without +Inf),
    ``buckets`` (observations per bucket, not cumulative, one more than ``bounds``: the last is above
    every bound), ``sum`` (seconds) and ``count``."""

    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    sum: float
    count: int


class Histogram:
    """Observations counted in fixed buckets. Not thread-safe: :class:`Metrics` guards it."""

    __slots__ = ("bounds", "_buckets", "_sum", "_count")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = tuple(sorted(bounds))
        self._buckets = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        """Count one observation of ``value`` (in the first bucket whose bound is >= it)."""
        self._buckets[bisect.bisect_left(self.bounds, value)] += 1
        self._sum += value
        self._count += 1

    def counts(self) -> HistogramCounts:
        """A copy of its state."""
        return HistogramCounts(self.bounds, tuple(self._buckets), self._sum, self._count)


class Counts(NamedTuple):
    """Everything :class:`Metrics` counted, copied at one instant (labels → value).

    ``requests``: ``(account, model, status, client)`` → requests; ``tokens``: ``(account, model, kind,
    client)`` → tokens; ``failovers``: reason → moves; ``refreshes``: ``(account, result)`` → token endpoint calls;
    ``holds``: held requests; ``held``: their time held; ``upstream``: the time requests an account
    answered took, less the time held.
    """

    requests: dict[tuple[str, str, str, str], int]
    tokens: dict[tuple[str, str, str, str], int]
    failovers: dict[str, int]
    refreshes: dict[tuple[str, str], int]
    holds: int
    held: HistogramCounts
    upstream: HistogramCounts


class Metrics:
    """shunt's counters since it started. Thread-safe: request threads feed it, scrapes read it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int, str], int] = {}  # (account, model, status, client) → requests
        self._tokens: dict[tuple[str, str, str], list[int]] = {}  # (account, model, client) → tokens in TOKEN_KINDS order
        self._clients: set[str] = set()
        self._failovers: dict[str, int] = {}
        self._refreshes: dict[tuple[str, str], int] = {}
        self._models: set[str] = set()
        self._holds = 0
        self._held = Histogram(HELD_BUCKETS_S)
        self._upstream = Histogram(UPSTREAM_BUCKETS_S)

    def attach(self, relay: "Relay", tokens: "TokenManager") -> None:
        """Listen to ``relay``'s finished requests and failovers and to ``tokens``' refreshes."""
        relay.finish.listeners.append(self.add_request)
        relay.failover_listeners.append(self.add_failover)
        tokens.listeners.append(lambda name, result: self.add_refresh(name, str(result.status)))

    def add_request(self, record: RequestRecord) -> None:
        """Count one finished request (a :class:`~shunt_lib.finish.Finish` listener): its tokens by
        kind, a hold if it waited for an account (``held_ms`` > 0), and, if an account answered it,
        its duration less the time held."""
        account = record["account"] or NO_ACCOUNT
        held_s = record["held_ms"] / 1000
        with self._lock:
            model = self._model_label(record["model"])
            client = self._client_label(record.get("client") or "local")
            key = (account, model, record["status"], client)
            self._requests[key] = self._requests.get(key, 0) + 1
            tokens = self._tokens.get((account, model, client))
            if tokens is None:
                tokens = self._tokens[(account, model, client)] = [0, 0, 0, 0]
            tokens[0] += record["input_tokens"]
            tokens[1] += record["output_tokens"]
            tokens[2] += record["cache_read_tokens"]
            tokens[3] += record["cache_creation_tokens"]
            if held_s > 0:
                self._holds += 1
                self._held.observe(held_s)
            if record["account"] is not None:
                self._upstream.observe(max(0.0, record["duration_ms"] / 1000 - held_s))

    def _model_label(self, model: str) -> str:
        """The label for ``model``: itself, ``unknown`` if empty, ``other`` past :data:`MAX_MODELS`
        distinct ones (call under the lock)."""
        if not model:
            return UNKNOWN_MODEL
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return OTHER_MODEL
        self._models.add(model)
        return model

    def _client_label(self, client: str) -> str:
        """The label for ``client``: itself, ``other`` past :data:`MAX_CLIENTS` distinct ones (call under the lock)."""
        if client in self._clients:
            return client
        if len(self._clients) >= MAX_CLIENTS:
            return OTHER_CLIENT
        self._clients.add(client)
        return client

    def add_failover(self, reason: str) -> None:
        """Count one request moving to another account because of ``reason`` (what the account it left
        did: an :class:`~shunt_lib.outcome.Action` value such as ``exhausted``, or ``connect_error``)."""
        with self._lock:
            self._failovers[reason] = self._failovers.get(reason, 0) + 1

    def add_refresh(self, account: str, result: str) -> None:
        """Count one call to the token endpoint for ``account`` and its ``result`` (a
        :class:`~shunt_lib.oauth.RefreshStatus` value: ``ok``, ``invalid_grant``, ``error``)."""
        with self._lock:
            key = (account, result)
            self._refreshes[key] = self._refreshes.get(key, 0) + 1

    def counts(self) -> Counts:
        """A copy of every counter and histogram, taken under the lock."""
        with self._lock:
            requests = {(a, m, str(status), c): n for (a, m, status, c), n in self._requests.items()}
            tokens = {(a, m, kind, c): n for (a, m, c), counts in self._tokens.items()
                      for (kind, _), n in zip(TOKEN_KINDS, counts)}
            return Counts(requests, tokens, dict(self._failovers), dict(self._refreshes), self._holds,
                          self._held.counts(), self._upstream.counts())
