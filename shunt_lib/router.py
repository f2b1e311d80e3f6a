"""Which account takes a request: pure functions over a snapshot of the pool.

Precedence: a pin (``use NAME``) if that account is usable; then the session's account if usable
(keeps its prompt cache warm); then the configured strategy over the usable, untried accounts:

* ``least-utilization``: per window ``health = 1 - utilization * min(1, seconds_to_reset / window_length)``
  (a passed reset counts as utilization 0); score = product of the windows' health divided by
  ``1 + active_sessions``; highest score wins, config order breaks ties.
* ``reset-first``: the account whose used window resets soonest (use-it-or-lose-it); accounts with
  no used window come last.
* ``fill-first``: config order.
* ``round-robin``: rotate by a counter the caller advances.

A quota-free request (:func:`is_quota_free`: counting tokens, listing models) spends no usage
window, so when no account is usable it still goes to any account whose credential works: cooling
and exhausted accounts too, never ``disabled`` or ``reauth_required`` ones.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Iterable, Sequence

from .ratelimit import Window, window_length_s


class AccountStatus(enum.StrEnum):
    """An account's state for routing, as ``/status`` shows it."""

    AVAILABLE = "available"  # can take requests
    COOLING = "cooling"  # must not be used before its cooldown ends (throttled, forbidden)
    EXHAUSTED = "exhausted"  # out of quota until a window resets
    REAUTH_REQUIRED = "reauth_required"  # needs a new login (or key): only a human can fix it
    DISABLED = "disabled"  # its API key was rejected: only a human can fix it


@dataclasses.dataclass(frozen=True)
class AccountView:
    """An account as routing sees it at one instant.

    ``cooldown_until_s`` / ``exhausted_until_s``: epoch seconds (0 = none). ``windows``: window name →
    :class:`~shunt_lib.ratelimit.Window`. ``index``: position in config order.
    """

    name: str
    index: int = 0
    kind: str = "oauth"
    disabled: bool = False
    reauth_required: bool = False
    cooldown_until_s: float = 0.0
    exhausted_until_s: float = 0.0
    windows: dict[str, Window] = dataclasses.field(default_factory=dict)
    active_sessions: int = 0

    def status(self, now_s: float) -> AccountStatus:
        """The account's :class:`AccountStatus` at ``now_s`` (epoch s)."""
        if self.disabled:
            return AccountStatus.DISABLED
        if self.reauth_required:
            return AccountStatus.REAUTH_REQUIRED
        if self.exhausted_until_s > now_s:
            return AccountStatus.EXHAUSTED
        if self.cooldown_until_s > now_s:
            return AccountStatus.COOLING
        return AccountStatus.AVAILABLE

    def usable(self, now_s: float) -> bool:
        """Whether it can take a request at ``now_s``."""
        return (not self.disabled and not self.reauth_required and self.exhausted_until_s <= now_s
                and self.cooldown_until_s <= now_s)

    def available_at_s(self, now_s: float) -> float | None:
        """When this account becomes usable by itself (epoch s); None if only a human can fix it."""
        if self.disabled or self.reauth_required:
            return None
        return max(now_s, self.cooldown_until_s, self.exhausted_until_s)


def window_health(w: Window, length_s: float, now_s: float) -> float:
    """``1 - utilization * min(1, seconds_to_reset / length_s)``, clamped to [0, 1]."""
    if w.utilization is None:
        return 1.0
    if w.reset_at_s is None:
        frac = 1.0
    elif w.reset_at_s <= now_s:
        return 1.0
    else:
        frac = min(1.0, (w.reset_at_s - now_s) / length_s)
    return min(1.0, max(0.0, 1.0 - w.utilization * frac))


def score(view: AccountView, now_s: float) -> float:
    """least-utilization score: product of window health, divided by ``1 + active_sessions``."""
    s = 1.0
    for name, w in view.windows.items():
        s *= window_health(w, window_length_s(name), now_s)
    return s / (1 + view.active_sessions)


def _soonest_reset(view: AccountView, now_s: float) -> float:
    resets = [w.reset_at_s for w in view.windows.values()
              if w.reset_at_s is not None and w.reset_at_s > now_s and (w.utilization or 0) > 0]
    return min(resets) if resets else float("inf")


def pick_by_strategy(candidates: Sequence[AccountView], strategy: str, now_s: float, rr_counter: int = 0) -> AccountView:
    """Pick one of ``candidates`` (non-empty, all usable) by ``strategy``.

    :raises ValueError: for an unknown strategy or no candidates.
    """
    if not candidates:
        raise ValueError("no candidates")
    ordered = sorted(candidates, key=lambda v: v.index)
    if strategy == "least-utilization":
        return max(ordered, key=lambda v: (score(v, now_s), -v.index))
    if strategy == "reset-first":
        return min(ordered, key=lambda v: (_soonest_reset(v, now_s), v.index))
    if strategy == "fill-first":
        return ordered[0]
    if strategy == "round-robin":
        return ordered[rr_counter % len(ordered)]
    raise ValueError(f"unknown strategy {strategy!r}")


@dataclasses.dataclass(frozen=True)
class Choice:
    """The routing decision: ``name`` of the account and ``reason`` (pinned, session, or the strategy)."""

    name: str
    reason: str


def choose_account(
    views: Sequence[AccountView],
    *,
    strategy: str,
    now_s: float,
    tried: Iterable[str] = (),
    pinned: str | None = None,
    session_account: str | None = None,
    rr_counter: int = 0,
) -> Choice | None:
    """Decide which account takes the next attempt of a request.

    :param tried: accounts already attempted by this request (never chosen again).
    :param pinned: the pinned account name, or None for routing.
    :param session_account: the account the request's session is bound to, or None.
    :returns: a :class:`Choice`, or None if no untried account is usable now.
    """
    tried = set(tried)
    by_name = {v.name: v for v in views}
    for name, reason in ((pinned, "pinned"), (session_account, "session")):
        v = by_name.get(name) if name else None
        if v is not None and v.name not in tried and v.usable(now_s):
            return Choice(v.name, reason)
    candidates = [v for v in views if v.name not in tried and v.usable(now_s)]
    if not candidates:
        return None
    return Choice(pick_by_strategy(candidates, strategy, now_s, rr_counter).name, strategy)


#: Requests that use no quota (docs/protocol.md §5.1): ``POST /v1/messages/count_tokens`` ("free to use",
#: https://platform.claude.com/docs/en/build-with-claude/token-counting) and ``GET /v1/models``,
#: ``GET /v1/models/{id}`` (https://platform.claude.com/docs/en/api/models/list). HEAD as GET.
QUOTA_FREE = (("POST", "/v1/messages/count_tokens"), ("GET", "/v1/models"), ("HEAD", "/v1/models"))


def is_quota_free(method: str, target: str) -> bool:
    """Whether ``method target`` (path and optional query) is a request that uses no quota (:data:`QUOTA_FREE`)."""
    path = target.split("?", 1)[0].rstrip("/")
    for m, p in QUOTA_FREE:
        if method == m and (path == p or (p == "/v1/models" and path.startswith("/v1/models/"))):
            return True
    return False


def choose_credential_holder(views: Sequence[AccountView], *, tried: Iterable[str] = (), pinned: str | None = None,
                             session_account: str | None = None) -> Choice | None:
    """For a quota-free request when :func:`choose_account` found nothing usable: any untried account
    whose credential works (cooling or exhausted alike), the pinned one or the session's first, then
    config order. :returns: a :class:`Choice` with reason ``quota-free``, or None."""
    tried = set(tried)
    ok = [v for v in views if v.name not in tried and not v.disabled and not v.reauth_required]
    for name in (pinned, session_account):
        if name and any(v.name == name for v in ok):
            return Choice(name, "quota-free")
    return Choice(min(ok, key=lambda v: v.index).name, "quota-free") if ok else None


def soonest_recovery(views: Sequence[AccountView], now_s: float) -> tuple[float, str] | None:
    """The earliest moment (epoch s) an unusable account becomes usable by itself, with its name.

    Accounts needing a human (disabled, reauth_required) never count. None if no account will recover.
    """
    best: tuple[float, str] | None = None
    for v in views:
        if v.usable(now_s):
            continue
        at = v.available_at_s(now_s)
        if at is not None and (best is None or at < best[0]):
            best = (at, v.name)
    return best
