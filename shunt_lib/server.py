"""HTTP in and out: the threaded server, its request handler and the control endpoints.

One port serves everything: ``GET /health``, ``GET /status``, ``POST /use``, and every path under
``/v1/`` (forwarded by :class:`~shunt_lib.relay.Relay`). Other paths get an Anthropic-shaped 404.
Every error shunt writes itself is Anthropic-shaped JSON, including the standard library's own
400/414/431/501 answers for malformed HTTP.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import re
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from . import __version__, errors
from .config import Config, Paths, check_bind, load_config
from .credentials import CredentialStore
from .oauth import TokenManager
from .relay import Relay
from .state import Pool, StateWriter, load_state
from .upstream import Upstream
from .watch import ClientWatch

log = logging.getLogger("shunt.server")
events_log = logging.getLogger("shunt.events")

CHUNK_LINE_MAX = 4096
DRAIN_TIMEOUT_S = 5.0  # on stop, how long requests in progress may finish before state is flushed


class ShuntServer(ThreadingHTTPServer):
    """The proxy. Build it with :func:`make_server`; run ``serve_forever()``; stop with :meth:`close`."""

    daemon_threads = True  # a hung client must not block shutdown; state is flushed separately
    allow_reuse_address = True  # restart on the same port right after a stop
    request_queue_size = 1024  # the default backlog of 5 drops connections under bursts

    def __init__(self, addr, config: Config, paths: Paths, pool: Pool, relay: Relay, tokens: TokenManager,
                 writer: StateWriter, watch: ClientWatch, *, idle_timeout_s: float = 120.0):
        self.config = config
        self.paths = paths
        self.pool = pool
        self.relay = relay
        self.tokens = tokens
        self.writer = writer
        self.watch = watch
        self.idle_timeout_s = idle_timeout_s
        self.started_at_s = time.time()
        self.background: list = []
        self._inflight = 0  # proxied requests in progress; guarded by _inflight_cond
        self._reload_lock = threading.Lock()  # one reload at a time
        self._inflight_cond = threading.Condition()
        super().__init__(addr, Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def status(self) -> dict:
        """The ``GET /status`` document."""
        now = time.time()
        doc = {"version": __version__, "started_at_s": int(self.started_at_s), "strategy": self.pool.strategy}
        doc.update(self.pool.status_json(now))
        for acct in doc["accounts"]:
            cred = self.tokens.get(acct["name"])
            acct["token_expires_at_s"] = int(cred.expires_at_ms / 1000) if cred and cred.kind == "oauth" and cred.expires_at_ms else None
            if not acct["email"] and cred and cred.email:
                acct["email"] = cred.email
            if not acct["plan"] and cred and cred.plan:
                acct["plan"] = cred.plan
        return doc

    def reload(self) -> dict:
        """Re-read config.toml and credentials.json and apply account changes without a restart.

        Requests in flight keep the credential they started with. Server keys other than ``strategy``
        and ``session_ttl_s`` need a restart. :returns: ``{"added": [...], "removed": [...], "updated": [...]}``.
        :raises ConfigError: if the new files are invalid (nothing is changed then).
        """
        with self._reload_lock, self.tokens.store.lock():  # no refresh may land between reading and applying
            config = load_config(self.paths)
            creds = self.tokens.store.load()
            for acct in config.accounts:
                cred = creds.get(acct.name)
                if cred is not None and cred.kind != acct.kind:
                    raise errors.ConfigError(f"account {acct.name!r}: config.toml says kind {acct.kind!r} but "
                                             f"credentials.json holds a {cred.kind!r} credential")
            added, removed = self.pool.sync_accounts(config.accounts)
            updated = []
            for name in removed:
                self.tokens.set(name, None)
            for acct in config.accounts:
                cred, old = creds.get(acct.name), self.tokens.get(acct.name)
                if cred is None:
                    self.tokens.set(acct.name, None)
                    self.pool.set_flag(acct.name, reauth_required=True)
                    continue
                if old is None or old.secret != cred.secret or acct.name in added:
                    self.tokens.set(acct.name, cred)
                    self.pool.set_flag(acct.name, reauth_required=False, disabled=False)  # a new login or key
                    if acct.name not in added:
                        updated.append(acct.name)
                self.pool.set_identity(acct.name, email=cred.email, plan=cred.plan)
            self.pool.strategy = config.server.strategy
            self.pool.session_ttl_s = config.server.session_ttl_s
            if dataclasses.replace(config.server, strategy=self.config.server.strategy,
                                   session_ttl_s=self.config.server.session_ttl_s) != self.config.server:
                log.warning("config.toml [server] changed: restart shunt to apply keys other than strategy and session_ttl_s")
            self.config = dataclasses.replace(self.config, accounts=config.accounts)
            change = {"added": added, "removed": removed, "updated": updated}
            if added or removed or updated:
                events_log.info("reloaded accounts: %s", ", ".join(f"{k} {v}" for k, v in change.items() if v),
                                extra={"event": "reload", **change})
            return change

    def mtimes(self) -> tuple[int, int]:
        """Modification times of config.toml and credentials.json (for the reloader)."""
        return self.paths.mtime_ns(), self.tokens.store.mtime_ns()

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for proxied requests in progress to finish. :returns: True if none is left."""
        with self._inflight_cond:
            return self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout_s)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving = True
        super().serve_forever(poll_interval)

    def close(self) -> None:
        """Stop serving, stop background threads and flush ``state.json`` (call from a thread other than serve_forever's)."""
        if getattr(self, "_serving", False):
            self.shutdown()
        self.drain(DRAIN_TIMEOUT_S)
        for t in self.background:
            t.stop()
        self.writer.stop()
        self.watch.close()
        self.relay.upstream.close()
        self.server_close()


def make_server(config: Config, paths: Paths, *, host: str | None = None, port: int | None = None,
                clock: Callable[[], float] = time.time, hold_first_ping_s: float = 5.0,
                hold_ping_interval_s: float = 15.0, overload_backoff_s: float = 0.5,
                idle_timeout_s: float = 120.0, http_session=None) -> ShuntServer:
    """Build the proxy from config and files, bound but not yet serving.

    :param host: / :param port: override ``[server]`` (``port=0`` picks a free port).
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
    load_state(pool, paths.state, clock())
    for acct in config.accounts:
        cred = creds.get(acct.name)
        if cred is None:
            log.warning("account %s has no credentials: marked reauth_required (run `shunt import --name %s`)",
                        acct.name, acct.name)
            pool.set_flag(acct.name, reauth_required=True)
        elif cred.kind != acct.kind:
            raise errors.ConfigError(f"account {acct.name!r}: config.toml says kind {acct.kind!r} but "
                                     f"credentials.json holds a {cred.kind!r} credential")
        else:
            pool.set_identity(acct.name, email=cred.email, plan=cred.plan)
    tokens = TokenManager(store, {n: c for n, c in creds.items() if n in {a.name for a in config.accounts}},
                          token_url=server_cfg.oauth_token_url, http=http_session, clock=clock)
    upstream = Upstream(server_cfg.upstream_url, maxsize=128)
    watch = ClientWatch()
    relay = Relay(server_cfg, pool, tokens, upstream, watch, clock=clock, hold_first_ping_s=hold_first_ping_s,
                  hold_ping_interval_s=hold_ping_interval_s, overload_backoff_s=overload_backoff_s)
    writer = StateWriter(pool, paths.state, clock=clock)
    try:
        srv = ShuntServer((server_cfg.host, server_cfg.port), config, paths, pool, relay, tokens, writer, watch,
                          idle_timeout_s=idle_timeout_s)
    except BaseException:
        watch.close()
        raise
    writer.start()
    return srv


class Headers:
    """A request's headers: ``items()`` in order as sent, ``lower`` (lower-case name → value; repeated
    names joined with ", "), and a case-insensitive ``get``. Stands in for ``http.client.HTTPMessage``."""

    __slots__ = ("_items", "lower")

    def __init__(self, items: list[tuple[str, str]]):
        self._items = items
        lower: dict[str, str] = {}
        for k, v in items:
            lk = k.lower()
            lower[lk] = lower[lk] + ", " + v if lk in lower else v
        self.lower = lower

    def items(self) -> list[tuple[str, str]]:
        return self._items

    def get(self, name: str, default=None):
        return self.lower.get(name.lower(), default)

    def __getitem__(self, name: str):
        return self.lower.get(name.lower())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self.lower


MAX_HEADER_LINE = 65536  # same limits as http.client
MAX_HEADERS = 100
_TOKEN_BAD = frozenset(' \t"(),/:;<=>?@[\\]{}')
_VALUE_BAD = frozenset("\r\n\0")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


def read_headers(rfile) -> Headers:
    """Read header lines up to the blank line.

    :raises errors.BadRequest: a folded line, a line without a colon, or a bad field name.
    :raises errors.HeadersTooLarge: a line over 65536 bytes or more than 100 headers.
    """
    items: list[tuple[str, str]] = []
    while True:
        line = rfile.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise errors.HeadersTooLarge("header line too long")
        if line in (b"\r\n", b"\n", b""):
            return Headers(items)
        if len(items) >= MAX_HEADERS:
            raise errors.HeadersTooLarge(f"more than {MAX_HEADERS} headers")
        if line[:1] in (b" ", b"\t"):
            raise errors.BadRequest("obsolete header line folding is not accepted")
        name, sep, value = line.decode("iso-8859-1").partition(":")
        value = value.strip(" \t\r\n")
        if not sep or not name or not _TOKEN_BAD.isdisjoint(name) or not _VALUE_BAD.isdisjoint(value):
            raise errors.BadRequest(f"malformed header line {line[:80]!r}")
        items.append((name, value))


class Handler(BaseHTTPRequestHandler):
    """One client connection (keep-alive: many requests). Thin: parses, checks, hands off to the relay."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses
    server_version = "shunt/" + __version__
    server: ShuntServer

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s  # idle keep-alive and slow-client read timeout, seconds
        super().setup()
        self.sock = self.connection
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- request parsing -------------------------------------------------------------------
    def parse_request(self) -> bool:
        """Parse the request line (the standard library's rules) and the headers, without ``email``.

        ``http.client.parse_headers`` runs the email package's feed parser: about 75 µs for Claude
        Code's 21 headers, more than a tenth of shunt's whole cost per request. Headers here are
        read with the same limits (65536-byte lines, 100 headers) into :class:`Headers`. Obsolete
        line folding and lines without a colon are rejected with 400 (RFC 9112 §5.2 allows that).
        :returns: False if the request was answered with an error (or was empty).
        """
        self.command = None
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                parts = version.split("/", 1)[1].split(".")
                if len(parts) != 2 or not all(p.isdigit() and len(p) <= 10 for p in parts):
                    raise ValueError
                number = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                self.send_error(400, f"Bad request version ({version!r})")
                return False
            if number >= (1, 1):
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(505, f"Invalid HTTP version ({version})")
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(400, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(400, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")
        try:
            self.headers = read_headers(self.rfile)
        except errors.ShuntError as err:
            self.send_error(err.status, err.message)
            return False
        conntype = self.headers.get("connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        if (self.headers.get("expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1"
                and not self.handle_expect_100()):
            return False
        return True

    # -- plumbing ---------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write raw bytes to the client (used by the relay). :raises OSError: if the client is gone."""
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's error path (malformed HTTP): answer Anthropic-shaped JSON and close."""
        kind = {400: errors.BadRequest, 404: errors.NotFound, 413: errors.BodyTooLarge}.get(code)
        etype = kind.error_type if kind else ("invalid_request_error" if code < 500 else "api_error")
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # garbage request line: still answer with a real HTTP head
            self.request_version = "HTTP/1.0"
        self._json(code, errors.error_body(etype, message or explain or "bad request"), close=True)

    def _json(self, status: int, body: bytes, *, headers: dict | None = None, close: bool = False) -> None:
        self.send_response_only(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, err: errors.ShuntError, *, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._json(err.status, err.body(), headers=err.headers, close=close)

    # -- dispatch ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _authorized(self) -> bool:
        key = self.server.config.server.remote_key
        if not key:
            return True
        given = self._lower.get("x-api-key") or ""
        auth = self._lower.get("authorization") or ""
        if not given and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), key.encode())

    def _dispatch(self) -> None:
        self._items = self.headers.items()
        self._lower = self.headers.lower
        path = self.path
        route = path.split("?", 1)[0]
        try:
            if route == "/health" and self.command in ("GET", "HEAD"):
                return self._json(200, b'{"status":"ok"}')
            if not self._authorized():
                body = self._read_body()  # drain, so keep-alive stays in sync
                del body
                return self._error(errors.Unauthorized("missing or wrong shunt key (send it as x-api-key or Authorization: Bearer)"))
            if route.startswith("/v1/"):
                body = self._read_body()
                srv = self.server
                with srv._inflight_cond:
                    srv._inflight += 1
                try:
                    srv.relay.handle(self, self.command, path, self._items, body, self._lower)
                finally:
                    with srv._inflight_cond:
                        srv._inflight -= 1
                        srv._inflight_cond.notify_all()
                return
            if route == "/status" and self.command == "GET":
                return self._json(200, json.dumps(self.server.status()).encode())
            if route == "/use" and self.command == "POST":
                return self._use(self._read_body())
            if route == "/reload" and self.command == "POST":
                self._read_body()
                try:
                    change = self.server.reload()
                except errors.ConfigError as exc:
                    raise errors.BadRequest(f"reload failed, nothing changed: {exc}") from None
                return self._json(200, json.dumps(change).encode())
            self._read_body()
            raise errors.NotFound(f"{self.command} {route} is not served by shunt; the API lives under /v1/")
        except errors.ShuntError as err:
            self._error(err, close=isinstance(err, (errors.BodyTooLarge, errors.BadRequest)))
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def _use(self, body: bytes) -> None:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise errors.BadRequest("body must be JSON: {\"account\": NAME | \"auto\"}") from None
        name = data.get("account") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name:
            raise errors.BadRequest("body must be {\"account\": NAME | \"auto\"}")
        try:
            self.server.pool.set_pin(None if name == "auto" else name)
        except KeyError:
            raise errors.BadRequest(f"unknown account {name!r}; known: {', '.join(self.server.pool.names()) or 'none'}") from None
        log.info("routing %s", "automatic" if name == "auto" else f"pinned to {name}")
        self._json(200, json.dumps({"pinned_account": None if name == "auto" else name}).encode())

    def _read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked), enforcing ``max_body_bytes``.

        :raises BodyTooLarge: over the limit (the connection is then closed unread).
        :raises BadRequest: malformed framing.
        """
        limit = self.server.config.server.max_body_bytes
        te = (self._lower.get("transfer-encoding") or "").lower()
        if "chunked" in te:
            return self._read_chunked(limit)
        cl = self._lower.get("content-length")
        if cl is None:
            return b""
        try:
            n = int(cl)
        except ValueError:
            raise errors.BadRequest("invalid content-length") from None
        if n < 0:
            raise errors.BadRequest("invalid content-length")
        if n > limit:
            raise errors.BodyTooLarge(f"request body is {n} bytes; shunt accepts at most {limit} (server.max_body_bytes)")
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionError("client closed before sending the whole body")
        return data

    def _read_chunked(self, limit: int) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(CHUNK_LINE_MAX)
            if not line.endswith(b"\n"):
                raise errors.BadRequest("malformed chunked body")
            size_field = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_field):
                raise errors.BadRequest("malformed chunk size")
            size = int(size_field, 16)
            if size == 0:
                while self.rfile.readline(CHUNK_LINE_MAX) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields are ignored
                return bytes(out)
            if len(out) + size > limit:
                raise errors.BodyTooLarge(f"request body exceeds {limit} bytes (server.max_body_bytes)")
            data = self.rfile.read(size)
            if len(data) != size:
                raise ConnectionError("client closed inside a chunk")
            out += data
            if self.rfile.readline(CHUNK_LINE_MAX) not in (b"\r\n", b"\n"):
                raise errors.BadRequest("chunk data not followed by CRLF")


def start_background(srv: ShuntServer, *, refresh: bool = True, recovery: bool = True, usage: bool = True,
                     reload: bool = True) -> list:
    """Start the proxy's background threads (cooldowns always; the rest as asked) and attach them to ``srv``."""
    from .background import CooldownWatcher, RecoveryWatcher, Reloader, TokenRefresher, UsagePoller

    cfg = srv.config.server
    threads = [CooldownWatcher(srv.pool)]
    if refresh:
        threads.append(TokenRefresher(srv.pool, srv.tokens))
    if recovery:
        threads.append(RecoveryWatcher(srv.pool, srv.tokens, interval_s=cfg.recovery_interval_s))
    if usage and cfg.usage_poll_s > 0:
        threads.append(UsagePoller(srv.pool, srv.tokens, cfg.upstream_url, interval_s=cfg.usage_poll_s))
    if reload:
        threads.append(Reloader(srv.reload, srv.mtimes))
    for t in threads:
        t.start()
    srv.background.extend(threads)
    return threads


def serve_in_thread(srv: ShuntServer) -> threading.Thread:
    """Run ``srv.serve_forever`` on a daemon thread (tests, demo, bench)."""
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name="shunt-serve", daemon=True)
    t.start()
    return t
