"""What the pool saved: API-equivalent USD of its requests, per UTC day, kept for 30 days (pure).

A :class:`Ledger` per account holds day buckets ``{day: [usd, unpriced_requests]}`` (``day`` =
``int(ts_s // 86400)``, UTC days) for the last :data:`KEEP_DAYS` days plus all-time totals; it lives in
``state.json`` with its account (:meth:`Ledger.to_json`, :meth:`Ledger.from_json`).
:func:`savings_summary` turns ledgers into the ``/status`` ``savings`` object at ``now_s``.
Costs come from :func:`shunt_lib.pricing.request_cost_usd`; a request of an unpriced model adds
nothing to the USD and 1 to ``unpriced_requests``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

from .numbers import count

DAY_S = 86400
KEEP_DAYS = 30
SPANS = (("today", 1), ("7d", 7), ("30d", 30))
MAX_USD = 1e12


def day_of(ts_s: float) -> int:
    """The UTC day number of epoch second ``ts_s``."""
    return int(ts_s // DAY_S)


def _usd(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= MAX_USD:
        return None
    return float(v)


@dataclasses.dataclass
class Ledger:
    """One account's savings: ``days`` ``{day: [usd, unpriced_requests]}`` and all-time totals."""

    days: dict = dataclasses.field(default_factory=dict)
    all_usd: float = 0.0
    all_unpriced: int = 0

    def add(self, ts_s: float, cost_usd: float | None) -> None:
        """Count one request finished at ``ts_s`` costing ``cost_usd`` (None: unpriced); buckets older
        than :data:`KEEP_DAYS` days before it are dropped."""
        day = day_of(ts_s)
        b = self.days.setdefault(day, [0.0, 0])
        if cost_usd is None:
            b[1] += 1
            self.all_unpriced += 1
        else:
            b[0] += cost_usd
            self.all_usd += cost_usd
        for d in [d for d in self.days if d <= day - KEEP_DAYS]:
            del self.days[d]

    def to_json(self) -> dict:
        """``{"days": {"<day>": [usd, unpriced]}, "all_usd", "all_unpriced"}`` for ``state.json``."""
        return {"days": {str(d): list(b) for d, b in sorted(self.days.items())},
                "all_usd": self.all_usd, "all_unpriced": self.all_unpriced}

    @classmethod
    def from_json(cls, d: object) -> "Ledger":
        """Restore :meth:`to_json`'s shape; entries of the wrong shape or out of bounds are dropped."""
        led = cls()
        if not isinstance(d, dict):
            return led
        days = d.get("days")
        for k, b in (days.items() if isinstance(days, dict) else ()):
            if isinstance(k, str) and k.isdigit() and len(k) < 9 and isinstance(b, list) and len(b) == 2:
                usd, n = _usd(b[0]), count(b[1])
                if usd is not None and n is not None:
                    led.days[int(k)] = [usd, n]
        led.all_usd = _usd(d.get("all_usd")) or 0.0
        led.all_unpriced = count(d.get("all_unpriced")) or 0
        return led


def savings_summary(ledgers: Iterable[Ledger], now_s: float) -> dict:
    """The sum of ``ledgers`` at ``now_s``: ``{"today"|"7d"|"30d"|"all_time": {"usd": float rounded to
    cents' hundredths, "unpriced_requests": int}}``; ``7d`` is today and the 6 UTC days before it."""
    today = day_of(now_s)
    out = {name: {"usd": 0.0, "unpriced_requests": 0} for name, _ in SPANS}
    out["all_time"] = {"usd": 0.0, "unpriced_requests": 0}
    for led in ledgers:
        for name, n in SPANS:
            for day, (usd, unpriced) in led.days.items():
                if today - n < day <= today:
                    out[name]["usd"] += usd
                    out[name]["unpriced_requests"] += unpriced
        out["all_time"]["usd"] += led.all_usd
        out["all_time"]["unpriced_requests"] += led.all_unpriced
    for v in out.values():
        v["usd"] = round(v["usd"], 4)
    return out
