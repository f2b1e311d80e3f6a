"""Parse rate-limit response headers into per-window utilization (pure functions).

Sources (anthropic-protocol.md §4.1, §5.7):

* OAuth (subscription) accounts: ``anthropic-ratelimit-unified-{5h,7d,7d_<model>}-{status,reset,utilization}``
  with utilization a 0–1 fraction (may exceed 1) and reset in epoch **seconds**; overall
  ``anthropic-ratelimit-unified-status`` / ``-reset``. Headers appear on 200s and 429s alike.
* API-key accounts: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``
  with reset in **RFC 3339** (Anthropic rate-limit docs).
* ``retry-after`` (seconds or HTTP-date) and ``retry-after-ms`` (preferred, per the Python SDK).
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
from typing import Mapping

UNIFIED = "anthropic-ratelimit-unified-"
# Window lengths in seconds, for time-weighting utilization. API-key windows are per minute.
WINDOW_LENGTH_S = {"5h": 5 * 3600, "7d": 7 * 86400, "requests": 60, "tokens": 60, "input-tokens": 60, "output-tokens": 60}
API_KEY_WINDOWS = ("requests", "tokens", "input-tokens", "output-tokens")


def window_length_s(name: str) -> int:
    """Length of a window in seconds; model-scoped weekly windows (``7d_sonnet``) count as 7 days."""
    return WINDOW_LENGTH_S.get(name) or (7 * 86400 if name.startswith("7d") else 5 * 3600)


@dataclasses.dataclass(frozen=True)
class Window:
    """One rate-limit window: ``utilization`` (0–1 fraction, None if unknown), ``reset_at_s`` (epoch s,
    None if unknown), ``status`` (``allowed``/``allowed_warning``/``rejected`` or "")."""

    utilization: float | None = None
    reset_at_s: float | None = None
    status: str = ""

    def to_json(self) -> dict:
        return {"utilization": self.utilization, "reset_at_s": self.reset_at_s, "status": self.status}

    @classmethod
    def from_json(cls, d: dict) -> "Window":
        return cls(d.get("utilization"), d.get("reset_at_s"), d.get("status") or "")


@dataclasses.dataclass(frozen=True)
class RateLimitInfo:
    """What one response's headers say about its account.

    ``windows``: window name (``5h``, ``7d``, ``7d_sonnet``, ``tokens``, ...) → :class:`Window`.
    ``rejected``: the unified status or any window's status is ``rejected`` (quota exhausted).
    ``exhausted_until_s``: when the rejected window(s) reset (epoch s), or None.
    ``unified``: True if any ``anthropic-ratelimit-unified-*`` quota header was present.
    """

    windows: dict[str, Window]
    rejected: bool = False
    exhausted_until_s: float | None = None
    unified: bool = False


def _float(v: str | None) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


def parse_rfc3339_s(v: str | None) -> float | None:
    """RFC 3339 timestamp → epoch seconds, or None if absent or unparsable."""
    if not v:
        return None
    try:
        dt = datetime.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def parse_rate_limits(headers: Mapping[str, str], now_s: float) -> RateLimitInfo | None:
    """Read the rate-limit headers of one upstream response.

    :param headers: case-insensitive mapping (urllib3 ``HTTPHeaderDict`` or lower-cased dict).
    :param now_s: current epoch seconds (used to turn API-key resets into windows).
    :returns: a :class:`RateLimitInfo`, or None if the response carried no rate-limit headers.
    """
    windows: dict[str, Window] = {}
    unified = False
    rejected = False
    rejected_resets: list[float] = []
    overall_status = None
    overall_reset = None
    for raw_name in headers.keys():
        name = raw_name.lower()
        if not name.startswith(UNIFIED):
            continue
        rest = name[len(UNIFIED):]
        if rest == "status":
            overall_status = headers.get(raw_name)
            unified = True
            continue
        if rest == "reset":
            overall_reset = _float(headers.get(raw_name))
            continue
        if not rest.endswith("-utilization"):
            continue
        win = rest[: -len("-utilization")]
        if win.startswith("overage") or win.startswith("fallback"):
            continue
        unified = True
        status = (headers.get(UNIFIED + win + "-status") or "").strip()
        w = Window(_float(headers.get(raw_name)), _float(headers.get(UNIFIED + win + "-reset")), status)
        windows[win] = w
        if status == "rejected":
            rejected = True
            if w.reset_at_s is not None:
                rejected_resets.append(w.reset_at_s)
    # A window may carry a status without a utilization header.
    for win in ("5h", "7d"):
        status = headers.get(UNIFIED + win + "-status")
        if status and win not in windows:
            unified = True
            w = Window(None, _float(headers.get(UNIFIED + win + "-reset")), status.strip())
            windows[win] = w
            if w.status == "rejected":
                rejected = True
                if w.reset_at_s is not None:
                    rejected_resets.append(w.reset_at_s)
    if overall_status and overall_status.strip() == "rejected":
        rejected = True
        if overall_reset is not None:
            rejected_resets.append(overall_reset)
    for win in API_KEY_WINDOWS:
        limit = _float(headers.get(f"anthropic-ratelimit-{win}-limit"))
        remaining = _float(headers.get(f"anthropic-ratelimit-{win}-remaining"))
        if limit is None or remaining is None or limit <= 0:
            continue
        util = max(0.0, 1.0 - remaining / limit)
        windows[win] = Window(util, parse_rfc3339_s(headers.get(f"anthropic-ratelimit-{win}-reset")),
                              "rejected" if remaining <= 0 else "allowed")
    if not windows and not unified:
        return None
    exhausted_until = max(rejected_resets) if rejected_resets else None
    return RateLimitInfo(windows=windows, rejected=rejected, exhausted_until_s=exhausted_until, unified=unified)


def parse_retry_after_s(headers: Mapping[str, str], now_s: float) -> float | None:
    """Seconds to wait per ``retry-after-ms`` (preferred) or ``retry-after`` (seconds or HTTP-date).

    :returns: a non-negative float, or None if neither header is present and valid.
    """
    ms = _float(headers.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000.0
    v = headers.get("retry-after")
    if v is None:
        return None
    secs = _float(v)
    if secs is not None:
        return max(0.0, secs)
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - now_s)
