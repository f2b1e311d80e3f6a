"""The request pipeline: choose an account, forward, classify the answer, fail over or hold, relay.

One :class:`Relay` serves every request; per-request state lives in :class:`_Run`. The rule that
decides what a failure may do (STYLE.md §7.5): until the first upstream byte is written to the client,
shunt may try another account or answer with its own error; after that it can only end an SSE stream
with ``event: error``. A held streaming request has already been sent ``200`` and pings, so its
eventual error is an SSE ``error`` event too.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import threading
import time
from http import HTTPStatus
from typing import Callable, NamedTuple, Protocol

from . import errors
from .config import ServerConfig
from .oauth import TokenManager
from .outcome import Action, classify
from .ratelimit import parse_rate_limits
from .sessions import session_key
from .state import Pool
from .upstream import (Upstream, UpstreamConnectError, UpstreamRequestInvalid, UpstreamStreamError, iter_body,
                       read_small)
from .usage import UsageTap, decode_body, make_decoder
from .watch import ClientWatch

log = logging.getLogger("shunt.relay")
access_log = logging.getLogger("shunt.access")
events_log = logging.getLogger("shunt.events")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade"})
DROP_REQUEST = HOP_BY_HOP | {"host", "content-length", "authorization", "x-api-key", "accept-encoding"}
DROP_RESPONSE = HOP_BY_HOP | {"content-length"}
DECODABLE = ("gzip", "deflate")  # what the standard library's zlib can decode
OAUTH_BETA = "oauth-2025-04-20"  # required with subscription OAuth (reference §3.1)
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
MODEL_RE = re.compile(rb'(?<!\\)"model"\s*:\s*"([^"\\]{1,200})"')


class ClientGone(Exception):
    """Writing to the client failed: it hung up. Raised from the client side only, never for upstream trouble."""


class ClientSide(Protocol):
    """What the relay needs from the HTTP handler that owns the client connection."""

    sock: socket.socket
    close_connection: bool

    def write(self, data: bytes) -> None: ...


def narrow_accept_encoding(value: str) -> str | None:
    """Keep only encodings the standard library decodes (gzip, deflate, identity); None if none remain."""
    keep = []
    for part in value.split(","):
        token = part.split(";")[0].strip().lower()
        if token in DECODABLE or token == "identity":
            keep.append(part.strip())
    return ", ".join(keep) if keep else None


def upstream_headers(client_headers: list[tuple[str, str]], kind: str, secret: str) -> dict[str, str]:
    """Client headers as forwarded: open list minus hop-by-hop, ``host``, the client's credential and
    the headers named by ``Connection``; ``accept-encoding`` narrowed; the account's credential added.

    OAuth accounts get ``Authorization: Bearer`` and ``oauth-2025-04-20`` appended to ``anthropic-beta``
    if missing (reference §3.1, §8.5); API-key accounts get ``x-api-key``. A header the client sent
    twice is joined with ", " (equivalent for list-valued headers, RFC 9110 §5.3).
    :returns: a plain dict (the client's spelling of each name), cheaper for urllib3 than a multi-dict.
    """
    out: dict[str, str] = {}
    lower_names: dict[str, str] = {}
    connection_named = ()
    for k, v in client_headers:
        lk = k.lower()
        if lk in DROP_REQUEST:
            if lk == "connection":
                connection_named = {t.strip().lower() for t in v.split(",")}
            elif lk == "accept-encoding":
                narrowed = narrow_accept_encoding(v)
                if narrowed:
                    out[k] = narrowed
                    lower_names[lk] = k
            continue
        prev = lower_names.get(lk)
        if prev is None:
            out[k] = v
            lower_names[lk] = k
        else:
            out[prev] = out[prev] + ", " + v
    for lk in connection_named:
        if lk in lower_names:
            del out[lower_names.pop(lk)]
    if kind == "oauth":
        out["authorization"] = "Bearer " + secret
        beta_name = lower_names.get("anthropic-beta")
        if beta_name is None:
            out["anthropic-beta"] = OAUTH_BETA
        elif OAUTH_BETA not in (t.strip() for t in out[beta_name].split(",")):
            out[beta_name] = out[beta_name] + "," + OAUTH_BETA
    else:
        out["x-api-key"] = secret
    return out


class _Failure(NamedTuple):
    """The last failure of a request worth returning if nothing else works: an upstream answer
    (``status`` > 0, forwarded unchanged), or a connection error (``status`` 0, ``body`` its text)."""

    account: str
    status: int
    headers: list
    body: bytes


class _Run:
    """Per-request state of one trip through :meth:`Relay.handle`."""

    __slots__ = ("client", "method", "path", "headers", "body", "session", "tried", "refreshed", "overload_retried",
                 "last_error", "deadline_s", "started", "head_sent", "is_stream", "gone", "active_resp",
                 "watching", "attempts", "held_s", "next_ping", "account", "tap", "logged", "wrote", "chunked_ok")

    def __init__(self, client, method, path, headers, body, deadline_s):
        self.client, self.method, self.path, self.headers, self.body = client, method, path, headers, body
        self.session = None
        self.tried: set = set()
        self.refreshed: set = set()
        self.overload_retried = False
        self.last_error: _Failure | None = None
        self.deadline_s = deadline_s
        self.started = time.monotonic()
        self.head_sent = False  # held stream: 200 + SSE headers already sent
        self.is_stream = None
        self.gone = threading.Event()
        self.active_resp = None
        self.watching = False
        self.attempts = 0
        self.held_s = 0.0
        self.next_ping = None  # monotonic time of the next keep-alive ping while held
        self.account = None  # the account whose response is being relayed
        self.tap = None  # its usage tap, so a cancelled stream is still counted
        self.logged = False  # the access record was written
        self.wrote = False  # any byte reached the client
        # HTTP/1.0 clients get close-delimited bodies instead of chunked ones (RFC 9112 §6.1).
        self.chunked_ok = getattr(client, "request_version", "HTTP/1.1") != "HTTP/1.0"


class Relay:
    """Forwards client requests to the pool's accounts.

    :param hold_first_ping_s: a held streaming request gets its 200 and first ``ping`` after this long.
    :param hold_ping_interval_s: then a ``ping`` this often.
    :param overload_backoff_s: pause before moving a request that got 529/overloaded.
    """

    def __init__(self, server: ServerConfig, pool: Pool, tokens: TokenManager, upstream: Upstream, watch: ClientWatch,
                 *, clock: Callable[[], float] = time.time, hold_first_ping_s: float = 5.0,
                 hold_ping_interval_s: float = 15.0, overload_backoff_s: float = 0.5):
        self.server = server
        self.pool = pool
        self.tokens = tokens
        self.upstream = upstream
        self.watch = watch
        self.clock = clock
        self.hold_first_ping_s = hold_first_ping_s
        self.hold_ping_interval_s = hold_ping_interval_s
        self.overload_backoff_s = overload_backoff_s

    # -- entry point ---------------------------------------------------------------------
    def handle(self, client: ClientSide, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
               lower: dict[str, str] | None = None) -> None:
        """Serve one proxied request end to end; writes the whole response to ``client``.

        :param headers: the client's headers in order, as sent; ``lower``: the same keyed by lower-case name.
        Never raises for upstream trouble; an ``OSError`` from writing to a gone client is absorbed.
        """
        now = self.clock()
        run = _Run(client, method, path, headers, body, now + self.server.max_wait_s)
        if lower is None:
            lower = {k.lower(): v for k, v in headers}
        run.session = session_key(lower, body)
        try:
            self._loop(run)
        except ClientGone:
            client.close_connection = True
        except Exception:  # a bug must cost one request, not the connection's thread or its accounting
            log.exception("internal error relaying %s %s", method, path.split("?", 1)[0])
            client.close_connection = True
            if not run.wrote:
                try:
                    self._answer_error(run, errors.ShuntError("shunt hit an internal error; see its log"))
                except ClientGone:
                    pass
        finally:
            if run.watching:
                self.watch.remove(client.sock)
            resp, run.active_resp = run.active_resp, None
            if resp is not None:
                resp.close()  # never back into the pool half-read
            if not run.logged:
                self._log(run, run.account, 499, run.tap)

    def _out(self, run: _Run, data: bytes) -> None:
        """Write to the client. :raises ClientGone: if it hung up."""
        try:
            run.client.write(data)
        except OSError as exc:
            run.gone.set()
            raise ClientGone(str(exc)) from exc
        run.wrote = True

    def _frame(self, run: _Run, data: bytes) -> bytes:
        """One piece of a body whose length is not known up front: a chunk, or raw for HTTP/1.0."""
        return _chunk(data) if run.chunked_ok else data

    def _end(self, run: _Run) -> bytes:
        """The end of such a body: the last chunk, or nothing (HTTP/1.0 ends with the connection)."""
        if run.chunked_ok:
            return b"0\r\n\r\n"
        run.client.close_connection = True
        return b""

    def _watch(self, run: _Run) -> None:
        if run.watching:
            return

        def gone() -> None:
            run.gone.set()
            resp = run.active_resp
            if resp is not None:
                try:
                    resp.shutdown()
                except Exception:  # already released or closed: nothing to unblock
                    pass

        run.watching = self.watch.add(run.client.sock, gone)

    def _loop(self, run: _Run) -> None:
        while True:
            if run.gone.is_set():
                return self._dropped(run)
            now = self.clock()
            choice = self.pool.route(run.session, run.tried, now)
            if choice is None:
                if not self._nothing_usable(run, now):
                    return
                continue
            if self._attempt(run, choice.name, choice.reason):
                return

    # -- one attempt on one account ------------------------------------------------------
    def _attempt(self, run: _Run, name: str, reason: str) -> bool:
        """Try ``name``. :returns: True if the request is finished (answered or dropped)."""
        cred = self.tokens.get(name)
        if cred is None:
            self.pool.set_flag(name, reauth_required=True)
            run.tried.add(name)
            return False
        if run.attempts and run.tried:
            events_log.info("request moved to %s", name, extra={"event": "failover", "account": name, "reason": reason})
        run.attempts += 1
        hdrs = upstream_headers(run.headers, cred.kind, cred.secret)
        try:
            resp = self.upstream.send(run.method, run.path, hdrs, run.body if run.body or run.method != "GET" else None)
        except UpstreamRequestInvalid as exc:
            self._answer_error(run, errors.BadRequest(f"the request cannot be forwarded: {exc}"))
            return True
        except UpstreamConnectError as exc:
            events_log.warning("upstream unreachable via %s: %s", name, exc, extra={"event": "connect_error", "account": name})
            run.tried.add(name)
            if run.last_error is None or run.last_error.status == 0:
                run.last_error = _Failure(name, 0, [], str(exc).encode())
            return False
        run.active_resp = resp
        run.account = name
        if run.gone.is_set():  # the client left while the response head was awaited
            return self._dropped(run)
        now = self.clock()
        header_items = list(resp.headers.items())
        lower = {k.lower(): v for k, v in header_items}  # one case-folded view for every lookup below
        rl = parse_rate_limits(lower, now)
        self.pool.record_rate_limits(name, rl, now)
        status = resp.status
        if 200 <= status < 300:
            self._relay_success(run, name, resp, header_items, lower)
            return True
        try:
            raw, complete = read_small(resp)
        except UpstreamStreamError:
            raw, complete = b"", True
            run.active_resp = None
            resp.close()
        if not complete:
            # An error body over 1 MiB: nothing to classify it by; pass it through whole, as it comes.
            if run.head_sent:
                self._end_held_stream_with_error(run, errors.error_body(
                    "api_error", f"upstream answered {status} with a body over 1 MiB"))
                self._log(run, name, status, None)
                return True
            self._relay_success(run, name, resp, header_items, lower, prefix=raw)
            return True
        if run.active_resp is not None:
            run.active_resp = None  # first, so the disconnect watcher cannot touch a pooled connection
            resp.release_conn()
        body = decode_body(raw, lower.get("content-encoding", ""))
        outcome = classify(status, lower, body, rl, now)
        act = outcome.action
        if act is Action.RETURN:
            self._answer_upstream(run, name, status, header_items, raw)
            return True
        run.tried.add(name)
        if act is Action.EXHAUSTED:
            self.pool.mark_exhausted(name, outcome.until_s)
            run.last_error = None  # quota: if nothing else works the answer is our 429, with resets
        elif act is Action.THROTTLE:
            self.pool.cool(name, outcome.until_s, "throttled (429)")
            run.last_error = None
        elif act is Action.FORBIDDEN:
            self.pool.cool(name, outcome.until_s, "forbidden (403)")
            run.last_error = _Failure(name, status, header_items, raw)
        elif act is Action.SERVER_ERROR:
            events_log.warning("%s answered %d; trying another account", name, status,
                               extra={"event": "server_error", "account": name})
            run.last_error = _Failure(name, status, header_items, raw)
        elif act is Action.OVERLOADED:
            if run.overload_retried:
                self._answer_upstream(run, name, status, header_items, raw)
                return True
            run.overload_retried = True
            run.last_error = _Failure(name, status, header_items, raw)
            events_log.info("%s is overloaded; retrying once elsewhere", name, extra={"event": "overloaded", "account": name})
            if run.gone.wait(self.overload_backoff_s):
                return self._dropped(run) or True
        elif act is Action.AUTH:
            run.last_error = _Failure(name, status, header_items, raw)
            self._on_unauthorized(run, name, cred)
        return False

    def _on_unauthorized(self, run: _Run, name: str, cred) -> None:
        if cred.kind == "api_key":
            self.pool.set_flag(name, disabled=True)
            return
        if name in run.refreshed:
            self.pool.set_flag(name, reauth_required=True)
            return
        run.refreshed.add(name)
        result = self.tokens.refresh(name, failed_access_token=cred.access_token)
        if result.status == "ok":
            run.tried.discard(name)  # retry the same account with the new token
        elif result.status in ("invalid_grant", "copy_only"):
            self.pool.set_flag(name, reauth_required=True)

    # -- nothing usable: hold or answer ----------------------------------------------------
    def _nothing_usable(self, run: _Run, now: float) -> bool:
        """:returns: True to route again (after a hold), False if the request was answered or dropped."""
        recovery = self.pool.soonest_recovery(now)
        if recovery is not None and recovery[0] <= run.deadline_s:
            if not self._hold(run, recovery):
                self._dropped(run)
                return False
            run.tried.clear()
            run.refreshed.clear()
            return True
        failure = run.last_error
        if failure is not None and failure.status:
            self._answer_upstream(run, *failure)
            return False
        if failure is not None:
            self._answer_error(run, errors.UpstreamUnreachable(
                "shunt could not reach the upstream API: " + failure.body.decode(errors="replace")))
            return False
        self._answer_error(run, self._pool_exhausted_error(now, recovery))
        return False

    def _pool_exhausted_error(self, now: float, recovery) -> errors.ShuntError:
        views = self.pool.views(now)
        if not views:
            return errors.Unauthorized("shunt has no accounts: add one with `shunt import` or `shunt add-account NAME --api-key`")
        parts = []
        for v in views:
            at = v.available_at_s(now)
            if at is None:
                parts.append(f"{v.name} needs attention ({v.status(now)})")
            else:
                parts.append(f"{v.name} resets at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(at))} (in {_dur(at - now)})")
        if recovery is None:
            return errors.Unauthorized("no account of shunt's pool can take requests: " + "; ".join(parts))
        retry_after = max(1, math.ceil(recovery[0] - now))
        return errors.PoolRateLimited("every account of shunt's pool is rate-limited: " + "; ".join(parts),
                                      headers={"retry-after": str(retry_after)})

    def _hold(self, run: _Run, recovery: tuple[float, str]) -> bool:
        """Wait until an account recovers, pinging held streams. :returns: False if the client left."""
        if run.is_stream is None:
            run.is_stream = _wants_stream(run.body)
        self._watch(run)
        held_since = time.monotonic()
        if run.held_s == 0:
            events_log.info("holding a request: every account is busy; %s recovers in %s", recovery[1],
                            _dur(recovery[0] - self.clock()), extra={"event": "hold", "account": recovery[1],
                                                                     "until_s": recovery[0]})
        if run.next_ping is None:
            run.next_ping = run.started + self.hold_first_ping_s
        try:
            while True:
                now = self.clock()
                if self.pool.any_usable(now, exclude=run.tried):
                    return True  # an account this request has not failed on is free
                rec = self.pool.soonest_recovery(now)
                if rec is None or rec[0] > run.deadline_s:
                    return True  # the caller answers
                mono = time.monotonic()
                if run.is_stream and mono >= run.next_ping:
                    if not run.head_sent:
                        self._send_sse_head(run)
                    self._out(run, self._frame(run, PING))
                    run.next_ping = mono + self.hold_ping_interval_s
                wait = rec[0] - now
                if run.is_stream:
                    wait = min(wait, run.next_ping - mono)
                if run.gone.wait(max(0.0, min(wait, 1.0)) + 0.001):
                    return False
        finally:
            run.held_s += time.monotonic() - held_since

    def _send_sse_head(self, run: _Run) -> None:
        framing = b"transfer-encoding: chunked\r\n" if run.chunked_ok else b"connection: close\r\n"
        self._out(run, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                       b"cache-control: no-cache\r\nx-shunt-held: 1\r\n" + framing + b"\r\n")
        run.head_sent = True

    # -- answers ---------------------------------------------------------------------------
    def _answer_upstream(self, run: _Run, name: str, status: int, header_items, raw: bytes) -> None:
        """Send an upstream (error) answer unchanged, or as an SSE error event on a held stream."""
        if run.head_sent:
            body = decode_body(raw, _get(header_items, "content-encoding"))
            self._end_held_stream_with_error(run, body)
        else:
            head = _head(status, header_items, name, content_length=len(raw))
            self._out(run, head + raw)
        self._log(run, name, status, None)

    def _answer_error(self, run: _Run, err: errors.ShuntError) -> None:
        body = err.body()
        if run.head_sent:
            self._end_held_stream_with_error(run, body)
        else:
            extra = "".join(f"{k}: {v}\r\n" for k, v in err.headers.items())
            self._out(run, (f"HTTP/1.1 {err.status} {_reason(err.status)}\r\ncontent-type: application/json\r\n"
                            f"content-length: {len(body)}\r\n{extra}\r\n").encode() + body)
        self._log(run, None, err.status, None)

    def _end_held_stream_with_error(self, run: _Run, body: bytes) -> None:
        try:
            payload = json.dumps(json.loads(body), separators=(",", ":")).encode()
        except ValueError:
            payload = errors.error_body("api_error", body.decode(errors="replace")[:500])
        self._out(run, self._frame(run, b"event: error\ndata: " + payload + b"\n\n") + self._end(run))

    def _dropped(self, run: _Run) -> bool:
        """The client hung up: record the request (with whatever usage was seen) as 499."""
        run.client.close_connection = True
        events_log.info("client disconnected; request dropped", extra={"event": "dropped", "account": run.account})
        self._log(run, run.account, 499, run.tap)
        return True

    # -- success: relay the body as it arrives ----------------------------------------------
    def _relay_success(self, run: _Run, name: str, resp, header_items: list, lower: dict, prefix: bytes = b"") -> None:
        """Relay ``resp`` (head as received, body piece by piece as it arrives); ``prefix``: body already read."""
        encoding = lower.get("content-encoding", "")
        tap = run.tap = UsageTap(lower.get("content-type", ""), encoding)
        length = lower.get("content-length")
        no_body = run.method == "HEAD" or resp.status in (204, 304)
        if tap.sse:
            self._watch(run)
        decoder = None
        pending = b""
        if run.head_sent:
            # A held stream: 200 and SSE headers are out, so send decoded events after an SSE comment.
            framed = True
            decoder = make_decoder(encoding)
            self._out(run, self._frame(run, f": x-shunt-account {name}\n\n".encode()))
        else:
            framed = length is None and not no_body  # we frame it: chunked, or close-delimited for HTTP/1.0
            chunked = framed and run.chunked_ok
            if framed and not run.chunked_ok:
                run.client.close_connection = True
            pending = _head(resp.status, header_items, name, content_length=None if framed else length,
                            chunked=chunked, close=framed and not run.chunked_ok)
            if tap.sse or no_body:
                self._out(run, pending)  # an event stream's head goes out at once
                pending = b""
        broke = None
        try:
            if not no_body:
                for piece in (_prepend(prefix, iter_body(resp)) if prefix else iter_body(resp)):
                    if run.gone.is_set():
                        break
                    tap.feed(piece)
                    data = decoder.decompress(piece) if decoder is not None else piece
                    if data:
                        # A JSON body's head rides with its first piece: one write, no extra wake-up.
                        self._out(run, pending + (self._frame(run, data) if framed else data))
                        pending = b""
        except UpstreamStreamError as exc:
            broke = exc
        if run.gone.is_set():
            self._dropped(run)
            return
        if pending:
            self._out(run, pending)
        if broke is not None:
            events_log.warning("upstream stream from %s broke: %s", name, broke,
                               extra={"event": "stream_error", "account": name})
            if framed and (tap.sse or run.head_sent):
                self._out(run, self._frame(run, _stream_error(broke)) + self._end(run))
            else:
                run.client.close_connection = True
            run.active_resp = None
            resp.close()
        else:
            if framed:
                self._out(run, self._end(run))
            run.active_resp = None  # first, so the disconnect watcher cannot touch a pooled connection
            resp.release_conn()
        tap.finish()
        self._log(run, name, resp.status, tap)

    # -- accounting -------------------------------------------------------------------------
    def _log(self, run: _Run, name: str | None, status: int, tap: UsageTap | None) -> None:
        run.logged = True
        duration_ms = int((time.monotonic() - run.started) * 1000)
        usage = tap.usage if tap is not None else {}
        model = tap.model if tap is not None and tap.model else ""
        if not model:
            m = MODEL_RE.search(run.body[:65536])
            model = m.group(1).decode(errors="replace") if m else ""
        entry = {
            "ts_s": int(self.clock()),
            "account": name,
            "method": run.method,
            "path": run.path.split("?", 1)[0],
            "model": model,
            "status": status,
            "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage.get("output_tokens", 0),
            "cache_read_tokens": usage.get("cache_read_tokens", 0),
            "cache_creation_tokens": usage.get("cache_creation_tokens", 0),
            "duration_ms": duration_ms,
            "attempts": run.attempts,
            "held_ms": int(run.held_s * 1000),
        }
        self.pool.record_request(entry)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                f"{run.method} {entry['path']} account={name or '-'} model={model or '-'} status={status} "
                f"in={entry['input_tokens']} out={entry['output_tokens']} cache_read={entry['cache_read_tokens']} "
                f"cache_write={entry['cache_creation_tokens']} {duration_ms}ms"
                + (f" attempts={run.attempts}" if run.attempts > 1 else ""),
                extra=_REQUEST_EVENT,
            )


_REQUEST_EVENT = {"event": "request"}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _stream_error(exc: Exception) -> bytes:
    return b"event: error\ndata: " + errors.error_body("api_error", f"upstream stream broke: {exc}") + b"\n\n"


def _get(items, name: str) -> str:
    for k, v in items:
        if k.lower() == name:
            return v
    return ""


_REASONS = {int(s): s.phrase for s in HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def _prepend(prefix: bytes, pieces):
    if prefix:
        yield prefix
    yield from pieces


def _wants_stream(body: bytes) -> bool:
    """Whether the request asked for SSE: the top-level ``stream`` field (parsed only when holding)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("stream") is True


def _head(status: int, items, account: str, *, content_length=None, chunked: bool = False, close: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
    for k, v in items:
        lk = k.lower()
        if lk in DROP_RESPONSE or lk == "x-shunt-account":
            continue
        lines.append(f"{k}: {v}\r\n")
    lines.append(f"x-shunt-account: {account}\r\n")
    if chunked:
        lines.append("transfer-encoding: chunked\r\n")
    elif content_length is not None:
        lines.append(f"content-length: {content_length}\r\n")
    if close:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", errors="replace")


def _dur(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
