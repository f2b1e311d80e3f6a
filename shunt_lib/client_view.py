"""The clients of ``/status`` (:mod:`shunt_lib.client_usage`) as text, for ``shunt status`` and
``shunt monitor`` (pure). Shown only when some request came from more than the user's own machine."""

from __future__ import annotations


def tokens_text(n: int) -> str:
    """A token count in at most 5 characters: ``950``, ``9999``, ``12k``, ``3.4M``."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return str(n)


def shows_clients(clients: list[dict] | None) -> bool:
    """Whether a clients section is worth showing: some client other than ``local`` today."""
    return any(c.get("name") != "local" for c in clients or ())


def _usd(v: float) -> str:
    return f"${v:,.2f}" if v >= 0.01 or v == 0 else f"${v:.4f}"


def _number(v) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}"
    return tokens_text(int(v)) if isinstance(v, (int, float)) else str(v)


def limits_text(limits: dict | None) -> str:
    """``rpm 3/60 · monthly_usd 12.30/50`` (used/limit; the limit alone when its usage is unknown)."""
    parts = []
    for name, v in (limits or {}).items():
        limit, used = v.get("limit"), v.get("used")
        if limit is None:
            continue
        parts.append(f"{name} {_number(limit)}" if used is None else f"{name} {_number(used)}/{_number(limit)}")
    return " · ".join(parts)


def client_rows(clients: list[dict]) -> list[tuple[str, ...]]:
    """The clients table: a header and one row per client (name, requests, in flight, input, output,
    cache read, cost today, limits)."""
    rows = [("CLIENT", "REQS", "NOW", "IN", "OUT", "CACHE R", "COST TODAY", "LIMITS")]
    for c in clients:
        cost = _usd(c.get("cost_usd", 0.0)) + (f" +{n} unpriced" if (n := c.get("unpriced_requests")) else "")
        rows.append((c["name"], str(c.get("requests", 0)), str(c.get("in_flight", 0)),
                     tokens_text(c.get("input_tokens", 0)), tokens_text(c.get("output_tokens", 0)),
                     tokens_text(c.get("cache_read_tokens", 0)), cost, limits_text(c.get("limits")) or "-"))
    return rows


def clients_lines(clients: list[dict]) -> list[str]:
    """The clients table as aligned lines ([] when :func:`shows_clients` says no)."""
    if not shows_clients(clients):
        return []
    rows = client_rows(clients)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
