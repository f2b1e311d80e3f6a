"""What an OAuth account's own endpoints say about it, without spending quota.

* ``GET /api/oauth/usage`` (needs ``anthropic-beta: oauth-2025-04-20``): per window ``utilization``
  in **percent** (0–100) and ``resets_at`` as ISO-8601; any window may be null (``docs/protocol.md`` §4.6).
  A utilization that is not a finite percentage, or a reset not within a year, is dropped.
* ``GET /api/oauth/profile``: ``account.email``, ``organization.organization_type`` /
  ``rate_limit_tier``, ``account.has_claude_max`` / ``has_claude_pro`` (``docs/protocol.md`` §4.7).
"""

from __future__ import annotations

import requests

from .forwarding import OAUTH_BETA
from .numbers import fraction, finite
from .ratelimit import Window, parse_rfc3339_s

TIMEOUT_S = 10.0
USAGE_WINDOWS = {"five_hour": "5h", "seven_day": "7d", "seven_day_opus": "7d_opus", "seven_day_sonnet": "7d_sonnet"}


def _get(http: requests.Session, url: str, token: str) -> dict | None:
    try:
        resp = http.get(url, headers={"authorization": f"Bearer {token}", "anthropic-beta": OAUTH_BETA,
                                      "accept": "application/json"}, timeout=TIMEOUT_S)
    except requests.RequestException:
        return None
    if resp.status_code != 200:
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_usage(data: dict, now_s: float) -> dict[str, Window]:
    """``/api/oauth/usage`` JSON → window name → :class:`Window` (utilization as a 0–1 fraction);
    a window whose utilization is missing or out of bounds is left out."""
    out = {}
    for key, name in USAGE_WINDOWS.items():
        w = data.get(key)
        percent = finite(w.get("utilization"), 0.0, 1e9) if isinstance(w, dict) else None
        util = fraction(percent / 100.0) if percent is not None else None
        if util is None:
            continue
        out[name] = Window(util, parse_rfc3339_s(w.get("resets_at"), now_s), "")
    return out


def parse_profile(data: dict) -> tuple[str, str]:
    """``/api/oauth/profile`` JSON → (email, plan); either may be ''."""
    account = data.get("account") if isinstance(data.get("account"), dict) else {}
    org = data.get("organization") if isinstance(data.get("organization"), dict) else {}
    email = str(account.get("email") or account.get("email_address") or "")
    plan = ""
    if account.get("has_claude_max"):
        plan = "max"
    elif account.get("has_claude_pro"):
        plan = "pro"
    else:
        org_type = str(org.get("organization_type") or "")
        plan = org_type.removeprefix("claude_") if org_type else ""
    tier = str(org.get("rate_limit_tier") or "")
    if plan == "max" and tier.endswith(("_5x", "_20x")):
        plan = "max " + tier.rsplit("_", 1)[1]
    return email, plan


def fetch_usage(http: requests.Session, base_url: str, token: str, now_s: float) -> dict[str, Window] | None:
    """The account's windows from ``/api/oauth/usage``, or None if the call failed."""
    data = _get(http, base_url.rstrip("/") + "/api/oauth/usage", token)
    return parse_usage(data, now_s) if data is not None else None


def fetch_profile(http: requests.Session, base_url: str, token: str) -> tuple[str, str] | None:
    """(email, plan) from ``/api/oauth/profile``, or None if the call failed."""
    data = _get(http, base_url.rstrip("/") + "/api/oauth/profile", token)
    return parse_profile(data) if data is not None else None
