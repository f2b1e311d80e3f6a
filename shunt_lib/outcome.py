"""What an upstream answer means for the request and its account (pure).

Rules (``docs/protocol.md`` §4.2, §4.3, §5.5):

=====================================  ===========  =============================================
upstream answer                        action       effect on the account
=====================================  ===========  =============================================
2xx                                    SUCCESS      rate-limit headers recorded
429 whose message mentions extra usage RETURN       none (an entitlement problem, not quota)
429 with a unified status ``rejected``  EXHAUSTED    exhausted until the rejected window resets
429 otherwise (a throttle)             THROTTLE     cools for retry-after (default 30 s, max 120 s)
529 or ``overloaded_error``            OVERLOADED   none; the request moves once, after a backoff
401                                    AUTH         refresh once, then reauth_required / disabled
403                                    FORBIDDEN    cools 30 minutes
500/502/503/504                        SERVER_ERROR none; the request moves to another account
anything else                          RETURN       none
=====================================  ===========  =============================================
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Mapping

from .ratelimit import RateLimitInfo, parse_retry_after_s

THROTTLE_DEFAULT_S = 30.0
THROTTLE_MAX_S = 120.0
FORBIDDEN_COOLDOWN_S = 30 * 60.0
# A 429 "rejected" without any reset header: assume the 5h window (rare; keeps the account out a while).
EXHAUSTED_FALLBACK_S = 5 * 3600.0


class Action(enum.Enum):
    """What an upstream answer means (see the table above)."""
    SUCCESS = "success"
    RETURN = "return"
    EXHAUSTED = "exhausted"
    THROTTLE = "throttle"
    OVERLOADED = "overloaded"
    AUTH = "auth"
    FORBIDDEN = "forbidden"
    SERVER_ERROR = "server_error"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """``action`` plus, where it applies, ``until_s`` (epoch s the account is blocked until),
    ``reason`` (why, as the account's cooldown reason and in logs) and ``advice`` (a sentence telling
    the user what to do, when waiting will not help; "" otherwise)."""

    action: Action
    until_s: float = 0.0
    reason: str = ""
    advice: str = ""


def error_info(body: bytes) -> tuple[str, str]:
    """``(error.type, error.message)`` of an Anthropic error body, or ``("", "")`` if it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", ""
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("type") or ""), str(err.get("message") or "")


def classify(status: int, headers: Mapping[str, str], body: bytes, rl: RateLimitInfo | None, now_s: float) -> Outcome:
    """Classify one upstream response.

    :param body: the (small) error body for non-2xx responses; ignored for 2xx.
    :param rl: the parsed rate-limit headers of the same response, or None.
    """
    if 200 <= status < 300:
        return Outcome(Action.SUCCESS)
    err_type, message = error_info(body) if status >= 400 else ("", "")
    if status == 429:
        if "extra usage" in message.lower():
            return Outcome(Action.RETURN, reason="extra usage required")
        if rl is not None and rl.rejected:
            until = rl.exhausted_until_s
            if until is None or until <= now_s:
                retry = parse_retry_after_s(headers, now_s)
                until = now_s + (retry if retry else EXHAUSTED_FALLBACK_S)
            return Outcome(Action.EXHAUSTED, until_s=until, reason="quota exhausted")
        retry = parse_retry_after_s(headers, now_s)
        wait = THROTTLE_DEFAULT_S if retry is None else min(max(retry, 1.0), THROTTLE_MAX_S)
        return Outcome(Action.THROTTLE, until_s=now_s + wait, reason="throttled (429)")
    if status == 529 or err_type == "overloaded_error":
        return Outcome(Action.OVERLOADED, reason="overloaded")
    if status == 401:
        return Outcome(Action.AUTH, reason="unauthorized")
    if status == 403:
        return Outcome(Action.FORBIDDEN, until_s=now_s + FORBIDDEN_COOLDOWN_S, reason="forbidden (403)")
    if status in (500, 502, 503, 504):
        return Outcome(Action.SERVER_ERROR, reason=f"upstream {status}")
    return Outcome(Action.RETURN)
