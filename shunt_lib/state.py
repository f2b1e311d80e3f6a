"""The pool's runtime state behind one lock, and the thread that persists it to ``state.json``.

Everything that changes at run time lives here: per-account cooldowns, exhaustion, the last
rate-limit windows, usage counters, sessions (session key → account, sliding TTL), the pin and the
last 200 requests. Decisions are made by :mod:`shunt_lib.router` over :meth:`Pool.views`; this
module only records facts. ``Pool._lock`` guards every field and is never held across I/O.

All public methods may be called from any thread.
"""

from __future__ import annotations

import collections
import json
import dataclasses
import logging
import threading
import time
from typing import Callable, Iterable

from .config import AccountConfig
from .fsutil import atomic_write_bytes, read_json
from .ratelimit import RateLimitInfo, Window
from .router import AccountView, Choice, choose_account, soonest_recovery

log = logging.getLogger("shunt.state")
events_log = logging.getLogger("shunt.events")

STATE_VERSION = 1
RECENT_MAX = 200
SESSIONS_MAX = 20000
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
    email: str = ""
    plan: str = ""

    def view(self, active_sessions: int) -> AccountView:
        return AccountView(self.name, self.index, self.kind, self.disabled, self.reauth_required,
                           self.cooldown_until_s, self.exhausted_until_s, self.windows, active_sessions)

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("disabled", "reauth_required", "cooldown_until_s", "cooldown_reason",
                                           "exhausted_until_s", "rate_limits_at_s") + COUNTERS}
        d["windows"] = {k: w.to_json() for k, w in self.windows.items()}
        return d

    def load_json(self, d: dict) -> None:
        for k in ("disabled", "reauth_required"):
            setattr(self, k, bool(d.get(k, False)))
        for k in ("cooldown_until_s", "exhausted_until_s", "rate_limits_at_s"):
            v = d.get(k, 0)
            setattr(self, k, float(v) if isinstance(v, (int, float)) else 0.0)
        self.cooldown_reason = str(d.get("cooldown_reason") or "")
        for k in COUNTERS:
            v = d.get(k, 0)
            setattr(self, k, int(v) if isinstance(v, int) else 0)
        wins = d.get("windows") or {}
        self.windows = {k: Window.from_json(w) for k, w in wins.items() if isinstance(w, dict)}


class Pool:
    """Lock-guarded runtime state of every account, plus sessions, pin and recent requests.

    :param accounts: configured accounts in config order.
    :param session_ttl_s: sliding TTL of a session's binding to an account.
    :param strategy: routing strategy name (see :mod:`shunt_lib.router`).
    """

    def __init__(self, accounts: Iterable[AccountConfig], *, strategy: str, session_ttl_s: float):
        self._lock = threading.Lock()
        self.strategy = strategy
        self.session_ttl_s = session_ttl_s
        self._accounts: dict[str, AccountRecord] = {}
        self._sessions: dict[str, list] = {}  # key -> [account, expires_at_s]
        self._recent: collections.deque = collections.deque(maxlen=RECENT_MAX)
        self._rr = 0
        self.pinned: str | None = None
        self.version = 0  # bumped (under the lock) whenever persisted state changes
        for i, a in enumerate(accounts):
            self._accounts[a.name] = AccountRecord(a.name, a.kind, i)

    def sync_accounts(self, accounts: Iterable[AccountConfig]) -> tuple[list[str], list[str]]:
        """Make the pool match ``accounts`` (a reload): keep known accounts' state, add new ones, drop
        removed ones with their sessions and pin. :returns: (added names, removed names)."""
        with self._lock:
            old = self._accounts
            new: dict[str, AccountRecord] = {}
            for i, a in enumerate(accounts):
                rec = old.get(a.name)
                if rec is None or rec.kind != a.kind:
                    rec = AccountRecord(a.name, a.kind, i)
                rec.index = i
                new[a.name] = rec
            added = [n for n in new if n not in old]
            removed = [n for n in old if n not in new]
            self._accounts = new
            if removed:
                self._sessions = {k: v for k, v in self._sessions.items() if v[0] in new}
                if self.pinned in removed:
                    self.pinned = None
            if added or removed:
                self._touch()
            return added, removed

    def flags(self, name: str) -> tuple[bool, bool]:
        """``(reauth_required, disabled)`` of ``name`` ((False, False) if unknown)."""
        with self._lock:
            rec = self._accounts.get(name)
            return (rec.reauth_required, rec.disabled) if rec else (False, False)

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        with self._lock:
            return list(self._accounts)

    def kind(self, name: str) -> str:
        with self._lock:
            return self._accounts[name].kind

    def _active_counts(self, now_s: float) -> dict[str, int]:
        counts = dict.fromkeys(self._accounts, 0)
        for acct, exp in self._sessions.values():
            if exp > now_s and acct in counts:
                counts[acct] += 1
        return counts

    def views(self, now_s: float) -> list[AccountView]:
        """A snapshot of every account for routing (config order)."""
        with self._lock:
            counts = self._active_counts(now_s)
            return [r.view(counts[r.name]) for r in self._accounts.values()]

    # -- routing -------------------------------------------------------------------------
    def route(self, session: str | None, tried: set, now_s: float) -> Choice | None:
        """Choose an account for the next attempt and bind ``session`` to it (sliding TTL).

        Fast path: a session whose bound account is usable is answered without scoring.
        :returns: the :class:`~shunt_lib.router.Choice`, or None if no untried account is usable.
        """
        with self._lock:
            bound = None
            if session is not None:
                entry = self._sessions.get(session)
                if entry is not None and entry[1] > now_s:
                    bound = entry[0]
            if self.pinned is None and bound is not None and bound not in tried:
                rec = self._accounts.get(bound)
                if rec is not None and rec.view(0).usable(now_s):
                    self._sessions[session][1] = now_s + self.session_ttl_s
                    return Choice(bound, "session")
            counts = self._active_counts(now_s) if self.strategy == "least-utilization" else dict.fromkeys(self._accounts, 0)
            views = [r.view(counts[r.name]) for r in self._accounts.values()]
            choice = choose_account(views, strategy=self.strategy, now_s=now_s, tried=tried, pinned=self.pinned,
                                    session_account=bound, rr_counter=self._rr)
            if choice is None:
                return None
            if choice.reason == "round-robin":
                self._rr += 1
            if session is not None:
                if len(self._sessions) >= SESSIONS_MAX:
                    self._prune_sessions(now_s)
                self._sessions[session] = [choice.name, now_s + self.session_ttl_s]
                self._touch()
            return choice

    def session_account(self, session: str | None, now_s: float) -> str | None:
        """The account ``session`` is bound to, or None."""
        if session is None:
            return None
        with self._lock:
            entry = self._sessions.get(session)
            return entry[0] if entry and entry[1] > now_s else None

    def soonest_recovery(self, now_s: float) -> tuple[float, str] | None:
        """``(epoch_s, name)`` of the first unusable account to recover by itself, or None."""
        return soonest_recovery(self.views(now_s), now_s)

    def any_usable(self, now_s: float, exclude: set | frozenset = frozenset()) -> bool:
        """Whether an account not in ``exclude`` can take a request now."""
        with self._lock:
            return any(r.view(0).usable(now_s) for n, r in self._accounts.items() if n not in exclude)

    def _prune_sessions(self, now_s: float) -> None:
        for k in [k for k, (_, exp) in self._sessions.items() if exp <= now_s]:
            del self._sessions[k]
        if len(self._sessions) >= SESSIONS_MAX:
            self._sessions.clear()

    # -- recording facts -----------------------------------------------------------------
    def _touch(self) -> None:
        self.version += 1  # the writer compares versions; no wake-up per request on the hot path

    def record_rate_limits(self, name: str, rl: RateLimitInfo | None, now_s: float) -> None:
        """Store the windows an upstream response reported for ``name`` (merged per window)."""
        if rl is None:
            return
        with self._lock:
            rec = self._accounts.get(name)
            if rec is None:
                return
            merged = dict(rec.windows)
            merged.update(rl.windows)
            rec.windows = merged
            rec.rate_limits_at_s = now_s
            recovered = not rl.rejected and 0 < rec.exhausted_until_s <= now_s
            if recovered:
                rec.exhausted_until_s = 0.0
            self._touch()
        if recovered:
            events_log.info("account %s is available again", name, extra={"event": "recovered", "account": name})

    def mark_exhausted(self, name: str, until_s: float) -> None:
        """``name`` is out of quota until ``until_s`` (epoch s)."""
        with self._lock:
            rec = self._accounts.get(name)
            if rec is None:  # removed by a reload while its request was in flight
                return
            rec.exhausted_until_s = max(rec.exhausted_until_s, until_s)
            self._touch()
        events_log.info("account %s exhausted until %s", name, _hhmmss(until_s), extra={"event": "exhausted", "account": name, "until_s": until_s})

    def cool(self, name: str, until_s: float, reason: str) -> None:
        """``name`` must not be used before ``until_s`` (epoch s); a later deadline is never shortened."""
        with self._lock:
            rec = self._accounts.get(name)
            if rec is None:  # removed by a reload while its request was in flight
                return
            if until_s > rec.cooldown_until_s:
                rec.cooldown_until_s = until_s
                rec.cooldown_reason = reason
            self._touch()
        events_log.info("account %s cooling until %s (%s)", name, _hhmmss(until_s), reason,
                        extra={"event": "cooling", "account": name, "until_s": until_s, "reason": reason})

    def set_flag(self, name: str, *, reauth_required: bool | None = None, disabled: bool | None = None) -> None:
        """Set or clear ``reauth_required`` / ``disabled`` on ``name``."""
        with self._lock:
            rec = self._accounts.get(name)
            if rec is None:
                return
            newly_reauth = bool(reauth_required) and not rec.reauth_required
            newly_disabled = bool(disabled) and not rec.disabled
            if reauth_required is not None:
                rec.reauth_required = reauth_required
            if disabled is not None:
                rec.disabled = disabled
            self._touch()
        if newly_reauth:
            events_log.warning("account %s needs a new login: %s", name, action_for(name, "oauth", "reauth_required"),
                               extra={"event": "reauth_required", "account": name})
        if newly_disabled:
            events_log.warning("account %s disabled: %s", name, action_for(name, "api_key", "disabled"),
                               extra={"event": "disabled", "account": name})

    def set_identity(self, name: str, *, email: str = "", plan: str = "") -> None:
        with self._lock:
            rec = self._accounts.get(name)
            if rec is not None:
                rec.email = email or rec.email
                rec.plan = plan or rec.plan

    def record_request(self, entry: dict) -> None:
        """Count one finished request. ``entry``: ts_s, account, model, status, *_tokens, duration_ms."""
        with self._lock:
            rec = self._accounts.get(entry.get("account") or "")
            if rec is not None:
                rec.requests += 1
                rec.input_tokens += entry.get("input_tokens", 0)
                rec.output_tokens += entry.get("output_tokens", 0)
                rec.cache_read_tokens += entry.get("cache_read_tokens", 0)
                rec.cache_creation_tokens += entry.get("cache_creation_tokens", 0)
            self._recent.append(entry)
            self._touch()

    def set_pin(self, name: str | None) -> None:
        """Pin all traffic to ``name``, or unpin with None. :raises KeyError: unknown account."""
        with self._lock:
            if name is not None and name not in self._accounts:
                raise KeyError(name)
            self.pinned = name
            self._touch()

    def clear_expired(self, now_s: float) -> tuple[list[str], float | None]:
        """Clear cooldowns and exhausted windows whose time has passed.

        :returns: (names that became usable, next epoch s at which something expires or None).
        """
        recovered = []
        nxt = None
        with self._lock:
            for rec in self._accounts.values():
                changed = False
                if rec.cooldown_until_s and rec.cooldown_until_s <= now_s:
                    rec.cooldown_until_s = 0.0
                    rec.cooldown_reason = ""
                    changed = True
                if rec.exhausted_until_s and rec.exhausted_until_s <= now_s:
                    rec.exhausted_until_s = 0.0
                    changed = True
                if changed:
                    self._touch()
                    if rec.view(0).usable(now_s):
                        recovered.append(rec.name)
                for t in (rec.cooldown_until_s, rec.exhausted_until_s):
                    if t and (nxt is None or t < nxt):
                        nxt = t
        for name in recovered:
            events_log.info("account %s is available again", name, extra={"event": "recovered", "account": name})
        return recovered, nxt

    # -- persistence ---------------------------------------------------------------------
    def to_json(self, now_s: float) -> dict:
        with self._lock:
            return {
                "version": STATE_VERSION,
                "saved_at_s": now_s,
                "pinned_account": self.pinned,
                "accounts": {n: r.to_json() for n, r in self._accounts.items()},
                "sessions": {k: {"account": a, "expires_at_s": e} for k, (a, e) in self._sessions.items() if e > now_s},
                "recent_requests": list(self._recent),
            }

    def load_json(self, data: object, now_s: float) -> None:
        """Restore state saved by :meth:`to_json`; unknown accounts and expired sessions are dropped."""
        if not isinstance(data, dict):
            return
        with self._lock:
            for name, d in (data.get("accounts") or {}).items():
                if name in self._accounts and isinstance(d, dict):
                    self._accounts[name].load_json(d)
            for key, s in (data.get("sessions") or {}).items():
                if isinstance(s, dict) and s.get("account") in self._accounts:
                    exp = s.get("expires_at_s", 0)
                    if isinstance(exp, (int, float)) and exp > now_s:
                        self._sessions[key] = [s["account"], float(exp)]
            pinned = data.get("pinned_account")
            self.pinned = pinned if pinned in self._accounts else None
            for entry in (data.get("recent_requests") or [])[-RECENT_MAX:]:
                if isinstance(entry, dict):
                    self._recent.append(entry)

    def status_json(self, now_s: float) -> dict:
        """The accounts part of ``GET /status`` (see server.status)."""
        with self._lock:
            counts = self._active_counts(now_s)
            accounts = []
            for r in self._accounts.values():
                status = r.view(counts[r.name]).status(now_s)
                w5, w7 = r.windows.get("5h"), r.windows.get("7d")
                accounts.append({
                    "name": r.name,
                    "kind": r.kind,
                    "email": r.email or None,
                    "plan": r.plan or None,
                    "status": status,
                    "utilization_5h": w5.utilization if w5 else None,
                    "utilization_7d": w7.utilization if w7 else None,
                    "reset_5h_at_s": _int_or_none(w5.reset_at_s if w5 else None),
                    "reset_7d_at_s": _int_or_none(w7.reset_at_s if w7 else None),
                    "cooldown_until_s": _int_or_none(max(r.cooldown_until_s, r.exhausted_until_s) or None)
                    if status in ("cooling", "exhausted") else None,
                    "cooldown_reason": r.cooldown_reason or None if status == "cooling" else None,
                    "windows": {k: w.to_json() for k, w in r.windows.items()},
                    "requests": r.requests,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                    "cache_read_tokens": r.cache_read_tokens,
                    "cache_creation_tokens": r.cache_creation_tokens,
                    "active_sessions": counts[r.name],
                    "action": action_for(r.name, r.kind, status),
                })
            return {"pinned_account": self.pinned, "accounts": accounts, "recent_requests": list(self._recent)}


def action_for(name: str, kind: str, status: str) -> str | None:
    """What the user should do about an account in ``status``: one sentence with the command, or None."""
    if status == "reauth_required":
        if kind == "api_key":
            return f"Its API key is missing or was rejected: run `shunt add-account {name} --api-key`."
        return f"Its login expired or was revoked: run `shunt add-account {name}` to log in again."
    if status == "disabled":
        return f"Its API key was rejected: run `shunt add-account {name} --api-key` with a valid key."
    return None


def _int_or_none(v: float | None) -> int | None:
    return int(v) if v else None


def _hhmmss(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_s))


class StateWriter(threading.Thread):
    """Writes ``state.json`` atomically when the pool changed, at most every ``interval_s`` (100 ms).

    It polls :attr:`Pool.version` instead of being woken per change, so a request costs no wake-up.
    :meth:`stop` writes a final copy. The file is valid JSON at every instant (atomic rename).
    """

    def __init__(self, pool: Pool, path: str, *, interval_s: float = 0.1, clock: Callable[[], float] = time.time):
        super().__init__(name="shunt-state-writer", daemon=True)
        self.pool, self.path, self.interval_s, self.clock = pool, path, interval_s, clock
        self._stop_evt = threading.Event()
        self._written_version = -1

    def flush(self) -> None:
        """Write the current state now (any thread)."""
        version = self.pool.version
        try:
            atomic_write_bytes(self.path, json.dumps(self.pool.to_json(self.clock()), separators=(",", ":")).encode())
            self._written_version = version
        except OSError as exc:
            log.error("could not write %s: %s", self.path, exc)

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval_s):
            if self.pool.version != self._written_version:
                self.flush()

    def stop(self) -> None:
        self._stop_evt.set()
        if self.is_alive():
            self.join(5)
        self.flush()


def load_state(pool: Pool, path: str, now_s: float) -> None:
    """Load ``state.json`` into ``pool``; an unreadable file is logged and ignored (state starts fresh)."""
    try:
        pool.load_json(read_json(path, default={}), now_s)
    except (ValueError, OSError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
