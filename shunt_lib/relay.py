"""The request loop: route to an account, attempt, record the outcome, fail over or hold.

One :class:`Relay` serves every proxied request; per-request state lives in
:class:`~shunt_lib.request_state.RequestState`. The relay only decides. What goes up and comes back
is the :class:`~shunt_lib.dialect.Dialect`'s business, every byte to the client is written by
:class:`~shunt_lib.client.ClientStream`, how a request ends (its answer and its record) is
:class:`~shunt_lib.finish.Finish`'s, the next step after a failure is
:meth:`~shunt_lib.attempts.Attempts.after`, a wait for an account is :class:`~shunt_lib.hold.Hold`'s,
and what a failure means for the account is :meth:`~shunt_lib.state.Pool.record_outcome`.

A failure may fail over only while nothing was written to the client
(:attr:`~shunt_lib.client.ClientStream.wrote`); after that it can only end an SSE stream.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from typing import Callable

from .attempts import ConnectFailure, Step, UpstreamAnswer
from .client import ClientConnection, ClientStream
from . import client_gate
from .client_meter import ClientLimited, ClientMeter
from .clock import SYSTEM, Clock
from .config import AccountConfig
from .dialect import ANTHROPIC, Dialect, ProxyRequest
from . import json_edit
from .drain import Drain
from .errors import (
    BadRequest,
    ClientGone,
    PermissionDenied,
    ShuntError,
    UpstreamConnectError,
    UpstreamHeadTimeout,
    UpstreamRequestInvalid,
    UpstreamStreamError,
)
from .finish import Finish
from .hold import Hold
from .model_map import ModelMap
from .model_routing import NoAccountForModel, routing_matters
from .openai_ratelimit import classify_openai, parse_openai_rate_limits
from .logfmt import install_request_context, new_request_id, request_context, set_upstream_request_id
from .oauth import RefreshStatus, TokenManager
from .outcome import Action, classify
from .overrides import Applied, HeadField, Overrides
from .ratelimit import RateLimitInfo, parse_rate_limits
from .request_state import RequestState
from .sessions import session_key
from .state import Pool
from .status_view import duration_text
from .upstream import Cancel, Upstream, UpstreamResponse
from .usage import decode_body
from .watch import ClientWatch

log = logging.getLogger("shunt.relay")
events_log = logging.getLogger("shunt.events")


class Next(enum.Enum):
    """What the loop does after a step."""

    ROUTE = "route"  # choose an account again
    DONE = "done"  # the request is answered (or dropped) and recorded


OTHER_UPSTREAM_MAXSIZE = 32  # kept-alive connections to each OpenAI-compatible provider


class Relay:
    """Forwards client requests to the pool's accounts. Any number of threads may call :meth:`handle`.

    :param max_wait_s: longest a request is held while every account is cooling, seconds.
    :param clock: time and waiting (a seam for tests).
    :param hold_first_ping_s: a held streaming request gets its 200 and first ping this long after it arrived.
    :param hold_ping_interval_s: then a ping this often.
    :param overload_backoff_s: pause before moving a request that got 529/overloaded.
    :attr drain: the server's stop (:class:`~shunt_lib.drain.Drain`): every request in progress is
        registered there, so a stop can end it with an SSE ``error`` event and still count its usage.
    :attr finish: how each request ends (:class:`~shunt_lib.finish.Finish`): its answer and its record.
    """

    def __init__(self, max_wait_s: float, pool: Pool, tokens: TokenManager, upstream: Upstream, watch: ClientWatch,
                 *, clock: Clock = SYSTEM, hold_first_ping_s: float = 5.0, hold_ping_interval_s: float = 15.0,
                 overload_backoff_s: float = 0.5):
        self.max_wait_s = max_wait_s
        self.pool = pool
        self.tokens = tokens
        self.upstream = upstream
        #: each account's configuration by name (set by the server on start and reload: see :meth:`set_accounts`)
        self.accounts: dict[str, AccountConfig] = {}
        self._account_list: tuple[AccountConfig, ...] = ()  # the same, in config order
        #: the ``[models]`` table (set by the server on start and reload: see :meth:`set_models`)
        self.models = ModelMap()
        self._by_model = False  # whether a request's model can decide its route (see routing_matters)
        self._upstreams: dict[str, Upstream] = {}  # other upstreams than ``upstream``, by base URL; guarded by:
        self._upstreams_lock = threading.Lock()
        self.watch = watch
        self.clock = clock
        self.hold_first_ping_s = hold_first_ping_s
        self.hold_ping_interval_s = hold_ping_interval_s
        self.overload_backoff_s = overload_backoff_s
        install_request_context()  # events and access lines carry the request's ids
        self.drain = Drain()  # the server's stop: begin() when it drains, stop() when the time is up
        self.finish = Finish(pool, clock, self.drain.stopping, watch)  # every request's ending
        #: the runtime overrides (:mod:`shunt_lib.overrides`; the server gives it the saved ones)
        self.overrides = Overrides()
        #: called with the reason each time a request moves to another account (what the account it
        #: left did: an :class:`~shunt_lib.outcome.Action` value, or ``connect_error``); quick, no I/O.
        self.failover_listeners: list[Callable[[str], None]] = []
        #: client tokens' limits and use (:mod:`shunt_lib.client_meter`; the server sets its own, kept on disk)
        self.meter = ClientMeter()

    def set_accounts(self, accounts: tuple[AccountConfig, ...]) -> None:
        """Use these accounts' configuration from the next attempt on (the server's start and reloads)."""
        self.accounts = {a.name: a for a in accounts}
        self._account_list = tuple(accounts)
        self._by_model = routing_matters(self._account_list, self.models)

    def set_models(self, models: ModelMap) -> None:
        """Route by this ``[models]`` table from the next request on (the server's start and reloads)."""
        self.models = models
        self._by_model = routing_matters(self._account_list, models)

    def upstream_for(self, base_url: str | None) -> Upstream:
        """The connection pool for ``base_url`` (None: the server's upstream), made at its first use."""
        if base_url is None:
            return self.upstream
        pool = self._upstreams.get(base_url)
        if pool is None:
            with self._upstreams_lock:
                pool = self._upstreams.get(base_url)
                if pool is None:
                    pool = self._upstreams[base_url] = Upstream(
                        base_url, maxsize=OTHER_UPSTREAM_MAXSIZE, first_byte_timeout_s=self.upstream.first_byte_timeout_s,
                        idle_timeout_s=self.upstream.idle_timeout_s)
        return pool

    def close_upstreams(self) -> None:
        """Close the pools :meth:`upstream_for` made (the server's own upstream is closed by the server)."""
        with self._upstreams_lock:
            for pool in self._upstreams.values():
                pool.close()
            self._upstreams.clear()

    # -- entry point ---------------------------------------------------------------------------
    def handle(self, conn: ClientConnection, request: ProxyRequest, dialect: Dialect = ANTHROPIC,
               applied: Applied | None = None) -> None:
        """Serve one proxied request end to end, writing the whole response to ``conn``.

        The runtime overrides (:mod:`shunt_lib.overrides`) are applied here to an Anthropic-dialect
        request; another dialect's door applies them before it reads the body and passes ``applied``.

        Never raises for upstream trouble or a client that hung up; a bug costs this request (a JSON
        500 if nothing was written yet) and closes the connection, never the thread.
        """
        with request_context(new_request_id(), request.client.name):
            if dialect.name == "anthropic":
                request, applied = self.overrides.apply(request)
            if applied is None:
                self._handle(conn, request, dialect, None)
                return
            out = conn.wfile
            conn.wfile = HeadField(out, applied)  # x-shunt-override on whatever answer goes out
            try:
                self._handle(conn, request, dialect, applied)
            finally:
                conn.wfile = out

    def _handle(self, conn: ClientConnection, request: ProxyRequest, dialect: Dialect, applied: Applied | None) -> None:
        client = ClientStream(conn)
        st = RequestState(request, dialect, client, session_key(request.headers.by_name, request.body),
                          self.clock.time() + self.max_wait_s, self.clock.monotonic())
        st.override = applied
        token = self.drain.enter(st.interrupt)
        try:
            if self.drain.draining.is_set():  # a new request on a kept-alive connection while shunt stops
                self.finish.answer_stopping(st)
                return
            try:
                client_gate.check_model(request.client, request.body)  # a client token's models: 403
                # Without an openai account or a [models] table, an Anthropic client's model decides nothing:
                # its body is not parsed (another dialect, e.g. the OpenAI door's, has its plan already made).
                if self._by_model or dialect is not ANTHROPIC:
                    st.plan = dialect.plan(request, self._account_list, self.models)
                    if st.plan is not None:
                        st.kinds = getattr(dialect, "routed_kinds", dialect.account_kinds)
                client_gate.admit(self.meter, st, self._account_list)  # its accounts (403), its limits (429)
            except (NoAccountForModel, PermissionDenied, ClientLimited) as err:
                self.finish.answer_error(st, err)
                return
            self._loop(st)
        except ClientGone:
            client.close_after()
        except Exception:  # a bug must cost one request, not the connection's thread or its accounting
            log.exception("internal error relaying %s %s", request.method, request.target.split("?", 1)[0])
            client.close_after()
            if not client.wrote:
                try:
                    self.finish.answer_error(st, ShuntError("shunt hit an internal error; see its log"))
                except ClientGone:
                    pass
        finally:
            self.drain.leave(token)
            client.unwatch()
            resp, st.active = st.active, None
            if resp is not None:
                resp.abort()  # never back into the pool half-read
            if not st.recorded:
                self.finish.record(st, st.account, 499)
            if st.ticket is not None:
                st.ticket.release()  # its client token's concurrency slot, once, however it ended

    def _loop(self, st: RequestState) -> None:
        """Route and attempt until a step says the request is done."""
        while True:
            if st.client.gone.is_set():
                self.finish.dropped(st)
                return
            if self.drain.stopping.is_set():
                self.finish.answer_stopping(st)
                return
            now = self.clock.time()
            plan, excluded = st.plan, st.dialect.excluded_accounts
            tried = (st.attempts.tried | excluded) if excluded else st.attempts.tried
            choice = self.pool.route(st.session, tried, now, kinds=st.kinds,
                                     allowed=st.allowed(plan.primary if plan else None), quota_free=st.quota_free)
            if choice is None and plan is not None and plan.fallback:  # only once no primary account can take it
                choice = self.pool.route(st.session, tried, now, kinds=st.kinds, allowed=st.allowed(plan.fallback),
                                         quota_free=st.quota_free)
            if choice is None and st.override is not None and st.override.fallback and self._fall_back(st, now):
                continue  # the fallback model's accounts can take it: route again
            if choice is None:
                step = self._nothing_usable(st, now)
            else:
                step = self._attempt(st, choice.name, choice.reason)
            if step is Next.DONE:
                return

    # -- one attempt on one account --------------------------------------------------------------
    def _attempt(self, st: RequestState, name: str, reason: str) -> Next:
        """Send the request through ``name``; relay a success, or decide what a failure means."""
        cred = self.tokens.get(name)
        if cred is None:
            self.pool.set_flag(name, reauth_required=True)
            st.attempts = st.attempts.skip(name)
            return Next.ROUTE
        if st.attempts.moving:
            left, status, cause = st.left or (None, None, "no_credential")
            events_log.info("request moved from %s to %s (%s)", left or "-", name, status or "no answer",
                            extra={"event": "failover", "account": name, "reason": reason, "from_account": left,
                                   "status": status, "cause": cause})
            for listener in self.failover_listeners:
                listener(cause)
        st.attempts = st.attempts.attempt(name)
        account = self.accounts.get(name) or AccountConfig(name, cred.kind)
        routed = st.plan.routes.get(name) if st.plan is not None else None
        if routed is None:
            exchange = st.exchange = st.dialect.exchange(st.request, account, cred.secret)
        else:
            _log_route(name, routed)
            exchange = st.exchange = st.dialect.exchange(st.request, account, cred.secret, routed)
        if exchange.local_answer is not None:  # answered by shunt itself (count_tokens estimate)
            self.finish.answer_local(st, name, *exchange.local_answer)
            return Next.DONE
        up, long_head = exchange.request, exchange.long_head
        upstream = self.upstream if exchange.base_url is None else self.upstream_for(exchange.base_url)
        set_upstream_request_id(None)
        st.watch_client(self.watch)  # a client that leaves while the head is awaited aborts the attempt
        st.cancel = Cancel()
        try:
            resp = upstream.send(up.method, up.target, up.headers, up.body, cancel=st.cancel,
                                 long_head=head_comes_late(up.method, up.target, up.body) if long_head is None
                                 else long_head)
        except UpstreamRequestInvalid:  # its text may quote the header value (a credential): never echoed
            self.finish.answer_error(st, BadRequest("the request cannot be forwarded: a header field name or "
                                                    "value cannot be sent (a control character or a bad name)"))
            return Next.DONE
        except UpstreamConnectError as exc:
            if st.client.gone.is_set():
                self.finish.dropped(st)
                return Next.DONE
            if self.drain.stopping.is_set():
                self.finish.answer_stopping(st)
                return Next.DONE
            events_log.warning("no answer via %s: %s", name, exc, extra={"event": "connect_error", "account": name})
            st.left = (name, None, "connect_error")
            st.attempts, step = st.attempts.after_connect_error(
                ConnectFailure(name, str(exc), isinstance(exc, UpstreamHeadTimeout)))
            if step is Step.ANSWER:
                self.finish.answer_failure(st, self.clock.time(), None)
                return Next.DONE
            return Next.ROUTE
        finally:
            st.cancel = None
        st.active = resp
        st.account = name
        set_upstream_request_id(resp.head.by_name.get("request-id"))
        if st.client.gone.is_set():  # the client left while the response head was awaited
            self.finish.dropped(st)
            return Next.DONE
        now = self.clock.time()
        if account.kind == "openai":
            rl = parse_openai_rate_limits(resp.head.by_name, now)
        else:
            rl = parse_rate_limits(resp.head.by_name, now)
        self.pool.record_rate_limits(name, rl, now)
        if 200 <= resp.head.status < 300:
            self.finish.relay_answer(st, name, resp)
            return Next.DONE
        return self._after_error(st, account, cred.access_token, resp, rl, now)

    def _after_error(self, st: RequestState, account: AccountConfig, access_token: str, resp: UpstreamResponse,
                     rl: RateLimitInfo | None, now: float) -> Next:
        """A non-2xx answer: read it, classify it, record what it means, and take the next step."""
        head, name, kind = resp.head, account.name, account.kind
        try:
            raw, complete = resp.read_small()
        except UpstreamStreamError:
            raw, complete = b"", True
            st.active = None
            resp.abort()
        if not complete:  # an error body over 1 MiB: nothing to classify it by
            self.finish.answer_oversized(st, name, resp, raw)
            return Next.DONE
        if st.active is not None:
            st.active = None  # first, so the disconnect watcher cannot touch a pooled connection
            resp.release()
        decoded = decode_body(raw, head.by_name.get("content-encoding", ""))
        if kind == "openai":
            outcome = classify_openai(head.status, head.by_name, decoded, now, account=name, provider=account.provider)
        else:
            outcome = classify(head.status, head.by_name, decoded, rl, now)
        st.left = (name, head.status, outcome.action.value)
        self.pool.record_outcome(name, outcome)
        if outcome.advice:  # waiting does not help (e.g. a provider that wants billing): say what does
            events_log.warning("%s", outcome.advice, extra={"event": "advice", "account": name})
        answer = UpstreamAnswer(name, head, raw)
        st.attempts, step = st.attempts.after(name, kind, outcome, answer)
        if step is Step.ANSWER:
            self.finish.answer_upstream(st, answer)
            return Next.DONE
        if step is Step.BACKOFF:
            events_log.info("%s is overloaded; retrying once elsewhere", name, extra={"event": "overloaded", "account": name})
            if self.clock.wait(st.client.gone, self.overload_backoff_s):
                self.finish.dropped(st)
                return Next.DONE
        elif step is Step.REFRESH:
            result = self.tokens.refresh(name, failed_access_token=access_token)
            if result.status is RefreshStatus.OK:
                st.attempts = st.attempts.retry(name)  # the same account, with the new token
            elif result.status in (RefreshStatus.INVALID_GRANT, RefreshStatus.COPY_ONLY):
                self.pool.set_flag(name, reauth_required=True)
        elif step is Step.DISABLE:
            self.pool.set_flag(name, disabled=True)
        elif step is Step.REAUTH:
            self.pool.set_flag(name, reauth_required=True)
        elif outcome.action is Action.SERVER_ERROR:
            events_log.warning("%s answered %d; trying another account", name, head.status,
                               extra={"event": "server_error", "account": name})
        return Next.ROUTE

    # -- the fallback override -------------------------------------------------------------------
    def _fall_back(self, st: RequestState, now: float) -> bool:
        """No account able to serve the requested model can take the request now: send it with the
        fallback model instead (:mod:`shunt_lib.overrides`), re-planned for that model, every account
        untried, if an account can take that model now. Once per request, and only while nothing was
        written to the client (the header names the fallback). :returns: whether it was taken."""
        fallback, st.override.fallback = st.override.fallback, None  # once per request
        request = st.request
        model = json_edit.get_member(request.body, "model")
        if not isinstance(model, str) or model == fallback or st.client.wrote:
            return False
        try:
            moved = request._replace(body=json_edit.set_member(request.body, "model", fallback))
            refit = getattr(st.dialect, "for_request", None)  # a dialect whose plan is made from the body
            dialect = refit(moved, self._account_list, self.models) if refit is not None else st.dialect
            plan = dialect.plan(moved, self._account_list, self.models)
        except (json_edit.NotAnObject, ShuntError) as exc:
            events_log.info("no fallback from %s to %s: %s", model, fallback, getattr(exc, "message", exc),
                            extra={"event": "fallback_model_unusable", "model": model, "upstream_model": fallback})
            return False
        kinds = getattr(dialect, "routed_kinds", dialect.account_kinds) if plan is not None else dialect.account_kinds
        if not self.pool.any_usable(now, dialect.excluded_accounts, kinds=kinds,
                                    allowed=plan.every if plan is not None else None):
            events_log.info("no fallback from %s to %s: no account can take %s now either", model, fallback, fallback,
                            extra={"event": "fallback_model_unusable", "model": model, "upstream_model": fallback})
            return False
        events_log.info("request for %s sent as %s: no account for %s can take it now (fallback override)",
                        model, fallback, model,
                        extra={"event": "fallback_model", "model": model, "upstream_model": fallback})
        st.request, st.dialect, st.plan, st.kinds = moved, dialect, plan, kinds
        st.attempts = st.attempts.after_hold()
        st.override.changes.append(("fallback", fallback))
        return True

    # -- nothing usable: hold or answer ------------------------------------------------------------
    def _nothing_usable(self, st: RequestState, now: float) -> Next:
        """No untried account can take the request now: hold it until one recovers within the
        deadline, or answer with the last failure, or with shunt's own 429 / 401."""
        kinds, allowed = st.kinds, st.allowed(st.plan.every if st.plan is not None else None)
        recovery = self.pool.soonest_recovery(now, kinds=kinds, allowed=allowed)
        # A quota-free request was offered every account whose credential works: waiting adds nothing.
        if recovery is not None and recovery[0] <= st.deadline_s and not st.quota_free:
            st.watch_client(self.watch)
            if st.hold is None:
                st.hold = Hold(self.clock, st.started, st.request.body, first_ping_s=self.hold_first_ping_s,
                               ping_interval_s=self.hold_ping_interval_s)
                events_log.info("holding a request: every account is busy; %s recovers in %s", recovery[1],
                                duration_text(recovery[0] - now),
                                extra={"event": "hold", "account": recovery[1], "until_s": recovery[0]})
            tried = st.attempts.tried | st.dialect.excluded_accounts
            if not st.hold.wait(st.client, st.dialect.ping,
                                lambda t: self.pool.any_usable(t, tried, kinds=kinds, allowed=allowed),
                                lambda t: self.pool.soonest_recovery(t, kinds=kinds, allowed=allowed), st.deadline_s,
                                stop=self.drain.stopping):
                self.finish.dropped(st)
                return Next.DONE
            st.attempts = st.attempts.after_hold()
            return Next.ROUTE
        self.finish.answer_failure(st, now, recovery)
        return Next.DONE


def _log_route(name: str, routed) -> None:
    """The events of a routed attempt: a configured fallback taken, a ``[models]`` rewrite applied."""
    if routed.is_fallback:
        events_log.info("request for %s falls back to %s (model %s)", routed.model, name, routed.upstream_model,
                        extra={"event": "fallback", "account": name, "model": routed.model,
                               "upstream_model": routed.upstream_model})
    elif routed.upstream_model != routed.model:
        events_log.info("model %s sent to %s as %s ([models])", routed.model, name, routed.upstream_model,
                        extra={"event": "model_rewrite", "account": name, "model": routed.model,
                               "upstream_model": routed.upstream_model})


def head_comes_late(method: str, target: str, body: bytes | None) -> bool:
    """Whether the upstream sends the response head only once the whole answer is generated: a
    ``POST /v1/messages`` whose body does not ask for a stream (docs/protocol.md §5.1, §5.3). Such a
    request may take minutes before its first byte; a streaming one sends its head at once.

    Byte searches, not a parse (bodies are large). Clients such as Claude Code put ``stream`` last: a
    body that ends with ``"stream": false}`` has it as a key of the outermost object, which answers
    without reading the rest (a scan of a 90 KB body costs about as much as the rest of the request's
    handling). Otherwise every ``"stream"`` is looked at: one inside a string is escaped and never
    matches; one nested in an object (a tool's input) may, which only shortens that request's wait to
    the first-byte timeout.
    """
    if method != "POST" or target.split("?", 1)[0] != "/v1/messages":
        return False
    if not body:
        return True
    if _ENDS_STREAM_FALSE.search(body, max(0, len(body) - 64)):
        return True
    at = body.rfind(b'"stream"')
    while at >= 0:
        if _STREAM_TRUE.match(body, at):
            return False
        at = body.rfind(b'"stream"', 0, at)
    return True


_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_ENDS_STREAM_FALSE = re.compile(rb'"stream"\s*:\s*false\s*\}\s*\Z')
