"""Where a cluster keeps each shared item in Redis: the key layout, pure.

Every key starts with the cluster's name (``cluster_name``), so several pools can share one Redis.
Keys about one account carry its name in a hash tag (``{work}``) and keys about one client token
carry its id (``{token:0123abcd4567}``): Redis Cluster places all keys with the same tag in the same
slot, so a script may touch an account's credential and its refresh lock, or a token's counters,
together (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags).

=====================================  ===========================================================
key                                    holds
=====================================  ===========================================================
``N:events``                           the pub/sub channel every instance listens on
``N:instances``                        hash: instance id → its heartbeat (JSON)
``N:{ACCOUNT}:state``                  hash: instance id → that instance's view of the account (JSON)
``N:{ACCOUNT}:cred``                   hash: the shared credential, its version, a refresh in progress
``N:{ACCOUNT}:refresh-lock``           string: the owner of the account's refresh lock (``PX``)
``N:session:KEY``                      string: the account a session is bound to (``PX``: sliding TTL)
``N:pin``, ``N:overrides``             string: the pin / the runtime overrides (JSON, last writer wins)
``N:tokens``                           hash: client token id → its record (JSON; hashes, never secrets)
``N:{token:ID}:PART``                  a client token's limit counters (see :mod:`shunt_lib.cluster_limits`)
``N:usage:DAY``                        hash: usage rollups of a UTC day, one field per instance and key
=====================================  ===========================================================
"""

from __future__ import annotations


class Keys:
    """The keys of the cluster named ``name`` (already validated: no braces, no colons)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    @property
    def channel(self) -> str:
        """The pub/sub channel of the cluster's change notices."""
        return f"{self.name}:events"

    @property
    def instances(self) -> str:
        """Hash of the instances' heartbeats."""
        return f"{self.name}:instances"

    def account(self, account: str) -> str:
        """Hash of each instance's view of ``account``'s state."""
        return f"{self.name}:{{{account}}}:state"

    def credential(self, account: str) -> str:
        """Hash of ``account``'s shared credential."""
        return f"{self.name}:{{{account}}}:cred"

    def refresh_lock(self, account: str) -> str:
        """``account``'s cluster-wide refresh lock."""
        return f"{self.name}:{{{account}}}:refresh-lock"

    def session(self, key: str) -> str:
        """The binding of session ``key`` (a :func:`~shunt_lib.sessions.session_key`) to an account."""
        return f"{self.name}:session:{key}"

    @property
    def pin(self) -> str:
        """The pinned account."""
        return f"{self.name}:pin"

    @property
    def overrides(self) -> str:
        """The runtime overrides."""
        return f"{self.name}:overrides"

    @property
    def tokens(self) -> str:
        """Hash of the client tokens' records."""
        return f"{self.name}:tokens"

    def token(self, token_id: str, part: str) -> str:
        """One of client token ``token_id``'s counters (``part``: ``rpm``, ``inflight``, ``day:YYYY-MM-DD`` ...)."""
        return f"{self.name}:{{token:{token_id}}}:{part}"

    def usage(self, day: str) -> str:
        """Hash of the usage rollups of UTC day ``day`` (``YYYY-MM-DD``)."""
        return f"{self.name}:usage:{day}"
