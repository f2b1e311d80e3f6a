"""Shared OAuth credentials: one refresh per account in the whole cluster, and no rotation ever lost.

Only OAuth credentials are shared: their refresh tokens are single-use and rotate, so every instance
must use the newest pair. API keys and OpenAI-compatible keys never change by themselves: they stay in
each machine's ``credentials.json`` and are never written to Redis.

Per account, Redis holds a hash ``v`` (version), ``cred``, ``refreshing`` (the intent of a refresh
under way, ``OWNER:VERSION``) and a lock (:mod:`shunt_lib.cluster_cred_store`: the layout and its
scripts). ``OWNER`` is this process (``instance id/random``): a restarted instance is another owner.

The refresh (:meth:`ClusterCredentials.run`, the :class:`~shunt_lib.oauth.TokenManager`'s coordinator):

1. the account's local lock is held (threads and other processes on this machine, as without a cluster);
2. if Redis already holds a newer version than the one this instance uses, it is adopted: no call;
3. the cluster lock ``SET Keys.refresh_lock(name) OWNER NX PX refresh_lock_ttl_s`` is taken; while
   waiting for it the version is watched, and a version that moves is adopted (no call);
4. holding it, the shared credential is re-read: one whose access token differs from the one that
   failed is adopted (no call);
5. an intent of ANOTHER owner for the current version means an earlier holder stopped between sending
   the refresh token and writing the answer (killed, or so slow its lock expired): that refresh token
   may be spent, so it is never sent again; the account is marked ``reauth_required`` with the reason.
   Otherwise the intent is written (only while the lock is still ours) and the token endpoint is called;
6. the rotated pair is written with a compare-and-set on ``v`` BEFORE the new token is used: a holder
   whose lock expired cannot overwrite a newer write (the CAS fails and it adopts what is there, unless
   that is nothing or the very pair it rotated out: a Redis restarted empty, an instance's rejoin that
   uploaded its old copy; then it writes again on the version it finds); then
   ``credentials.json`` is updated (the offline copy) and a notice ``cred`` ``{"account", "v"}`` tells the
   other instances, which adopt the new pair from Redis (they never refresh for it);
7. the lock is released by its owner only (a script compares the owner).

A failed call clears this holder's intent, unless the request may have reached the server (a timeout
after it was sent): then the token may have rotated and the intent stays.

Redis degraded: the refresh falls back to the local path (the local lock and ``credentials.json``),
and what it rotated meanwhile is reconciled when Redis answers again. Adopting the others' writes, new logins and
the rejoin's reconcile are :mod:`shunt_lib.cluster_cred_sync`'s.

Test seam (for the kill -9 tests, never for production): with the environment variable
``SHUNT_TEST_HANG_REFRESH=answered`` the refresh holder logs one line (``test seam: ...``) and blocks
for ever right after the token endpoint answered, before the write; with ``written``, right after
the write (before the notice and the offline copy).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from typing import Callable

from .cluster_cred_store import CredentialHash, Shared
from .cluster_cred_sync import NOTICE, CredentialSync
from .credentials import Credential
from .oauth import REFRESH_TIMEOUT_S, RefreshResult, RefreshStatus, TokenManager

log = logging.getLogger("shunt.cluster")

HANG_ENV = "SHUNT_TEST_HANG_REFRESH"
LOCK_POLL_S = 0.05  # how often a waiter for the cluster lock looks at the version and the lock


def hang_point() -> str:
    """The test seam's point (``answered``, ``written``) or "" (the normal case)."""
    return os.environ.get(HANG_ENV, "")


class ClusterCredentials:
    """The cluster's coordinator of token refreshes, and the keeper of the shared OAuth credentials.

    :param link: the :class:`~shunt_lib.cluster_link.Link`.
    :param tokens: this instance's token manager (:meth:`attach` makes this object its ``coordinator``).
    :param names: the OAuth accounts configured here, now (they change with reloads).
    :param mark_reauth: ``mark_reauth(name, needed)``: set or clear the account's ``reauth_required``.
    Any thread may call any method.
    """

    def __init__(self, link, tokens: TokenManager, names: Callable[[], list[str]],
                 mark_reauth: Callable[[str, bool], None]):
        self.link = link
        self.hashes = CredentialHash(link.keys, link.client)
        self.sync = CredentialSync(link, self.hashes, tokens, names, mark_reauth)
        self.tokens = tokens
        self.local = tokens.coordinator
        self.names = names
        self.mark_reauth = mark_reauth
        self.owner = f"{link.instance_id}/{secrets.token_hex(4)}"  # this process: a restart is another owner
        self.ttl_ms = int(link.cfg.refresh_lock_ttl_s * 1000)
        self._held: dict[str, Shared] = {}  # name -> what was read under the cluster lock (its holder only)
        self._stopping = threading.Event()

    @classmethod
    def attach(cls, link, srv) -> "ClusterCredentials":
        """Make the shared credentials ``srv``'s refresh coordinator, with its notice and rejoin handlers."""
        part = cls(link, srv.tokens,
                   names=lambda: [a.name for a in srv.config.accounts if a.kind == "oauth"],
                   mark_reauth=lambda name, needed: srv.pool.set_flag(name, reauth_required=needed))
        srv.tokens.coordinator = part
        link.on(NOTICE, part.sync.on_notice)
        link.on_rejoin(part.sync.rejoin)
        return part

    def stop(self) -> None:
        """Stop waiting for locks and coordinate locally from now on."""
        self._stopping.set()
        self.tokens.coordinator = self.local

    # -- the coordinator (see shunt_lib.oauth.LocalCoordinator) ----------------------------------------
    def run(self, name: str, failed_access_token: str | None, body: Callable[[], RefreshResult]) -> RefreshResult:
        """``body()`` (the refresh) single flight for ``name`` across the cluster; see the module docstring.
        The local path while Redis is down or for an account that is not shared."""
        return self.local.run(name, failed_access_token, lambda: self._run_locked(name, failed_access_token, body))

    def _run_locked(self, name: str, failed: str | None, body: Callable[[], RefreshResult]) -> RefreshResult:
        mine = self.tokens.get(name)
        if mine is None or mine.kind != "oauth" or name not in self.names() or not self.link.healthy:
            return body()
        if failed is not None and mine.access_token != failed:
            return RefreshResult(RefreshStatus.OK, mine, "already refreshed")  # adopted while this thread waited
        shared = self.sync.do(lambda r: self.hashes.read(r, name))
        if shared is None:
            return body()
        if shared.cred is not None and shared.version > self.sync.version(name) and shared.cred.secret != mine.secret:
            adopted = self.sync.use(name, shared, why="by another instance")
            if adopted is not None:
                return adopted  # (None: ours supersedes it; written under the lock, by current())
        got = self._acquire(name, shared.version)
        if got is None:
            return body()  # Redis went away: the local path
        if isinstance(got, RefreshResult):
            return got
        self._held[name] = shared  # read again by current(), under the lock
        try:
            return body()
        finally:
            self._held.pop(name, None)
            self.sync.do(lambda r: self.hashes.release(r, name, self.owner))

    def _acquire(self, name: str, seen_version: int) -> bool | RefreshResult | None:
        """Take ``name``'s cluster lock. :returns: True (held), a result (the version moved while waiting:
        adopted; or waited too long), or None (Redis did not answer)."""
        deadline = time.monotonic() + 2 * self.ttl_ms / 1000 + REFRESH_TIMEOUT_S
        while True:
            got = self.sync.do(lambda r: self.hashes.lock(r, name, self.owner, self.ttl_ms))
            if got is None:
                return None
            if got:
                return True
            shared = self.sync.do(lambda r: self.hashes.read(r, name))
            if shared is None:
                return None
            if shared.version != seen_version and shared.cred is not None:
                adopted = self.sync.use(name, shared, why="by another instance")
                if adopted is not None:
                    return adopted
                seen_version = shared.version  # ours supersedes it: written once the lock is ours
            if time.monotonic() > deadline or self._stopping.wait(LOCK_POLL_S):
                return RefreshResult(RefreshStatus.ERROR, message="another instance is refreshing this token")

    def current(self, name: str) -> Credential | None:
        """Under the cluster lock: the shared credential (adopted if it differs from ours), or ours, written
        first, if it supersedes the shared one (a pair rotated here and not shared yet: the shared one is
        rotated out, or expires sooner); otherwise, or if Redis holds none, ``credentials.json``'s."""
        if name not in self._held:
            return self.local.current(name)
        for _ in range(3):  # a write refused by a new login's: decide again
            shared = self.sync.do(lambda r: self.hashes.read(r, name))
            if shared is None:
                self._held.pop(name, None)  # Redis went away: the local path
                return self.local.current(name)
            self._held[name] = shared
            if shared.cred is None:
                return self.local.current(name)
            mine = self.tokens.get(name)
            if mine is not None and mine.secret == shared.cred.secret:
                self.sync.saw(name, shared.version)
                return shared.cred
            if not self.sync.wins(name, mine, shared.cred):
                self.sync.use(name, shared, why="by another instance", any_version=True)
                return shared.cred
            assert mine is not None  # (it wins)
            got = self.sync.do(lambda r, v=shared.version: self.hashes.cas(r, name, v, mine))
            if got is None:
                self._held.pop(name, None)
                return mine
            if got[0]:
                log.info("cluster: the token of %s rotated here is shared now (version %d)", name, got[1])
                self.sync.written(name, got[1])
                self.link.publish(NOTICE, {"account": name, "v": got[1]})
                self._held[name] = Shared(got[1], mine, "")
                return mine
        return mine

    def before_call(self, name: str) -> RefreshResult | None:
        """Under the cluster lock, just before the refresh token is sent: refuse if another owner's
        intent says it may be spent already (the account then needs a new login); else write ours."""
        shared = self._held.get(name)
        if shared is None:
            return None
        who = shared.blocking_intent(self.owner)
        if who:
            return self._interrupted(name, who.split("/", 1)[0])
        intent = f"{self.owner}:{shared.version}"
        written = self.sync.do(lambda r: self.hashes.write_intent(r, name, self.owner, intent))
        if written is None:
            self._held.pop(name, None)  # Redis went away: the call goes ahead on the local path
            return None
        if not written:
            return RefreshResult(RefreshStatus.ERROR, message="the cluster refresh lock expired before the call")
        self._held[name] = dataclasses.replace(shared, intent=intent)
        return None

    def _interrupted(self, name: str, instance: str) -> RefreshResult:
        message = (f"the instance {instance} was refreshing the token of {name} and stopped before saving the "
                   f"answer (killed, or its cluster lock expired): its refresh token may be spent, so it is not "
                   f"sent again. Log in again on one machine (`shunt add-account {name}`): every instance takes "
                   f"the new login")
        log.warning("cluster: %s", message, extra={"event": "refresh_interrupted", "account": name})
        self.mark_reauth(name, True)
        return RefreshResult(RefreshStatus.INVALID_GRANT, message=message)

    def after_call(self, name: str, result: RefreshResult, sent: Credential) -> RefreshResult:
        """The token endpoint answered: write the rotated pair (compare-and-set on the version read under
        the lock) before it is used. A refused write is decided again on what Redis holds then: nothing,
        or the pair just rotated out (a Redis restarted, a rejoin that re-uploaded it) is overwritten with
        ours; a different pair (a new login) is adopted. A pair that Redis did not take is kept pending
        (:meth:`CredentialSync.rotated`). A failure that cannot have spent the refresh token clears our
        intent."""
        shared = self._held.get(name)
        if result.status is not RefreshStatus.OK or result.credential is None:
            if shared is not None and shared.intent and not result.maybe_rotated:
                self.sync.do(lambda r: self.hashes.clear_intent(r, name, shared.intent))
            return result
        new = result.credential
        self.sync.spent(name, sent, new)
        self._hang("answered", name)
        if shared is None:  # the local path: shared as soon as Redis answers (the later expiry wins)
            if name in self.names():
                self.sync.rotated(name, new)
            return result
        return self._write(name, shared.version, result)

    def _write(self, name: str, version: int, result: RefreshResult) -> RefreshResult:
        new = result.credential
        assert new is not None
        for _ in range(3):
            got = self.sync.do(lambda r, v=version: self.hashes.cas(r, name, v, new))
            if got is None:  # Redis went away: kept here, written when it answers
                self.sync.keep_pending(name, new)
                return result
            written, now = got
            if written:
                self.sync.written(name, now)
                self._hang("written", name)
                self.link.publish(NOTICE, {"account": name, "v": now})
                return result
            there = self.sync.do(lambda r: self.hashes.read(r, name))
            if there is None:
                self.sync.keep_pending(name, new)
                return result
            if there.cred is not None and not self.sync.wins(name, new, there.cred):
                log.warning("cluster: the refreshed token of %s was not written: another login (version %d) "
                            "was written meanwhile and is used", name, there.version)
                adopted = self.sync.use(name, there, why="by another instance while this one refreshed",
                                        any_version=True)
                if adopted is not None and adopted.credential is not None:
                    return adopted
                self.sync.keep_pending(name, new)
                return result
            log.warning("cluster: Redis holds version %d of %s, not %d, with %s: the refreshed token is written "
                        "over it", there.version, name, version,
                        "nothing" if there.cred is None else "the pair it replaces")
            version = there.version
        self.sync.keep_pending(name, new)  # refused again and again: written by the next chance
        return result

    def logged_in(self, name: str, cred: Credential, replaced: bool) -> None:
        """A reload saw a new login: see :meth:`CredentialSync.logged_in <shunt_lib.cluster_cred_sync.CredentialSync.logged_in>`."""
        self.sync.logged_in(name, cred, replaced)

    def _hang(self, point: str, name: str) -> None:
        if hang_point() == point:
            log.warning("test seam: %s=%s: the refresh of %s stops here for ever", HANG_ENV, point, name)
            threading.Event().wait()
