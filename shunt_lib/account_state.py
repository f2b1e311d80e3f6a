"""One account's runtime state, the transitions facts make to it, and the event each worth telling reports.

:class:`AccountRecord` holds what changes about an account at run time: cooldown and its reason,
exhaustion, the last rate-limit windows, the flags that need a human, usage counters. Its methods
are the transitions (a 429 exhausts or cools it, fresh usage or a successful answer ends an
exhaustion, ``shunt reset`` clears both marks, time expires them) and its ``state.json`` entry. It
is not thread-safe: its owner, :class:`~shunt_lib.state.Pool`, calls it under its lock.

A transition worth a line in the events log (``shunt.events``) returns an :class:`Event` instead of
logging it, so that the pool logs it after releasing its lock; a mark that racing requests report
again without moving it later by more than :data:`NEWS_S` is no news and is logged once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Iterable, NamedTuple

from .advice import action_for
from .config import AccountConfig
from .logfmt import clock_text
from .numbers import count, epoch_s
from .ratelimit import RateLimitInfo, Window, has_room
from .record import RequestRecord
from .router import AccountView
from .savings import Ledger

events_log = logging.getLogger("shunt.events")

NEWS_S = 1.0  # a cooldown or exhaustion is logged when it starts or moves later by more than this, seconds
COUNTERS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


class Event(NamedTuple):
    """One line for the events log: ``level`` (a :mod:`logging` level), a %-style ``message`` with its
    ``args``, and the ``extra`` fields of the record (always ``event`` and ``account``)."""

    level: int
    message: str
    args: tuple
    extra: dict

    @property
    def account(self) -> str:
        """The account the event is about."""
        return self.extra["account"]

    def log(self) -> None:
        """Log it to ``shunt.events`` (call without holding the pool's lock)."""
        events_log.log(self.level, self.message, *self.args, extra=self.extra)


def _event(level: int, message: str, *args: object, **extra: object) -> Event:
    return Event(level, message, args, extra)


class AccountSnapshot(NamedTuple):
    """One account at one instant, for ``/status``: its routing view and its counters; ``exhausted_advice``
    what a human must do before waiting ends its exhaustion (e.g. a provider that wants billing), or ""."""

    view: AccountView
    cooldown_reason: str
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    savings: Ledger | None = None
    exhausted_advice: str = ""


@dataclasses.dataclass
class AccountRecord:
    """Mutable per-account state; only touched under the pool's lock. Times are epoch seconds."""

    name: str
    kind: str
    index: int
    disabled: bool = False
    reauth_required: bool = False
    cooldown_until_s: float = 0.0
    cooldown_reason: str = ""
    exhausted_until_s: float = 0.0
    exhausted_advice: str = ""
    windows: dict = dataclasses.field(default_factory=dict)
    rate_limits_at_s: float = 0.0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    savings: Ledger = dataclasses.field(default_factory=Ledger)

    # -- reading ------------------------------------------------------------------------------
    def view(self, active_sessions: int = 0) -> AccountView:
        """The account as routing sees it (:class:`~shunt_lib.router.AccountView`)."""
        return AccountView(self.name, self.index, self.kind, self.disabled, self.reauth_required,
                           self.cooldown_until_s, self.exhausted_until_s, self.windows, active_sessions)

    def snapshot(self, active_sessions: int) -> AccountSnapshot:
        """The account and its counters as ``/status`` shows them."""
        return AccountSnapshot(self.view(active_sessions), self.cooldown_reason, self.requests, self.input_tokens,
                               self.output_tokens, self.cache_read_tokens, self.cache_creation_tokens,
                               Ledger(dict((d, list(b)) for d, b in self.savings.days.items()),
                                      self.savings.all_usd, self.savings.all_unpriced),
                               self.exhausted_advice)

    # -- transitions --------------------------------------------------------------------------
    def count(self, record: RequestRecord, cost_usd: float | None = None) -> None:
        """Add one finished request, its tokens and its API-equivalent ``cost_usd`` (None: unpriced
        model) to the counters."""
        self.savings.add(record["ts_s"], cost_usd)
        self.requests += 1
        self.input_tokens += record["input_tokens"]
        self.output_tokens += record["output_tokens"]
        self.cache_read_tokens += record["cache_read_tokens"]
        self.cache_creation_tokens += record["cache_creation_tokens"]

    def take_rate_limits(self, rl: RateLimitInfo, now_s: float) -> Event | None:
        """Store the windows an upstream response reported (merged per window); a response that is
        not ``rejected`` ends an exhaustion whose time has passed. :returns: the recovery, if so."""
        self.windows = {**self.windows, **rl.windows}
        self.rate_limits_at_s = now_s
        if rl.rejected or not 0 < self.exhausted_until_s <= now_s:
            return None
        self.exhausted_until_s, self.exhausted_advice = 0.0, ""
        return _event(logging.INFO, "account %s is available again", self.name, event="recovered", account=self.name)

    def take_usage(self, windows: dict[str, Window], now_s: float) -> Event | None:
        """Store windows freshly read from the usage endpoint (merged per window). If they show room
        (:func:`~shunt_lib.ratelimit.has_room`), an exhaustion still ahead is cleared. :returns: the
        recovery, if so."""
        self.windows = {**self.windows, **windows}
        self.rate_limits_at_s = now_s
        if not (self.exhausted_until_s > 0 and has_room(windows)):
            return None
        self.exhausted_until_s, self.exhausted_advice = 0.0, ""
        return _event(logging.INFO, "account %s is available again (its usage shows room)", self.name,
                      event="recovered", account=self.name)

    def exhaust(self, until_s: float, advice: str = "") -> Event | None:
        """Out of quota until ``until_s`` (epoch s); a later deadline is never shortened; ``advice``: what
        a human must do about it (kept until the exhaustion ends). :returns: the event, unless this only
        repeats the exhaustion already marked (within :data:`NEWS_S`)."""
        news = until_s > self.exhausted_until_s + NEWS_S  # racing requests report one fact once
        self.exhausted_until_s = max(self.exhausted_until_s, until_s)
        if advice or news:
            self.exhausted_advice = advice[:500]
        return _event(logging.INFO, "account %s exhausted until %s", self.name, _clock(until_s),
                      event="exhausted", account=self.name, until_s=until_s) if news else None

    def cool(self, until_s: float, reason: str) -> Event | None:
        """Block until ``until_s`` (epoch s) for ``reason``; a later deadline is never shortened.
        :returns: the event, unless this only repeats the cooldown already marked (within :data:`NEWS_S`)."""
        news = until_s > self.cooldown_until_s + NEWS_S  # racing requests report one fact once
        if until_s > self.cooldown_until_s:
            self.cooldown_until_s, self.cooldown_reason = until_s, reason
        return _event(logging.INFO, "account %s cooling until %s (%s)", self.name, _clock(until_s), reason,
                      event="cooling", account=self.name, until_s=until_s, reason=reason) if news else None

    def reset(self) -> Event | None:
        """Clear the exhaustion and cooldown (``shunt reset``); the flags stay. :returns: the event if
        there was a mark to clear."""
        if not (self.exhausted_until_s or self.cooldown_until_s):
            return None
        self.exhausted_until_s = self.cooldown_until_s = 0.0
        self.cooldown_reason = self.exhausted_advice = ""
        return _event(logging.INFO, "account %s reset by the user", self.name, event="reset", account=self.name)

    def set_flags(self, reauth_required: bool | None, disabled: bool | None) -> list[Event]:
        """Set or clear the flags given (None: unchanged). :returns: an event, with the fix, for each
        flag that became set just now (``reauth_required`` first)."""
        events = []
        if reauth_required and not self.reauth_required:
            events.append(_event(logging.WARNING, "account %s needs a new login: %s", self.name,
                                 action_for(self.name, self.kind, "reauth_required"),
                                 event="reauth_required", account=self.name))
        if disabled and not self.disabled:
            events.append(_event(logging.WARNING, "account %s disabled: %s", self.name,
                                 action_for(self.name, self.kind, "disabled"), event="disabled", account=self.name))
        if reauth_required is not None:
            self.reauth_required = reauth_required
        if disabled is not None:
            self.disabled = disabled
        return events

    def expire(self, now_s: float) -> tuple[bool, Event | None, float | None]:
        """Clear a cooldown or exhaustion whose time has passed.

        :returns: (whether anything was cleared, the recovery if that made the account usable, the
            epoch s of the next expiry still ahead or None).
        """
        changed = False
        if self.cooldown_until_s and self.cooldown_until_s <= now_s:
            self.cooldown_until_s, self.cooldown_reason, changed = 0.0, "", True
        if self.exhausted_until_s and self.exhausted_until_s <= now_s:
            self.exhausted_until_s, self.exhausted_advice, changed = 0.0, "", True
        ahead = [t for t in (self.cooldown_until_s, self.exhausted_until_s) if t]
        recovered = changed and self.view().usable(now_s)
        return (changed, _event(logging.INFO, "account %s is available again", self.name, event="recovered",
                                account=self.name) if recovered else None, min(ahead) if ahead else None)

    # -- a cluster (shunt_lib.cluster_merge) ---------------------------------------------------
    def shared_fields(self) -> dict:
        """The fields instances of a cluster share (:data:`~shunt_lib.cluster_merge.LOCAL_FIELDS`):
        marks, windows and flags; the counters are each instance's own."""
        return {"cooldown_until_s": self.cooldown_until_s, "cooldown_reason": self.cooldown_reason,
                "exhausted_until_s": self.exhausted_until_s, "exhausted_advice": self.exhausted_advice,
                "windows": dict(self.windows), "rate_limits_at_s": self.rate_limits_at_s,
                "disabled": self.disabled, "reauth_required": self.reauth_required}

    def take_shared(self, fields: dict) -> None:
        """Take the shared fields the cluster's views merged to (:meth:`shared_fields`' shape)."""
        for k, v in fields.items():
            setattr(self, k, dict(v) if k == "windows" else v)

    # -- state.json ---------------------------------------------------------------------------
    def to_json(self) -> dict:
        """As stored in ``state.json``."""
        d = {k: getattr(self, k) for k in ("disabled", "reauth_required", "cooldown_until_s", "cooldown_reason",
                                           "exhausted_until_s", "exhausted_advice", "rate_limits_at_s") + COUNTERS}
        d["windows"] = {k: w.to_json() for k, w in self.windows.items()}
        d["savings"] = self.savings.to_json()
        return d

    def load_json(self, d: dict, now_s: float) -> None:
        """Restore from :meth:`to_json`'s shape; a value of the wrong type or out of bounds (an instant
        not within a year from ``now_s``, a negative or huge counter, ``inf``) is ignored: the default stays."""
        for k in ("disabled", "reauth_required"):
            setattr(self, k, d.get(k) is True)
        for k in ("cooldown_until_s", "exhausted_until_s", "rate_limits_at_s"):
            setattr(self, k, epoch_s(d.get(k), now_s) or 0.0)
        reason, advice = d.get("cooldown_reason"), d.get("exhausted_advice")
        self.cooldown_reason = reason[:200] if isinstance(reason, str) else ""
        self.exhausted_advice = advice[:500] if isinstance(advice, str) and self.exhausted_until_s else ""
        for k in COUNTERS:
            setattr(self, k, count(d.get(k)) or 0)
        self.savings = Ledger.from_json(d.get("savings"))
        wins = d.get("windows")
        self.windows = {k: Window.from_json(w, now_s) for k, w in wins.items()
                        if isinstance(k, str) and len(k) <= 64 and isinstance(w, dict)} if isinstance(wins, dict) else {}


def reconcile(old: dict[str, AccountRecord], accounts: Iterable[AccountConfig]
              ) -> tuple[dict[str, AccountRecord], list[str], list[str]]:
    """The records for ``accounts``, in their order: an account known with the same kind keeps its
    record (re-indexed), any other gets a fresh one. :returns: (the records by name, the names added,
    the names removed)."""
    new: dict[str, AccountRecord] = {}
    for i, a in enumerate(accounts):
        rec = old.get(a.name)
        if rec is None or rec.kind != a.kind:
            rec = AccountRecord(a.name, a.kind, i)
        rec.index = i
        new[a.name] = rec
    return new, [n for n in new if n not in old], [n for n in old if n not in new]


def _clock(epoch_s: float) -> str:
    return clock_text(epoch_s, time.time())  # with the date when it is not today
