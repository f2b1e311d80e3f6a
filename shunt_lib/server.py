"""HTTP in: the threaded server and its lifecycle.

One port serves everything: ``GET /health``, ``GET /status``, ``POST /use``, ``POST /reset``, ``POST /reload``
(the control paths, answered by :mod:`shunt_lib.control`), and every path under ``/v1/``, forwarded by
:class:`~shunt_lib.relay.Relay`. Each client connection is served on its own thread by
:class:`~shunt_lib.handler.Handler` (parsing, guards, dispatch, refusals); :class:`ShuntServer` holds
the shared parts (config, pool, relay, tokens, the connection table) and :func:`make_server` builds it
from config and files.

The server owns everything it starts: :meth:`ShuntServer.close` stops the accept loop and closes
the listening socket (new connections are refused at once), lets requests in flight finish (up to
``drain_timeout_s``), ends the ones still running (:mod:`shunt_lib.drain`: streams get an SSE
``error`` event, and their usage is recorded), closes the remaining client connections and joins
their threads, stops the background threads, flushes ``state.json`` and closes the upstream pool and
the HTTP session, leaving no thread and no socket behind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sqlite3
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import requests

from . import __version__, guard
from .background import CooldownWatcher, RecoveryWatcher, Reloader, TokenRefresher, UsagePoller
from .clock import SYSTEM, Clock
from .config import AccountConfig, Config, Paths, ServerConfig, check_bind, load_config, server_changes
from .connections import ConnectionTable, reject, rejection
from .credentials import Credential, CredentialStore
from .errors import ConfigError, client_caused
from .handler import Handler
from .httpclient import new_session
from .head_wait import HEAD_GRACE_S, HeadWait, head_complete, peek
from .alert_mute import MuteFlag, mute_path
from .overrides import Overrides, overrides_path
from .alert_send import AlertSender, Channels
from .alert_watch import AlertWatcher
from .history import HistoryWriter, db_path
from .client_meter import ClientMeter
from .inflight_gate import InflightGate
from .token_usage import UsageWriter, load_totals, open_db as open_tokens_db
from .recent import RecentRequests
from .limits import Admission, Limits
from .metrics import Metrics
from .client_usage import ClientUsage
from .pricing import PriceBook
from .loop import Loop
from .oauth import TokenManager
from .relay import Relay
from .state import Pool
from .state_file import StateWriter, load_state
from .status import status_document
from .token_index import ClientTokens, TokenWatcher
from .upstream import Upstream
from .watch import ClientWatch

log = logging.getLogger("shunt.server")
events_log = logging.getLogger("shunt.events")

STOP_GRACE_S = 5.0  # after the drain, how long interrupted requests may take to end and record their usage
JOIN_TIMEOUT_S = 5.0  # then how long closed connections' threads may take to end


class ShuntServer(ThreadingHTTPServer):
    """The proxy. Build it with :func:`make_server`; run :meth:`serve_forever` (or :func:`serve_in_thread`);
    stop it with :meth:`close` from another thread.

    Public attributes: ``config``, ``paths``, ``pool``, ``relay``, ``tokens``, ``http`` (the side-call
    session), ``clock``, ``background`` (started background threads), ``is_serving`` (an Event set
    while :meth:`serve_forever` runs), ``last_turn_s`` (:meth:`service_actions`), ``connections`` (the :class:`~shunt_lib.connections.ConnectionTable`
    holding client connections to :mod:`shunt_lib.limits`).
    """

    daemon_threads = True  # a hung client never blocks interpreter exit; close() joins the threads itself
    allow_reuse_address = True  # restart on the same port right after a stop
    request_queue_size = 1024  # the default backlog of 5 drops connections under bursts
    head_grace_s = HEAD_GRACE_S  # how long a connection held past the cap may take to send its head

    def __init__(self, addr: tuple[str, int], *, config: Config, paths: Paths, pool: Pool, relay: Relay,
                 tokens: TokenManager, writer: StateWriter, watch: ClientWatch, upstream: Upstream,
                 http: requests.Session, clock: Clock, idle_timeout_s: float = 120.0,
                 file_server: ServerConfig | None = None, history: HistoryWriter | None = None):
        self.config = config
        self._file_server = file_server or config.server  # [server] as config.toml said, before --host/--port
        self.paths = paths
        self.pool = pool
        self.relay = relay
        relay.set_models(config.models)  # the [models] table routes requests by model
        self.tokens = tokens
        self.http = http
        self.clock = clock
        self.idle_timeout_s = idle_timeout_s  # idle keep-alive wait and write timeout, seconds
        cfg = config.server
        self.connections = ConnectionTable(Limits(cfg.header_timeout_s, idle_timeout_s, cfg.min_body_rate_bytes_s,
                                                  cfg.max_connections), write_timeout_s=idle_timeout_s)
        self._rejection = rejection(cfg.max_connections)
        self.started_at_s = clock.time()
        self.background: list[Loop] = []
        self.is_serving = threading.Event()
        self.last_turn_s = time.monotonic()  # when the accept loop last turned (monotonic s; the watchdog's evidence)
        self._writer = writer
        self.history = history  # the usage history's writer (usage.db), or None
        self.recent = RecentRequests()  # the last finished requests, for the live views
        relay.finish.listeners.append(self.recent.add)
        self.metrics = Metrics()  # the counters GET /metrics shows
        self.client_usage = ClientUsage(lambda: pool.prices, clock.time)  # per-client usage today, for /status
        relay.finish.listeners.append(self.client_usage.add)
        self.metrics.attach(relay, tokens)
        self.overrides = relay.overrides  # the runtime overrides (``/overrides``, shunt_lib.overrides)
        self.mute = MuteFlag(mute_path(paths.home))  # alerts muted? (alerts.json, kept across restarts)
        self.alert_channels = Channels(lambda: self.config.server, http)  # where alerts go (shunt_lib.alert_send)
        self._watch = watch
        self._upstream = upstream
        self._reload_lock = threading.Lock()  # one reload at a time
        self._inflight = InFlight()
        #: [gateway] max_inflight: places for requests relayed at once, waited for up to max_queue_s
        self.relay_gate = InflightGate(config.gateway.max_inflight, config.gateway.max_queue_s)
        self.meter: ClientMeter = relay.meter  #: client tokens' limits and use (make_server gives it tokens.db)
        self.client_usage.limits = self.meter.used  # /status shows how much of each limit a token uses
        self.usage_writer: UsageWriter | None = None  #: the writer of client tokens' use to tokens.db
        self._connections: dict[socket.socket, threading.Thread] = {}  # open client connections; guarded by:
        self._connections_lock = threading.Lock()
        self._held: HeadWait | None = None  # connections past the cap waiting for their head; guarded by the lock too
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET  # "::1" is an IPv6 bind
        super().__init__(addr, Handler)
        self.guard = self._guard_policy(config.server)  # the Host/Origin policy (see shunt_lib.guard)
        self.client_tokens = ClientTokens(paths.tokens_db)  # the client tokens' index (shunt_lib.token_index)
        self.cluster = None  # the shared pool (shunt_lib.cluster.Cluster) when [cluster] redis_url is set
        self.token_mirror = None  # with [cluster]: token id → shares its change (shunt_lib.cluster_tokens)

    def _guard_policy(self, server_cfg: ServerConfig) -> guard.Policy:
        return guard.Policy.build(port=self.port, bind_host=server_cfg.host, allowed_hosts=server_cfg.allowed_hosts,
                                  allowed_origins=server_cfg.allowed_origins)

    @property
    def port(self) -> int:
        """The port bound (the real one when 0 was asked for)."""
        return self.server_address[1]

    # -- accounts ------------------------------------------------------------------------------
    def status(self) -> dict:
        """The ``GET /status`` document (see :func:`~shunt_lib.status.status_document`)."""
        now = self.clock.time()
        doc = status_document(self.pool.snapshot(now), {n: self.tokens.get(n) for n in self.pool.names()}, now,
                              version=__version__, started_at_s=self.started_at_s, strategy=self.pool.strategy)
        doc["alerts"] = {"muted": self.mute.muted}
        doc["clients"] = self.client_usage.snapshot()
        doc["overrides"] = self.overrides.doc()
        doc["cluster"] = self.cluster.status() if self.cluster is not None else {"state": "off"}
        return doc

    def apply_accounts(self, accounts: tuple[AccountConfig, ...], creds: dict[str, Credential], *,
                       initial: bool = False) -> dict[str, list[str]]:
        """Make the pool and the token manager match ``accounts`` and their credentials.

        An account without credentials is marked ``reauth_required``. On a reload (not ``initial``) a
        new or changed secret is a new login or key: it clears ``reauth_required`` and ``disabled``.
        :returns: ``{"added": [...], "removed": [...], "updated": [...]}`` (names).
        :raises ConfigError: an account whose config kind differs from its credential's (nothing changed then).
        """
        for acct in accounts:
            cred = creds.get(acct.name)
            if cred is not None and cred.kind != acct.kind:
                raise ConfigError(f"account {acct.name!r}: config.toml says kind {acct.kind!r} but "
                                  f"credentials.json holds a {cred.kind!r} credential")
        added, removed = self.pool.sync_accounts(accounts)
        self.relay.set_accounts(accounts)
        for name in removed:
            self.tokens.set(name, None)
        updated = []
        unusable = self.tokens.store.unusable() if initial else {}
        for acct in accounts:
            cred, old = creds.get(acct.name), self.tokens.get(acct.name)
            if cred is None:
                if initial and acct.name not in unusable:  # those were named, with the reason, when loaded
                    log.warning("account %s has no credentials: marked reauth_required (run `shunt import --name %s`)",
                                acct.name, acct.name)
                self.tokens.set(acct.name, None)
                self.pool.set_flag(acct.name, reauth_required=True)
            elif initial:
                self.tokens.set(acct.name, cred)
            elif old is None or old.secret != cred.secret or acct.name in added:
                self.tokens.set(acct.name, cred, login=old is None or old.secret != cred.secret)
                self.pool.set_flag(acct.name, reauth_required=False, disabled=False)  # a new login or key
                if acct.name not in added:
                    updated.append(acct.name)
            elif old != cred:
                self.tokens.set(acct.name, cred)  # the same secret with a new identity (email, plan)
        return {"added": added, "removed": removed, "updated": updated}

    def reload(self) -> dict[str, list[str]]:
        """Re-read config.toml and credentials.json; apply account changes and the ``[server]`` keys
        that can change live (:data:`~shunt_lib.config.LIVE_KEYS`) without a restart.

        Requests in flight keep the credential they started with. A changed key that needs a restart
        (``host``, ``port``, ``upstream_url``, ...) keeps its running value and is named in the answer
        and in a warning, at every reload until shunt restarts.
        :returns: what changed, as :meth:`apply_accounts`, plus ``server_applied`` and
            ``restart_required`` (names of ``[server]`` keys).
        :raises ConfigError: if the new files are invalid (nothing is changed then).
        """
        with self._reload_lock, self.tokens.store.lock():  # no refresh may land between reading and applying
            config = load_config(self.paths)
            live, restart = server_changes(self._file_server, config.server)
            new_values = {k: getattr(config.server, k) for k in live}
            server_cfg = dataclasses.replace(self.config.server, **new_values)
            check_bind(server_cfg, config.gateway.admin_key)  # the admin key may not go while bound beyond loopback
            change: dict[str, list[str]] = self.apply_accounts(config.accounts, self.tokens.store.load())
            self._file_server = dataclasses.replace(self._file_server, **new_values)
            self._apply_server(server_cfg)
            self.config = dataclasses.replace(self.config, accounts=config.accounts, pricing=config.pricing,
                                              models=config.models, gateway=config.gateway)
            self.relay.set_models(config.models)
            self.pool.prices = PriceBook(config.pricing)  # the next request is priced with them
        change.update(server_applied=live, restart_required=restart)
        if live:
            log.info("config.toml [server] applied: %s", ", ".join(live))
        if restart:
            log.warning("config.toml [server] changed %s: restart shunt to apply", ", ".join(restart))
        accounts = {k: change[k] for k in ("added", "removed", "updated") if change[k]}
        if accounts:
            events_log.info("reloaded accounts: %s", ", ".join(f"{k} {v}" for k, v in accounts.items()),
                            extra={"event": "reload", **change})
        return change

    def _apply_server(self, server_cfg: ServerConfig) -> None:
        """Run with ``server_cfg``: every key read per request follows ``self.config``; the rest is pushed."""
        self.pool.configure(strategy=server_cfg.strategy, session_ttl_s=server_cfg.session_ttl_s)
        self.relay.max_wait_s = server_cfg.max_wait_s
        self.guard = self._guard_policy(server_cfg)
        self.config = dataclasses.replace(self.config, server=server_cfg)

    def mtimes(self) -> tuple[int, int]:
        """Modification times of config.toml and credentials.json, ns (for the reloader)."""
        return self.paths.mtime_ns(), self.tokens.store.mtime_ns()

    # -- requests in flight ------------------------------------------------------------------------
    def request_in_flight(self) -> "InFlight":
        """A context manager counting a proxied request as in progress (:meth:`drain` waits for these)."""
        return self._inflight

    def inflight_requests(self) -> int:
        """Proxied requests in progress now."""
        return self._inflight.count

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for proxied requests in progress to finish. :returns: True if none is left."""
        return self._inflight.wait_idle(timeout_s)

    def cut_drain(self) -> None:
        """Stop waiting for requests in progress (a second stop signal): :meth:`close` ends them now."""
        self._inflight.cut()

    def process_request(self, request: socket.socket, client_address) -> None:
        """Serve a new connection on its own thread; or, at ``max_connections``, hold it without a
        thread until its head is in (:mod:`shunt_lib.head_wait`); or, with every connection busy,
        answer it 503 from the accept loop and close it (no thread started)."""
        decision = self.connections.admit(request, lambda: head_complete(peek(request) or b""))
        if decision is Admission.WAIT:
            self._head_wait().add(request, client_address, self.head_grace_s)
        elif decision is Admission.REJECT:
            self._refuse(request)
        else:
            super().process_request(request, client_address)

    def held_count(self) -> int:
        """Connections past the cap held until their head is in (:mod:`shunt_lib.head_wait`)."""
        with self._connections_lock:
            held = self._held
        return held.count() if held is not None else 0

    def _admit_ready(self, request: socket.socket, client_address) -> None:
        """A held connection's head is in: serve it in a waiter's place (or 503 if all are busy now)."""
        if self.connections.admit(request) is Admission.REJECT:
            self._refuse(request)
        else:
            super().process_request(request, client_address)

    def _refuse(self, request: socket.socket) -> None:
        """The fast 503 of a connection over the cap, and its close."""
        reject(request, self._rejection)
        self.shutdown_request(request)

    def _head_wait(self) -> HeadWait:
        """The holder of connections past the cap, started at the first one."""
        with self._connections_lock:
            if self._held is None:
                self._held = HeadWait(self._admit_ready, self._refuse, self.shutdown_request,
                                      max_pending=self.connections.limits.max_connections)
            return self._held

    def shutdown_request(self, request: socket.socket) -> None:
        """Close a connection and free its place under ``max_connections``."""
        self.connections.release(request)
        super().shutdown_request(request)

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        """The connection's thread (``ThreadingMixIn``): tracked, so :meth:`close` can end it."""
        with self._connections_lock:
            self._connections[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    def handle_error(self, request, client_address) -> None:
        """An exception escaped a connection's handler (``socketserver`` calls this inside ``except``).

        A client's doing (a reset, a broken pipe, a timeout: :func:`~shunt_lib.errors.client_caused`)
        is one debug line: nothing a client does prints a traceback. Anything else is a shunt bug,
        logged as an error with its traceback. Only this connection is lost either way.
        """
        exc = sys.exc_info()[1]
        peer = client_address[0] if isinstance(client_address, tuple) else client_address
        if client_caused(exc):
            log.debug("client %s: connection ended: %s", peer, exc or "?")
        else:
            log.error("bug while serving %s: %r", peer, exc, exc_info=True)

    # -- running and stopping ------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept and serve connections until :meth:`shutdown` (or :meth:`close`) from another thread."""
        self.is_serving.set()
        try:
            super().serve_forever(poll_interval)
        finally:
            self.is_serving.clear()

    def service_actions(self) -> None:
        """Called by ``serve_forever`` on every turn of the accept loop (at least every ``poll_interval``):
        stamps :attr:`last_turn_s`, which the systemd watchdog (:mod:`shunt_lib.sdnotify`) checks."""
        self.last_turn_s = time.monotonic()

    def close(self, drain_timeout_s: float | None = None) -> None:
        """Stop accepting, let requests in progress finish, end the rest, close every connection, stop
        background threads, flush ``state.json``, and release the upstream pool and the HTTP session.

        :param drain_timeout_s: how long requests in progress may finish, seconds (default: the
            ``drain_timeout_s`` key). Then each one still running is ended (:meth:`Drain.stop
            <shunt_lib.drain.Drain.stop>`) and given :data:`STOP_GRACE_S` to record its usage.
        Call from a thread other than the one running :meth:`serve_forever`; idempotent.
        """
        if drain_timeout_s is None:
            drain_timeout_s = self.config.server.drain_timeout_s
        if self.is_serving.is_set():
            self.shutdown()
        self.socket.close()  # refuse new connections now, not once the drain is over
        with self._connections_lock:
            held = self._held
        if held is not None:
            held.stop()  # before the connections are closed: it admits no more
        self.relay.drain.begin()
        if not self.drain(drain_timeout_s):
            n = self.relay.drain.stop()
            log.warning("stopping: %d request(s) still in progress after %g s were ended", n, drain_timeout_s)
            self.drain(STOP_GRACE_S)
        self._close_connections()
        for t in self.background:
            t.stop()
        if self.cluster is not None:
            self.cluster.stop()  # after the drain and the background threads: their last writes are sent
        self._writer.stop()
        if self.history is not None:
            self.history.stop()  # after the drain: the requests it ended are recorded too
        if self.usage_writer is not None:
            self.usage_writer.stop()  # likewise: their charges are written
        self._watch.close()
        self._upstream.close()
        self.relay.close_upstreams()
        self.tokens.close()
        self.client_tokens.close()
        self.http.close()
        self.server_close()

    def _close_connections(self) -> None:
        """Shut down every client connection still open (idle keep-alives, requests past the drain)
        so their threads end, and wait for those threads."""
        with self._connections_lock:
            conns = list(self._connections.items())
        for sock, _ in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in conns:
            thread.join(JOIN_TIMEOUT_S)


class InFlight:
    """Counts requests in progress: ``with in_flight:`` around each one; :meth:`wait_idle` waits for none.

    A class rather than a ``contextlib.contextmanager``: it is entered on every proxied request, and a
    generator-based manager costs several microseconds more. Any thread may use it.
    """

    __slots__ = ("_count", "_cond", "_cut")

    def __init__(self) -> None:
        self._count = 0  # guarded by _cond
        self._cond = threading.Condition()
        self._cut = False  # guarded by _cond: the current (or next) wait_idle returns at once

    def __enter__(self) -> None:
        with self._cond:
            self._count += 1

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._count -= 1
            if self._count == 0:
                self._cond.notify_all()

    @property
    def count(self) -> int:
        """Requests in progress now (a plain read: a scrape needs no lock)."""
        return self._count

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until nothing is in progress. :returns: True if nothing is."""
        with self._cond:
            self._cond.wait_for(lambda: self._count == 0 or self._cut, timeout_s)
            self._cut = False
            return self._count == 0

    def cut(self) -> None:
        """End the current (or next) :meth:`wait_idle` now, whatever is still in progress."""
        with self._cond:
            self._cut = True
            self._cond.notify_all()


def make_server(config: Config, paths: Paths, *, host: str | None = None, port: int | None = None,
                clock: Clock = SYSTEM, hold_first_ping_s: float = 5.0, hold_ping_interval_s: float = 15.0,
                overload_backoff_s: float = 0.5, idle_timeout_s: float = 120.0, cluster_client=None) -> ShuntServer:
    """Build the proxy from config and files, bound but not yet serving (the state writer runs).

    :param host: / :param port: override ``[server]`` (``port=0`` picks a free port).
    :param clock: time and waiting on the request path (test seam).
    :param hold_first_ping_s: / :param hold_ping_interval_s: / :param overload_backoff_s: see
        :class:`~shunt_lib.relay.Relay` (test seams).
    :param idle_timeout_s: how long a kept-alive connection may wait for its next request, and the
        write timeout, seconds (see :mod:`shunt_lib.limits`).
    :param cluster_client: with ``[cluster]``: a ready Redis client (a test seam for fakeredis).
    :raises ConfigError: bad credentials, a non-loopback bind without ``remote_key``, or a
        ``[cluster]`` that cannot be used (no ``redis`` package, a remote Redis without a password).
    :raises OSError: if the address cannot be bound.
    """
    server_cfg = file_server = config.server
    if host is not None or port is not None:
        server_cfg = dataclasses.replace(server_cfg, host=host if host is not None else server_cfg.host,
                                         port=port if port is not None else server_cfg.port)
        config = dataclasses.replace(config, server=server_cfg)
    check_bind(server_cfg, config.gateway.admin_key)
    paths.ensure()
    store = CredentialStore(paths.credentials)
    creds = store.load()
    pool = Pool(config.accounts, strategy=server_cfg.strategy, session_ttl_s=server_cfg.session_ttl_s,
                max_sessions=server_cfg.max_sessions)
    pool.prices = PriceBook(config.pricing)
    load_state(pool, paths.state, clock.time())
    http = new_session()
    tokens = TokenManager(store, {}, token_url=server_cfg.oauth_token_url, client_id=server_cfg.oauth_client_id,
                          http=http, clock=clock.time, cool=pool.cool)
    upstream = Upstream(server_cfg.upstream_url, maxsize=128, first_byte_timeout_s=server_cfg.upstream_first_byte_timeout_s,
                        idle_timeout_s=server_cfg.upstream_idle_timeout_s)
    watch = ClientWatch()
    relay = Relay(server_cfg.max_wait_s, pool, tokens, upstream, watch, clock=clock, hold_first_ping_s=hold_first_ping_s,
                  hold_ping_interval_s=hold_ping_interval_s, overload_backoff_s=overload_backoff_s)
    relay.overrides = Overrides(overrides_path(paths.home))  # the runtime overrides, kept across restarts
    writer = StateWriter(pool, paths.state, clock=clock)
    history = HistoryWriter(db_path(paths.home), raw_days=config.history.raw_days,
                            rollup_days=config.history.rollup_days, clock=clock.time)
    relay.finish.listeners.append(history.add)
    usage_writer = UsageWriter(paths.tokens_db)
    relay.meter = ClientMeter(prices=lambda: pool.prices, sink=usage_writer.add, clock=clock.time)
    _load_token_usage(relay.meter, paths.tokens_db, clock.time())
    srv = None
    try:
        srv = ShuntServer((server_cfg.host, server_cfg.port), config=config, paths=paths, pool=pool, relay=relay,
                          tokens=tokens, writer=writer, watch=watch, upstream=upstream, http=http, clock=clock,
                          idle_timeout_s=idle_timeout_s, file_server=file_server, history=history)
        srv.apply_accounts(config.accounts, creds, initial=True)
        srv.client_tokens.poll()  # the client tokens as they are now; TokenWatcher keeps them fresh
        relay.overrides.known_token = srv.client_tokens.known  # a per-token override names a token that exists
        if config.cluster.enabled:
            from .cluster import attach_cluster  # noqa: PLC0415 - a shunt alone never imports the Redis client
            srv.cluster = attach_cluster(srv, config.cluster, client=cluster_client)
            srv.cluster.start()  # joins with the cluster's state (or starts degraded if Redis is down)
    except BaseException:
        if srv is not None:
            if srv.cluster is not None:
                srv.cluster.stop()
            srv.server_close()
        watch.close()
        upstream.close()
        http.close()
        raise
    srv.usage_writer = usage_writer
    writer.start()
    history.start()
    usage_writer.start()
    return srv


def _load_token_usage(meter: ClientMeter, path: str, now_s: float) -> None:
    """Seed ``meter`` with today's and this month's use of every client token from ``tokens.db`` (a file
    that cannot be read is logged: budgets then count from 0 until it can be written again)."""
    if not os.path.exists(path):
        return  # nothing spent yet
    try:
        conn = open_tokens_db(path)
        try:
            meter.load(load_totals(conn, now_s), now_s)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        log.warning("cannot read client token usage from %s: %s (budgets count from 0)", path, exc)


def start_background(srv: ShuntServer, *, refresh: bool = True, recovery: bool = True, usage: bool = True,
                     reload: bool = True, alerts: bool = True, alert_poll_s: float = 1.0) -> list[Loop]:
    """Start the proxy's background threads (cooldowns always; the rest as asked); ``srv.close()`` stops them.

    :param alert_poll_s: how often the alert watcher looks at the pool, seconds (a test seam).

    :returns: the threads started.
    """
    cfg = srv.config.server
    threads: list[Loop] = [CooldownWatcher(srv.pool, clock=srv.clock.time), TokenWatcher(srv.client_tokens)]
    if refresh:
        threads.append(TokenRefresher(srv.pool, srv.tokens, clock=srv.clock.time))
    if recovery:
        threads.append(RecoveryWatcher(srv.pool, srv.tokens, interval_s=cfg.recovery_interval_s))
    if usage and cfg.usage_poll_s > 0:
        threads.append(UsagePoller(srv.pool, srv.tokens, cfg.upstream_url, srv.http, interval_s=cfg.usage_poll_s,
                                   clock=srv.clock.time))
    if reload:
        threads.append(Reloader(srv.reload, srv.mtimes))
    if alerts:  # the watcher first: it stops before the sender it feeds
        sender = AlertSender(srv.alert_channels)
        watcher = AlertWatcher(srv.pool, srv.mute, sender, interval_s=lambda: srv.config.server.alert_interval_s,
                               clock=srv.clock.time, poll_s=alert_poll_s)
        srv.tokens.listeners.append(watcher.refresh_result)
        threads += [watcher, sender]
    for t in threads:
        t.start()
    srv.background.extend(threads)
    return threads


def serve_in_thread(srv: ShuntServer, poll_interval_s: float = 0.5) -> threading.Thread:
    """Run ``srv.serve_forever`` on a thread (tests, demo) and return once it is serving.

    :param poll_interval_s: how often the accept loop checks for a shutdown request, seconds (it
        bounds how long :meth:`ShuntServer.close` waits for the loop).
    """
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": poll_interval_s}, name="shunt-serve",
                         daemon=True)
    t.start()
    if not srv.is_serving.wait(10):
        raise RuntimeError("the server thread did not start serving")
    return t
