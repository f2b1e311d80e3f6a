"""How a proxied request ends: its answer on the client stream, and its record.

The relay decides *that* a request ends and with what (an upstream answer to relay, the last failure,
shunt's own error, a stop, a client that left); :class:`Finish` carries it out. Every byte goes
through the request's :class:`~shunt_lib.client.ClientStream`, every shape through its
:class:`~shunt_lib.dialect.Dialect`, and every ending is counted once by :meth:`Finish.record`
(the pool's request record and the access-log line).
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Callable, Iterator

from . import sse
from .attempts import ConnectFailure, UpstreamAnswer
from .clock import Clock
from .errors import ShuntError, ShuttingDown, UpstreamTimeout, UpstreamUnreachable
from .forwarding import ResponseHead
from .logfmt import current_request_id, upstream_request_id
from .pool_limit import pool_unavailable_error
from .record import AccessLine, RequestRecord, request_record
from .request_state import RequestState
from .state import Pool
from .upstream import UpstreamResponse
from .usage import UsageTap
from .watch import ClientWatch

access_log = logging.getLogger("shunt.access")
events_log = logging.getLogger("shunt.events")

_STOPPING = "shunt is stopping; retry the request"
_CUT = "shunt is stopping and ended this stream before it finished; retry the request"


class Finish:
    """Ends requests for one :class:`~shunt_lib.relay.Relay`. Any number of request threads may use
    it at once: each call touches only its own request's state, the pool and the logs.

    :param stopping: set when shunt stops with requests in progress (:attr:`Drain.stopping
        <shunt_lib.drain.Drain.stopping>`): a stream being relayed then ends with an SSE ``error``.
    :param watch: the client hang-up watcher, enrolled when an event stream starts.
    """

    __slots__ = ("pool", "clock", "stopping", "watch", "listeners")

    def __init__(self, pool: Pool, clock: Clock, stopping: threading.Event, watch: ClientWatch):
        self.pool = pool
        self.clock = clock
        self.stopping = stopping
        self.watch = watch
        #: called with each finished request's record on its request thread (e.g. the usage history's
        #: queue): each must be quick and do no I/O.
        self.listeners: list[Callable[[RequestRecord], None]] = []

    # -- shunt's own answers and the last failure --------------------------------------------------
    def answer_error(self, st: RequestState, err: ShuntError) -> None:
        """Answer with shunt's own error ``err`` (an SSE ``error`` event if the request was held)."""
        st.client.send_json(err.status, st.dialect.error_body(err), err.headers)
        self.record(st, None, err.status)

    def answer_upstream(self, st: RequestState, answer: UpstreamAnswer) -> None:
        """Answer with an upstream answer read whole (an error), as the dialect shows it."""
        assert st.exchange is not None  # an upstream answer comes from an attempt
        head, body = st.exchange.client_error(answer.head, answer.body)
        st.client.send_upstream_answer(answer.account, head, body)
        self.record(st, answer.account, answer.head.status)

    def answer_failure(self, st: RequestState, now: float, recovery: tuple[float, str] | None) -> None:
        """Answer with the request's last failure, or with shunt's own 429 / 401 if it has none.

        :param now: epoch s; :param recovery: the pool's soonest recovery ``(epoch_s, name)``, or None.
        """
        failure = st.attempts.last_failure
        if isinstance(failure, UpstreamAnswer):
            self.answer_upstream(st, failure)
        elif isinstance(failure, ConnectFailure):
            cls = UpstreamTimeout if failure.timed_out else UpstreamUnreachable
            self.answer_error(st, cls("shunt got no answer from the upstream API: " + failure.message))
        else:
            views = self.pool.views(now, kinds=st.kinds, allowed=st.allowed(st.plan.every if st.plan is not None else None))
            self.answer_error(st, pool_unavailable_error(views, now, recovery))

    def answer_local(self, st: RequestState, name: str, head: ResponseHead, body: bytes) -> None:
        """Answer for ``name`` with an answer shunt made itself (e.g. a ``count_tokens`` estimate for an
        account whose provider has no such endpoint), counted as that account's answer."""
        st.client.send_upstream_answer(name, head, body)
        self.record(st, name, head.status)

    def answer_stopping(self, st: RequestState) -> None:
        """shunt is stopping: a 529 ``overloaded_error`` (an SSE error event if held), then close."""
        st.client.close_after()
        self.answer_error(st, ShuttingDown(_STOPPING))

    def dropped(self, st: RequestState) -> None:
        """The client hung up: record the request (with whatever usage was seen) as 499."""
        st.client.close_after()
        events_log.info("client disconnected; request dropped", extra={"event": "dropped", "account": st.account})
        self.record(st, st.account, 499)

    # -- an upstream answer relayed as it arrives ----------------------------------------------------
    def answer_oversized(self, st: RequestState, name: str, resp: UpstreamResponse, prefix: bytes) -> None:
        """An error answer with a body over the 1 MiB read to classify it (``prefix``: the bytes read):
        pass it through as it comes, or end a held stream with shunt's error naming its status."""
        status = resp.head.status
        if st.client.sse_head_sent:
            st.client.end_with_sse_error(st.dialect.error_body(
                ShuntError(f"upstream answered {status} with a body over 1 MiB")))
            self.record(st, name, status)
        else:
            self.relay_answer(st, name, resp, prefix=prefix)

    def relay_answer(self, st: RequestState, name: str, resp: UpstreamResponse, prefix: bytes = b"") -> None:
        """Relay ``resp`` (``name``'s answer) to the client as it arrives: head, then the body piece by
        piece; then release its connection to the pool, or abort it if the body broke off.

        :param prefix: body bytes already read from ``resp`` (an error body too large to classify).
        """
        head, client, exchange = resp.head, st.client, st.exchange
        assert exchange is not None  # an upstream answer comes from an attempt
        # A translating exchange's usage is read from what the client gets (Anthropic's shape); a
        # pass-through's from the upstream's bytes, which are the same.
        translated = exchange.translated
        shown = exchange.client_head(head)
        tapped = shown if translated else head
        tap_class = exchange.usage_tap or UsageTap  # an OpenAI pass-through reads OpenAI's usage
        tap = st.tap = tap_class(tapped.by_name.get("content-type", ""), tapped.by_name.get("content-encoding", ""))
        no_body = st.request.method == "HEAD" or head.status in (204, 304)
        if tap.sse:
            st.watch_client(self.watch)
        client.start_answer(shown, name, no_body=no_body, eager=tap.sse)
        pieces = itertools.chain((prefix,), resp.iter_body()) if prefix else resp.iter_body()
        if no_body:
            broke = None
        elif translated:
            broke = client.relay_body(_tapped(tap, exchange.client_body(head, pieces)))
        else:
            broke = client.relay_body(exchange.client_body(head, _tapped(tap, pieces)))
        if client.gone.is_set():
            self.dropped(st)
            return
        if broke is None:
            client.finish_answer()
            st.active = None  # first, so the disconnect watcher cannot touch a pooled connection
            resp.release()
        elif self.stopping.is_set():
            events_log.warning("shunt is stopping: ended a stream from %s before it finished", name,
                               extra={"event": "stream_cut", "account": name})
            client.fail_answer(sse.event("error", st.dialect.error_body(ShuttingDown(_CUT))), sse_stream=tap.sse)
            st.active = None
            resp.abort()
        else:
            events_log.warning("upstream stream from %s broke: %s", name, broke,
                               extra={"event": "stream_error", "account": name})
            text = f"upstream stream broke: {broke}"
            broken_event = exchange.broken_event  # a translated stream ends in its own way
            client.fail_answer(broken_event(text) if broken_event is not None
                               else sse.event("error", st.dialect.error_body(ShuntError(text))), sse_stream=tap.sse)
            st.active = None
            resp.abort()
        tap.finish()
        self.record(st, name, head.status, broke=broke is not None)

    # -- accounting -----------------------------------------------------------------------------------
    def record(self, st: RequestState, name: str | None, status: int, *, broke: bool = False) -> None:
        """Count the finished request in the pool and write its access-log line.

        :param name: the account whose answer the client got, or None; :param status: the status it
            got (499: it left first); :param broke: the upstream body broke off mid-way.
        """
        st.recorded = True
        req = st.request
        record = request_record(req.method, req.target, req.body, name, status, st.tap, ts_s=self.clock.time(),
                                duration_s=self.clock.monotonic() - st.started,
                                held_s=st.hold.held_s if st.hold is not None else 0.0,
                                attempts=st.attempts.count, broke=broke, request_id=current_request_id(),
                                upstream_request_id=upstream_request_id(),
                                served_model=st.exchange.served_model if st.exchange is not None else None,
                                client=req.client)
        cost_usd = self.pool.record_request(record)
        if st.ticket is not None:
            st.ticket.finish(record, cost_usd)  # charged to its client token, its slot freed
        for listener in self.listeners:
            listener(record)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(AccessLine(record), extra={"event": "request", "request_record": record})


def _tapped(tap: UsageTap, pieces: Iterator[bytes]) -> Iterator[bytes]:
    """``pieces`` unchanged, each one fed to ``tap`` on its way."""
    for piece in pieces:
        tap.feed(piece)
        yield piece
