"""``shunt usage``: requests, tokens and API-equivalent cost from ``usage.db``, as a table or JSON.

It reads the database directly (read-only), so it works with shunt stopped. Cost is priced per model
by a ``price`` function (``(model, counters) -> USD or None``), :func:`list_price` in use: API list
prices with ``[pricing]`` overrides (:mod:`shunt_lib.pricing`), cache writes by TTL and cache reads
included. A model without a price is never guessed: its requests are counted as unpriced.
"""

from __future__ import annotations

import json
from typing import Callable, Mapping

from .history_query import totals
from .pricing import Price, cost_usd, price_for

#: ``(model, counters) -> USD`` (None: the model has no price); counters as in
#: :data:`~shunt_lib.history_rollup.ROLLUP_COUNTERS` (``input_tokens``, ``cache_read_tokens``, ...).
Pricer = Callable[[str, Mapping[str, int]], "float | None"]

_SUMMED = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def no_price(model: str, counters: Mapping[str, int]) -> float | None:
    """A pricing hook that prices nothing (every request counted as unpriced)."""
    return None


def list_price(overrides: Mapping[str, Price] | None = None) -> Pricer:
    """The pricing hook at API list prices (``overrides``: ``[pricing]`` of config.toml): counters of
    a rollup (``cache_write_tokens`` all cache writes, ``cache_write_1h_tokens`` those with the 1-hour
    TTL, the rest priced as 5-minute writes) → USD, or None for a model without a price."""
    def price(model: str, counters: Mapping[str, int]) -> float | None:
        p = price_for(model, overrides)
        if p is None:
            return None
        return cost_usd(p, {"input_tokens": counters.get("input_tokens", 0),
                            "output_tokens": counters.get("output_tokens", 0),
                            "cache_read_tokens": counters.get("cache_read_tokens", 0),
                            "cache_creation_tokens": counters.get("cache_write_tokens", 0),
                            "cache_write_1h_tokens": counters.get("cache_write_1h_tokens", 0)})
    return price


def usage_rows(per_model: list[dict], price: Pricer = no_price) -> list[dict]:
    """Rows of :func:`~shunt_lib.history_query.totals` (per key and model) summed per key:
    ``{"key", "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cost_usd", "unpriced_requests"}``; ``cost_usd`` sums the priced models only,
    ``unpriced_requests`` counts the requests of models without a price (whose cost is not guessed)."""
    out: dict[str, dict] = {}
    for r in per_model:
        row = out.setdefault(r["key"], {"key": r["key"], **{k: 0 for k in _SUMMED}, "cost_usd": 0.0,
                                        "unpriced_requests": 0})
        for k in _SUMMED:
            row[k] += r[k]
        cost = price(r["model"], r)
        if cost is None:
            if any(r[k] for k in _SUMMED[2:]):
                row["unpriced_requests"] += r["requests"]
        else:
            row["cost_usd"] += cost
    return list(out.values())


def usage_document(path: str, since_s: int, by: str, price: Pricer = no_price) -> dict:
    """``{"since_s", "by", "rows": usage_rows(...)}`` for ``shunt usage --json``."""
    return {"since_s": since_s, "by": by, "rows": usage_rows(totals(path, since_s, by), price)}


def render_usage(doc: dict) -> str:
    """The table of :func:`usage_document`, with a total line."""
    rows = doc["rows"]
    if not rows:
        return "no usage recorded in this period"
    heads = (doc["by"], "requests", "errors", "input", "output", "cache read", "cache write", "API cost (USD)")
    total = {k: sum(r[k] for r in rows) for k in (*_SUMMED, "cost_usd", "unpriced_requests")}
    lines = [(r["key"] or "(none)", *(f"{r[k]:,}" for k in _SUMMED), _cost(r)) for r in rows]
    lines.append(("total", *(f"{total[k]:,}" for k in _SUMMED), _cost(total)))
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *lines)]
    fmt = "  ".join(("{:<%d}" if i == 0 else "{:>%d}") % w for i, w in enumerate(widths))
    return "\n".join(fmt.format(*line).rstrip() for line in (heads, *lines))


def _cost(row: Mapping) -> str:
    n = row["unpriced_requests"]
    return f"{row['cost_usd']:,.2f}" + (f" +{n} unpriced" if n else "")


def dumps(doc: dict) -> str:
    """``doc`` as indented JSON."""
    return json.dumps(doc, indent=2)
