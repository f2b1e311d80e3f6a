"""shunt's own answer when no account of the pool can take a request in time: pure functions.

The answer is a 429 ``rate_limit_error`` (or a 401 when nothing recovers by itself) whose headers
describe the pool the way Anthropic's describe one account (``docs/protocol.md`` §4.1, §4.5), so a
client reads them as it reads the upstream's:

* ``retry-after``: seconds until the soonest account recovers, truthful however long.
* ``x-should-retry``: ``false`` when that is more than :data:`SHORT_RETRY_S` away. The official SDKs
  obey this header before anything else, and they only wait out a ``retry-after`` of at most 60 s;
  past that they retry within seconds (exponential backoff capped at 8 s), which cannot reach a
  reset that is minutes or hours away (``_should_retry`` and ``_calculate_retry_timeout`` in
  https://github.com/anthropics/anthropic-sdk-python/blob/main/src/anthropic/_base_client.py).
  A nearer recovery gets ``true``.
* ``anthropic-ratelimit-unified-status: rejected``; ``-reset``: the soonest recovery (epoch s);
  ``-representative-claim``: the window that blocks the account recovering soonest.
* per window (``5h``, ``7d``, ``7d_<model>``), the pool's best: the lowest utilization among the
  accounts that recover by themselves, the soonest reset, and ``rejected`` only if every account
  reporting the window is rejected there. Claude Code reads these headers to show when a limit
  resets (https://code.claude.com/docs/en/claude-apps-gateway-spend-limits).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

from .errors import PoolRateLimited, ShuntError, Unauthorized
from .router import AccountView
from .status_view import duration_text

#: Longest wait, seconds, that a client's own short retry can still cover: the official SDKs honour a
#: ``retry-after`` of at most 60 s (see the module docstring). Past it, shunt sends ``x-should-retry: false``.
SHORT_RETRY_S = 60

_PREFIX = "anthropic-ratelimit-unified-"
#: Window name in the headers → the ``representative-claim`` value naming it (docs/protocol.md §4.1).
_CLAIMS = {"5h": "five_hour", "7d": "seven_day"}


def _claim(window: str) -> str:
    if window in _CLAIMS:
        return _CLAIMS[window]
    return "seven_day_" + window[3:] if window.startswith("7d_") else window


def _unified(window: str) -> bool:
    return window in _CLAIMS or window.startswith("7d_")


def pool_limit_headers(views: Sequence[AccountView], now_s: float, recovery_s: float) -> dict[str, str]:
    """The headers of shunt's 429 when no account can serve before ``recovery_s`` (see the module docstring).

    :param views: the accounts that could serve the request.
    :param recovery_s: when the soonest account recovers, epoch s (> ``now_s`` or not).
    :returns: header name → value; windows are listed in name order.
    """
    retry_after = max(1, math.ceil(recovery_s - now_s))
    out = {"retry-after": str(retry_after), "x-should-retry": "false" if retry_after > SHORT_RETRY_S else "true",
           _PREFIX + "status": "rejected", _PREFIX + "reset": str(math.ceil(recovery_s))}
    recovering = [v for v in views if v.available_at_s(now_s) is not None]
    first = min(recovering, key=lambda v: v.available_at_s(now_s), default=None)
    if first is not None:
        blocking = [(w.reset_at_s, name) for name, w in first.windows.items()
                    if _unified(name) and w.status == "rejected" and w.reset_at_s is not None]
        if blocking:
            out[_PREFIX + "representative-claim"] = _claim(max(blocking)[1])
    names = sorted({name for v in recovering for name in v.windows if _unified(name)})
    for name in names:
        wins = [v.windows[name] for v in recovering if name in v.windows]
        utils = [w.utilization for w in wins if w.utilization is not None]
        resets = [w.reset_at_s for w in wins if w.reset_at_s is not None and w.reset_at_s > now_s]
        out[f"{_PREFIX}{name}-status"] = "rejected" if all(w.status == "rejected" for w in wins) else "allowed"
        if utils:
            out[f"{_PREFIX}{name}-utilization"] = f"{min(utils):g}"
        if resets:
            out[f"{_PREFIX}{name}-reset"] = str(math.ceil(min(resets)))
    return out


def pool_unavailable_error(views: list[AccountView], now_s: float, recovery: tuple[float, str] | None) -> ShuntError:
    """shunt's own answer when no account can take a request and none recovers in time.

    :param views: the accounts that could serve the request; :param recovery: the soonest recovery
        (epoch s, name), or None if every account needs a human.
    :returns: a 429 ``rate_limit_error`` with :func:`pool_limit_headers`, naming each account's reset,
        or a 401 when nothing will recover by itself.
    """
    if not views:
        return Unauthorized("shunt has no accounts: add one with `shunt import` or `shunt add-account NAME --api-key`")
    parts = []
    for v in views:
        at = v.available_at_s(now_s)
        if at is None:
            parts.append(f"{v.name} needs attention ({v.status(now_s)})")
        else:
            parts.append(f"{v.name} resets at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(at))} "
                         f"(in {duration_text(at - now_s)})")
    if recovery is None:
        return Unauthorized("no account of shunt's pool can take requests: " + "; ".join(parts))
    return PoolRateLimited("every account of shunt's pool is rate-limited: " + "; ".join(parts),
                           headers=pool_limit_headers(views, now_s, recovery[0]))
