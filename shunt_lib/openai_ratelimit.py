"""Rate limits and 429s of OpenAI-compatible providers, in the shapes the Anthropic path uses (pure).

Headers (https://platform.openai.com/docs/guides/rate-limits, "Rate limits in headers"; Groq sends
the same set, https://console.groq.com/docs/rate-limits)::

    x-ratelimit-limit-requests: 60          x-ratelimit-limit-tokens: 150000
    x-ratelimit-remaining-requests: 59      x-ratelimit-remaining-tokens: 149984
    x-ratelimit-reset-requests: 1s          x-ratelimit-reset-tokens: 6m0s

A reset is a duration until the window refills (Go's duration syntax: ``6ms``, ``1m30s``,
``2h3m0.5s``; a bare number is seconds). They become the windows ``requests`` and ``tokens`` of a
:class:`~shunt_lib.ratelimit.RateLimitInfo`, as the Anthropic API-key headers do.

429 bodies (https://platform.openai.com/docs/guides/error-codes): ``error.type`` or ``error.code``
``insufficient_quota`` (or one of the billing codes beneath it) means no credit is left: waiting does
not help, so the account is out until someone adds credit (it is tried again after
:data:`BILLING_RECHECK_S`); ``rate_limit_exceeded`` is a throttle until the window resets.
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from .numbers import MAX_AHEAD_S, MAX_QUANTITY, parse_finite
from .outcome import THROTTLE_DEFAULT_S, Action, Outcome, classify
from .ratelimit import RateLimitInfo, Window, parse_retry_after_s

OPENAI_WINDOWS = ("requests", "tokens")
#: How long an account whose provider wants billing stays out before it is tried again, seconds.
BILLING_RECHECK_S = 3600.0
#: ``error.code`` values OpenAI gives under ``type: insufficient_quota`` (https://platform.openai.com/docs/guides/error-codes).
BILLING_CODES = frozenset({"insufficient_quota", "credit_balance_exhausted", "organization_spend_limit_exceeded",
                           "project_spend_limit_exceeded", "organization_usage_limit_exceeded"})
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)")
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|μs|ns|h|m|s))+")


def parse_duration_s(v: object) -> float | None:
    """A reset duration in seconds: ``"1m30s"`` → 90.0, ``"6ms"`` → 0.006, ``"2h3m0.5s"`` → 7380.5,
    ``"20"`` → 20.0 (a bare number is seconds).

    :returns: a non-negative float of at most a year, or None if ``v`` is absent, malformed, negative
        or longer than a year.
    """
    if not isinstance(v, str):
        return None
    v = v.strip()
    if _DURATION.fullmatch(v):
        total = sum(float(n) * _UNIT_S[unit] for n, unit in _PART.findall(v))
    else:
        total = parse_finite(v, 0.0, MAX_AHEAD_S)
        if total is None:
            return None
    return total if total <= MAX_AHEAD_S else None


def parse_openai_rate_limits(headers: Mapping[str, str], now_s: float) -> RateLimitInfo | None:
    """Read ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``.

    :param headers: the response headers with **lower-cased** names.
    :param now_s: current epoch seconds (resets are durations from now).
    :returns: windows ``requests``/``tokens`` with ``utilization = 1 - remaining / limit``, ``reset_at_s``
        (epoch s, or None) and status ``rejected`` at 0 remaining else ``allowed``; None if no window has
        a usable limit and remaining (a limit of 0 or a negative value, as some proxies send, is unusable).
    """
    windows: dict[str, Window] = {}
    for win in OPENAI_WINDOWS:
        limit = parse_finite(headers.get(f"x-ratelimit-limit-{win}"), 0.0, MAX_QUANTITY)
        remaining = parse_finite(headers.get(f"x-ratelimit-remaining-{win}"), 0.0, MAX_QUANTITY)
        if limit is None or remaining is None or limit <= 0:
            continue
        reset = parse_duration_s(headers.get(f"x-ratelimit-reset-{win}"))
        windows[win] = Window(max(0.0, 1.0 - remaining / limit), None if reset is None else now_s + reset,
                              "rejected" if remaining <= 0 else "allowed")
    return RateLimitInfo(windows=windows) if windows else None


def openai_error(body: bytes) -> tuple[str, str, str]:
    """``(error.type, error.code, error.message)`` of an OpenAI-style error body, ``""`` for each part
    missing. Also reads a body that is a list of such objects (Gemini's OpenAI endpoint sends one)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", "", ""
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return "", "", ""
    return tuple(v if isinstance(v, str) else "" for v in (err.get("type"), err.get("code"), err.get("message")))


def billing_advice(account: str, provider: str) -> str:
    """The sentence for an account whose provider wants billing (``provider`` as people name it)."""
    who = provider or "the provider"
    return (f"{who} reports no credit left for account {account!r} (insufficient_quota): add credit or raise "
            f"the spend limit in {who}'s billing settings; shunt tries it again every "
            f"{BILLING_RECHECK_S / 60:g} minutes.")


def _reset_wait_s(headers: Mapping[str, str], now_s: float) -> float | None:
    """Seconds until the throttle lifts: ``retry-after-ms``/``retry-after``, else the reset of the
    exhausted window(s) (remaining 0), else the latest reset given."""
    retry = parse_retry_after_s(headers, now_s)
    if retry is not None:
        return retry
    rl = parse_openai_rate_limits(headers, now_s)
    if rl is None:
        return None
    out = [w.reset_at_s for w in rl.windows.values() if w.status == "rejected" and w.reset_at_s is not None]
    out = out or [w.reset_at_s for w in rl.windows.values() if w.reset_at_s is not None]
    return max(out) - now_s if out else None


def classify_openai(status: int, headers: Mapping[str, str], body: bytes, now_s: float, *,
                    account: str = "", provider: str = "") -> Outcome:
    """Classify one answer of an OpenAI-compatible provider as :func:`shunt_lib.outcome.classify` does
    an Anthropic one.

    429 with ``insufficient_quota`` (type or code) or a billing code → ``EXHAUSTED`` for
    :data:`BILLING_RECHECK_S`, with :func:`billing_advice` as ``advice``; any other 429
    (``rate_limit_exceeded`` or none) → ``THROTTLE`` until the reset (Retry-After, else the rate-limit
    headers, else :data:`~shunt_lib.outcome.THROTTLE_DEFAULT_S`), at least 1 s. Every other status as
    :func:`~shunt_lib.outcome.classify` (401 auth, 403 forbidden, 5xx server error, 529 overloaded).

    :param headers: lower-cased response headers. :param body: the (small) error body.
    :param account: the account's name, :param provider: the provider as people name it (for ``advice``).
    """
    if status != 429:
        return classify(status, headers, body, None, now_s)
    err_type, code, _ = openai_error(body)
    if err_type == "insufficient_quota" or code in BILLING_CODES:
        return Outcome(Action.EXHAUSTED, until_s=now_s + BILLING_RECHECK_S, reason="insufficient quota (billing)",
                       advice=billing_advice(account, provider))
    wait = _reset_wait_s(headers, now_s)
    reason = "rate limit exceeded (429)" if "rate_limit" in (code + err_type) else "throttled (429)"
    return Outcome(Action.THROTTLE, until_s=now_s + max(1.0, THROTTLE_DEFAULT_S if wait is None else wait),
                   reason=reason)
