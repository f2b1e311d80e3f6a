"""Parse rate-limit response headers into per-window utilization (pure functions).

Sources (``docs/protocol.md`` §4.1, §4.4, §4.5):

* OAuth (subscription) accounts: ``anthropic-ratelimit-unified-{5h,7d,7d_<model>}-{status,reset,utilization}``
  with utilization a 0–1 fraction (may exceed 1) and reset in epoch **seconds**; overall
  ``anthropic-ratelimit-unified-status`` / ``-reset``. Headers appear on 200s and 429s alike.
* API-key accounts: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``
  with reset in **RFC 3339** (https://docs.anthropic.com/en/api/rate-limits).
* ``retry-after`` (seconds or HTTP-date) and ``retry-after-ms`` (preferred, per the Python SDK).

Every number is checked as it is read (:mod:`shunt_lib.numbers`): a utilization that is not a finite
fraction, a reset that is not an epoch within a year from now, a retry-after beyond a year, or a
limit that is not a finite quantity is treated as absent.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
from typing import Mapping, NamedTuple

from .numbers import MAX_AHEAD_S, MAX_QUANTITY, MAX_UTILIZATION, epoch_s, fraction, parse_finite

# Window lengths in seconds, for time-weighting utilization. API-key windows are per minute.
WINDOW_LENGTH_S = {"5h": 5 * 3600, "7d": 7 * 86400, "requests": 60, "tokens": 60, "input-tokens": 60, "output-tokens": 60}
API_KEY_WINDOWS = ("requests", "tokens", "input-tokens", "output-tokens")


def window_length_s(name: str) -> int:
    """Length of a window in seconds; model-scoped weekly windows (``7d_sonnet``) count as 7 days."""
    return WINDOW_LENGTH_S.get(name) or (7 * 86400 if name.startswith("7d") else 5 * 3600)


class Window(NamedTuple):
    """One rate-limit window: ``utilization`` (0–1 fraction, None if unknown), ``reset_at_s`` (epoch s,
    None if unknown), ``status`` (``allowed``/``allowed_warning``/``rejected`` or ""). A NamedTuple:
    one is built per window of every response."""

    utilization: float | None = None
    reset_at_s: float | None = None
    status: str = ""

    def to_json(self) -> dict:
        """As stored in ``state.json`` and shown in ``/status``."""
        return {"utilization": self.utilization, "reset_at_s": self.reset_at_s, "status": self.status}

    @classmethod
    def from_json(cls, d: dict, now_s: float) -> "Window":
        """From :meth:`to_json`'s shape; a missing or out-of-bounds number is unknown (None)."""
        status = d.get("status")
        return cls(fraction(d.get("utilization")), epoch_s(d.get("reset_at_s"), now_s),
                   status if isinstance(status, str) else "")


@dataclasses.dataclass(frozen=True)
class RateLimitInfo:
    """What one response's headers say about its account.

    ``windows``: window name (``5h``, ``7d``, ``7d_sonnet``, ``tokens``, ...) → :class:`Window`.
    ``rejected``: the unified status or any window's status is ``rejected`` (quota exhausted).
    ``exhausted_until_s``: when the rejected window(s) reset (epoch s), or None.
    """

    windows: dict[str, Window]
    rejected: bool = False
    exhausted_until_s: float | None = None


def _epoch(v: str | None, now_s: float) -> float | None:
    return parse_finite(v, 0.0, now_s + MAX_AHEAD_S)  # what epoch_s accepts


def _fraction(v: str | None) -> float | None:
    return parse_finite(v, 0.0, MAX_UTILIZATION)  # what fraction accepts


def _quantity(v: str | None) -> float | None:
    return parse_finite(v, 0.0, MAX_QUANTITY)


def parse_rfc3339_s(v: object, now_s: float) -> float | None:
    """RFC 3339 timestamp → epoch seconds, or None if absent, unparsable or not within a year from ``now_s``."""
    if not isinstance(v, str) or not v:
        return None
    try:
        dt = datetime.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        return epoch_s(dt.timestamp(), now_s)
    except (ValueError, OverflowError):
        return None


def parse_rate_limits(headers: Mapping[str, str], now_s: float) -> RateLimitInfo | None:
    """Read the rate-limit headers of one upstream response.

    :param headers: the response headers with **lower-cased** names (a plain dict is fastest).
    :param now_s: current epoch seconds.
    :returns: a :class:`RateLimitInfo`, or None if the response carried no rate-limit headers.
    """
    # One pass over the names; everything after works on the few anthropic-ratelimit-* values.
    rl = {k[20:]: v for k, v in headers.items() if k[:20] == "anthropic-ratelimit-"}  # a slice: no call
    if not rl:
        return None
    windows: dict[str, Window] = {}
    unified = False
    rejected = False
    rejected_resets: list[float] = []
    for key, value in rl.items():
        if key[:8] != "unified-":
            continue
        unified = True
        if not key.endswith(("-utilization", "-status")):
            continue
        win = key[8:].rpartition("-")[0]
        if not win or win in windows or win.startswith(("overage", "fallback")):
            continue
        status = (rl.get(f"unified-{win}-status") or "").strip()
        w = Window(_fraction(rl.get(f"unified-{win}-utilization")), _epoch(rl.get(f"unified-{win}-reset"), now_s), status)
        windows[win] = w
        if status == "rejected":
            rejected = True
            if w.reset_at_s is not None:
                rejected_resets.append(w.reset_at_s)
    if (rl.get("unified-status") or "").strip() == "rejected":
        rejected = True
        overall_reset = _epoch(rl.get("unified-reset"), now_s)
        if overall_reset is not None:
            rejected_resets.append(overall_reset)
    if not unified:
        for win in API_KEY_WINDOWS:
            limit = _quantity(rl.get(f"{win}-limit"))
            remaining = _quantity(rl.get(f"{win}-remaining"))
            if limit is None or remaining is None or limit <= 0:
                continue
            util = max(0.0, 1.0 - remaining / limit)
            windows[win] = Window(util, parse_rfc3339_s(rl.get(f"{win}-reset"), now_s),
                                  "rejected" if remaining <= 0 else "allowed")
    if not windows and not unified:
        return None
    exhausted_until = max(rejected_resets) if rejected_resets else None
    return RateLimitInfo(windows=windows, rejected=rejected, exhausted_until_s=exhausted_until)


def has_room(windows: Mapping[str, Window]) -> bool:
    """Whether fresh windows (the usage endpoint's, ``docs/protocol.md`` §4.6) show the account can take
    requests: at least one window is known, none is ``rejected`` and none is at or over 100 % utilization."""
    known = any(w.utilization is not None for w in windows.values())
    return known and all((w.utilization is None or w.utilization < 1.0) and w.status != "rejected"
                         for w in windows.values())


def parse_retry_after_s(headers: Mapping[str, str], now_s: float) -> float | None:
    """Seconds to wait per ``retry-after-ms`` (preferred) or ``retry-after`` (seconds or HTTP-date).

    :returns: a non-negative float of at most a year, or None if neither header is present and valid.
    """
    ms = parse_finite(headers.get("retry-after-ms"), 0.0, MAX_AHEAD_S * 1000.0)
    if ms is not None:
        return ms / 1000.0
    v = headers.get("retry-after")
    if v is None:
        return None
    secs = parse_finite(v, -MAX_AHEAD_S, MAX_AHEAD_S)
    if secs is not None:
        return max(0.0, secs)
    try:
        at = epoch_s(email.utils.parsedate_to_datetime(v).timestamp(), now_s)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if at is None else max(0.0, at - now_s)
