"""``shunt usage``: requests, tokens and API-equivalent cost from ``usage.db``, as a table or JSON.

It reads the database directly (read-only), so it works with shunt stopped. Cost is priced per model
by a ``price`` function (``(model, counters) -> USD or None``); :func:`no_price` is used until a
pricing table exists, and a row with any unpriced tokens shows ``-``.
"""

from __future__ import annotations

import json
from typing import Callable, Mapping

from .history_query import totals

#: ``(model, counters) -> USD`` (None: the model has no price); counters as in
#: :data:`~shunt_lib.history_rollup.ROLLUP_COUNTERS` (``input_tokens``, ``cache_read_tokens``, ...).
Pricer = Callable[[str, Mapping[str, int]], "float | None"]

_SUMMED = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def no_price(model: str, counters: Mapping[str, int]) -> float | None:
    """The pricing hook's default: nothing is priced (cost shows ``-``)."""
    return None


def usage_rows(per_model: list[dict], price: Pricer = no_price) -> list[dict]:
    """Rows of :func:`~shunt_lib.history_query.totals` (per key and model) summed per key:
    ``{"key", "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cost_usd"}``; ``cost_usd`` is None when any model with tokens is unpriced."""
    out: dict[str, dict] = {}
    for r in per_model:
        row = out.setdefault(r["key"], {"key": r["key"], **{k: 0 for k in _SUMMED}, "cost_usd": 0.0})
        for k in _SUMMED:
            row[k] += r[k]
        cost = price(r["model"], r)
        if cost is None:
            if any(r[k] for k in _SUMMED[2:]):
                row["cost_usd"] = None
        elif row["cost_usd"] is not None:
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
    heads = (doc["by"], "requests", "errors", "input", "output", "cache read", "cache write", "cost (USD)")
    total = {k: sum(r[k] for r in rows) for k in _SUMMED}
    costs = [r["cost_usd"] for r in rows]
    total_cost = None if any(c is None for c in costs) else sum(costs)
    lines = [(r["key"] or "(none)", *(f"{r[k]:,}" for k in _SUMMED), _cost(r["cost_usd"])) for r in rows]
    lines.append(("total", *(f"{total[k]:,}" for k in _SUMMED), _cost(total_cost)))
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *lines)]
    fmt = "  ".join(("{:<%d}" if i == 0 else "{:>%d}") % w for i, w in enumerate(widths))
    return "\n".join(fmt.format(*line).rstrip() for line in (heads, *lines))


def _cost(usd: float | None) -> str:
    return "-" if usd is None else f"{usd:,.2f}"


def dumps(doc: dict) -> str:
    """``doc`` as indented JSON."""
    return json.dumps(doc, indent=2)
