"""Keeping this instance's copies of the shared OAuth credentials in step with Redis
(:mod:`shunt_lib.cluster_creds` coordinates the refresh itself).

- A newer version written by another instance is adopted: in memory first, then in ``credentials.json``
  (the offline copy), from its notice ``cred`` ``{"account", "v"}`` or when a refresh reads it.
- A new login seen by this instance's reload (a changed secret) is written as a new version whatever
  Redis holds (kept until Redis answers, if it is down then); a first credential is offered.
- On each (re)join: what Redis lacks is uploaded, and a difference is settled by
  :func:`~shunt_lib.cluster_cred_store.reconcile` (the later expiry is the newer rotation and wins).
  Versions are learnt anew then: a Redis restarted empty counts from 1 again.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

from .cluster_cred_store import CredentialHash, Shared, reconcile
from .credentials import Credential
from .oauth import RefreshResult, RefreshStatus, TokenManager

log = logging.getLogger("shunt.cluster")

NOTICE = "cred"


class CredentialSync:
    """This instance's side of the shared credentials (see the module docstring).

    :param link: the :class:`~shunt_lib.cluster_link.Link`; :param hashes: the Redis operations.
    :param tokens: this instance's token manager.
    :param names: the OAuth accounts configured here, now (they change with reloads).
    :param mark_reauth: ``mark_reauth(name, needed)``: set or clear the account's ``reauth_required``.
    Any thread may call any method.
    """

    def __init__(self, link, hashes: CredentialHash, tokens: TokenManager, names: Callable[[], list[str]],
                 mark_reauth: Callable[[str, bool], None]):
        self.link = link
        self.hashes = hashes
        self.tokens = tokens
        self.names = names
        self.mark_reauth = mark_reauth
        self._guard = threading.Lock()
        self._versions: dict[str, int] = {}  # name -> the version this instance uses (guarded)
        self._logins: dict[str, Credential] = {}  # new logins not yet written (Redis was down; guarded)

    def do(self, op: Callable[[Any], Any], r=None) -> Any:
        """``op(r)`` with the client given (a rejoin: errors propagate), else through the link (None: Redis
        did not answer)."""
        return op(r) if r is not None else self.link.run(op)

    def version(self, name: str) -> int:
        """The version of ``name``'s credential this instance uses (0: none known)."""
        with self._guard:
            return self._versions.get(name, 0)

    def saw(self, name: str, version: int) -> None:
        """Record that this instance's credential of ``name`` is (at least) ``version``."""
        with self._guard:
            self._versions[name] = max(self._versions.get(name, 0), version)

    def use(self, name: str, shared: Shared, *, why: str) -> RefreshResult:
        """Adopt ``shared``'s credential (newer than ours) in memory and in the offline copy; a version
        older than the one in use is not taken."""
        cred = shared.cred
        assert cred is not None
        with self._guard:
            if shared.version < self._versions.get(name, 0):
                return RefreshResult(RefreshStatus.OK, self.tokens.get(name), "a newer version is in use")
            self._versions[name] = shared.version
        mine = self.tokens.get(name)
        if mine is None or mine.secret != cred.secret:
            self.tokens.adopt(name, cred)
            self.mark_reauth(name, False)  # a working pair from the cluster: logged in again
            log.info("cluster: using the token of %s refreshed %s (version %d)", name, why, shared.version)
        return RefreshResult(RefreshStatus.OK, cred, f"refreshed {why}")

    def logged_in(self, name: str, cred: Credential, replaced: bool) -> None:
        """A reload saw a new login (or a first credential): a changed secret is pushed as a new version
        whatever Redis holds (kept until Redis answers); a first one is offered (the later expiry wins)."""
        if cred.kind != "oauth":  # (a reload applies its accounts before its config: no names() check)
            return
        if not replaced:
            self.offer(name, cred)
            return
        with self._guard:
            self._logins[name] = cred
        if self.link.healthy:
            self.push_logins()

    def push_logins(self, r=None) -> None:
        """Write the new logins not shared yet, whatever the version (``r``: during a rejoin)."""
        with self._guard:
            logins, self._logins = self._logins, {}
        for name, cred in logins.items():
            version = self.do(lambda c, name=name, cred=cred: self.hashes.put(c, name, cred), r)
            if version is None:
                with self._guard:
                    self._logins.setdefault(name, cred)
                continue
            self.saw(name, version)
            self.notify(r, name, version)
            log.info("cluster: the new login of %s is shared (version %d)", name, version)

    def notify(self, r, name: str, version: int) -> None:
        """Tell the other instances that ``name`` is at ``version`` now."""
        message = {"account": name, "v": version}
        if r is None:
            self.link.publish(NOTICE, message)
        else:  # during a rejoin the link is not ok yet: publish directly
            r.publish(self.link.keys.channel, json.dumps({"k": NOTICE, "from": self.link.instance_id, **message}))

    def offer(self, name: str, cred: Credential, r=None) -> None:
        """Write ``cred`` if Redis holds nothing newer (:func:`reconcile`); adopt what it holds otherwise."""
        for _ in range(3):  # a write refused by another instance's: decide again
            shared = self.do(lambda c: self.hashes.read(c, name), r)
            if shared is None:
                return
            action = reconcile(cred, shared.cred)
            if action == "adopt":
                self.use(name, shared, why="elsewhere")
                return
            if action == "keep":
                self.saw(name, shared.version)
                return
            got = self.do(lambda c, v=shared.version: self.hashes.cas(c, name, v, cred), r)
            if got is None:
                return
            if got[0]:
                self.saw(name, got[1])
                self.notify(r, name, got[1])
                return

    # -- the other instances ------------------------------------------------------------------------
    def on_notice(self, message: dict) -> None:
        """Another instance wrote a new version of an account's credential: adopt it (listener thread)."""
        name, version = message.get("account"), message.get("v")
        if not isinstance(name, str) or not isinstance(version, int) or name not in self.names():
            return
        if version <= self.version(name):
            return
        shared = self.do(lambda r: self.hashes.read(r, name))
        if shared is not None and shared.cred is not None and shared.version > self.version(name):
            self.use(name, shared, why="by another instance")

    def rejoin(self) -> None:
        """After each (re)connection (the link is not ok yet: the client is used directly; a Redis error
        propagates and the link tries again): push the logins made while Redis was down, upload what Redis
        lacks, reconcile what differs."""
        r = self.link.client
        with self._guard:
            self._versions.clear()  # a Redis restarted empty counts from 1 again: learn the versions anew
        self.push_logins(r)
        for name in self.names():
            cred = self.tokens.get(name)
            if cred is None:  # configured here, never logged in here: take the cluster's login
                shared = self.hashes.read(r, name)
                if shared.cred is not None:
                    self.use(name, shared, why="elsewhere")
            elif cred.kind == "oauth":
                self.offer(name, cred, r)
