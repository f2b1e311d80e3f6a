"""Client tokens' use, kept live, and the one place a token's request is admitted or refused.

:meth:`ClientMeter.admit` is one check-and-take under the meter's lock: the decision is
:func:`shunt_lib.client_limits.check` over the token's :class:`~shunt_lib.client_limits.Use`, and an
admitted request takes its rpm place and its concurrency slot before the lock is let go, so no number
of racing threads gets more admitted than a limit allows. It returns a :class:`Ticket`: the request's
end (:meth:`Ticket.finish`, from :meth:`Finish.record <shunt_lib.finish.Finish.record>`) charges what
the request used (input + output + cache writes, cache reads apart, API-equivalent USD by the pool's
:class:`~shunt_lib.pricing.PriceBook`) and frees the slot; :meth:`Ticket.release` frees the slot alone
(the relay's ``finally``, for any way out). Each does its part once, however often it is called.

Charges go to the live totals at once and to ``tokens.db`` through the ``sink``
(:class:`~shunt_lib.token_usage.UsageWriter`), so budgets survive restarts; :meth:`ClientMeter.load`
seeds today's and this month's totals at start.

In a cluster, :attr:`ClientMeter.shared` (:class:`~shunt_lib.cluster_limits.SharedLimits`) decides
for a token with limits across every instance; this meter still keeps this instance's own use (what
``/status`` shows, what the cluster is told, and the decision while Redis is down). Every admission
and release of such a token, however it was decided, tells the cluster this instance's count in
flight (``shared.inflight_changed``: the whole count, never a step, so a request admitted during an
outage is given back like any other).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

from .client_limits import WINDOW_S, Use, check, day_key, limits_set, next_day_s
from .clients import Client
from .errors import ShuntError
from .pool_limit import SHORT_RETRY_S
from .pricing import PriceBook
from .token_usage import Charge, TokenUsage


#: ``shared.admit`` could not ask the cluster (Redis down): the meter decides.
UNDECIDED = object()

#: ``cost_usd`` not given: the meter prices the record itself.
NOT_PRICED: float = -1.0


class ClientLimited(ShuntError):
    """A client token is over one of its limits: 429 ``rate_limit_error`` with ``retry-after``."""

    status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, retry_after_s: int, limit: str):
        super().__init__(message, headers={"retry-after": str(retry_after_s),
                                           "x-should-retry": "true" if retry_after_s <= SHORT_RETRY_S else "false"})
        self.retry_after_s = retry_after_s
        self.limit = limit


class _Token:
    """One token's live use (guarded by the meter's lock)."""

    __slots__ = ("admissions", "charges", "window_tokens", "inflight", "asking", "gen", "day", "month", "day_tokens", "day_cache_read",
                 "day_usd", "day_requests", "month_tokens", "month_cache_read", "month_usd", "month_requests",
                 "day_start_s", "day_end_s")

    def __init__(self) -> None:
        self.admissions: collections.deque[float] = collections.deque()
        self.charges: collections.deque[tuple[float, int]] = collections.deque()
        self.window_tokens = 0
        self.inflight = 0
        self.asking = 0  # admissions waiting on the cluster's answer
        self.gen = 0  # counts the admissions asked of the cluster (orders this instance's in-flight writes)
        self.day = self.month = ""
        self.day_start_s = self.day_end_s = 0.0  # the UTC day ``day`` names, epoch s: [start, end)
        self.day_tokens = self.day_cache_read = self.day_requests = 0
        self.month_tokens = self.month_cache_read = self.month_requests = 0
        self.day_usd = self.month_usd = 0.0

    def roll(self, now_s: float) -> None:
        """Drop what left the window, and start a new UTC day or month at 0."""
        since = now_s - WINDOW_S
        adm = self.admissions
        while adm and adm[0] <= since:
            adm.popleft()
        ch = self.charges
        while ch and ch[0][0] <= since:
            self.window_tokens -= ch.popleft()[1]
        if self.day_start_s <= now_s < self.day_end_s:
            return  # the same UTC day: no date to work out
        self.day_end_s = next_day_s(now_s)
        self.day_start_s = self.day_end_s - 86400.0
        day = day_key(now_s)
        if day != self.day:
            self.day = day
            self.day_tokens = self.day_cache_read = self.day_requests = 0
            self.day_usd = 0.0
            month = day[:7]
            if month != self.month:
                self.month = month
                self.month_tokens = self.month_cache_read = self.month_requests = 0
                self.month_usd = 0.0


class Ticket:
    """An admitted request's place: :meth:`finish` charges it and frees its slot, :meth:`release` frees
    the slot only. Each part happens once."""

    __slots__ = ("meter", "token_id", "shared", "_released", "_charged")

    def __init__(self, meter: "ClientMeter", token_id: str, shared=None):
        self.meter = meter
        self.token_id = token_id
        self.shared = shared  # the cluster's limits for a token with limits (its end is told to them), else None
        self._released = self._charged = False

    def finish(self, record, cost_usd: float | None = NOT_PRICED) -> None:
        """The request ended with ``record`` (a :class:`~shunt_lib.record.RequestRecord`): charge it, free
        the slot. ``cost_usd``: its cost if already worked out (None: an unpriced model)."""
        if not self._charged:
            self._charged = True
            charge = self.meter.charge(self.token_id, record, cost_usd)
            if self.shared is not None:
                self.shared.charged(self.token_id, charge.tokens, self.meter.clock())
        self.release()

    def release(self) -> None:
        """Free the request's concurrency slot (idempotent)."""
        if not self._released:
            self._released = True
            self.meter._leave(self.token_id)
            if self.shared is not None:
                self.shared.inflight_changed(self.token_id)


class ClientMeter:
    """Every client token's live use. Any thread may call any method.

    :param prices: the price book in use (a callable: the pool replaces its book on reload).
    :param sink: where each charge goes to be kept (``UsageWriter.add``), or None.
    :param clock: epoch seconds.
    """

    def __init__(self, *, prices: Callable[[], PriceBook] | None = None, sink: Callable[[Charge], None] | None = None,
                 clock: Callable[[], float] = time.time):
        if prices is None:
            book = PriceBook()
            prices = lambda: book  # noqa: E731
        self.prices = prices
        self.sink = sink
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        #: the cluster's limits (:class:`~shunt_lib.cluster_limits.SharedLimits`), or None: this meter decides
        self.shared = None

    def _token(self, token_id: str, now_s: float) -> _Token:
        tok = self._tokens.get(token_id)
        if tok is None:
            tok = self._tokens[token_id] = _Token()
        tok.roll(now_s)
        return tok

    def load(self, totals: dict[str, TokenUsage], now_s: float | None = None) -> None:
        """Seed today's and this month's totals (read from ``tokens.db`` at start) for ``now_s``."""
        now_s = self.clock() if now_s is None else now_s
        with self._lock:
            for token_id, u in totals.items():
                tok = self._token(token_id, now_s)
                tok.day_tokens, tok.day_cache_read, tok.day_usd, tok.day_requests = (
                    u.day_tokens, u.day_cache_read_tokens, u.day_cost_usd, u.day_requests)
                tok.month_tokens, tok.month_cache_read, tok.month_usd, tok.month_requests = (
                    u.month_tokens, u.month_cache_read_tokens, u.month_cost_usd, u.month_requests)

    def admit(self, client: Client, now_s: float | None = None) -> Ticket:
        """Admit one request of ``client`` (a client token's) now, or refuse it.

        :raises ClientLimited: over a limit (the message names the token's label and the limit).
        """
        assert client.token_id is not None and client.token is not None
        now_s = self.clock() if now_s is None else now_s
        limits = client.token.limits
        shared = self.shared if self.shared is not None and limits_set(limits) else None
        decided = UNDECIDED
        if shared is not None:
            with self._lock:
                tok = self._token(client.token_id, now_s)
                tok.asking += 1
                tok.gen += 1
                gen = tok.gen
            try:
                decided = shared.admit(client.token_id, limits, now_s, gen)
            finally:
                with self._lock:
                    tok.asking -= 1
        with self._lock:
            tok = self._token(client.token_id, now_s)
            if decided is UNDECIDED:  # no cluster (or Redis is down): this instance decides alone
                refusal = check(limits, Use(tok.admissions, tok.charges, tok.window_tokens, tok.inflight,
                                            tok.day_tokens, tok.month_usd), now_s)
            else:
                refusal = decided
            if refusal is None:
                tok.admissions.append(now_s)
                tok.inflight += 1
        if shared is not None:
            shared.inflight_changed(client.token_id)  # this instance's count in flight, as it is now, goes to the cluster
        if refusal is not None:
            raise ClientLimited(f"client token {client.name} is {refusal.reason}; retry in {refusal.retry_after_s} s",
                                refusal.retry_after_s, refusal.limit)
        return Ticket(self, client.token_id, shared)

    def inflight_of(self, token_id: str) -> tuple[int, int, int]:
        """``token_id``'s requests in flight here, admissions of it waiting on the cluster's answer, and the
        number of the last admission asked of the cluster (0, 0, 0 for a token not seen since start)."""
        with self._lock:
            tok = self._tokens.get(token_id)
            return (0, 0, 0) if tok is None else (tok.inflight, tok.asking, tok.gen)

    def _leave(self, token_id: str) -> None:
        with self._lock:
            tok = self._tokens.get(token_id)
            if tok is not None and tok.inflight > 0:
                tok.inflight -= 1

    def charge(self, token_id: str, record, cost_usd: float | None = NOT_PRICED) -> Charge:
        """Charge a finished request's usage (``record``: a :class:`~shunt_lib.record.RequestRecord`) to
        ``token_id``: live at once, and to the ``sink``. ``cost_usd``: its API-equivalent cost when the
        caller has it (the pool prices every record), else it is priced here; None or unpriced costs 0.
        :returns: the charge."""
        tokens = record["input_tokens"] + record["output_tokens"] + record["cache_creation_tokens"]
        if cost_usd is NOT_PRICED:
            cost_usd = self.prices().cost_usd(record) if tokens or record["cache_read_tokens"] else 0.0
        cost = cost_usd or 0.0  # an unpriced model: 0
        now_s = self.clock()
        with self._lock:
            tok = self._token(token_id, now_s)
            charge = Charge(token_id, tok.day, tokens, record["cache_read_tokens"], cost)
            if tokens:
                tok.charges.append((now_s, tokens))
                tok.window_tokens += tokens
            tok.day_tokens += tokens
            tok.month_tokens += tokens
            tok.day_cache_read += charge.cache_read_tokens
            tok.month_cache_read += charge.cache_read_tokens
            tok.day_usd += cost
            tok.month_usd += cost
            tok.day_requests += 1
            tok.month_requests += 1
        if self.sink is not None:
            self.sink(charge)
        return charge

    def usage(self, now_s: float | None = None) -> dict[str, TokenUsage]:
        """Every known token's use now: today, this month (UTC), the last minute, in flight."""
        now_s = self.clock() if now_s is None else now_s
        with self._lock:
            out = {}
            for token_id in list(self._tokens):
                t = self._token(token_id, now_s)
                out[token_id] = TokenUsage(t.day_tokens, t.day_cache_read, t.day_usd, t.day_requests, t.month_tokens,
                                           t.month_cache_read, t.month_usd, t.month_requests, len(t.admissions),
                                           t.window_tokens, t.inflight)
            return out

    def used(self, token_id: str, now_s: float | None = None) -> dict[str, float]:
        """How much of each limit ``token_id`` uses now, by the limit's name in
        :class:`~shunt_lib.clients.TokenLimits` (requests and tokens in the last minute, tokens today,
        USD this month, requests in flight); {} for a token not seen since shunt started."""
        u = self.usage(now_s).get(token_id)
        if u is None:
            return {}
        return {"rpm": u.minute_requests, "tpm": u.minute_tokens, "daily_tokens": u.day_tokens,
                "monthly_usd": round(u.month_cost_usd, 6), "max_concurrent": u.inflight}
