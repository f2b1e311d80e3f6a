"""Keeping this instance's copies of the shared OAuth credentials in step with Redis
(:mod:`shunt_lib.cluster_creds` coordinates the refresh itself).

- A newer version written by another instance is adopted: in memory first, then in ``credentials.json``
  (the offline copy), from its notice ``cred`` ``{"account", "v"}`` or when a refresh reads it.
- A new login seen by this instance's reload (a changed secret) is written as a new version whatever
  Redis holds (kept until Redis answers, if it is down then); a first credential is offered.
- A pair this instance rotated that Redis does not hold yet (a refresh on the local path while Redis
  was down or rejoining, a write that Redis did not answer or refused too often) is kept in a pending
  set and written as soon as Redis answers: at once if it can, else by the rejoin.
- Never adopted: a pair whose refresh token this instance sent (it is rotated out: ours descends from
  it), nor an older pair over a pending one (:func:`~shunt_lib.cluster_cred_store.supersedes`); ours is
  written instead. The decision and the adoption are one step under the credentials lock, so a late
  notice never reverts a rotation saved meanwhile.
- On each (re)join: the pending pairs are written, what Redis lacks is uploaded, and a difference is
  settled by :func:`~shunt_lib.cluster_cred_store.reconcile` (the later expiry is the newer rotation
  and wins). Versions are learnt anew then: a Redis restarted empty counts from 1 again.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

from .cluster_cred_store import CredentialHash, Shared, supersedes, token_digest
from .cluster_link import import_redis
from .credentials import Credential
from .oauth import RefreshResult, RefreshStatus, TokenManager

log = logging.getLogger("shunt.cluster")

NOTICE = "cred"
SPENT_KEPT = 16  # refresh tokens remembered per account as spent by this instance


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
        self._rotated: dict[str, Credential] = {}  # rotations made here, not in Redis yet (guarded)
        self._spent: dict[str, list[str]] = {}  # name -> fingerprints of refresh tokens sent from here (guarded)
        self._errors = (import_redis().RedisError, OSError)

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

    def spent(self, name: str, sent: Credential, new: Credential) -> None:
        """Remember that ``sent``'s refresh token was exchanged for ``new`` (nothing if it was not rotated)."""
        if not sent.refresh_token or sent.refresh_token == new.refresh_token:
            return
        with self._guard:
            kept = self._spent.setdefault(name, [])
            kept.append(token_digest(sent.refresh_token))
            del kept[:-SPENT_KEPT]

    def wins(self, name: str, ours: Credential | None, theirs: Credential | None, *, by_expiry: bool = True) -> bool:
        """Whether ``ours`` must replace ``theirs`` in Redis (see :func:`supersedes`)."""
        with self._guard:
            return self._wins(name, ours, theirs, by_expiry)

    def _wins(self, name: str, ours: Credential | None, theirs: Credential | None, by_expiry: bool) -> bool:
        if ours is None or ours.kind != "oauth":
            return False
        return supersedes(ours, theirs, self._spent.get(name, ()), by_expiry=by_expiry)

    def use(self, name: str, shared: Shared, *, why: str, any_version: bool = False) -> RefreshResult | None:
        """Adopt ``shared``'s credential in memory and in the offline copy, unless a newer version is in
        use here (``any_version``: adopt whatever the version) or ours supersedes it (then ours is kept,
        pending, to be written: :returns: None). The checks and the adoption are one step."""
        cred = shared.cred
        assert cred is not None
        held: dict[str, Any] = {}

        def decide(mine: Credential | None) -> bool:  # under the credentials lock (TokenManager.adopt)
            held["mine"] = mine
            with self._guard:
                if not any_version and shared.version < self._versions.get(name, 0):
                    held["why"] = "a newer version is in use"
                    return False
                pending = self._rotated.get(name)
                if self._wins(name, mine, cred, by_expiry=pending is not None and _pair(pending) == _pair(mine)):
                    self._rotated.setdefault(name, mine)  # type: ignore[arg-type]  (a pending one is newer)
                    held["ours"] = True
                    return False
                self._versions[name] = shared.version
                if mine is not None and _pair(mine) == _pair(cred):
                    return False
                self._rotated.pop(name, None)  # another lineage (a new login) or a newer rotation replaces ours
                return True

        if self.tokens.adopt(name, cred, when=decide):
            self.mark_reauth(name, False)  # a working pair from the cluster: logged in again
            log.info("cluster: using the token of %s refreshed %s (version %d)", name, why, shared.version)
        elif held.get("ours"):
            log.info("cluster: the token of %s written %s (version %d) is older than this instance's; this "
                     "one is written instead", name, why, shared.version)
            return None
        elif "why" in held:
            return RefreshResult(RefreshStatus.OK, held["mine"], held["why"])
        return RefreshResult(RefreshStatus.OK, cred, f"refreshed {why}")

    def rotated(self, name: str, cred: Credential) -> None:
        """A rotation made here that Redis does not hold: kept pending and written now if Redis answers
        (even while the link rejoins or counts it down: then the client is used directly, and a failure
        leaves it to the rejoin)."""
        with self._guard:
            self._rotated[name] = cred
        if self.link.healthy:
            self.push_rotated()
            return
        try:
            self.push_rotated(self.link.client)
        except self._errors:
            pass  # still down: the rejoin writes it

    def keep_pending(self, name: str, cred: Credential) -> None:
        """Keep ``cred`` (rotated here) pending until Redis answers; see :meth:`rotated`."""
        with self._guard:
            self._rotated[name] = cred

    def written(self, name: str, version: int) -> None:
        """This instance's newest rotation of ``name`` is in Redis at ``version``: nothing is pending."""
        with self._guard:
            self._versions[name] = max(self._versions.get(name, 0), version)
            self._rotated.pop(name, None)

    def push_rotated(self, r=None) -> None:
        """Write the pending rotations (``r``: the client, whose errors then propagate)."""
        with self._guard:
            pending = dict(self._rotated)
        for name, cred in pending.items():
            if self.offer(name, cred, r):
                with self._guard:
                    if name in self._rotated and _pair(self._rotated[name]) == _pair(cred):
                        del self._rotated[name]

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

    def offer(self, name: str, cred: Credential, r=None) -> bool:
        """Write ``cred`` if it supersedes what Redis holds (:meth:`wins`: nothing there, a pair rotated
        out here, or an earlier expiry); adopt what it holds otherwise.
        :returns: whether that was settled (False: Redis did not answer, or kept refusing the write)."""
        for _ in range(3):  # a write refused by another instance's: decide again
            shared = self.do(lambda c: self.hashes.read(c, name), r)
            if shared is None:
                return False
            if shared.cred is not None and _pair(shared.cred) == _pair(cred):
                self.saw(name, shared.version)
                return True
            if not self.wins(name, cred, shared.cred):
                return self.use(name, shared, why="elsewhere") is not None
            got = self.do(lambda c, v=shared.version: self.hashes.cas(c, name, v, cred), r)
            if got is None:
                return False
            if got[0]:
                self.saw(name, got[1])
                self.notify(r, name, got[1])
                return True
        return False

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
            if self.use(name, shared, why="by another instance") is None:
                self.push_rotated()  # ours supersedes what was written: write it

    def rejoin(self) -> None:
        """After each (re)connection (the link is not ok yet: the client is used directly; a Redis error
        propagates and the link tries again): push the logins made while Redis was down, upload what Redis
        lacks, reconcile what differs (the rotations made here first)."""
        r = self.link.client
        with self._guard:
            self._versions.clear()  # a Redis restarted empty counts from 1 again: learn the versions anew
        self.push_logins(r)
        self.push_rotated(r)
        for name in self.names():
            cred = self.tokens.get(name)
            if cred is None:  # configured here, never logged in here: take the cluster's login
                shared = self.hashes.read(r, name)
                if shared.cred is not None:
                    self.use(name, shared, why="elsewhere")
            elif cred.kind == "oauth":
                self.offer(name, cred, r)


def _pair(cred: Credential | None) -> tuple[str, str] | None:
    return None if cred is None else (cred.access_token, cred.refresh_token)
