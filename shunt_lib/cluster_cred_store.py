"""The Redis side of the shared OAuth credentials (:mod:`shunt_lib.cluster_creds`): the hash of one
account, the scripts that change it atomically, and the pure rules read from it.

``Keys.credential(name)`` is a hash: ``v`` (the version, an integer, 0 when absent, raised by one at
every write), ``cred`` (:meth:`Credential.to_json <shunt_lib.credentials.Credential.to_json>`, JSON) and
``refreshing`` (``OWNER:VERSION``: a refresh under way, written before its refresh token is sent).
``Keys.refresh_lock(name)`` holds the owner of the account's refresh lock (``SET NX PX``). Both keys
carry the account's hash tag, so a script may touch both on Redis Cluster. Scripts:
https://redis.io/docs/latest/develop/interact/programmability/eval-intro/ (atomic: no other command
runs while one does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any, Collection

from .cluster_keys import Keys
from .credentials import Credential
from .errors import ConfigError

log = logging.getLogger("shunt.cluster")

#: KEYS[1] the credential hash; ARGV[1] the expected version, ARGV[2] the credential JSON.
#: :returns: ``{1, new version}`` written, or ``{0, current version}`` refused (a stale version).
CAS_LUA = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return {0, v} end
redis.call('HSET', KEYS[1], 'v', v + 1, 'cred', ARGV[2])
redis.call('HDEL', KEYS[1], 'refreshing')
return {1, v + 1}
"""

#: KEYS[1] the credential hash; ARGV[1] the credential JSON. A new login: written whatever the version.
#: :returns: the new version.
PUT_LUA = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') + 1
redis.call('HSET', KEYS[1], 'v', v, 'cred', ARGV[1])
redis.call('HDEL', KEYS[1], 'refreshing')
return v
"""

#: KEYS[1] the lock; ARGV[1] the owner. :returns: 1 released, 0 not the owner's (expired, or taken since).
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS[1] the credential hash, KEYS[2] the lock; ARGV[1] the owner, ARGV[2] the intent.
#: :returns: 1 written, 0 the lock is no longer the owner's (nothing written).
INTENT_LUA = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'refreshing', ARGV[2])
return 1
"""

#: KEYS[1] the credential hash; ARGV[1] the intent. :returns: 1 cleared, 0 it was not that intent.
CLEAR_LUA = """
if redis.call('HGET', KEYS[1], 'refreshing') == ARGV[1] then return redis.call('HDEL', KEYS[1], 'refreshing') end
return 0
"""


@dataclasses.dataclass(frozen=True)
class Shared:
    """What Redis holds for one account: ``version`` (0: nothing), ``cred`` (None: absent or unusable)
    and ``intent`` (``OWNER:VERSION`` of a refresh under way, "" if none)."""

    version: int = 0
    cred: Credential | None = None
    intent: str = ""

    def blocking_intent(self, owner: str) -> str:
        """The owner of an intent that forbids sending the current refresh token: another owner's, for
        this version ("" if none)."""
        who, _, version = self.intent.rpartition(":")
        return who if who and who != owner and version == str(self.version) else ""


def parse_shared(name: str, fields: list[Any]) -> Shared:
    """``[v, cred, refreshing]`` as ``HMGET`` returns them (bytes or None) → :class:`Shared`; a credential
    that is not a usable OAuth one is read as absent (logged, never quoted)."""
    raw_v, raw_cred, raw_intent = (f.decode() if isinstance(f, bytes) else f for f in fields)
    try:
        version = int(raw_v or 0)
    except ValueError:
        version = 0
    cred = None
    if raw_cred:
        try:
            cred = Credential.from_json(name, json.loads(raw_cred))
        except (ValueError, ConfigError) as exc:
            log.warning("cluster: the shared credential of %s cannot be read (%s); ignored", name,
                        exc if isinstance(exc, ConfigError) else type(exc).__name__)
        if cred is not None and (cred.kind != "oauth" or cred.problem() is not None):
            cred = None
    return Shared(version, cred, raw_intent or "")


def reconcile(local: Credential | None, shared: Credential | None) -> str:
    """What a (re)joining instance does with one account: ``"upload"`` its own credential, ``"adopt"``
    the shared one, or ``"keep"`` (the same pair, or nothing on either side). The later expiry is the
    newer rotation and wins; on a tie the shared one wins (every instance then agrees)."""
    if local is None:
        return "adopt" if shared is not None else "keep"
    if shared is None:
        return "upload"
    if (local.access_token, local.refresh_token) == (shared.access_token, shared.refresh_token):
        return "keep"
    return "upload" if local.expires_at_ms > shared.expires_at_ms else "adopt"


def token_digest(refresh_token: str) -> str:
    """A refresh token's fingerprint (SHA-256, hex): what this instance remembers of the tokens it spent."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


def supersedes(ours: Credential | None, theirs: Credential | None, spent: Collection[str], *,
               by_expiry: bool) -> bool:
    """Whether ``ours`` must replace ``theirs`` (what Redis holds) rather than be replaced by it.

    Ours wins over nothing, and over a pair whose refresh token this instance sent to the token endpoint
    (its fingerprint is in ``spent``): that pair is rotated out, ours descends from it. With ``by_expiry``
    ours also wins by a later expiry (:func:`reconcile`'s rule). Otherwise theirs is another lineage (a
    new login, another instance's newer rotation) and is taken. The same pair: False.
    """
    if ours is None:
        return False
    if theirs is None:
        return True
    if (ours.access_token, ours.refresh_token) == (theirs.access_token, theirs.refresh_token):
        return False
    if theirs.refresh_token and theirs.refresh_token != ours.refresh_token and token_digest(theirs.refresh_token) in spent:
        return True
    return by_expiry and reconcile(ours, theirs) == "upload"


class CredentialHash:
    """The operations on the accounts' credential hashes and refresh locks. Each takes ``r``, a Redis
    client, and raises its errors (the caller runs it through the link).

    :param keys: the cluster's key layout; :param client: the client the scripts are registered with.
    """

    def __init__(self, keys: Keys, client):
        self.keys = keys
        self._cas = client.register_script(CAS_LUA)
        self._put = client.register_script(PUT_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._intent = client.register_script(INTENT_LUA)
        self._clear = client.register_script(CLEAR_LUA)

    def read(self, r, name: str) -> Shared:
        """What Redis holds for ``name``."""
        return parse_shared(name, r.hmget(self.keys.credential(name), "v", "cred", "refreshing"))

    def cas(self, r, name: str, version: int, cred: Credential) -> tuple[bool, int]:
        """Write ``cred`` if the version is still ``version`` (clearing the intent).
        :returns: (written, the version now: the new one, or the one that refused the write)."""
        ok, now = self._cas(keys=[self.keys.credential(name)], args=[version, _doc(cred)], client=r)
        return bool(int(ok)), int(now)

    def put(self, r, name: str, cred: Credential) -> int:
        """Write ``cred`` whatever the version (a new login). :returns: its version."""
        return int(self._put(keys=[self.keys.credential(name)], args=[_doc(cred)], client=r))

    def lock(self, r, name: str, owner: str, ttl_ms: int) -> bool:
        """Take ``name``'s refresh lock for ``ttl_ms`` if it is free. :returns: whether it was taken."""
        return bool(r.set(self.keys.refresh_lock(name), owner, nx=True, px=ttl_ms))

    def release(self, r, name: str, owner: str) -> bool:
        """Release ``name``'s refresh lock if ``owner`` still holds it. :returns: whether it did."""
        return bool(self._release(keys=[self.keys.refresh_lock(name)], args=[owner], client=r))

    def write_intent(self, r, name: str, owner: str, intent: str) -> bool:
        """Write the intent if ``owner`` still holds the lock. :returns: whether it was written."""
        keys = [self.keys.credential(name), self.keys.refresh_lock(name)]
        return bool(self._intent(keys=keys, args=[owner, intent], client=r))

    def clear_intent(self, r, name: str, intent: str) -> bool:
        """Clear the intent if it is still ``intent``. :returns: whether it was."""
        return bool(self._clear(keys=[self.keys.credential(name)], args=[intent], client=r))


def _doc(cred: Credential) -> str:
    return json.dumps(cred.to_json(), separators=(",", ":"))
