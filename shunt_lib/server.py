"""HTTP in: the threaded server, its request handler, and the control endpoints.

One port serves everything: ``GET /health``, ``GET /status``, ``POST /use``, ``POST /reload`` (the
control paths, dispatched from :data:`CONTROL_ROUTES`), and every path under ``/v1/``, forwarded by
:class:`~shunt_lib.relay.Relay`. Other paths get an Anthropic-shaped 404. Every error shunt writes
itself is Anthropic-shaped JSON, including the answers to malformed HTTP (parsed by
:mod:`shunt_lib.wire`).

The server owns everything it starts: :meth:`ShuntServer.close` stops the accept loop and closes
the listening socket (new connections are refused at once), lets requests in flight finish (up to
``drain_timeout_s``), ends the ones still running (:mod:`shunt_lib.drain`: streams get an SSE
``error`` event, and their usage is recorded), closes the remaining client connections and joins
their threads, stops the background threads, flushes ``state.json`` and closes the upstream pool and
the HTTP session, leaving no thread and no socket behind.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import requests

from . import __version__, wire
from .background import CooldownWatcher, RecoveryWatcher, Reloader, TokenRefresher, UsagePoller
from .clock import SYSTEM, Clock
from .config import AccountConfig, Config, Paths, check_bind, load_config
from .credentials import Credential, CredentialStore
from .dialect import ProxyRequest
from .errors import BY_STATUS, BadRequest, BodyTooLarge, ConfigError, NotFound, ShuntError, Unauthorized, error_body
from .forwarding import json_head
from .httpclient import new_session
from .loop import Loop
from .oauth import TokenManager
from .relay import Relay
from .state import Pool, StateWriter, load_state
from .status import status_document
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
    while :meth:`serve_forever` runs).
    """

    daemon_threads = True  # a hung client never blocks interpreter exit; close() joins the threads itself
    allow_reuse_address = True  # restart on the same port right after a stop
    request_queue_size = 1024  # the default backlog of 5 drops connections under bursts

    def __init__(self, addr: tuple[str, int], *, config: Config, paths: Paths, pool: Pool, relay: Relay,
                 tokens: TokenManager, writer: StateWriter, watch: ClientWatch, upstream: Upstream,
                 http: requests.Session, clock: Clock, idle_timeout_s: float = 120.0):
        self.config = config
        self.paths = paths
        self.pool = pool
        self.relay = relay
        self.tokens = tokens
        self.http = http
        self.clock = clock
        self.idle_timeout_s = idle_timeout_s  # idle keep-alive and slow-client read timeout, seconds
        self.started_at_s = clock.time()
        self.background: list[Loop] = []
        self.is_serving = threading.Event()
        self._writer = writer
        self._watch = watch
        self._upstream = upstream
        self._reload_lock = threading.Lock()  # one reload at a time
        self._inflight = InFlight()
        self._connections: dict[socket.socket, threading.Thread] = {}  # open client connections; guarded by:
        self._connections_lock = threading.Lock()
        super().__init__(addr, Handler)

    @property
    def port(self) -> int:
        """The port bound (the real one when 0 was asked for)."""
        return self.server_address[1]

    # -- accounts ------------------------------------------------------------------------------
    def status(self) -> dict:
        """The ``GET /status`` document (see :func:`~shunt_lib.status.status_document`)."""
        now = self.clock.time()
        return status_document(self.pool.snapshot(now), {n: self.tokens.get(n) for n in self.pool.names()}, now,
                               version=__version__, started_at_s=self.started_at_s, strategy=self.pool.strategy)

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
        for name in removed:
            self.tokens.set(name, None)
        updated = []
        for acct in accounts:
            cred, old = creds.get(acct.name), self.tokens.get(acct.name)
            if cred is None:
                if initial:
                    log.warning("account %s has no credentials: marked reauth_required (run `shunt import --name %s`)",
                                acct.name, acct.name)
                self.tokens.set(acct.name, None)
                self.pool.set_flag(acct.name, reauth_required=True)
            elif initial:
                self.tokens.set(acct.name, cred)
            elif old is None or old.secret != cred.secret or acct.name in added:
                self.tokens.set(acct.name, cred)
                self.pool.set_flag(acct.name, reauth_required=False, disabled=False)  # a new login or key
                if acct.name not in added:
                    updated.append(acct.name)
            elif old != cred:
                self.tokens.set(acct.name, cred)  # the same secret with a new identity (email, plan)
        return {"added": added, "removed": removed, "updated": updated}

    def reload(self) -> dict[str, list[str]]:
        """Re-read config.toml and credentials.json and apply account changes without a restart.

        Requests in flight keep the credential they started with. Server keys other than ``strategy``
        and ``session_ttl_s`` need a restart. :returns: what changed, as :meth:`apply_accounts`.
        :raises ConfigError: if the new files are invalid (nothing is changed then).
        """
        with self._reload_lock, self.tokens.store.lock():  # no refresh may land between reading and applying
            config = load_config(self.paths)
            change = self.apply_accounts(config.accounts, self.tokens.store.load())
            self.pool.configure(strategy=config.server.strategy, session_ttl_s=config.server.session_ttl_s)
            if dataclasses.replace(config.server, strategy=self.config.server.strategy,
                                   session_ttl_s=self.config.server.session_ttl_s) != self.config.server:
                log.warning("config.toml [server] changed: restart shunt to apply keys other than strategy and session_ttl_s")
            self.config = dataclasses.replace(self.config, accounts=config.accounts)
        if any(change.values()):
            events_log.info("reloaded accounts: %s", ", ".join(f"{k} {v}" for k, v in change.items() if v),
                            extra={"event": "reload", **change})
        return change

    def mtimes(self) -> tuple[int, int]:
        """Modification times of config.toml and credentials.json, ns (for the reloader)."""
        return self.paths.mtime_ns(), self.tokens.store.mtime_ns()

    # -- requests in flight ------------------------------------------------------------------------
    def request_in_flight(self) -> "InFlight":
        """A context manager counting a proxied request as in progress (:meth:`drain` waits for these)."""
        return self._inflight

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for proxied requests in progress to finish. :returns: True if none is left."""
        return self._inflight.wait_idle(timeout_s)

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        """The connection's thread (``ThreadingMixIn``): tracked, so :meth:`close` can end it."""
        with self._connections_lock:
            self._connections[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    # -- running and stopping ------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept and serve connections until :meth:`shutdown` (or :meth:`close`) from another thread."""
        self.is_serving.set()
        try:
            super().serve_forever(poll_interval)
        finally:
            self.is_serving.clear()

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
        self.relay.drain.begin()
        if not self.drain(drain_timeout_s):
            n = self.relay.drain.stop()
            log.warning("stopping: %d request(s) still in progress after %g s were ended", n, drain_timeout_s)
            self.drain(STOP_GRACE_S)
        self._close_connections()
        for t in self.background:
            t.stop()
        self._writer.stop()
        self._watch.close()
        self._upstream.close()
        self.tokens.close()
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

    __slots__ = ("_count", "_cond")

    def __init__(self) -> None:
        self._count = 0  # guarded by _cond
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            self._count += 1

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._count -= 1
            if self._count == 0:
                self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until nothing is in progress. :returns: True if nothing is."""
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout_s)


def make_server(config: Config, paths: Paths, *, host: str | None = None, port: int | None = None,
                clock: Clock = SYSTEM, hold_first_ping_s: float = 5.0, hold_ping_interval_s: float = 15.0,
                overload_backoff_s: float = 0.5, idle_timeout_s: float = 120.0) -> ShuntServer:
    """Build the proxy from config and files, bound but not yet serving (the state writer runs).

    :param host: / :param port: override ``[server]`` (``port=0`` picks a free port).
    :param clock: time and waiting on the request path (test seam).
    :param hold_first_ping_s: / :param hold_ping_interval_s: / :param overload_backoff_s: see
        :class:`~shunt_lib.relay.Relay` (test seams).
    :param idle_timeout_s: idle keep-alive and slow-client read timeout, seconds.
    :raises ConfigError: bad credentials or a non-loopback bind without ``remote_key``.
    :raises OSError: if the address cannot be bound.
    """
    server_cfg = config.server
    if host is not None or port is not None:
        server_cfg = dataclasses.replace(server_cfg, host=host if host is not None else server_cfg.host,
                                         port=port if port is not None else server_cfg.port)
        config = dataclasses.replace(config, server=server_cfg)
    check_bind(server_cfg)
    paths.ensure()
    store = CredentialStore(paths.credentials)
    creds = store.load()
    pool = Pool(config.accounts, strategy=server_cfg.strategy, session_ttl_s=server_cfg.session_ttl_s)
    load_state(pool, paths.state, clock.time())
    http = new_session()
    tokens = TokenManager(store, {}, token_url=server_cfg.oauth_token_url, client_id=server_cfg.oauth_client_id,
                          http=http, clock=clock.time)
    upstream = Upstream(server_cfg.upstream_url, maxsize=128, first_byte_timeout_s=server_cfg.upstream_first_byte_timeout_s,
                        idle_timeout_s=server_cfg.upstream_idle_timeout_s)
    watch = ClientWatch()
    relay = Relay(server_cfg.max_wait_s, pool, tokens, upstream, watch, clock=clock, hold_first_ping_s=hold_first_ping_s,
                  hold_ping_interval_s=hold_ping_interval_s, overload_backoff_s=overload_backoff_s)
    writer = StateWriter(pool, paths.state, clock=clock)
    srv = None
    try:
        srv = ShuntServer((server_cfg.host, server_cfg.port), config=config, paths=paths, pool=pool, relay=relay,
                          tokens=tokens, writer=writer, watch=watch, upstream=upstream, http=http, clock=clock,
                          idle_timeout_s=idle_timeout_s)
        srv.apply_accounts(config.accounts, creds, initial=True)
    except BaseException:
        if srv is not None:
            srv.server_close()
        watch.close()
        upstream.close()
        http.close()
        raise
    writer.start()
    return srv


class Handler(BaseHTTPRequestHandler):
    """One client connection (keep-alive: many requests). Thin: parses, checks, hands off."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses
    server_version = "shunt/" + __version__
    server: ShuntServer
    headers: wire.Headers

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def parse_request(self) -> bool:
        """The request line and headers, by :mod:`shunt_lib.wire` (not the ``email`` package: about
        75 µs for Claude Code's 21 headers, more than a tenth of shunt's whole cost per request).

        :returns: False if the request was answered with an error (or was empty).
        """
        self.command, self.close_connection, self.request_version = None, True, "HTTP/0.9"
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        try:
            line = wire.parse_request_line(self.raw_requestline)
            if line is None:
                return False
            self.command, self.path, self.request_version = line.method, line.target, line.version
            self.headers = wire.read_headers(self.rfile) if line.version != "HTTP/0.9" else wire.Headers([])
        except ShuntError as err:
            self.send_error(err.status, err.message)
            return False
        self.close_connection = not wire.persistent(line, self.headers)
        expect = self.headers.by_name.get("expect", "")
        return not (expect.lower() == "100-continue" and line.version == "HTTP/1.1" and not self.handle_expect_100())

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's error path (a too-long request line, an unknown method): JSON, then close."""
        cls = BY_STATUS.get(code)
        etype = cls.error_type if cls else ("invalid_request_error" if code < 500 else "api_error")
        self.close_connection = True
        self._send_json(code, error_body(etype, message or explain or "bad request"), close=True)

    def _send_json(self, status: int, body: bytes, headers: dict[str, str] | None = None, *, close: bool = False) -> None:
        self.wfile.write(json_head(status, len(body), headers, close=close) + (body if self.command != "HEAD" else b""))

    # -- dispatch --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        route = self.path.split("?", 1)[0]
        try:
            if route == "/health" and self.command in ("GET", "HEAD"):
                return self._send_json(200, b'{"status":"ok"}')
            authorized = self._authorized()
            body = wire.read_body(self.rfile, self.headers, self.server.config.server.max_body_bytes)
            if not authorized:
                raise Unauthorized("missing or wrong shunt key (send it as x-api-key or Authorization: Bearer)")
            if route.startswith("/v1/"):
                with self.server.request_in_flight():
                    self.server.relay.handle(self, ProxyRequest(self.command, self.path, self.headers, body))
                return
            control = CONTROL_ROUTES.get((self.command, route))
            if control is None:
                raise NotFound(f"{self.command} {route} is not served by shunt; the API lives under /v1/")
            control(self, body)
        except ShuntError as err:
            if isinstance(err, (BodyTooLarge, BadRequest)):
                self.close_connection = True  # the rest of the request is unread or unreadable
            self._send_json(err.status, err.body(), err.headers, close=self.close_connection)
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def _authorized(self) -> bool:
        key = self.server.config.server.remote_key
        if not key:
            return True
        given = self.headers.by_name.get("x-api-key") or ""
        auth = self.headers.by_name.get("authorization") or ""
        if not given and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), key.encode())

    # -- control endpoints (each takes the request body) ----------------------------------------------
    def _status(self, body: bytes) -> None:
        self._send_json(200, json.dumps(self.server.status()).encode())

    def _use(self, body: bytes) -> None:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise BadRequest("body must be JSON: {\"account\": NAME | \"auto\"}") from None
        name = data.get("account") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest("body must be {\"account\": NAME | \"auto\"}")
        pool = self.server.pool
        try:
            pool.set_pin(None if name == "auto" else name)
        except KeyError:
            raise BadRequest(f"unknown account {name!r}; known: {', '.join(pool.names()) or 'none'}") from None
        log.info("routing %s", "automatic" if name == "auto" else f"pinned to {name}")
        self._send_json(200, json.dumps({"pinned_account": pool.pinned}).encode())

    def _reload(self, body: bytes) -> None:
        try:
            change = self.server.reload()
        except ConfigError as exc:
            raise BadRequest(f"reload failed, nothing changed: {exc}") from None
        self._send_json(200, json.dumps(change).encode())


#: The control API: (method, path) → the handler method that answers it.
CONTROL_ROUTES: dict[tuple[str, str], Callable[[Handler, bytes], None]] = {
    ("GET", "/status"): Handler._status,
    ("POST", "/use"): Handler._use,
    ("POST", "/reload"): Handler._reload,
}


def start_background(srv: ShuntServer, *, refresh: bool = True, recovery: bool = True, usage: bool = True,
                     reload: bool = True) -> list[Loop]:
    """Start the proxy's background threads (cooldowns always; the rest as asked); ``srv.close()`` stops them.

    :returns: the threads started.
    """
    cfg = srv.config.server
    threads: list[Loop] = [CooldownWatcher(srv.pool, clock=srv.clock.time)]
    if refresh:
        threads.append(TokenRefresher(srv.pool, srv.tokens, clock=srv.clock.time))
    if recovery:
        threads.append(RecoveryWatcher(srv.pool, srv.tokens, interval_s=cfg.recovery_interval_s))
    if usage and cfg.usage_poll_s > 0:
        threads.append(UsagePoller(srv.pool, srv.tokens, cfg.upstream_url, srv.http, interval_s=cfg.usage_poll_s,
                                   clock=srv.clock.time))
    if reload:
        threads.append(Reloader(srv.reload, srv.mtimes))
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
