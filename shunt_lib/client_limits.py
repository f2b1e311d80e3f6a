"""Whether a client token may start one more request now: pure decisions over a snapshot of its use.

A client token's :class:`~shunt_lib.clients.TokenLimits` are judged against a :class:`Use` (what
:class:`~shunt_lib.client_meter.ClientMeter` keeps for it) at a time given as an argument, so every
rule is tested without a clock:

* ``rpm``: admissions in the sliding 60 s before now. Full: retry when the oldest ones leave it.
* ``tpm``: tokens charged in the sliding 60 s (input + output + cache writes, charged when a request
  finishes; cache reads are not limited). At or over: retry when enough charges leave the window.
* ``daily_tokens``: the same tokens in the UTC day. Retry at the next 00:00 UTC.
* ``monthly_usd``: API-equivalent USD (:mod:`shunt_lib.pricing`) in the UTC calendar month. Retry at
  the first of the next month, 00:00 UTC.
* ``max_concurrent``: requests in flight. Retry in 1 s.

A request is refused while any limit is reached; the refusal names the limit that frees last (its
``retry_after_s`` is when the request could pass).
"""

from __future__ import annotations

import bisect
import calendar
import math
import time
from typing import NamedTuple, Sequence

from .clients import TokenLimits

WINDOW_S = 60.0  # the sliding window of rpm and tpm


class Use(NamedTuple):
    """A token's use as the limits see it. ``admissions``: epoch s of the requests admitted in the last
    :data:`WINDOW_S`, oldest first; ``charges``: ``(epoch s, tokens)`` charged in it, oldest first;
    ``window_tokens``: the sum of those charges' tokens (None: summed here); ``inflight``: requests in
    progress; ``day_tokens``: tokens of the current UTC day; ``month_usd``: USD of the current UTC month."""

    admissions: Sequence[float] = ()
    charges: Sequence[tuple[float, int]] = ()
    window_tokens: int | None = None
    inflight: int = 0
    day_tokens: int = 0
    month_usd: float = 0.0


class Refusal(NamedTuple):
    """Why a request may not start: ``limit`` (a :class:`TokenLimits` field), a ``reason`` to finish
    "client token X is ..." and ``retry_after_s`` (whole seconds, at least 1)."""

    limit: str
    reason: str
    retry_after_s: int


def day_key(now_s: float) -> str:
    """The UTC day of ``now_s``: ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(now_s))


def month_key(now_s: float) -> str:
    """The UTC month of ``now_s``: ``YYYY-MM``."""
    return time.strftime("%Y-%m", time.gmtime(now_s))


def next_day_s(now_s: float) -> float:
    """Epoch s of the next 00:00 UTC after ``now_s``."""
    return (math.floor(now_s / 86400) + 1) * 86400.0


def next_month_s(now_s: float) -> float:
    """Epoch s of the first day of the next UTC month, 00:00."""
    t = time.gmtime(now_s)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def _retry(at_s: float, now_s: float) -> int:
    return max(1, math.ceil(at_s - now_s))


def check(limits: TokenLimits, use: Use, now_s: float) -> Refusal | None:
    """The refusal of one more request under ``limits`` given ``use`` at ``now_s``, or None: admit.

    ``use``'s day and month totals are those of ``now_s``'s UTC day and month; its admissions and
    charges may hold older entries than the window (they are skipped, unless ``window_tokens`` is given:
    then it is taken as the window's sum). Cost: O(log n) to admit, O(n) only to explain a refusal.
    """
    found: list[Refusal] = []
    since = now_s - WINDOW_S
    if limits.monthly_usd is not None and use.month_usd >= limits.monthly_usd:
        found.append(Refusal("monthly_usd", f"over its monthly budget of ${limits.monthly_usd:,.2f} "
                             f"(${use.month_usd:,.2f} used this UTC month)", _retry(next_month_s(now_s), now_s)))
    if limits.daily_tokens is not None and use.day_tokens >= limits.daily_tokens:
        found.append(Refusal("daily_tokens", f"over its daily budget of {limits.daily_tokens:,} tokens "
                             f"({use.day_tokens:,} used today, UTC)", _retry(next_day_s(now_s), now_s)))
    if limits.tpm is not None:
        total = use.window_tokens
        if total is None:
            total = sum(n for t, n in use.charges if t > since)
        if total >= limits.tpm:
            at = now_s + 1
            for t, n in use.charges:  # oldest first: when enough has left the window to fall under the limit
                if t <= since:
                    continue
                total -= n
                if total < limits.tpm:
                    at = t + WINDOW_S
                    break
            found.append(Refusal("tpm", f"over its {limits.tpm:,} tokens per minute", _retry(at, now_s)))
    if limits.rpm is not None:
        first = bisect.bisect_right(use.admissions, since)
        n = len(use.admissions) - first
        if n >= limits.rpm:
            at = use.admissions[first + n - limits.rpm] + WINDOW_S if limits.rpm > 0 else next_day_s(now_s)
            found.append(Refusal("rpm", f"over its {limits.rpm:,} requests per minute", _retry(at, now_s)))
    if limits.max_concurrent is not None and use.inflight >= limits.max_concurrent:
        found.append(Refusal("max_concurrent", f"at its {limits.max_concurrent:,} concurrent requests", 1))
    if not found:
        return None
    return max(found, key=lambda r: r.retry_after_s)


def limits_set(limits: TokenLimits) -> bool:
    """Whether any limit is set (a token without any is only counted)."""
    return any(v is not None for v in limits)
