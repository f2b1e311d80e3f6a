"""HTTP in: one client connection's requests.

:class:`Handler` serves one connection (keep-alive: many requests): it parses each request (by
:mod:`shunt_lib.wire`), guards it (Host and Origin by :mod:`shunt_lib.guard`, the path by
:mod:`shunt_lib.paths_policy`, who sent it by :mod:`shunt_lib.auth`: the admin key, a client token or
a tokenless local request), and dispatches it: ``OPTIONS`` is answered here
(:mod:`shunt_lib.cors`), ``GET /health`` here too, the dashboard's files (``GET /``) by :mod:`shunt_lib.dashboard`,
the OpenAI front door (``POST /v1/chat/completions``, ``POST /v1/responses``, also without ``/v1``) to the
relay in the dialect :mod:`shunt_lib.openai_front` prepares, ``GET /v1/models`` answered here when
:mod:`shunt_lib.pool_models` says so, every other path under ``/v1/`` to
:class:`~shunt_lib.relay.Relay`, and the control paths (``GET /status``, ``POST /use``, ``POST /reset``,
``POST /reload``, ``GET /metrics``, ...) to :mod:`shunt_lib.control`; other paths get an
Anthropic-shaped 404. Every refusal it writes is Anthropic-shaped JSON (a 401 on an OpenAI route: OpenAI's), including the answers to malformed HTTP; a refused request's body is
read and dropped, or the connection closes with a lingering close. The server it belongs to is
:class:`~shunt_lib.serving.HandlerServer` (the server, as the handler sees it).
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from . import __version__, auth, control, cors, dashboard, guard, openai_front, paths_policy, pool_models, wire
from .clients import ADMIN, LOCAL, Client
from .connections import GuardedHandler, linger
from .dialect import ProxyRequest
from .errors import (
    BY_STATUS,
    BadRequest,
    BodyTooLarge,
    RequestTimeout,
    ShuntError,
    UnsupportedCoding,
    error_body,
)
from .forwarding import json_head
from .inflight_gate import GatewayBusy
from .overrides import override_header

if TYPE_CHECKING:
    from .serving import HandlerServer

#: The paths :meth:`Handler._front_door` may serve (one set lookup keeps them off the pass-through path).
FRONT_DOOR_ROUTES = openai_front.CHAT_ROUTES | openai_front.RESPONSES_ROUTES | pool_models.MODELS_ROUTES
#: The paths whose refusals are in OpenAI's error envelope.
OPENAI_ROUTES = openai_front.CHAT_ROUTES | openai_front.RESPONSES_ROUTES

log = logging.getLogger("shunt.server")  # the name the server's lines have always had
DISCARD_MAX_BYTES = 4 << 20  # a refused request's body up to this size is read and dropped, the connection kept


class Handler(GuardedHandler):
    """One client connection (keep-alive: many requests). Thin: parses, checks, hands off. Reads keep
    to :mod:`shunt_lib.limits` (see :class:`~shunt_lib.connections.GuardedHandler`)."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses
    server_version = "shunt/" + __version__
    server: HandlerServer
    headers: wire.Headers
    _linger = False  # close this connection with a lingering close (a refused body may still arrive)

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
        return True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's error path (a too-long request line, an unknown method): JSON, then close."""
        cls = BY_STATUS.get(code)
        etype = cls.error_type if cls else ("invalid_request_error" if code < 500 else "api_error")
        self.close_connection = True
        self._send_json(code, error_body(etype, message or explain or "bad request"), close=True)

    def _send_json(self, status: int, body: bytes, headers: dict[str, str] | None = None, *, close: bool = False,
                   content_type: str = "application/json") -> None:
        self.wfile.write(json_head(status, len(body), headers, close=close, content_type=content_type)
                         + (body if self.command != "HEAD" else b""))

    # -- dispatch --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        route = self.path.split("?", 1)[0]
        out, body_unread = self.wfile, True
        try:
            if dashboard.is_asset(self.command, route):  # public files, no data: before the key and guard
                body_unread = False
                return self._asset(route)
            who = self._authenticate()
            origin = guard.check_request(self.server.guard, self.headers.by_name, check_host=route != "/health",
                                         carries_key=who.client is ADMIN)
            if self.command == "OPTIONS":
                body_unread = False
                return self._options(origin)
            if origin is not None:
                self.wfile = cors.HeadFields(out, cors.response_fields(origin))
            if route == "/health" and self.command in ("GET", "HEAD"):
                return self._send_json(200, b'{"status":"ok"}')
            paths_policy.check_path(route)
            if not (route == "/metrics" and self.server.config.server.metrics_public):
                self._admit(who, route)
            body_unread = False
            body = self._read_body()
            client = who.client
            if route in FRONT_DOOR_ROUTES and self._front_door(route, body, client):
                return
            if route.startswith("/v1/"):
                with self.server.request_in_flight(), self.server.relay_gate, \
                        self.server.client_usage.in_flight(client):  # relay_gate: [gateway] max_inflight (429)
                    self.server.relay.handle(self, ProxyRequest(self.command, self.path, self.headers, body, client))
                return
            reply = control.answer(self.server, self.command, route, self.headers.by_name, body,
                                   self.path.partition("?")[2])
            if isinstance(reply, control.Answer):
                self._send_json(200, reply.body, content_type=reply.content_type)
            else:
                self._send_json(200, reply)
        except ShuntError as err:
            if isinstance(err, (BodyTooLarge, BadRequest, UnsupportedCoding, RequestTimeout)):
                self.close_connection = True  # the rest of the request is unread or unreadable
            discard = False
            if body_unread or isinstance(err, BodyTooLarge):
                discard = self._refused_body_plan(keep=not isinstance(err, BodyTooLarge))
            self._send_json(err.status, err.body(), err.headers, close=self.close_connection)
            if discard:
                self._discard_body()
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        finally:
            self.wfile = out

    def _front_door(self, route: str, body: bytes, client: Client = LOCAL) -> bool:
        """Serve an OpenAI-dialect request (:mod:`shunt_lib.openai_front`) or a ``GET /v1/models`` shunt
        answers itself (:mod:`shunt_lib.pool_models`); False if ``route`` is neither."""
        config = self.server.config
        if self.command in ("GET", "HEAD") and pool_models.answers_locally(route, "anthropic-version" in self.headers.by_name,
                                                                 config.accounts):
            self._send_json(200, pool_models.models_body(config.accounts, config.models,
                                                         anthropic="anthropic-version" in self.headers.by_name))
            return True
        api = openai_front.api_for(self.command, route)
        if api is None:
            return False
        request = ProxyRequest(self.command, self.path, self.headers, body, client)
        request, applied = self.server.relay.overrides.apply(request, api)  # before the body is read
        try:
            dialect = openai_front.prepare(api, request, config.accounts, config.models,
                                           self.server.relay.clock.time())
        except ShuntError as err:  # bad input or no account for it: OpenAI's envelope, the connection kept
            self._send_json(err.status, openai_front.front_error_body(err),
                            dict(err.headers or {}, **override_header(applied)))
            return True
        try:
            with self.server.request_in_flight(), self.server.relay_gate, self.server.client_usage.in_flight(client):
                self.server.relay.handle(self, request, dialect, applied)
        except GatewayBusy as err:  # [gateway] max_inflight full for max_queue_s: OpenAI's envelope
            self._send_json(err.status, openai_front.front_error_body(err), err.headers)
        return True

    def _refused_body_plan(self, *, keep: bool = True) -> bool:
        """What becomes of the body of a request refused before its body was read, decided before the
        answer is written. None announced: nothing. A ``content-length`` body of at most
        :data:`DISCARD_MAX_BYTES` (and ``keep``): :returns: True, the caller reads and drops it after
        the answer (:meth:`_discard_body`) and the connection stays open. Anything else (a larger or
        chunked body, one announced with ``Expect: 100-continue`` and never invited, bad framing):
        the connection closes after the answer with a lingering close
        (:func:`~shunt_lib.connections.linger`), so the answer is not lost to a reset either way."""
        by_name = self.headers.by_name
        if "transfer-encoding" not in by_name and by_name.get("content-length", "0") == "0":
            return False
        try:
            framing = wire.body_framing(self.headers, DISCARD_MAX_BYTES)
        except ShuntError:
            framing = None
        if (keep and framing is not None and not framing.chunked and not framing.close
                and by_name.get("expect", "").lower() != "100-continue"):
            return True
        self.close_connection = self._linger = True
        return False

    def _discard_body(self) -> None:
        """Read and drop a refused request's ``content-length`` body (64 KiB at a time, at the minimum
        body rate); close the connection if that fails."""
        self.expect_body()
        try:
            wire.discard_body(self.rfile, wire.body_framing(self.headers, DISCARD_MAX_BYTES).length)
        except (ShuntError, ConnectionError, socket.timeout):
            self.close_connection = True
        finally:
            self.body_read()

    def finish(self) -> None:
        super().finish()
        if self._linger:
            linger(self.connection)

    def _options(self, origin: str | None) -> None:
        """``OPTIONS``, a browser's preflight or not: answered here, never forwarded (:mod:`shunt_lib.cors`)."""
        if self._refused_body_plan():  # a preflight has no body; another OPTIONS's body is not wanted
            self._discard_body()
        self.wfile.write(cors.preflight_head(cors.preflight_fields(origin, self.headers.by_name),
                                             close=self.close_connection))

    def _asset(self, route: str) -> None:
        """One of the dashboard's files (:mod:`shunt_lib.dashboard`); a body sent with it is dropped."""
        if self._refused_body_plan():
            self._discard_body()
        self.wfile.write(dashboard.answer(route, head_only=self.command == "HEAD", close=self.close_connection))

    def _read_body(self) -> bytes:
        """The request body, read once the key (checked by the caller first: an unauthorized client's
        upload is never kept) and the framing have passed: a body over ``max_body_bytes`` gets 413
        before it is read, and ``100 Continue`` goes out only after both checks (RFC 9110 §10.1.1).

        :raises BodyTooLarge: / :raises BadRequest: / :raises UnsupportedCoding: / :raises RequestTimeout:
        """
        by_name = self.headers.by_name
        framing = wire.body_framing(self.headers, self.server.config.server.max_body_bytes)
        if framing.close:
            self.close_connection = True
        expect = by_name.get("expect")
        if expect is not None and expect.lower() == "100-continue" and self.request_version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.expect_body()
        try:
            return wire.read_body(self.rfile, self.headers, self.server.config.server.max_body_bytes, framing)
        finally:
            self.body_read()

    def _authenticate(self) -> auth.Decision:
        """Who sent the request (:func:`shunt_lib.auth.decide`): the admin, a client token, or local."""
        gateway = self.server.config.gateway
        return auth.decide(auth.credential(self.headers.by_name), auth.is_loopback_peer(self.client_address[0]),
                           gateway.require_token, gateway.admin_key, self.server.client_tokens.check,
                           self.server.clock.time())

    def _admit(self, who: auth.Decision, route: str) -> None:
        """Let the request through, or raise: 401 (in the endpoint's dialect) when refused, 403 for a
        control path without the right to it (logged; never the credential, at most a token's public id).

        :raises Unauthorized: / :raises PermissionDenied:
        """
        if who.reason is not None:
            log.warning("refused %s %s from %s: %s%s", self.command, route, self.client_address[0],
                        auth.LOG_WORDS[who.reason], f" (id {who.token_id})" if who.token_id else "")
            raise auth.refusal(who.reason, openai=route in OPENAI_ROUTES)
        if not who.control and control.is_control_path(route):
            log.warning("refused %s %s from %s: client %s may not use the control API", self.command, route,
                        self.client_address[0], who.client.name if who.client else "?")
            raise auth.control_refused()
