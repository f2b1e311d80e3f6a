"""One instance's link to the cluster's Redis: health, change notices in, small writes out.

The request path never waits on Redis for what it can decide from memory. Three ways to use the link:

- :meth:`Link.run` — a synchronous operation, for the few decisions that need the cluster's answer
  now (a new session's binding, a client token's limit counters, the refresh lock). While Redis is
  down it is not even tried: it returns the caller's ``default`` at once, and the caller decides
  from its own state.
- :meth:`Link.later` — an asynchronous write, coalesced by key (the newest write of a key replaces
  one still queued), sent in one pipeline by the writer thread, in the order queued: at once, or,
  for a ``lazy`` write (a rollup, a TTL slide), within half a second. Dropped while Redis is down:
  what was lost is rewritten when the link comes back (the rejoin handlers). While the link is
  joining (Redis answers, the rejoin handlers run) writes are kept and sent once it is ok: a change
  made after a handler read this instance's state would otherwise reach no one.
- :meth:`Link.on` — handlers of the change notices other instances publish on the cluster's
  channel (``{"k": kind, "from": instance id, ...}``). An instance never hears its own.

Health: the first failed operation (a connection error, a timeout past ``timeout_s``) makes the link
``degraded``, logged once with the reason. The listener thread then reconnects every ``retry_s``;
once Redis answers it subscribes again, runs every :meth:`Link.on_rejoin` handler (each instance
rewrites what it holds and merges what the others hold: a Redis restarted without persistence
loses nothing the instances cannot rebuild), and only then counts the link ``ok`` again. The same
handlers run at the first connection. Errors a client sees never come from here.

The Redis client (the official ``redis`` package, ``pip install 'shunt[redis]'``) is imported only
when a link is made, so a shunt without ``[cluster]`` never imports it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import Any, Callable, Hashable

from .cluster_config import PASSWORD_ENV, ClusterConfig, connection_facts
from .cluster_keys import Keys
from .errors import ConfigError
from .fsutil import atomic_write_bytes

log = logging.getLogger("shunt.cluster")

RETRY_S = 0.5  # how often a degraded link tries Redis again
LAZY_S = 0.5  # the longest a lazy write waits for the writer
HEARTBEAT_S = 5.0  # how often an instance says it is alive (and counts the others)
INSTANCE_STALE_S = 30.0  # an instance silent this long is not counted
LISTEN_POLL_S = 0.2  # the listener's longest wait for a notice (it also notices stop() and a failure then)
ID_FILE = "cluster-id"  # in shunt's home: this instance's stable id
PING_IDLE_S = 2.0  # a silent subscription is pinged this often, so a dead link is noticed


def import_redis():
    """The ``redis`` module. :raises ConfigError: it is not installed (with the fix)."""
    try:
        import redis  # noqa: PLC0415 - only a cluster needs it
    except ImportError:
        raise ConfigError("cluster.redis_url is set, but the Redis client is not installed: run "
                          "pip install 'shunt[redis]' (or use shunt-redis.pyz)") from None
    return redis


def connect(cfg: ClusterConfig):
    """A ``redis.Redis`` client for ``cfg`` (nothing is sent yet): operations time out after
    ``timeout_s`` and are not retried (the link decides what a failure means). The password comes
    from the URL, else from ``REDIS_PASSWORD``.

    Each step of a new connection has its own ``timeout_s`` (the client has no deadline for the whole
    setup), so a new connection sends only what it needs: the connect, ``HELLO`` (with ``AUTH``) or
    ``AUTH`` when a password is set, ``SELECT`` when the database is not 0; no ``CLIENT SETNAME``,
    ``CLIENT SETINFO`` or ``CLIENT MAINT_NOTIFICATIONS``. One operation on a slow but alive Redis
    thus waits at most 4 × ``timeout_s`` on a new connection (the setup, then the command), and
    ``timeout_s`` on a pooled one.

    :raises ConfigError: the ``redis`` package is missing.
    """
    redis = import_redis()
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415
    kwargs: dict[str, Any] = dict(socket_timeout=cfg.timeout_s, socket_connect_timeout=cfg.timeout_s,
                                  retry=Retry(NoBackoff(), 0), health_check_interval=0)
    if "driver_info" in inspect.signature(redis.connection.AbstractConnection.__init__).parameters:
        kwargs["driver_info"] = None  # no CLIENT SETINFO round trips (redis >= 7.1)
    else:
        kwargs.update(lib_name=None, lib_version=None)  # the same before it
    try:  # redis >= 7: maintenance notifications cost a CLIENT round trip per connection; not used here
        from redis.maint_notifications import MaintNotificationsConfig  # noqa: PLC0415
        kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    except ImportError:
        pass
    if os.environ.get(PASSWORD_ENV) and "@" not in cfg.redis_url:
        kwargs["password"] = os.environ[PASSWORD_ENV]
    return redis.Redis.from_url(cfg.redis_url, **kwargs)


def instance_id(home: str) -> str:
    """This home's stable id in the cluster, kept in ``cluster-id`` (created once, mode 0600): the host
    name and 6 random hex digits. Stable across restarts, so an instance's own fields in shared
    counters are rewritten, not added to, when it comes back."""
    path = os.path.join(home, ID_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            got = f.read().strip()
        if got and len(got) <= 80 and got.isprintable():
            return got
    except OSError:
        pass
    return new_instance_id(home)


def new_instance_id(home: str | None) -> str:
    """A new id (the host name and 6 random hex digits), kept in ``home``'s ``cluster-id`` (mode 0600)
    unless ``home`` is None."""
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.")[:40] or "host"
    new = f"{host}-{secrets.token_hex(3)}"
    if home is not None:
        atomic_write_bytes(os.path.join(home, ID_FILE), new.encode() + b"\n", mode=0o600)
    return new


def id_taken(raw: bytes | str | None, *, run: str, host: str, now_s: float, wrote_before: bool) -> bool:
    """Whether the heartbeat ``raw`` found under this instance's id (JSON ``{"host", "pid", "at_s", "run"}``)
    is another live process's: a copied home (a CI runner's image) gives two instances one id.

    ``run`` is this process's own random mark, ``host`` its host name, ``wrote_before``: this process
    has written its heartbeat since it connected. Another ``run`` is a collision once this process
    wrote (nobody else writes its field; a restarted instance's last heartbeat was overwritten by its
    first), or at once if the heartbeat is fresh (within :data:`INSTANCE_STALE_S`) and from another
    host. A fresh one from this host may be this home's previous process (a restart): judged at the
    next heartbeat.
    """
    if raw is None:
        return False
    try:
        doc = json.loads(raw)
        theirs_run, at_s = doc.get("run"), float(doc.get("at_s", 0))
    except (ValueError, AttributeError, TypeError):
        return False
    if theirs_run == run:
        return False
    return wrote_before or (now_s - at_s < INSTANCE_STALE_S and doc.get("host") != host)


class Link:
    """This instance's connection to the cluster (see the module docstring).

    :param cfg: the ``[cluster]`` table.
    :param instance_id: this instance's stable id (its fields in shared hashes are its own).
    :param client: a ready ``redis.Redis`` (tests pass ``fakeredis``); None: made from ``cfg``.
    :param clock: epoch seconds.
    :param describe: this instance's heartbeat fields (``url``...), read at each heartbeat.
    :param home: shunt's home, where a new id is kept if another instance turns out to use this one
        (:func:`id_taken`); None: the new id lives in memory only.
    Any thread may call any method.
    """

    def __init__(self, cfg: ClusterConfig, instance_id: str, *, client=None, clock: Callable[[], float] = time.time,
                 describe: Callable[[], dict] | None = None, retry_s: float = RETRY_S, home: str | None = None,
                 heartbeat_s: float = HEARTBEAT_S):
        self.cfg = cfg
        self.keys = Keys(cfg.cluster_name)
        self.instance_id = instance_id
        self.client = client if client is not None else connect(cfg)
        self._errors = _errors_of(self.client)
        self.clock = clock
        self.retry_s = retry_s
        self.heartbeat_s = heartbeat_s
        self._home = home
        self._run = secrets.token_hex(6)  # this process's mark in its heartbeat (see id_taken)
        self._wrote_beat = False  # this process's heartbeat was written since it (re)connected
        self._describe = describe or (lambda: {})
        self._lock = threading.Lock()
        self._healthy = False  # guarded by _lock (read without it: a bool)
        self._joining = False  # guarded by _lock: Redis answered, the rejoin handlers run (writes are kept)
        self._since_s = clock()
        self._reason = "not connected yet"
        self._handlers: dict[str, list[Callable[[dict], None]]] = {}
        self._rejoin: list[Callable[[], None]] = []
        self._pending: dict[Hashable, Callable[[Any], None]] = {}  # guarded by _lock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._instances = 1
        self._stale: frozenset[str] = frozenset()  # instances whose heartbeat was stale at the last look
        self._threads: list[threading.Thread] = []
        self._connected = threading.Event()  # set once the first connection attempt is over (either way)
        self.where = connection_facts(cfg.redis_url).where if cfg.redis_url else "?"

    # -- health ---------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """Whether Redis answered the last operation (and the rejoin after it came back is done)."""
        return self._healthy

    def status(self) -> dict:
        """``{"name", "state": "ok"|"degraded", "since_s", "reason", "instances", "instance"}`` for
        ``/status`` (``reason`` is "" while ok; ``instances``: those heard within 30 s, this one included)."""
        return {"name": self.cfg.cluster_name, "state": "ok" if self._healthy else "degraded",
                "since_s": int(self._since_s), "reason": "" if self._healthy else self._reason,
                "instances": self._instances, "instance": self.instance_id, "redis": self.where}

    @property
    def stale_instances(self) -> frozenset[str]:
        """The ids of the instances whose heartbeat in ``N:instances`` was older than
        :data:`INSTANCE_STALE_S` at this instance's last heartbeat (crashed or cut off: their fields in
        shared counters are no longer theirs to hold). Never this instance."""
        return self._stale

    def down(self, exc: BaseException | str) -> None:
        """Count Redis as down (logged once per outage); the listener reconnects."""
        reason = exc if isinstance(exc, str) else _reason(exc)
        with self._lock:
            was, self._healthy = self._healthy, False
            if was:
                self._since_s, self._reason = self.clock(), reason
                self._pending.clear()  # rewritten by the rejoin handlers
        if was:
            log.warning("cluster %s: Redis at %s is unreachable (%s); serving from this instance's own state "
                        "until it is back", self.cfg.cluster_name, self.where, reason,
                        extra={"event": "cluster_degraded"})

    # -- operations -----------------------------------------------------------------------------
    def run(self, op: Callable[[Any], Any], default: Any = None) -> Any:
        """``op(client)`` now, or ``default`` if Redis is down or fails (it is then counted down)."""
        if not self._healthy:
            return default
        try:
            return op(self.client)
        except self._errors as exc:
            self.down(exc)
            return default

    def later(self, key: Hashable, op: Callable[[Any], None], *, lazy: bool = False) -> None:
        """Queue ``op(pipeline)`` for the writer thread; a queued op of the same ``key`` is replaced.
        The writer sends at once, unless ``lazy``: then with the next prompt write or within
        :data:`LAZY_S` (rollups and TTL slides, rewritten whole, need not cost a round trip per
        request). Dropped while Redis is down; kept while the link is joining, and sent once it is ok."""
        with self._lock:
            if not (self._healthy or self._joining):
                return
            self._pending.pop(key, None)
            self._pending[key] = op
        if not lazy:
            self._wake.set()

    def publish(self, kind: str, payload: dict, *, now: bool = False) -> None:
        """Tell the other instances about a change: ``{"k": kind, "from": this id, **payload}``.
        Queued after the writes already queued (``now``: sent at once, synchronously)."""
        message = json.dumps({"k": kind, "from": self.instance_id, **payload}, separators=(",", ":"))
        if now:
            self.run(lambda r: r.publish(self.keys.channel, message))
        else:
            self.later(("publish", kind, message), lambda p: p.publish(self.keys.channel, message))

    def on(self, kind: str, handler: Callable[[dict], None]) -> None:
        """Call ``handler(message)`` (on the listener thread) for each notice of ``kind`` from another instance."""
        self._handlers.setdefault(kind, []).append(handler)

    def on_rejoin(self, handler: Callable[[], None]) -> None:
        """Call ``handler()`` (on the listener thread) after each (re)connection, before the link counts as
        ok: rewrite this instance's share and merge the others'. It may raise a Redis error (the link then
        tries again)."""
        self._rejoin.append(handler)

    # -- threads ----------------------------------------------------------------------------------
    def start(self, wait_s: float | None = None) -> None:
        """Start the listener and the writer; wait up to ``wait_s`` (default: 4 × ``timeout_s``) for the
        first connection, so an instance starts with the cluster's state when Redis is there."""
        listener = threading.Thread(target=self._listen, name="shunt-cluster-listen", daemon=True)
        writer = threading.Thread(target=self._write, name="shunt-cluster-write", daemon=True)
        self._threads = [listener, writer]
        for t in self._threads:
            t.start()
        self._connected.wait(4 * self.cfg.timeout_s if wait_s is None else wait_s)

    def stop(self) -> None:
        """Flush queued writes (while Redis answers), stop the threads, close the client."""
        self._stopping.set()
        self._wake.set()
        for t in self._threads:
            t.join(5.0)
        if self._healthy:
            self.run(lambda r: r.hdel(self.keys.instances, self.instance_id))
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a broken client must not stop the shutdown
            pass

    def _write(self) -> None:
        while True:
            self._wake.wait(LAZY_S)
            self._wake.clear()
            self._flush()
            if self._stopping.is_set():
                return

    def _flush(self) -> None:
        with self._lock:
            if not self._healthy:  # down: nothing is queued; joining: kept until the link is ok
                return
            batch, self._pending = list(self._pending.values()), {}
        if not batch:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for op in batch:
                op(pipe)
            pipe.execute()
        except self._errors as exc:
            self.down(exc)

    def _listen(self) -> None:
        pubsub = None
        last_beat = last_traffic = 0.0
        while not self._stopping.is_set():
            if pubsub is None or not self._healthy:
                if pubsub is not None:
                    _close(pubsub)
                pubsub = self._join()
                self._connected.set()
                if pubsub is None:
                    self._stopping.wait(self.retry_s)
                    continue
                last_beat = last_traffic = time.monotonic()
            try:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_POLL_S)
                now = time.monotonic()
                if message is not None:
                    last_traffic = now
                    if message.get("type") == "message":
                        self._dispatch(message.get("data"))
                elif now - last_traffic > PING_IDLE_S:
                    pubsub.ping()
                    last_traffic = now
                if now - last_beat > self.heartbeat_s:
                    last_beat = now
                    if self._heartbeat():  # a new id: rewrite this instance's share under it
                        with self._lock:
                            self._healthy, self._reason, self._since_s = False, "instance id changed", self.clock()
                            self._pending.clear()
            except self._errors as exc:
                self.down(exc)
        if pubsub is not None:
            _close(pubsub)

    def _join(self):
        """Connect, subscribe and run the rejoin handlers. :returns: the subscription, or None (still down)."""
        pubsub = None
        try:
            self.client.ping()
            pubsub = self.client.pubsub()
            pubsub.subscribe(self.keys.channel)
            with self._lock:
                self._joining = True  # from here on a change made here is queued, not dropped
            self._wrote_beat = False
            self._heartbeat()
            for handler in self._rejoin:
                handler()
        except self._errors as exc:
            with self._lock:
                self._joining = False
                self._pending.clear()  # the next join's handlers read this instance's state again
            if pubsub is not None:
                _close(pubsub)
            self._set_reason(exc)
            return None
        with self._lock:
            self._joining, self._healthy = False, True
            self._since_s = self.clock()
        self._wake.set()  # what was queued while joining
        log.info("cluster %s: connected to Redis at %s (%d instance(s) live)", self.cfg.cluster_name, self.where,
                 self._instances, extra={"event": "cluster_ok"})
        return pubsub

    def _set_reason(self, exc: BaseException) -> None:
        with self._lock:
            if not self._healthy:
                self._reason = _reason(exc)

    def _heartbeat(self) -> bool:
        """Write this instance's heartbeat and count the live instances. :returns: whether this instance
        took a new id first, because another live one uses it (:func:`id_taken`; logged)."""
        now = self.clock()
        host = socket.gethostname()
        raw = self.client.hget(self.keys.instances, self.instance_id)
        renamed = id_taken(raw, run=self._run, host=host, now_s=now, wrote_before=self._wrote_beat)
        if renamed:
            old, self.instance_id = self.instance_id, new_instance_id(self._home)
            log.warning("cluster %s: another live instance uses this one's id %s (a copied home?); this one is "
                        "%s from now on", self.cfg.cluster_name, old, self.instance_id,
                        extra={"event": "cluster_id_changed"})
        doc = json.dumps({"host": host, "pid": os.getpid(), "run": self._run, "at_s": int(now), **self._describe()})
        self.client.hset(self.keys.instances, self.instance_id, doc)
        self._wrote_beat = True
        live, stale = 0, set()
        for name, raw in self.client.hgetall(self.keys.instances).items():
            try:
                at = float(json.loads(raw).get("at_s", 0))
            except (ValueError, AttributeError, TypeError):
                continue
            if now - at < INSTANCE_STALE_S:
                live += 1
            else:
                stale.add(name.decode() if isinstance(name, bytes) else str(name))
        self._instances = max(live, 1)
        self._stale = frozenset(stale - {self.instance_id})
        return renamed

    def _dispatch(self, data: bytes | str | None) -> None:
        try:
            message = json.loads(data or b"")
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("from") == self.instance_id:
            return
        for handler in self._handlers.get(str(message.get("k")), ()):
            try:
                handler(message)
            except self._errors:
                raise
            except Exception:
                log.exception("cluster %s: handling a %s notice failed", self.cfg.cluster_name, message.get("k"))


def _errors_of(client) -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis did not answer": the client's errors and OS errors (``client``
    is a ``redis.Redis`` or a stand-in raising the same errors, such as fakeredis)."""
    del client
    return (import_redis().RedisError, OSError)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _close(pubsub) -> None:
    try:
        pubsub.close()
    except Exception:  # noqa: BLE001 - a dead subscription may fail to close
        pass
