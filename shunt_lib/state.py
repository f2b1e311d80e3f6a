"""The pool's runtime state behind one lock.

Everything about the accounts that changes at run time lives here: each account's
:class:`~shunt_lib.account_state.AccountRecord` (cooldowns, exhaustion, the last rate-limit windows,
flags that need a human, usage counters, and the transitions facts make to them), plus the session
table, the pin and the last 200 requests. Decisions are made elsewhere over snapshots
(:mod:`shunt_lib.router`, :mod:`shunt_lib.status`); this module records facts. ``Pool._lock`` guards
every field and is never held across I/O: the events a change reports are logged after it is
released. Every public method may be called from any thread.

``state.json`` is read, written and edited by :mod:`shunt_lib.state_file`, which also shapes its
document; this module hands it the pool's parts under the lock (:meth:`Pool.to_json`) and restores
them from it (:meth:`Pool.load_json`), every number checked as it enters (:mod:`shunt_lib.numbers`).
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Iterable, NamedTuple, Protocol

from .account_state import AccountRecord, AccountSnapshot, Event, reconcile
from .config import AccountConfig
from .outcome import Action, Outcome
from .ratelimit import RateLimitInfo, Window
from .pricing import PriceBook
from .record import RequestRecord
from .router import AccountView, Choice, choose_account, choose_credential_holder, soonest_recovery
from .sessions import MAX_SESSIONS, SessionTable
from .state_doc import saved_state, state_document

RECENT_MAX = 200


class PoolSnapshot(NamedTuple):
    """The whole pool at one instant: the pin, every account in config order, the recent requests."""

    pinned: str | None
    accounts: list[AccountSnapshot]
    recent: list[RequestRecord]


class SessionSharing(Protocol):
    """What :meth:`Pool.route` asks when a cluster shares sessions (called without the pool's lock)."""

    def slide(self, session: str, now_s: float) -> None:
        """``session`` was used again on the account it is bound to."""

    def settle(self, session: str, before: str | None, mine: str, can_take: Callable[[str], bool]) -> str:
        """``session`` was bound here to ``mine`` (``before``: its previous local account, None: new here).
        :returns: the account the cluster binds it to (``mine``, or one ``can_take`` accepted and bound)."""
        ...


class Pool:
    """Lock-guarded runtime state of every account, plus sessions, pin and recent requests.

    :param accounts: configured accounts in config order.
    :param session_ttl_s: sliding TTL of a session's binding to an account, seconds.
    :param strategy: routing strategy name (see :mod:`shunt_lib.router`).
    :param max_sessions: most session bindings kept (the least recently used is evicted beyond it).
    """

    def __init__(self, accounts: Iterable[AccountConfig], *, strategy: str, session_ttl_s: float,
                 max_sessions: int = MAX_SESSIONS):
        self._lock = threading.Lock()
        self.strategy = strategy
        self._accounts: dict[str, AccountRecord] = {a.name: AccountRecord(a.name, a.kind, i)
                                                    for i, a in enumerate(accounts)}
        self._kinds = frozenset(r.kind for r in self._accounts.values())  # so a kind filter that keeps all costs nothing
        self._sessions = SessionTable(session_ttl_s, max_sessions)
        self._recent: collections.deque = collections.deque(maxlen=RECENT_MAX)
        self._rr = 0
        self._pinned: str | None = None
        self.prices = PriceBook()  # list prices with the [pricing] overrides of config.toml (replaced on reload)
        self.version = 0  # bumped under the lock whenever persisted state changes; the writer polls it
        #: ``changes(name, urgent)``, called under the lock after an account's shared fields changed (it must
        #: not block: a cluster queues a write). ``urgent``: a mark, flag or clear; else only windows.
        self.changes: Callable[[str, bool], None] | None = None
        #: ``pin_changes(name)``, called after the pin was set here (not for a pin taken from elsewhere)
        self.pin_changes: Callable[[str | None], None] | None = None
        #: settles session bindings across instances (:class:`~shunt_lib.cluster_sessions.SharedSessions`)
        self.shared_sessions: SessionSharing | None = None

    # -- configuration ------------------------------------------------------------------------
    def configure(self, *, strategy: str, session_ttl_s: float) -> None:
        """Apply the ``[server]`` keys a reload may change (new bindings get the new TTL)."""
        with self._lock:
            self.strategy, self._sessions.ttl_s = strategy, session_ttl_s

    def set_strategy(self, strategy: str) -> None:
        """Route new sessions with ``strategy`` (one of :data:`~shunt_lib.config.STRATEGIES`) from now on."""
        with self._lock:
            self.strategy = strategy

    @property
    def pinned(self) -> str | None:
        """The pinned account, or None when routing (change it with :meth:`set_pin`)."""
        return self._pinned

    def sync_accounts(self, accounts: Iterable[AccountConfig]) -> tuple[list[str], list[str]]:
        """Make the pool match ``accounts`` (a reload): keep known accounts' state, add new ones, drop
        removed ones with their sessions and pin. :returns: (added names, removed names)."""
        with self._lock:
            self._accounts, added, removed = reconcile(self._accounts, accounts)
            self._kinds = frozenset(r.kind for r in self._accounts.values())
            if removed:
                self._sessions.keep_accounts(set(self._accounts))
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

    def _records(self, kinds: frozenset[str] | None, allowed: frozenset[str] | None = None) -> Iterable[AccountRecord]:
        recs = self._accounts.values()
        if kinds is not None and self._kinds <= kinds:
            kinds = None  # every account is of those kinds (the common case: no openai account)
        if kinds is None and allowed is None:
            return recs
        return [r for r in recs if (kinds is None or r.kind in kinds) and (allowed is None or r.name in allowed)]

    def _views(self, now_s: float, kinds: frozenset[str] | None, sessions: bool = True,
               allowed: frozenset[str] | None = None) -> list[AccountView]:
        """Views of the accounts of ``kinds`` (and names in ``allowed``), with live session counts if
        ``sessions`` (under the lock)."""
        counts = self._sessions.active_counts(self._accounts, now_s) if sessions else {}
        return [r.view(counts.get(r.name, 0)) for r in self._records(kinds, allowed)]

    def views(self, now_s: float, *, kinds: frozenset[str] | None = None,
              allowed: frozenset[str] | None = None) -> list[AccountView]:
        """A routing snapshot of every account (of ``kinds`` and named in ``allowed``, if given), config order."""
        with self._lock:
            return self._views(now_s, kinds, allowed=allowed)

    def snapshot(self, now_s: float) -> PoolSnapshot:
        """Everything ``/status`` shows, copied under the lock."""
        with self._lock:
            counts = self._sessions.active_counts(self._accounts, now_s)
            accounts = [r.snapshot(counts[r.name]) for r in self._accounts.values()]
            return PoolSnapshot(self._pinned, accounts, list(self._recent))

    # -- routing ------------------------------------------------------------------------------
    def route(self, session: str | None, tried: frozenset[str] | set[str], now_s: float, *,
              kinds: frozenset[str] | None = None, allowed: frozenset[str] | None = None,
              quota_free: bool = False) -> Choice | None:
        """Choose an account for the next attempt and bind ``session`` to it (sliding TTL).

        Fast path: a session whose bound account is usable is answered without scoring. A session
        follows its request to another account, except in a cluster (:attr:`shared_sessions` set) when
        its account is left only because this request tried it (a 5xx, an overload: no mark the other
        instances see): the request goes elsewhere, the session stays bound to its account here and in
        Redis, so every instance keeps the conversation on that one account (and its prompt cache).
        :param kinds: only accounts of these kinds may be chosen (None: any).
        :param allowed: only accounts of these names may be chosen (None: any), e.g. those that take
            the request's model (:mod:`~shunt_lib.model_routing`).
        :param quota_free: the request uses no quota: if no account is usable, any whose credential
            works may take it (:func:`~shunt_lib.router.choose_credential_holder`; the session is not bound).
        :returns: the :class:`~shunt_lib.router.Choice`, or None if no untried account can take it.
        """
        shared = self.shared_sessions
        stays = False  # in a cluster, a failover of this request only: the session stays where it is bound
        with self._lock:
            bound = self._sessions.account(session, now_s)
            if self._pinned is None and bound is not None and self._can_take(bound, now_s, tried, kinds, allowed):
                self._sessions.bind(session, bound, now_s)  # type: ignore[arg-type]
                choice = Choice(bound, "session")
            else:
                views = self._views(now_s, kinds, sessions=self.strategy == "least-utilization", allowed=allowed)
                choice = choose_account(views, strategy=self.strategy, now_s=now_s, tried=tried,
                                        pinned=self._pinned, session_account=bound, rr_counter=self._rr)
                if choice is None:
                    return choose_credential_holder(views, tried=tried, pinned=self._pinned,
                                                    session_account=bound) if quota_free else None
                if choice.reason == "round-robin":
                    self._rr += 1
                stays = (shared is not None and bound is not None and bound in tried and self._pinned is None
                         and self._can_take(bound, now_s, frozenset(), kinds, allowed))
                if session is not None and not stays:
                    self._sessions.bind(session, choice.name, now_s)
                    self._touch()
        if shared is None or session is None or stays:
            return choice
        if choice.name == bound:
            shared.slide(session, now_s)
            return choice
        name = shared.settle(session, bound, choice.name,
                             lambda other: self.adopt_session(session, other, now_s, tried=tried, kinds=kinds,
                                                              allowed=allowed))
        return choice if name == choice.name else Choice(name, "session")

    def _can_take(self, name: str, now_s: float, tried, kinds: frozenset[str] | None,
                  allowed: frozenset[str] | None) -> bool:
        """Whether account ``name`` exists, is of ``kinds``, in ``allowed``, untried and usable (under the lock)."""
        rec = self._accounts.get(name)
        return (rec is not None and name not in tried and (kinds is None or rec.kind in kinds)
                and (allowed is None or name in allowed) and rec.view().usable(now_s))

    def adopt_session(self, session: str, name: str, now_s: float, *, tried=frozenset(),
                      kinds: frozenset[str] | None = None, allowed: frozenset[str] | None = None) -> bool:
        """Bind ``session`` to ``name`` (as another instance did) if ``name`` can take the request now
        (exists, of ``kinds``, in ``allowed``, not in ``tried``, usable) and nothing is pinned.
        :returns: whether it was bound."""
        with self._lock:
            if self._pinned is not None or not self._can_take(name, now_s, tried, kinds, allowed):
                return False
            self._sessions.bind(session, name, now_s)
            self._touch()
            return True

    def live_sessions(self, now_s: float) -> dict[str, tuple[str, float]]:
        """Every live binding: session key → (account, expires_at_s), least recently used first."""
        with self._lock:
            return {k: (e["account"], e["expires_at_s"]) for k, e in self._sessions.to_json(now_s).items()}

    @property
    def session_ttl_s(self) -> float:
        """The sliding TTL of a session's binding, seconds."""
        return self._sessions.ttl_s

    def session_account(self, session: str | None, now_s: float) -> str | None:
        """The account ``session`` is bound to, or None."""
        with self._lock:
            return self._sessions.account(session, now_s)

    def soonest_recovery(self, now_s: float, *, kinds: frozenset[str] | None = None,
                         allowed: frozenset[str] | None = None) -> tuple[float, str] | None:
        """``(epoch_s, name)`` of the first unusable account (of ``kinds``, in ``allowed``) to recover by itself, or None."""
        return soonest_recovery(self.views(now_s, kinds=kinds, allowed=allowed), now_s)

    def any_usable(self, now_s: float, exclude: frozenset[str] | set[str] = frozenset(), *,
                   kinds: frozenset[str] | None = None, allowed: frozenset[str] | None = None) -> bool:
        """Whether an account (of ``kinds``, in ``allowed``) not in ``exclude`` can take a request now."""
        with self._lock:
            return any(r.view().usable(now_s) for r in self._records(kinds, allowed) if r.name not in exclude)

    # -- recording facts ----------------------------------------------------------------------
    def _touch(self) -> None:
        self.version += 1  # the writer compares versions: no wake-up per request on the hot path

    def _changing(self, name: str, urgent: bool = True) -> AccountRecord | None:
        """``name``'s record, about to change (the version is bumped, and :attr:`changes` is told), or
        None if a reload removed it while its request was in flight (call under the lock)."""
        rec = self._accounts.get(name)
        if rec is not None:
            self._touch()
            if self.changes is not None:
                self.changes(name, urgent)  # read by the listener after the lock is released: the change is made
        return rec

    def record_rate_limits(self, name: str, rl: RateLimitInfo | None, now_s: float) -> None:
        """Store the windows an upstream response reported for ``name``
        (:meth:`~shunt_lib.account_state.AccountRecord.take_rate_limits`)."""
        if rl is None:
            return
        with self._lock:
            rec = self._changing(name, urgent=False)
            event = rec.take_rate_limits(rl, now_s) if rec is not None else None
        _tell(event)

    def record_usage(self, name: str, windows: dict[str, Window], now_s: float) -> bool:
        """Store windows freshly read from the usage endpoint for ``name``; if they show room, an
        exhaustion still ahead is cleared: the quota came back sooner than the 429 said, or the mark
        was wrong (:meth:`~shunt_lib.account_state.AccountRecord.take_usage`). :returns: whether it was cleared."""
        with self._lock:
            rec = self._changing(name, urgent=False)
            event = rec.take_usage(windows, now_s) if rec is not None else None
            if event is not None and self.changes is not None:
                self.changes(name, True)  # an exhaustion still ahead was cleared
        _tell(event)
        return event is not None

    def reset(self, name: str | None) -> list[str]:
        """Clear the exhaustion and cooldown of ``name`` (None: of every account), as a user asks with
        ``shunt reset``; flags that need a new login or key stay. :returns: the names whose marks were
        cleared. :raises KeyError: unknown account."""
        with self._lock:
            if name is not None and name not in self._accounts:
                raise KeyError(name)
            events = [self._changing(rec.name).reset() for rec in list(self._accounts.values())  # type: ignore[union-attr]
                      if name in (None, rec.name)]
        return _log(*events)

    def record_outcome(self, name: str, outcome: Outcome) -> None:
        """Apply what a classified upstream answer means for ``name``: exhausted until its window
        resets (a quota 429), or cooling (a throttle 429, a 403). Other outcomes change nothing here."""
        if outcome.action is Action.EXHAUSTED:
            self.mark_exhausted(name, outcome.until_s, outcome.advice)
        elif outcome.action in (Action.THROTTLE, Action.FORBIDDEN):
            self.cool(name, outcome.until_s, outcome.reason)

    def mark_exhausted(self, name: str, until_s: float, advice: str = "") -> None:
        """``name`` is out of quota until ``until_s`` (epoch s); logged once however many requests report it.
        ``advice``: what a human must do (shown as the account's ``action`` in ``/status`` until it ends)."""
        with self._lock:
            rec = self._changing(name)
            event = rec.exhaust(until_s, advice) if rec is not None else None
        _tell(event)

    def cool(self, name: str, until_s: float, reason: str) -> None:
        """``name`` must not be used before ``until_s`` (epoch s); a later deadline is never shortened."""
        with self._lock:
            rec = self._changing(name)
            event = rec.cool(until_s, reason) if rec is not None else None
        _tell(event)

    def set_flag(self, name: str, *, reauth_required: bool | None = None, disabled: bool | None = None) -> None:
        """Set or clear ``reauth_required`` / ``disabled`` on ``name``; a newly set flag is logged with its fix."""
        with self._lock:
            rec = self._changing(name)
            events = rec.set_flags(reauth_required, disabled) if rec is not None else []
        _log(*events)

    def record_request(self, record: RequestRecord) -> float | None:
        """Count one finished request against its account and keep it among the recent ones.
        :returns: its API-equivalent cost in USD (None: an unpriced model), for others to charge."""
        cost_usd = self.prices.cost_usd(record)  # outside the lock
        with self._lock:
            rec = self._accounts.get(record["account"] or "")
            if rec is not None:
                rec.count(record, cost_usd)
            self._recent.append(record)
            self._touch()
        return cost_usd

    def set_pin(self, name: str | None, *, tell: bool = True) -> None:
        """Pin all traffic to ``name``, or unpin with None; ``tell``: :attr:`pin_changes` hears of it (False:
        the pin came from another instance). :raises KeyError: unknown account."""
        with self._lock:
            if name is not None and name not in self._accounts:
                raise KeyError(name)
            self._pinned = name
            self._touch()
        if tell and self.pin_changes is not None:
            self.pin_changes(name)

    def clear_expired(self, now_s: float) -> tuple[list[str], float | None]:
        """Clear cooldowns and exhausted windows whose time has passed.

        :returns: (names that became usable, next epoch s at which something expires, or None).
        """
        events, ahead = [], []
        with self._lock:
            for rec in self._accounts.values():
                changed, event, at = rec.expire(now_s)
                if changed:
                    self._changing(rec.name, urgent=False)  # every instance's marks run out by themselves
                if event is not None:
                    events.append(event)
                if at is not None:
                    ahead.append(at)
        return _log(*events), min(ahead) if ahead else None

    # -- sharing (shunt_lib.cluster_accounts) ---------------------------------------------------
    def shared_fields(self, name: str) -> dict | None:
        """``name``'s fields a cluster shares (:meth:`AccountRecord.shared_fields
        <shunt_lib.account_state.AccountRecord.shared_fields>`), or None for an unknown account."""
        with self._lock:
            rec = self._accounts.get(name)
            return rec.shared_fields() if rec is not None else None

    def apply_shared(self, name: str, fields: dict, expect: dict) -> bool:
        """Replace ``name``'s shared fields by ``fields`` (what the cluster's views merge to) if they still
        are ``expect`` (else a change made here since would be lost: the caller merges again); the
        counters stay local and :attr:`changes` is not told. :returns: whether they were replaced."""
        with self._lock:
            rec = self._accounts.get(name)
            if rec is None or rec.shared_fields() != expect:
                return False
            if fields != expect:
                rec.take_shared(fields)
                self._touch()
            return True

    # -- persistence ----------------------------------------------------------------------------
    def to_json(self, now_s: float) -> dict:
        """The ``state.json`` document (:func:`~shunt_lib.state_file.state_document`)."""
        with self._lock:
            return state_document(now_s, self._pinned, self._accounts, self._sessions.to_json(now_s), self._recent)

    def load_json(self, data: object, now_s: float) -> None:
        """Restore state saved by :meth:`to_json` (read by :func:`~shunt_lib.state_file.saved_state`);
        unknown accounts, expired sessions and values of the wrong shape are dropped, never raised."""
        with self._lock:
            saved = saved_state(data, self._accounts, RECENT_MAX)
            if saved is None:
                return
            for name, d in saved.accounts:
                self._accounts[name].load_json(d, now_s)
            self._sessions.load_json(saved.sessions, set(self._accounts), now_s, migrate=not saved.hashed_keys)
            self._pinned = saved.pinned
            self._recent.extend(saved.recent)


def _tell(event: Event | None) -> None:
    """Log ``event``, if any (call after the lock is released)."""
    if event is not None:
        event.log()


def _log(*events: Event | None) -> list[str]:
    """Log ``events``, skipping None (call after the lock is released). :returns: the accounts they
    are about, in order."""
    told = [e for e in events if e is not None]
    for e in told:
        e.log()
    return [e.account for e in told]
