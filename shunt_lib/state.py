"""The pool's runtime state behind one lock, and the thread that persists it to ``state.json``.

Everything about the accounts that changes at run time lives here: cooldowns, exhaustion, the last
rate-limit windows, flags that need a human, usage counters; plus the session table, the pin and the
last 200 requests. Decisions are made elsewhere over snapshots (:mod:`shunt_lib.router`,
:mod:`shunt_lib.status`); this module records facts. ``Pool._lock`` guards every field and is never
held across I/O. Every public method may be called from any thread.

``state.json`` is written only here: by :class:`StateWriter` while shunt runs, and by
:func:`edit_saved_state` for a command that changes an account while shunt may be stopped.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time
from typing import Iterable, NamedTuple

from .advice import action_for
from .clock import SYSTEM, Clock
from .config import AccountConfig
from .fsutil import atomic_write_bytes, atomic_write_json, read_json
from .loop import Loop
from .outcome import Action, Outcome
from .ratelimit import RateLimitInfo, Window
from .record import RequestRecord
from .router import AccountView, Choice, choose_account, choose_credential_holder, soonest_recovery
from .sessions import SessionTable

log = logging.getLogger("shunt.state")
events_log = logging.getLogger("shunt.events")

STATE_VERSION = 1
RECENT_MAX = 200
COUNTERS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


@dataclasses.dataclass
class AccountRecord:
    """Mutable per-account state; only touched under ``Pool._lock``. Times are epoch seconds."""

    name: str
    kind: str
    index: int
    disabled: bool = False
    reauth_required: bool = False
    cooldown_until_s: float = 0.0
    cooldown_reason: str = ""
    exhausted_until_s: float = 0.0
    windows: dict = dataclasses.field(default_factory=dict)
    rate_limits_at_s: float = 0.0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0

    def view(self, active_sessions: int = 0) -> AccountView:
        """The account as routing sees it (:class:`~shunt_lib.router.AccountView`)."""
        return AccountView(self.name, self.index, self.kind, self.disabled, self.reauth_required,
                           self.cooldown_until_s, self.exhausted_until_s, self.windows, active_sessions)

    def count(self, record: RequestRecord) -> None:
        """Add one finished request and its tokens to the counters."""
        self.requests += 1
        self.input_tokens += record["input_tokens"]
        self.output_tokens += record["output_tokens"]
        self.cache_read_tokens += record["cache_read_tokens"]
        self.cache_creation_tokens += record["cache_creation_tokens"]

    def set_flags(self, reauth_required: bool | None, disabled: bool | None) -> tuple[bool, bool]:
        """Set or clear the flags given (None: unchanged). :returns: which of the two became set just now."""
        newly = (bool(reauth_required) and not self.reauth_required, bool(disabled) and not self.disabled)
        if reauth_required is not None:
            self.reauth_required = reauth_required
        if disabled is not None:
            self.disabled = disabled
        return newly

    def cool(self, until_s: float, reason: str) -> None:
        """Block until ``until_s`` (epoch s) for ``reason``; a later deadline is never shortened."""
        if until_s > self.cooldown_until_s:
            self.cooldown_until_s, self.cooldown_reason = until_s, reason

    def expire(self, now_s: float) -> tuple[bool, float | None]:
        """Clear a cooldown or exhaustion whose time has passed.

        :returns: (whether anything was cleared, the epoch s of the next expiry still ahead, or None).
        """
        changed = False
        if self.cooldown_until_s and self.cooldown_until_s <= now_s:
            self.cooldown_until_s, self.cooldown_reason, changed = 0.0, "", True
        if self.exhausted_until_s and self.exhausted_until_s <= now_s:
            self.exhausted_until_s, changed = 0.0, True
        ahead = [t for t in (self.cooldown_until_s, self.exhausted_until_s) if t]
        return changed, min(ahead) if ahead else None

    def to_json(self) -> dict:
        """As stored in ``state.json``."""
        d = {k: getattr(self, k) for k in ("disabled", "reauth_required", "cooldown_until_s", "cooldown_reason",
                                           "exhausted_until_s", "rate_limits_at_s") + COUNTERS}
        d["windows"] = {k: w.to_json() for k, w in self.windows.items()}
        return d

    def load_json(self, d: dict) -> None:
        """Restore from :meth:`to_json`'s shape; a value of the wrong type is ignored (the default stays)."""
        for k in ("disabled", "reauth_required"):
            setattr(self, k, d.get(k) is True)
        for k in ("cooldown_until_s", "exhausted_until_s", "rate_limits_at_s"):
            v = d.get(k, 0)
            setattr(self, k, float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0)
        reason = d.get("cooldown_reason")
        self.cooldown_reason = reason if isinstance(reason, str) else ""
        for k in COUNTERS:
            v = d.get(k, 0)
            setattr(self, k, v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0)
        wins = d.get("windows")
        self.windows = {k: Window.from_json(w) for k, w in wins.items() if isinstance(w, dict)} \
            if isinstance(wins, dict) else {}


class AccountSnapshot(NamedTuple):
    """One account at one instant, for ``/status``: its routing view and its counters."""

    view: AccountView
    cooldown_reason: str
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int


class PoolSnapshot(NamedTuple):
    """The whole pool at one instant: the pin, every account in config order, the recent requests."""

    pinned: str | None
    accounts: list[AccountSnapshot]
    recent: list[RequestRecord]


class Pool:
    """Lock-guarded runtime state of every account, plus sessions, pin and recent requests.

    :param accounts: configured accounts in config order.
    :param session_ttl_s: sliding TTL of a session's binding to an account, seconds.
    :param strategy: routing strategy name (see :mod:`shunt_lib.router`).
    """

    def __init__(self, accounts: Iterable[AccountConfig], *, strategy: str, session_ttl_s: float):
        self._lock = threading.Lock()
        self.strategy = strategy
        self._accounts: dict[str, AccountRecord] = {a.name: AccountRecord(a.name, a.kind, i)
                                                    for i, a in enumerate(accounts)}
        self._sessions = SessionTable(session_ttl_s)
        self._recent: collections.deque = collections.deque(maxlen=RECENT_MAX)
        self._rr = 0
        self._pinned: str | None = None
        self.version = 0  # bumped under the lock whenever persisted state changes; the writer polls it

    # -- configuration ------------------------------------------------------------------------
    def configure(self, *, strategy: str, session_ttl_s: float) -> None:
        """Apply the ``[server]`` keys a reload may change (new bindings get the new TTL)."""
        with self._lock:
            self.strategy, self._sessions.ttl_s = strategy, session_ttl_s

    @property
    def pinned(self) -> str | None:
        """The pinned account, or None when routing (change it with :meth:`set_pin`)."""
        return self._pinned

    def sync_accounts(self, accounts: Iterable[AccountConfig]) -> tuple[list[str], list[str]]:
        """Make the pool match ``accounts`` (a reload): keep known accounts' state, add new ones, drop
        removed ones with their sessions and pin. :returns: (added names, removed names)."""
        with self._lock:
            old = self._accounts
            new = _reconcile(old, accounts)
            added = [n for n in new if n not in old]
            removed = [n for n in old if n not in new]
            self._accounts = new
            if removed:
                self._sessions.keep_accounts(set(new))
                if self._pinned in removed:
                    self._pinned = None
            if added or removed:
                self._touch()
            return added, removed

    # -- reading ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Account names in config order."""
        with self._lock:
            return list(self._accounts)

    def needs_login(self, name: str) -> bool:
        """Whether ``name`` is ``reauth_required`` (False for an unknown name)."""
        with self._lock:
            rec = self._accounts.get(name)
            return rec is not None and rec.reauth_required

    def _records(self, kinds: frozenset[str] | None) -> Iterable[AccountRecord]:
        recs = self._accounts.values()
        return recs if kinds is None else [r for r in recs if r.kind in kinds]

    def _views(self, now_s: float, kinds: frozenset[str] | None, sessions: bool = True) -> list[AccountView]:
        """Views of the accounts of ``kinds``, with live session counts if ``sessions`` (under the lock)."""
        counts = self._sessions.active_counts(self._accounts, now_s) if sessions else {}
        return [r.view(counts.get(r.name, 0)) for r in self._records(kinds)]

    def views(self, now_s: float, *, kinds: frozenset[str] | None = None) -> list[AccountView]:
        """A routing snapshot of every account (of ``kinds``, if given), config order."""
        with self._lock:
            return self._views(now_s, kinds)

    def snapshot(self, now_s: float) -> PoolSnapshot:
        """Everything ``/status`` shows, copied under the lock."""
        with self._lock:
            counts = self._sessions.active_counts(self._accounts, now_s)
            accounts = [AccountSnapshot(r.view(counts[r.name]), r.cooldown_reason, r.requests, r.input_tokens,
                                        r.output_tokens, r.cache_read_tokens, r.cache_creation_tokens)
                        for r in self._accounts.values()]
            return PoolSnapshot(self._pinned, accounts, list(self._recent))

    # -- routing ------------------------------------------------------------------------------
    def route(self, session: str | None, tried: frozenset[str] | set[str], now_s: float, *,
              kinds: frozenset[str] | None = None, quota_free: bool = False) -> Choice | None:
        """Choose an account for the next attempt and bind ``session`` to it (sliding TTL).

        Fast path: a session whose bound account is usable is answered without scoring.
        :param kinds: only accounts of these kinds may be chosen (None: any).
        :param quota_free: the request uses no quota: if no account is usable, any whose credential
            works may take it (:func:`~shunt_lib.router.choose_credential_holder`; the session is not bound).
        :returns: the :class:`~shunt_lib.router.Choice`, or None if no untried account can take it.
        """
        with self._lock:
            bound = self._sessions.account(session, now_s)
            if self._pinned is None and bound is not None and bound not in tried:
                rec = self._accounts.get(bound)
                if rec is not None and (kinds is None or rec.kind in kinds) and rec.view().usable(now_s):
                    self._sessions.bind(session, bound, now_s)
                    return Choice(bound, "session")
            views = self._views(now_s, kinds, sessions=self.strategy == "least-utilization")
            choice = choose_account(views, strategy=self.strategy, now_s=now_s, tried=tried, pinned=self._pinned,
                                    session_account=bound, rr_counter=self._rr)
            if choice is None:
                return choose_credential_holder(views, tried=tried, pinned=self._pinned,
                                                session_account=bound) if quota_free else None
            if choice.reason == "round-robin":
                self._rr += 1
            if session is not None:
                self._sessions.bind(session, choice.name, now_s)
                self._touch()
            return choice

    def session_account(self, session: str | None, now_s: float) -> str | None:
        """The account ``session`` is bound to, or None."""
        with self._lock:
            return self._sessions.account(session, now_s)

    def soonest_recovery(self, now_s: float, *, kinds: frozenset[str] | None = None) -> tuple[float, str] | None:
        """``(epoch_s, name)`` of the first unusable account (of ``kinds``) to recover by itself, or None."""
        return soonest_recovery(self.views(now_s, kinds=kinds), now_s)

    def any_usable(self, now_s: float, exclude: frozenset[str] | set[str] = frozenset(), *,
                   kinds: frozenset[str] | None = None) -> bool:
        """Whether an account (of ``kinds``) not in ``exclude`` can take a request now."""
        with self._lock:
            return any(r.view().usable(now_s) for r in self._records(kinds) if r.name not in exclude)

    # -- recording facts ----------------------------------------------------------------------
    def _touch(self) -> None:
        self.version += 1  # the writer compares versions: no wake-up per request on the hot path

    def _record(self, name: str) -> AccountRecord | None:
        """``name``'s record, or None if a reload removed it while its request was in flight (call under the lock)."""
        return self._accounts.get(name)

    def record_rate_limits(self, name: str, rl: RateLimitInfo | None, now_s: float) -> None:
        """Store the windows an upstream response reported for ``name`` (merged per window); a
        response that is not ``rejected`` ends an exhaustion whose time has passed."""
        if rl is None:
            return
        with self._lock:
            rec = self._record(name)
            if rec is None:
                return
            rec.windows = {**rec.windows, **rl.windows}
            rec.rate_limits_at_s = now_s
            recovered = not rl.rejected and 0 < rec.exhausted_until_s <= now_s
            if recovered:
                rec.exhausted_until_s = 0.0
            self._touch()
        if recovered:
            events_log.info("account %s is available again", name, extra={"event": "recovered", "account": name})

    def record_outcome(self, name: str, outcome: Outcome) -> None:
        """Apply what a classified upstream answer means for ``name``: exhausted until its window
        resets (a quota 429), or cooling (a throttle 429, a 403). Other outcomes change nothing here."""
        if outcome.action is Action.EXHAUSTED:
            self.mark_exhausted(name, outcome.until_s)
        elif outcome.action in (Action.THROTTLE, Action.FORBIDDEN):
            self.cool(name, outcome.until_s, outcome.reason)

    def mark_exhausted(self, name: str, until_s: float) -> None:
        """``name`` is out of quota until ``until_s`` (epoch s)."""
        with self._lock:
            rec = self._record(name)
            if rec is None:
                return
            rec.exhausted_until_s = max(rec.exhausted_until_s, until_s)
            self._touch()
        events_log.info("account %s exhausted until %s", name, _hhmmss(until_s),
                        extra={"event": "exhausted", "account": name, "until_s": until_s})

    def cool(self, name: str, until_s: float, reason: str) -> None:
        """``name`` must not be used before ``until_s`` (epoch s); a later deadline is never shortened."""
        with self._lock:
            rec = self._record(name)
            if rec is None:
                return
            rec.cool(until_s, reason)
            self._touch()
        events_log.info("account %s cooling until %s (%s)", name, _hhmmss(until_s), reason,
                        extra={"event": "cooling", "account": name, "until_s": until_s, "reason": reason})

    def set_flag(self, name: str, *, reauth_required: bool | None = None, disabled: bool | None = None) -> None:
        """Set or clear ``reauth_required`` / ``disabled`` on ``name``; a newly set flag is logged with its fix."""
        with self._lock:
            rec = self._record(name)
            if rec is None:
                return
            newly_reauth, newly_disabled = rec.set_flags(reauth_required, disabled)
            kind = rec.kind
            self._touch()
        if newly_reauth:
            events_log.warning("account %s needs a new login: %s", name, action_for(name, kind, "reauth_required"),
                               extra={"event": "reauth_required", "account": name})
        if newly_disabled:
            events_log.warning("account %s disabled: %s", name, action_for(name, kind, "disabled"),
                               extra={"event": "disabled", "account": name})

    def record_request(self, record: RequestRecord) -> None:
        """Count one finished request against its account and keep it among the recent ones."""
        with self._lock:
            rec = self._accounts.get(record["account"] or "")
            if rec is not None:
                rec.count(record)
            self._recent.append(record)
            self._touch()

    def set_pin(self, name: str | None) -> None:
        """Pin all traffic to ``name``, or unpin with None. :raises KeyError: unknown account."""
        with self._lock:
            if name is not None and name not in self._accounts:
                raise KeyError(name)
            self._pinned = name
            self._touch()

    def clear_expired(self, now_s: float) -> tuple[list[str], float | None]:
        """Clear cooldowns and exhausted windows whose time has passed.

        :returns: (names that became usable, next epoch s at which something expires, or None).
        """
        recovered, ahead = [], []
        with self._lock:
            for rec in self._accounts.values():
                changed, at = rec.expire(now_s)
                if changed:
                    self._touch()
                    if rec.view().usable(now_s):
                        recovered.append(rec.name)
                if at is not None:
                    ahead.append(at)
        for name in recovered:
            events_log.info("account %s is available again", name, extra={"event": "recovered", "account": name})
        return recovered, min(ahead) if ahead else None

    # -- persistence ----------------------------------------------------------------------------
    def to_json(self, now_s: float) -> dict:
        """The ``state.json`` document."""
        with self._lock:
            return {
                "version": STATE_VERSION,
                "saved_at_s": now_s,
                "pinned_account": self._pinned,
                "accounts": {n: r.to_json() for n, r in self._accounts.items()},
                "sessions": self._sessions.to_json(now_s),
                "recent_requests": list(self._recent),
            }

    def load_json(self, data: object, now_s: float) -> None:
        """Restore state saved by :meth:`to_json`; unknown accounts, expired sessions and values of the
        wrong shape are dropped, never raised."""
        if not isinstance(data, dict):
            return
        with self._lock:
            accounts = data.get("accounts")
            for name, d in (accounts.items() if isinstance(accounts, dict) else ()):
                if name in self._accounts and isinstance(d, dict):
                    self._accounts[name].load_json(d)
            self._sessions.load_json(data.get("sessions"), set(self._accounts), now_s)
            pinned = data.get("pinned_account")
            self._pinned = pinned if isinstance(pinned, str) and pinned in self._accounts else None
            recent = data.get("recent_requests")
            self._recent.extend(e for e in (recent if isinstance(recent, list) else ()) if isinstance(e, dict))


def _reconcile(old: dict[str, AccountRecord], accounts: Iterable[AccountConfig]) -> dict[str, AccountRecord]:
    """The records for ``accounts``, in their order: an account known with the same kind keeps its
    record (re-indexed), any other gets a fresh one."""
    new: dict[str, AccountRecord] = {}
    for i, a in enumerate(accounts):
        rec = old.get(a.name)
        if rec is None or rec.kind != a.kind:
            rec = AccountRecord(a.name, a.kind, i)
        rec.index = i
        new[a.name] = rec
    return new


def _hhmmss(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_s))


class StateWriter(Loop):
    """Writes ``state.json`` atomically when the pool changed, at most every ``interval_s`` (100 ms).

    It polls :attr:`Pool.version` instead of being woken per change, so a request costs no wake-up.
    :meth:`stop` writes a final copy. The file is valid JSON at every instant (atomic rename).
    """

    def __init__(self, pool: Pool, path: str, *, interval_s: float = 0.1, clock: Clock = SYSTEM):
        super().__init__("shunt-state-writer")
        self.pool, self.path, self.interval_s, self.clock = pool, path, interval_s, clock
        self._written_version = -1

    def flush(self) -> None:
        """Write the current state now (any thread)."""
        version = self.pool.version
        try:
            atomic_write_bytes(self.path, json.dumps(self.pool.to_json(self.clock.time()), separators=(",", ":")).encode())
            self._written_version = version
        except OSError as exc:
            log.error("could not write %s: %s", self.path, exc)

    def tick(self) -> None:
        if self.pool.version != self._written_version:
            self.flush()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.safe_tick()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, then write a final copy."""
        super().stop(timeout_s)
        self.flush()


def load_state(pool: Pool, path: str, now_s: float) -> None:
    """Load ``state.json`` into ``pool``; an unreadable file is logged and ignored (state starts fresh)."""
    try:
        pool.load_json(read_json(path, default={}), now_s)
    except (ValueError, OSError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)


def edit_saved_state(path: str, name: str, *, forget: bool) -> None:
    """Change ``state.json`` for account ``name`` from a command, while shunt may be stopped.

    ``forget``: drop the account, its sessions and its pin (``shunt remove``); otherwise clear its
    ``reauth_required`` / ``disabled`` flags (a new login or key). A missing or unreadable file is
    left alone. A running proxy applies the same change itself on reload.
    """
    try:
        state = read_json(path, default=None)
    except (ValueError, OSError):
        return
    if not isinstance(state, dict) or not isinstance(state.get("accounts"), dict):
        return
    if not forget:
        entry = state["accounts"].get(name)
        if isinstance(entry, dict) and (entry.get("reauth_required") or entry.get("disabled")):
            entry["reauth_required"] = entry["disabled"] = False
            atomic_write_json(path, state)
        return
    state["accounts"].pop(name, None)
    sessions = state.get("sessions")
    state["sessions"] = {k: v for k, v in (sessions.items() if isinstance(sessions, dict) else ())
                         if not (isinstance(v, dict) and v.get("account") == name)}
    if state.get("pinned_account") == name:
        state["pinned_account"] = None
    atomic_write_json(path, state)
