"""Several shunts, one pool: which account each session is bound to, shared through Redis.

A session's binding lives in ``Keys.session(key)`` (the account's name, with a sliding TTL of
``[server] session_ttl_s``), so a conversation keeps its account, and its prompt cache, whichever
instance its requests reach. The pool asks this module (:class:`~shunt_lib.state.SessionSharing`)
without holding its lock:

- a session this instance does not know yet is claimed with one round trip, ``SET key account NX PX
  ttl GET`` (Redis >= 7.0, https://redis.io/docs/latest/commands/set/): if another instance bound it
  already and that account can take the request here (usable, of the right kind, allowed), the
  session is adopted;
- a session moved off an account that cannot take it is moved in Redis with a compare-and-set
  (:data:`MOVE_SCRIPT`): if another instance moved it first, its choice is adopted when it can take
  the request, so two instances do not scatter one conversation;
- a session used again slides its TTL with a ``PEXPIRE`` queued on the link (at most one per session
  per :data:`SLIDE_EVERY_FRACTION` of the TTL).

While Redis is down each instance decides alone (the local binding stands). On (re)joining an
instance puts back its live bindings (``SET NX GET`` with the time they have left, pipelined): a
Redis restarted empty gets them back, and a binding another instance made meanwhile is kept and
adopted here where its account can take a request, so an outage leaves no session split.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from .cluster_link import Link

if TYPE_CHECKING:
    from .state import Pool

log = logging.getLogger("shunt.cluster")

#: Compare-and-set of a session's binding. KEYS[1]: the session key; ARGV: the account expected (the
#: one being left), the new account, the TTL in ms. Sets it if it still names the expected account or
#: is gone. Returns the account it names afterwards.
MOVE_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return cur
"""
SLIDE_EVERY_FRACTION = 0.1  # a binding's TTL is slid at most once per this part of it
SLID_MAX = 50000  # sessions remembered as slid; beyond it the memory is cleared (a few extra PEXPIREs)
REJOIN_BATCH = 1000  # bindings put back per pipeline on rejoining


def _text(raw) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


class SharedSessions:
    """Settles ``pool``'s session bindings with the other instances over ``link`` (see the module docstring)."""

    def __init__(self, link: Link, pool: "Pool"):
        self.link, self.pool = link, pool
        self._move = link.client.register_script(MOVE_SCRIPT)
        self._slid: dict[str, float] = {}  # session → epoch s its TTL was last slid
        self._refused = False  # Redis refused a command (too old for SET NX GET, scripts not allowed): logged once
        link.on_rejoin(self._rejoin)
        pool.shared_sessions = self

    def stop(self) -> None:
        """Stop settling sessions (the pool decides alone)."""
        self.pool.shared_sessions = None

    def _ttl_ms(self) -> int:
        return max(1, int(self.pool.session_ttl_s * 1000))

    # -- called by the pool, without its lock -------------------------------------------------------
    def slide(self, session: str, now_s: float) -> None:
        """Queue a ``PEXPIRE`` of ``session``'s binding, unless one was queued within the last tenth of its TTL."""
        last = self._slid.get(session)
        if last is not None and now_s - last < self.pool.session_ttl_s * SLIDE_EVERY_FRACTION:
            return
        if len(self._slid) >= SLID_MAX:
            self._slid.clear()
        self._slid[session] = now_s
        key, ttl_ms = self.link.keys.session(session), self._ttl_ms()
        self.link.later(("session", session), lambda pipe: pipe.pexpire(key, ttl_ms), lazy=True)

    def settle(self, session: str, before: str | None, mine: str, can_take: Callable[[str], bool]) -> str:
        """``session`` was bound here to ``mine`` (``before``: its previous local account, None: new
        here); claim it, or move it with a compare-and-set. :returns: the account it is bound to now:
        ``mine``, or the other instances' choice if ``can_take`` (which binds it locally) accepted it."""
        theirs = self._claim(session, before, mine)
        if theirs is None or theirs == mine:
            return mine
        if can_take(theirs):
            return theirs
        got = self._claim(session, theirs, mine)  # theirs cannot take it here: move it, unless moved meanwhile
        if got is None or got == mine or not can_take(got):
            return mine
        return got

    def _claim(self, session: str, before: str | None, mine: str) -> str | None:
        """Bind ``session`` to ``mine`` in Redis if it is unbound (``before`` None) or still bound to
        ``before``. :returns: the account Redis names for it afterwards (None: Redis could not say)."""
        key, ttl_ms = self.link.keys.session(session), self._ttl_ms()
        refused = self._response_error()

        def op(r):
            try:
                if before is None:
                    got = r.set(key, mine, nx=True, px=ttl_ms, get=True)
                    return mine if got is None else _text(got)
                return _text(self._move(keys=[key], args=[before, mine, ttl_ms], client=r))
            except refused as exc:  # Redis answered, but refused: decide locally
                if not self._refused:
                    self._refused = True
                    log.warning("cluster: Redis refused to bind a session (%s); sessions are bound per instance "
                                "(Redis >= 7.0 with scripting is needed)", str(exc).splitlines()[0][:200])
                return None

        got = self.link.run(op, None)
        if got == mine:
            self._slid[session] = self.link.clock()
        elif got is None and not self.link.healthy:
            self._later(key, session, before, mine, ttl_ms)
        return got

    def _later(self, key: str, session: str, before: str | None, mine: str, ttl_ms: int) -> None:
        """Redis could not be asked now: queue the binding (kept while the link is joining, so a session
        bound after the rejoin put the others back still reaches Redis; dropped while it is down, when
        the next rejoin puts it back)."""
        if before is None:
            self.link.later(("session-bind", session), lambda pipe: pipe.set(key, mine, nx=True, px=ttl_ms))
        else:
            self.link.later(("session-bind", session),
                            lambda pipe: self._move(keys=[key], args=[before, mine, ttl_ms], client=pipe))

    @staticmethod
    def _response_error() -> type[BaseException]:
        import redis  # noqa: PLC0415 - a cluster has it (the link imported it)
        return redis.ResponseError

    # -- rejoining --------------------------------------------------------------------------------
    def _rejoin(self) -> None:
        """Put back this instance's live bindings (``SET NX GET`` with the time they have left); where
        another instance bound a session meanwhile (both decided alone during an outage), its binding
        wins: adopted here if its account can take a request, else moved to this one's with the
        compare-and-set (that account cannot take it, so the other instance leaves it too and adopts
        this one's). Either way the outage leaves the session on one account."""
        now = self.link.clock()
        live = list(self.pool.live_sessions(now).items())
        for start in range(0, len(live), REJOIN_BATCH):
            batch = live[start:start + REJOIN_BATCH]
            got = self._put_back(batch, now)
            for (session, (mine, _)), theirs in zip(batch, got):
                theirs = _text(theirs)
                if theirs is not None and theirs != mine:
                    self._settle_split(session, mine, theirs, now)

    def _put_back(self, batch: list, now_s: float) -> list:
        """``SET NX GET`` each binding of ``batch``; :returns: what Redis held for each (None: it took ours).
        A Redis that refuses ``GET`` with ``NX`` (< 7.0) gets plain ``SET NX`` (logged once; no adoption)."""
        for with_get in (not self._refused, False):
            pipe = self.link.client.pipeline(transaction=False)
            for session, (account, expires_at_s) in batch:
                pipe.set(self.link.keys.session(session), account, nx=True,
                         px=max(1, int((expires_at_s - now_s) * 1000)), get=with_get)
            try:
                got = pipe.execute()
            except self._response_error() as exc:
                if not with_get:
                    raise
                self._refused = True
                log.warning("cluster: Redis refused SET NX GET (%s); sessions bound during an outage are not "
                            "settled on rejoining (Redis >= 7.0 is needed)", str(exc).splitlines()[0][:200])
                continue
            return got if with_get else [None] * len(batch)
        return [None] * len(batch)

    def _settle_split(self, session: str, mine: str, theirs: str, now_s: float) -> None:
        """``session`` is bound to ``mine`` here and to ``theirs`` in Redis: adopt theirs if it can take a
        request here, else move Redis's to mine (unless it changed meanwhile; then adopt that if possible)."""
        if self.pool.adopt_session(session, theirs, now_s) or self.pool.pinned is not None:
            return
        key = self.link.keys.session(session)
        try:
            got = _text(self._move(keys=[key], args=[theirs, mine, self._ttl_ms()], client=self.link.client))
        except self._response_error():  # scripts not allowed: the other instance's binding stands in Redis
            return
        if got is not None and got != mine:
            self.pool.adopt_session(session, got, now_s)
