"""Client tokens shared by the shunts of a cluster: a token created, revoked or rotated on one works
(or stops working) on all.

Redis holds every token's record in ``N:tokens`` (:attr:`Keys.tokens <shunt_lib.cluster_keys.Keys.tokens>`):
token id → the record as JSON (:func:`entry_doc`) with the SHA-256 of its secret, never a secret. Each
instance's ``tokens.db`` stays its offline copy and the only place the request path reads from (through
:class:`~shunt_lib.token_index.ClientTokens`, which notices a write within a quarter of a second).

* A change made here (``/admin/tokens``, or ``shunt token ...`` on this machine with ``[cluster]`` set)
  is written to ``tokens.db`` first, then merged into Redis synchronously (:func:`push`) and announced
  (notice ``token``). If Redis is down the local write stands, and the next rejoin pushes it.
* A change another process made to this ``tokens.db`` (``shunt token ...`` whose Redis did not answer)
  is pushed when the index notices the file changed (:attr:`ClientTokens.listeners
  <shunt_lib.token_index.ClientTokens.listeners>`): every record that wins over the copy Redis was
  last seen holding.
* A notice from another instance is merged into this ``tokens.db`` (:meth:`TokenStore.put
  <shunt_lib.token_store.TokenStore.put>`).
* On (re)joining: records Redis lacks or holds older are pushed (and announced: an instance that
  rejoined first learns them too), newer ones are pulled.

Merge (:func:`winner`, pure): a revoked record wins over a live one (a revocation is never undone by a
stale copy); otherwise the record changed last wins (``changed_s``: a rotation is newer than the
secret it replaced).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import TYPE_CHECKING, Callable

from .clients import TokenBinding, TokenLimits, TokenRecord
from .token_store import Entry, TokenStore

if TYPE_CHECKING:
    from .cluster_link import Link
    from .config import Config, Paths
    from .serving import ClusterHost

log = logging.getLogger("shunt.cluster")

NOTICE = "token"


def entry_doc(entry: Entry) -> str:
    """``entry`` as the JSON kept in Redis: ``id``, ``label``, ``secret_sha256`` (hex), ``created_s``,
    ``expires_s``, ``revoked_s``, ``changed_s`` (epoch s or null), ``limits`` and ``binding`` (every
    field). The last use stays with each instance."""
    r = entry.record
    return json.dumps({"id": r.id, "label": r.label, "secret_sha256": entry.secret_sha256.hex(),
                       "created_s": r.created_s, "expires_s": r.expires_s, "revoked_s": r.revoked_s,
                       "changed_s": entry.changed_s, "limits": r.limits._asdict(),
                       "binding": {k: list(v) for k, v in r.binding._asdict().items()}},
                      separators=(",", ":"), sort_keys=True)


def entry_from_doc(text: str | bytes | None) -> Entry | None:
    """The :class:`Entry` of :func:`entry_doc`'s JSON; None for nothing or anything malformed."""
    if not text:
        return None
    try:
        d = json.loads(text)
        record = TokenRecord(str(d["id"]), str(d["label"]), float(d["created_s"]), _opt(d.get("expires_s")),
                             _opt(d.get("revoked_s")), None, TokenLimits(**d.get("limits", {})),
                             TokenBinding(**{k: tuple(str(x) for x in v) for k, v in d.get("binding", {}).items()}))
        return Entry(record, bytes.fromhex(d["secret_sha256"]), float(d["changed_s"]))
    except (ValueError, KeyError, TypeError):
        return None


def _opt(value) -> float | None:
    return None if value is None else float(value)


def winner(a: Entry | None, b: Entry | None) -> Entry | None:
    """Which of two copies of one token's record stands: a revoked one over a live one, else the one
    changed last (``changed_s``; a tie: ``a``). None only if both are."""
    if a is None or b is None:
        return a if b is None else b
    rank = lambda e: (e.record.revoked_s is not None, e.changed_s)  # noqa: E731
    return b if rank(b) > rank(a) else a


def push(client, key: str, entry: Entry) -> Entry:
    """Merge ``entry`` into the hash ``key`` (optimistic transaction: ``WATCH`` the hash, write only if
    nobody wrote it meanwhile, else try again). :returns: the record Redis holds afterwards (``entry``,
    or a stored one that wins over it). :raises redis.RedisError: / :raises OSError: Redis did not answer."""
    from redis.exceptions import WatchError  # noqa: PLC0415 - a shunt alone never imports redis

    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                current = entry_from_doc(pipe.hget(key, entry.record.id))
                best = winner(current, entry)
                if best is current:
                    pipe.unwatch()
                    return current
                pipe.multi()
                pipe.hset(key, entry.record.id, entry_doc(entry))
                pipe.execute()
                return entry
            except WatchError:
                continue


class SharedTokens:
    """This instance's part in sharing client tokens (see the module docstring). Built by :meth:`attach`."""

    def __init__(self, link: "Link", srv: "ClusterHost"):
        self.link = link
        self.srv = srv
        self._lock = threading.Lock()  # one use of the store's connection at a time
        self._store = TokenStore(srv.paths.tokens_db)
        self._remote: dict[str, Entry] = {}  # token id → the record Redis was last seen holding

    @classmethod
    def attach(cls, link: "Link", srv: "ClusterHost") -> "SharedTokens":
        """Share ``srv``'s client tokens over ``link``: ``/admin/tokens`` pushes its changes
        (``srv.token_mirror``), notices and rejoins merge the others'."""
        part = cls(link, srv)
        link.on(NOTICE, part._heard)
        link.on_rejoin(part._rejoin)
        srv.token_mirror = part.changed
        srv.client_tokens.listeners.append(part._file_changed)
        return part

    def stop(self) -> None:
        """Stop pushing; close the store."""
        self.srv.token_mirror = None
        try:
            self.srv.client_tokens.listeners.remove(self._file_changed)
        except ValueError:
            pass
        with self._lock:
            self._store.close()

    def changed(self, token_id: str) -> None:
        """A token was written to this ``tokens.db``: merge it into Redis and tell the others (while Redis
        is down, nothing: the rejoin pushes it)."""
        with self._lock:
            entry = self._store.entries().get(token_id)
        if entry is None:
            return
        self._push(entry)

    def _push(self, entry: Entry) -> bool:
        """Merge ``entry`` into Redis and announce what Redis holds then. :returns: False if Redis did not answer."""
        stored = self.link.run(lambda r: push(r, self.link.keys.tokens, entry))
        if stored is None:
            return False
        self._remote[entry.record.id] = stored
        self.link.publish(NOTICE, {"doc": entry_doc(stored)}, now=True)
        return True

    def _file_changed(self) -> None:
        """``tokens.db`` changed (maybe by another process: ``shunt token ...`` whose Redis did not
        answer): push each record that wins over what Redis was last seen holding (while Redis is down,
        nothing: the rejoin pushes it)."""
        if not self.link.healthy:
            return
        with self._lock:
            local = self._store.entries()
        for token_id, mine in local.items():
            known = self._remote.get(token_id)
            if winner(known, mine) is mine and (known is None or entry_doc(known) != entry_doc(mine)):
                if not self._push(mine):
                    return

    def _heard(self, message: dict) -> None:
        entry = entry_from_doc(message.get("doc"))
        if entry is not None:
            self._remote[entry.record.id] = entry
        if entry is not None and self._merge_local([entry]):
            self.srv.client_tokens.refresh()

    def _merge_local(self, entries: list[Entry]) -> bool:
        """Write each of ``entries`` that wins over this file's copy. :returns: whether any was written."""
        wrote = False
        with self._lock:
            local = self._store.entries()
            for entry in entries:
                mine = local.get(entry.record.id)
                if winner(mine, entry) is entry and (mine is None or entry_doc(mine) != entry_doc(entry)):
                    self._store.put(entry)
                    wrote = True
                    if entry.record.revoked_s is not None and (mine is None or mine.record.revoked_s is None):
                        log.info("client token %s (%s) revoked by another shunt of the cluster", entry.record.id,
                                 entry.record.label)
        return wrote

    def _rejoin(self) -> None:
        key = self.link.keys.tokens
        remote = {}
        for raw in self.link.client.hvals(key):
            e = entry_from_doc(raw)
            if e is not None:
                remote[e.record.id] = e
        with self._lock:
            local = self._store.entries()
        for token_id, mine in local.items():
            theirs = remote.get(token_id)
            if winner(theirs, mine) is mine and (theirs is None or entry_doc(theirs) != entry_doc(mine)):
                remote[token_id] = stored = push(self.link.client, key, mine)
                self._remote[token_id] = stored
                # told now (the link is not ok until the rejoin ends): instances that rejoined first learn it too
                self.link.client.publish(self.link.keys.channel, json.dumps(
                    {"k": NOTICE, "from": self.link.instance_id, "doc": entry_doc(stored)}, separators=(",", ":")))
        self._remote.update(remote)
        if self._merge_local(list(remote.values())):
            self.srv.client_tokens.refresh()


def cli_mirror(config: "Config", paths: "Paths") -> tuple[Callable[[str], None] | None, Callable[[], None]]:
    """For ``shunt token ...`` (a process of its own): with ``[cluster]`` set, a mirror that pushes each
    change to Redis at once and announces it, and a function closing the connection; else ``(None, noop)``.
    A Redis that does not answer is said on stderr (the local change stands; a shunt serving this home
    pushes it when it rejoins).

    :raises ConfigError: the ``redis`` package is missing, or a remote Redis has no password.
    """
    if not config.cluster.enabled:
        return None, lambda: None
    from .cluster_link import instance_id  # noqa: PLC0415 - a shunt alone never imports redis
    from .cluster_config import check_security  # noqa: PLC0415
    from .cluster_keys import Keys  # noqa: PLC0415
    from .cluster_link import connect, import_redis  # noqa: PLC0415

    cfg = config.cluster
    for warning in check_security(cfg):
        print(f"shunt: cluster {cfg.cluster_name}: {warning}", file=sys.stderr)
    client = connect(cfg)
    keys = Keys(cfg.cluster_name)
    errors = (import_redis().RedisError, OSError)

    def mirror(token_id: str) -> None:
        with TokenStore(paths.tokens_db) as store:
            entry = store.entries().get(token_id)
        if entry is None:
            return
        try:
            stored = push(client, keys.tokens, entry)
            client.publish(keys.channel, json.dumps({"k": NOTICE, "from": instance_id(paths.home),
                                                     "doc": entry_doc(stored)}, separators=(",", ":")))
        except errors as exc:
            where = exc.__class__.__name__
            print(f"shunt: the cluster's Redis did not answer ({where}); the change is saved in {paths.tokens_db} "
                  "and reaches the other shunts when a shunt serving this home sees it (at once if it is connected, "
                  "else when it reconnects)", file=sys.stderr)

    return mirror, client.close
