"""Render ``GET /status`` as a compact table for ``shunt status`` (pure)."""

from __future__ import annotations

import time

from .client_view import clients_lines, tokens_text  # tokens_text: also the monitor's
from .overrides import describe as describe_overrides


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def duration_text(seconds: float) -> str:
    """A short duration: ``42s``, ``7m05s``, ``3h20m``, ``2d4h`` (negative counts as 0)."""
    secs = max(0, int(seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"
    return f"{secs // 86400}d{(secs % 86400) // 3600}h"


def until_text(at_s: float | None, now_s: float) -> str:
    """Time from ``now_s`` to ``at_s`` (epoch s) as :func:`duration_text`, ``now`` under a second, '' for none."""
    if not at_s:
        return ""
    return "now" if at_s - now_s < 1 else duration_text(at_s - now_s)


def _usd(v) -> str:
    return "$" + (f"{v:,.2f}" if v >= 1 or v == 0 else f"{v:.4f}".rstrip("0"))


def savings_text(savings: dict | None) -> str:
    """``saved (API list prices) today $1.20 · 7d $8.40 · 30d $31.00 · all $52.10 · 3 unpriced``
    from a ``/status`` ``savings`` object ('' if there is none)."""
    if not savings:
        return ""
    parts = [f"{label} {_usd(savings.get(k, {}).get('usd', 0))}"
             for k, label in (("today", "today"), ("7d", "7d"), ("30d", "30d"), ("all_time", "all"))]
    unpriced = savings.get("all_time", {}).get("unpriced_requests", 0)
    return "saved (API list prices) " + " · ".join(parts) + (f" · {unpriced} unpriced" if unpriced else "")


def render_status(doc: dict, now_s: float | None = None) -> str:
    """Return the status table (one line per account) plus a header line, and the clients of today
    when some request came from other than ``local`` (:mod:`shunt_lib.client_view`)."""
    now_s = time.time() if now_s is None else now_s
    pin = doc.get("pinned_account")
    lines = [f"shunt {doc.get('version', '?')} · strategy {doc.get('strategy', '?')} · "
             + (f"pinned to {pin}" if pin else "routing automatically")]
    if doc.get("savings"):
        lines.append(savings_text(doc["savings"]))
    lines += [f"override: {line}" for line in describe_overrides(doc.get("overrides") or {})]
    header = ("ACCOUNT", "PLAN", "STATUS", "5H", "RESET", "7D", "RESET", "COOLDOWN", "TOKEN", "REQS", "IN", "OUT",
              "CACHE R/W", "SAVED 30D", "SESSIONS")
    rows = [header]
    for a in doc.get("accounts", []):
        token = a.get("token_expires_at_s")
        rows.append((
            a["name"] + (f" ({a['email']})" if a.get("email") else ""),
            a.get("plan") or ("api key" if a.get("kind") == "api_key" else "-"),
            a["status"],
            _pct(a.get("utilization_5h")), until_text(a.get("reset_5h_at_s"), now_s),
            _pct(a.get("utilization_7d")), until_text(a.get("reset_7d_at_s"), now_s),
            until_text(a.get("cooldown_until_s"), now_s),
            ("expired" if token and token <= now_s else until_text(token, now_s)) if token else "-",
            str(a.get("requests", 0)), tokens_text(a.get("input_tokens", 0)), tokens_text(a.get("output_tokens", 0)),
            f"{tokens_text(a.get('cache_read_tokens', 0))}/{tokens_text(a.get('cache_creation_tokens', 0))}",
            _usd(a["savings"]["30d"]["usd"]) + (f" ({n} unpriced)" if (n := a["savings"]["30d"]["unpriced_requests"]) else "")
            if a.get("savings") else "-",
            str(a.get("active_sessions", 0)),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for a in doc.get("accounts", []):
        if a.get("action"):
            lines.append(f"! {a['name']}: {a['action']}")
        elif a.get("cooldown_reason"):
            lines.append(f"~ {a['name']}: {a['status']} ({a['cooldown_reason']})")

    clients = clients_lines(doc.get("clients") or [])
    if clients:
        lines += ["", "clients today (UTC)", *clients]
    return "\n".join(lines)
