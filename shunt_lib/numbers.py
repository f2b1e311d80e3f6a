"""Numbers from outside the process, checked where they enter (pure).

Headers, the usage endpoint, token answers and ``state.json`` can carry ``inf``, ``nan``, ``1e308``,
``99999999999``, negative counts or a string where a number belongs. Such a value must never reach
arithmetic, ``int()`` or ``json.dumps`` (``inf`` has no JSON form and ``int(inf)`` raises), so each
boundary passes its numbers through one of these functions: a value that is not a finite real
number within sane bounds is treated as absent (None), never raised and never clamped into meaning.
"""

from __future__ import annotations

import math

MAX_AHEAD_S = 366 * 86400  # a reset, cooldown or expiry further ahead than this is not believed
MAX_UTILIZATION = 100.0  # a 0-1 fraction; upstream may report a little over 1, never 100 times over
MAX_COUNT = 1 << 53  # token and request counters: exact in a float, far beyond any real total
MAX_QUANTITY = 1e15  # rate-limit limits and remainders (requests or tokens per minute)


def finite(v: object, lo: float, hi: float) -> float | None:
    """``v`` as a float if it is an int or float (not a bool), finite and ``lo <= v <= hi`` (``lo`` and
    ``hi`` finite); else None."""
    t = type(v)
    if t is float:  # the common case first: a comparison with NaN is false, and ``hi`` is finite
        return v if lo <= v <= hi else None  # type: ignore[operator]
    if t is bool or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:  # an int too large for a float
        return None
    return f if math.isfinite(f) and lo <= f <= hi else None


def parse_finite(text: str | None, lo: float, hi: float) -> float | None:
    """A header value (decimal text) as :func:`finite` would accept it (``lo`` and ``hi`` finite); None
    if absent or not a number."""
    if text is None:
        return None
    try:
        f = float(text)
    except ValueError:
        return None
    return f if lo <= f <= hi else None  # NaN compares false; ``inf`` is above any finite ``hi``


def epoch_s(v: object, now_s: float) -> float | None:
    """An epoch-seconds instant between 1970 and ``now_s`` + :data:`MAX_AHEAD_S`, else None."""
    return finite(v, 0.0, now_s + MAX_AHEAD_S)


def fraction(v: object) -> float | None:
    """A utilization as a fraction (0 to :data:`MAX_UTILIZATION`), else None."""
    return finite(v, 0.0, MAX_UTILIZATION)


def count(v: object) -> int | None:
    """A non-negative integer counter up to :data:`MAX_COUNT` (an ``int``, not a bool or float), else None."""
    return v if type(v) is int and 0 <= v <= MAX_COUNT else None  # type: ignore[operator]
