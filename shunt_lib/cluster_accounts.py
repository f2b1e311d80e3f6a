"""Several shunts, one pool: the accounts' state, the pin and the overrides, shared through Redis.

Accounts (:class:`SharedAccounts`). Each instance keeps its view of every account
(:class:`~shunt_lib.cluster_merge.SharedDoc`) in its own field (its instance id) of
``Keys.account(name)``, and sends it in an ``account`` notice, so the others apply it without a
read. A mark, a flag or a clear (:attr:`Pool.changes <shunt_lib.state.Pool.changes>` says urgent)
is written at once; window-only updates (every answer carries them) are coalesced to at most one
write per account per :data:`WINDOWS_EVERY_S`. Each instance keeps the latest view of every other
instance and merges them all with its own (:func:`~shunt_lib.cluster_merge.merge`); the merged
view becomes the account's local state, which routing reads. On (re)joining an instance reads every
field of every account (one pipelined ``HGETALL`` each), merges, writes its own field and sends its
view: a Redis restarted empty is rebuilt from the instances.

Pin and overrides (:class:`SharedSettings`): one JSON value each (``Keys.pin``, ``Keys.overrides``),
the last writer wins (by the time it was set); a change is written and sent in a ``pin`` /
``overrides`` notice, and the receiving instance takes it (the overrides are also written to its
``overrides.json``). ``POST /use`` and ``shunt override`` on one instance are honoured by all.

Everything here runs on the link's threads or this module's own; the request path only marks an
account changed (a dict entry, or a queued write).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from .cluster_link import Link
from .cluster_merge import SharedDoc, advance, merge
from .cluster_sessions import SharedSessions

if TYPE_CHECKING:
    from .overrides import Overrides
    from .serving import ClusterHost
    from .state import Pool

log = logging.getLogger("shunt.cluster")

WINDOWS_EVERY_S = 1.0  # window-only updates of one account are written at most this often
APPLY_TRIES = 5  # a merge is applied again this often when the account changed here meanwhile


def share_pool(link: Link, srv: "ClusterHost") -> list:
    """The parts that share ``srv``'s pool over ``link``: accounts, pin and overrides, sessions."""
    clock = srv.clock.time
    return [SharedAccounts(link, srv.pool, clock=clock), SharedSettings(link, srv.pool, srv.overrides, clock=clock),
            SharedSessions(link, srv.pool)]


def _text(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class SharedAccounts:
    """Shares ``pool``'s account states over ``link`` (see the module docstring); runs a thread that
    writes coalesced window updates. :param clock: epoch seconds."""

    def __init__(self, link: Link, pool: "Pool", *, clock: Callable[[], float] = time.time,
                 windows_every_s: float = WINDOWS_EVERY_S):
        self.link, self.pool, self.clock = link, pool, clock
        self.windows_every_s = windows_every_s
        self._lock = threading.Lock()  # guards the views below; taken before the pool's lock, never inside it
        self._view: dict[str, SharedDoc] = {}  # per account: the merged view its local state last matched
        self._theirs: dict[str, dict[str, tuple[float, SharedDoc]]] = {}  # account → instance → (at_s, view)
        self._unsent: set[str] = set()  # accounts whose local changes were merged but not yet written
        self._due: dict[str, float] = {}  # accounts with window updates to write → monotonic time due
        self._last_sent: dict[str, float] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        link.on("account", self._on_notice)
        link.on_rejoin(self._rejoin)
        pool.changes = self._changed
        self._thread = threading.Thread(target=self._run, name="shunt-cluster-accounts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop hearing of changes and stop the thread."""
        self.pool.changes = None
        self._stopping.set()
        self._wake.set()
        self._thread.join(5.0)

    # -- this instance's changes ------------------------------------------------------------------
    def _changed(self, name: str, urgent: bool) -> None:
        """Called by the pool, under its lock: queue the write (urgent) or schedule it (windows)."""
        if urgent:
            self._send(name)
        elif name not in self._due:
            self._due[name] = max(time.monotonic(), self._last_sent.get(name, 0.0) + self.windows_every_s)
            self._wake.set()

    def _send(self, name: str) -> None:
        self._last_sent[name] = time.monotonic()
        self.link.later(("account", name), lambda pipe: self._write(pipe, name))

    def _run(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            for name, due in list(self._due.items()):
                if due <= now:
                    self._due.pop(name, None)
                    self._send(name)
            nxt = min(self._due.values(), default=None)
            self._wake.wait(None if nxt is None else max(0.0, nxt - time.monotonic()))
            self._wake.clear()

    def _write(self, pipe, name: str) -> None:
        """On the link's writer thread: merge, apply, and write and send this instance's view if it has news."""
        now = self.clock()
        try:
            with self._lock:
                mine = self._settle(name, now, publish=True)
        except Exception:  # noqa: BLE001 - the link's writer thread must live on
            log.exception("cluster: merging account %s failed", name)
            return
        if mine is not None:
            self._put(pipe, name, mine, now)

    def _put(self, pipe, name: str, doc: SharedDoc, now_s: float) -> None:
        keys, me = self.link.keys, self.link.instance_id
        body = doc.to_json()
        pipe.hset(keys.account(name), me, json.dumps({"at_s": now_s, "doc": body}, separators=(",", ":")))
        pipe.publish(keys.channel, json.dumps({"k": "account", "from": me, "account": name, "at_s": now_s,
                                               "doc": body}, separators=(",", ":")))

    def _settle(self, name: str, now_s: float, *, publish: bool) -> SharedDoc | None:
        """Fold the account's local changes into this instance's view, merge it with the others', and make
        the result the local state (under ``_lock``). :returns: the view to write if ``publish`` and it
        has local news (else None; news not written are remembered for the next write)."""
        for _ in range(APPLY_TRIES):
            local = self.pool.shared_fields(name)
            if local is None:
                return None
            prev = self._view.get(name)
            mine = advance(prev, local, now_s)
            merged = merge([mine, *(doc for _, doc in self._theirs.get(name, {}).values())])
            if self.pool.apply_shared(name, merged.local(now_s), local):
                self._view[name] = merged
                news = mine != prev or name in self._unsent
                if news and not publish:
                    self._unsent.add(name)
                    return None
                self._unsent.discard(name)
                return merged if news else None
        log.warning("cluster: account %s kept changing while its shared state was merged; merged at its next change",
                    name)
        return None

    # -- the other instances' -------------------------------------------------------------------
    def _take(self, name: str, instance: str, at_s: float, doc: SharedDoc) -> None:
        """Remember ``instance``'s view of ``name`` unless an as recent one is known (under ``_lock``)."""
        theirs = self._theirs.setdefault(name, {})
        have = theirs.get(instance)
        if have is None or at_s >= have[0]:
            theirs[instance] = (at_s, doc)

    def _on_notice(self, message: dict) -> None:
        name, instance = message.get("account"), message.get("from")
        now = self.clock()
        doc = SharedDoc.from_json(message.get("doc"), now)
        at_s = message.get("at_s")
        if not isinstance(name, str) or not isinstance(instance, str) or doc is None \
                or not isinstance(at_s, (int, float)) or self.pool.shared_fields(name) is None:
            return
        with self._lock:
            self._take(name, instance, float(at_s), doc)
            self._settle(name, now, publish=False)
        if name in self._unsent:
            self._send(name)

    def _rejoin(self) -> None:
        """Read every instance's views, merge, write this instance's field and send its views."""
        names = self.pool.names()
        me = self.link.instance_id
        pipe = self.link.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.link.keys.account(name))
        fields = pipe.execute()
        now = self.clock()
        out = self.link.client.pipeline(transaction=False)
        with self._lock:
            for name, got in zip(names, fields):
                for instance, raw in (got or {}).items():
                    instance = _text(instance)
                    if instance == me:
                        continue
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    doc = SharedDoc.from_json(entry.get("doc"), now) if isinstance(entry, dict) else None
                    if doc is not None and isinstance(entry.get("at_s"), (int, float)):
                        self._take(name, instance, float(entry["at_s"]), doc)
                self._settle(name, now, publish=True)
                view = self._view.get(name)
                if view is not None:
                    self._put(out, name, view, now)
        out.execute()


class SharedSettings:
    """Shares the pin and the runtime overrides over ``link``: the last writer wins (see the module
    docstring). :param clock: epoch seconds."""

    def __init__(self, link: Link, pool: "Pool", overrides: "Overrides", *, clock: Callable[[], float] = time.time):
        self.link, self.pool, self.overrides, self.clock = link, pool, overrides, clock
        self._lock = threading.Lock()
        self._at: dict[str, float] = {"pin": 0.0, "overrides": 0.0}  # when each was last set (0: before joining)
        link.on("pin", lambda m: self._on_notice("pin", m))
        link.on("overrides", lambda m: self._on_notice("overrides", m))
        link.on_rejoin(self._rejoin)
        pool.pin_changes = lambda name: self._changed("pin")
        overrides.changes = lambda doc: self._changed("overrides")

    def stop(self) -> None:
        """Stop hearing of changes."""
        self.pool.pin_changes = None
        self.overrides.changes = None

    def _value(self, kind: str):
        return self.pool.pinned if kind == "pin" else self.overrides.doc()

    def _key(self, kind: str) -> str:
        return self.link.keys.pin if kind == "pin" else self.link.keys.overrides

    def _changed(self, kind: str) -> None:
        with self._lock:
            at = self._at[kind] = self.clock()
            raw = json.dumps({"value": self._value(kind), "at_s": at}, separators=(",", ":"))
        key = self._key(kind)
        self.link.later((kind,), lambda pipe: pipe.set(key, raw))
        self.link.publish(kind, {"value": self._value(kind), "at_s": at})

    def _take(self, kind: str, value, at_s) -> bool:
        """Take another instance's ``value`` set at ``at_s`` if it is as recent as ours. :returns: whether taken."""
        if not isinstance(at_s, (int, float)):
            return False
        with self._lock:
            if at_s < self._at[kind]:
                return False
            try:
                if kind == "pin":
                    self.pool.set_pin(value if isinstance(value, str) else None, tell=False)
                else:
                    self.overrides.replace(value if isinstance(value, dict) else {})
            except KeyError:
                log.warning("cluster: another instance pinned account %s, which this one does not have", value)
                return False
            except OSError as exc:
                log.warning("cluster: cannot save the overrides another instance set: %s", exc)
            self._at[kind] = float(at_s)
        log.info("cluster: %s set by another instance: %s", kind, value if kind == "pin" else json.dumps(value))
        return True

    def _on_notice(self, kind: str, message: dict) -> None:
        self._take(kind, message.get("value"), message.get("at_s"))

    def _rejoin(self) -> None:
        for kind in ("pin", "overrides"):
            key = self._key(kind)
            raw = self.link.client.get(key)
            try:
                theirs = json.loads(raw) if raw is not None else None
            except ValueError:
                theirs = None
            if isinstance(theirs, dict) and self._take(kind, theirs.get("value"), theirs.get("at_s")):
                continue
            with self._lock:
                value, at = self._value(kind), self._at[kind]
            their_at = theirs.get("at_s") if isinstance(theirs, dict) else None
            if theirs is None:  # a Redis that lost it (or never had it) gets this instance's
                self.link.client.set(key, json.dumps({"value": value, "at_s": at}), nx=True)
            elif at > 0 and (not isinstance(their_at, (int, float)) or at > their_at):
                # set here while Redis was away, after the one it holds (a newer one this instance cannot
                # take, such as a pin of an account it lacks, stays: the instances that have it honour it)
                self.link.client.set(key, json.dumps({"value": value, "at_s": at}))
                self.link.client.publish(self.link.keys.channel, json.dumps(
                    {"k": kind, "from": self.link.instance_id, "value": value, "at_s": at}))
