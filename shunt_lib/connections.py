"""Client connections held to :mod:`shunt_lib.limits`: read deadlines, the connection cap, 408 and 503.

* :class:`DeadlineReader` is the raw stream under a handler's ``rfile``: every read waits at most
  until the deadline of the current phase (the request's head, an idle wait, a body at its minimum
  rate), and raises :class:`~shunt_lib.errors.RequestTimeout` past it.
* :class:`ConnectionTable` counts the connections served against ``max_connections``, keeps those
  waiting for a request in the order they began to wait, and evicts the longest-waiting one when a
  new connection needs its place.
* :func:`reject` answers a connection over the cap with a 503 from the accept loop, no thread started.
* :class:`GuardedHandler` is the request handler's base: it sets the phases and answers a timeout or
  an eviction with a 408 before closing.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from .errors import RequestTimeout, ServiceUnavailable
from .forwarding import json_head
from .limits import Admission, Limits, admission, body_deadline_s

log = logging.getLogger("shunt.connections")

_HEAD = "request line and headers not received within {header_timeout_s:g} s"
_IDLE = "no request within {idle_timeout_s:g} s on an idle connection"
_BODY = "request body slower than {min_body_rate_bytes_s} bytes/s after {header_timeout_s:g} s"
EVICTED = "shunt closed this connection, which was waiting for a request, to serve another (server.max_connections)"
_DRAIN_BYTES = 1 << 16  # how much of an unread request is read before a close, so that it is not a reset
_TIMEOUT_SLACK_S = 0.05  # how far past a deadline a read may wait, to spare a settimeout() per read


class DeadlineReader(io.RawIOBase):
    """A socket's receiving side, with a deadline per phase (wrap it in ``io.BufferedReader``).

    Phases, set by the connection's own thread: :meth:`expect_head`, :meth:`expect_idle`,
    :meth:`expect_body`, and :meth:`done` (no deadline: the socket's ``write_timeout_s`` applies to
    writes and stray reads alike). :attr:`evicted` is set by :meth:`ConnectionTable.admit` from the
    accept thread.

    :param write_timeout_s: the socket timeout outside the reading phases, seconds.
    :raises RequestTimeout: from a read past the phase's deadline, or after an eviction.
    """

    def __init__(self, sock: socket.socket, limits: Limits, write_timeout_s: float, clock=time.monotonic):
        super().__init__()
        self._sock = sock
        self._limits = limits
        self._write_timeout_s = write_timeout_s
        self._clock = clock
        self._deadline_s: float | None = None  # monotonic; None: none
        self._after_first_byte_s: float | None = None  # idle: the head's timeout once a byte arrives
        self._body_start_s: float | None = None  # a body's start (its deadline moves with each byte)
        self._received = 0  # bytes of the body so far
        self._why = _HEAD  # the 408's message, a template over the limits
        self._timeout_set = write_timeout_s  # the socket's timeout as last set
        self.evicted = False
        self.accepted_s = clock()  # made when the connection is admitted: its head's deadline counts from here

    def readable(self) -> bool:
        return True

    # -- phases ---------------------------------------------------------------------------------
    def expect_head(self, start_s: float) -> None:
        """The request line and headers must be in within ``header_timeout_s`` of ``start_s``."""
        self._deadline_s, self._after_first_byte_s, self._body_start_s = start_s + self._limits.header_timeout_s, None, None
        self._why = _HEAD

    def expect_idle(self, start_s: float) -> None:
        """A kept-alive connection: the next request's first byte within ``idle_timeout_s`` of
        ``start_s``, then its head within ``header_timeout_s`` of that byte."""
        self._deadline_s, self._body_start_s = start_s + self._limits.idle_timeout_s, None
        self._after_first_byte_s = self._limits.header_timeout_s
        self._why = _IDLE

    def expect_body(self, start_s: float) -> None:
        """A body starting at ``start_s``, held to the minimum rate after its grace."""
        self._deadline_s, self._after_first_byte_s = None, None
        self._body_start_s, self._received = start_s, 0
        self._why = _BODY

    def done(self) -> None:
        """No reading phase: reads and writes wait up to ``write_timeout_s`` each."""
        self._deadline_s = self._after_first_byte_s = self._body_start_s = None
        if self._timeout_set != self._write_timeout_s:
            self._set_timeout(self._write_timeout_s)

    # -- reading --------------------------------------------------------------------------------
    def readinto(self, buf) -> int:
        while True:
            if self.evicted:
                raise self._timed_out(EVICTED)
            deadline = self._deadline_s
            if self._body_start_s is not None:
                deadline = body_deadline_s(self._body_start_s, self._received, self._limits)
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    raise self._timed_out(self._why)
                if not left * 0.5 <= self._timeout_set <= left + _TIMEOUT_SLACK_S:
                    self._set_timeout(left)  # (a syscall: skipped when the timeout set is close enough)
            elif self._timeout_set != self._write_timeout_s:
                self._set_timeout(self._write_timeout_s)
            try:
                n = self._sock.recv_into(buf)
                break
            except TimeoutError:
                if deadline is None:
                    raise
                # else: past the deadline, or a timeout shorter than the time left woke the read early
        if not n and self.evicted:
            raise self._timed_out(EVICTED)
        if self._body_start_s is not None:
            self._received += n
        elif n and self._after_first_byte_s is not None:
            self.expect_head(self._clock())
        return n

    def _timed_out(self, why: str) -> RequestTimeout:
        """The error to raise, with the socket's write timeout back for the 408 that answers it."""
        self.done()
        return RequestTimeout(why.format(**self._limits._asdict()))

    def _set_timeout(self, timeout_s: float) -> None:
        self._sock.settimeout(timeout_s)
        self._timeout_set = timeout_s


class ConnectionTable:
    """The connections shunt serves, against ``limits.max_connections``. Thread-safe: the accept
    thread admits, each connection's thread moves its own between waiting and busy and releases it.

    :param write_timeout_s: passed to each connection's :class:`DeadlineReader`.
    """

    def __init__(self, limits: Limits, write_timeout_s: float):
        self.limits = limits
        self._write_timeout_s = write_timeout_s
        self._lock = threading.Lock()
        self._readers: dict[socket.socket, DeadlineReader] = {}  # admitted, not released (evicted ones too)
        self._open: dict[socket.socket, DeadlineReader] = {}  # of those, not evicted: counted against the cap
        self._waiting: dict[socket.socket, DeadlineReader] = {}  # of those, waiting for a request; oldest first

    def counts(self) -> tuple[int, int]:
        """``(open, waiting)``: connections served, and those of them waiting for a request."""
        with self._lock:
            return len(self._open), len(self._waiting)

    def admit(self, sock: socket.socket, head_in: Callable[[], bool] = lambda: True) -> Admission:
        """Take a newly accepted connection (it starts waiting for its request), evicting the
        longest-waiting one if at the cap (:func:`~shunt_lib.limits.admission`).

        :param head_in: whether ``sock``'s request head is in; asked only at the cap.
        :returns: the decision; ``sock`` is taken (its reader made) on ACCEPT and EVICT only.
        """
        with self._lock:
            n_open, n_waiting = len(self._open), len(self._waiting)
            at_cap = n_open >= self.limits.max_connections and n_waiting
            decision = admission(n_open, n_waiting, self.limits.max_connections, not at_cap or head_in())
            if decision is Admission.REJECT or decision is Admission.WAIT:
                return decision
            if decision is Admission.EVICT:
                victim = next(iter(self._waiting))
                reader = self._waiting.pop(victim)
                del self._open[victim]
                reader.evicted = True
                try:
                    victim.shutdown(socket.SHUT_RD)  # wakes its thread's read, which answers 408
                except OSError:
                    pass
            reader = DeadlineReader(sock, self.limits, self._write_timeout_s)
            self._readers[sock] = self._open[sock] = self._waiting[sock] = reader
            return decision

    def reader(self, sock: socket.socket) -> DeadlineReader:
        """The reader :meth:`admit` made for ``sock``, even if evicted since (a fresh one if it was
        not admitted here)."""
        with self._lock:
            reader = self._readers.get(sock)
        return reader if reader is not None else DeadlineReader(sock, self.limits, self._write_timeout_s)

    def waiting(self, sock: socket.socket) -> None:
        """``sock`` now waits for its next request (it becomes the newest waiter)."""
        with self._lock:
            reader = self._open.get(sock)
            if reader is not None:
                self._waiting.pop(sock, None)
                self._waiting[sock] = reader

    def busy(self, sock: socket.socket) -> bool:
        """``sock`` has a request to serve (it cannot be evicted now). :returns: False if it was
        evicted already (its request must not be served)."""
        with self._lock:
            self._waiting.pop(sock, None)
            return sock in self._open

    def release(self, sock: socket.socket) -> None:
        """``sock`` is closing: its place is free. Idempotent."""
        with self._lock:
            self._readers.pop(sock, None)
            self._open.pop(sock, None)
            self._waiting.pop(sock, None)


def rejection(max_connections: int) -> bytes:
    """The whole 503 answer for a connection over the cap: Anthropic-shaped JSON, ``retry-after: 1``,
    ``connection: close``."""
    body = ServiceUnavailable(f"shunt is serving its maximum of {max_connections} connections "
                              "(server.max_connections); retry shortly").body()
    return json_head(503, len(body), {"retry-after": "1"}, close=True) + body


def reject(sock: socket.socket, answer: bytes) -> None:
    """Write ``answer`` to ``sock`` without blocking, then :func:`drain` it. The caller closes ``sock``."""
    try:
        sock.setblocking(False)
        sock.send(answer)
    except OSError:
        pass  # the send buffer is full or the client is gone
    drain(sock)


def drain(sock: socket.socket) -> None:
    """Read, without blocking, up to 64 KiB the client has sent and shunt will not read: closing a
    socket with unread input resets the connection, which can destroy an answer not yet read."""
    try:
        sock.setblocking(False)
        for _ in range(_DRAIN_BYTES // 16384):
            if not sock.recv(16384):
                break
    except OSError:
        pass  # nothing more to read now, or the client is gone


LINGER_S = 5.0  # longest a lingering close reads what a refused client still sends, seconds
_LINGER_BYTES = 64 << 20  # most it reads (and drops)


def linger(sock: socket.socket, max_s: float = LINGER_S, max_bytes: int = _LINGER_BYTES) -> None:
    """A lingering close (RFC 9112 §9.6): after the answer, stop sending and read and drop what the
    client still sends until it closes, is quiet for a second, ``max_s`` pass or ``max_bytes``
    arrive. A client that sends its whole body before reading (most do) then reads the answer to a
    refused upload instead of a reset; nothing is kept. The caller closes ``sock``."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + max_s
        got = 0
        while got < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(1.0, left))
            piece = sock.recv(65536)
            if not piece:
                break
            got += len(piece)
    except OSError:
        pass  # quiet for a second, or gone


class GuardedHandler(BaseHTTPRequestHandler):
    """A request handler whose reads keep to :mod:`shunt_lib.limits`. Its server must have
    ``connections`` (a :class:`ConnectionTable`); ``self.timeout`` is the write timeout, seconds.

    Subclasses call :meth:`expect_body` before reading a body and :meth:`body_read` after it, and
    answer :class:`~shunt_lib.errors.RequestTimeout` (a :class:`~shunt_lib.errors.ShuntError`) like
    any error of theirs, closing the connection.
    """

    _reader: DeadlineReader
    _served = 0  # requests begun on this connection

    def setup(self) -> None:
        super().setup()
        self._reader = self.server.connections.reader(self.connection)
        self.rfile.close()  # the socket's own reader, replaced (the socket stays open)
        self.rfile = io.BufferedReader(self._reader)

    def expect_body(self) -> None:
        """The body is read next: hold it to the minimum rate."""
        self._reader.expect_body(time.monotonic())

    def body_read(self) -> None:
        """The body is in (or the request failed): no read deadline until the next request."""
        self._reader.done()

    def handle_one_request(self) -> None:
        """As :meth:`BaseHTTPRequestHandler.handle_one_request`, with the head's deadline or the idle
        wait first, and a 408 for a client that was too slow or whose place was taken. A client that
        hangs up (mid-line, or while being answered) is not answered and prints nothing."""
        table = self.server.connections
        try:
            if self._served:
                table.waiting(self.connection)
                self._reader.expect_idle(time.monotonic())
            else:
                self._reader.expect_head(self._reader.accepted_s)  # time waiting for a thread counts too
            self._served += 1
            self.command = self.requestline = ""  # until a request line is parsed (a 408 may precede it)
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline.endswith(b"\n"):  # nothing, or part of a line: the client left
                self.close_connection = True
                return
            if not self.parse_request():
                return
            if not table.busy(self.connection):
                raise RequestTimeout(EVICTED)
            self._reader.done()
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            method()
            self.wfile.flush()
        except RequestTimeout as err:
            self.close_connection = True
            try:
                self.send_error(408, err.message)
            except OSError:
                pass
            drain(self.connection)
        except (TimeoutError, ConnectionError) as exc:  # a write timed out, or the client hung up: nothing to answer
            self.close_connection = True
            log.debug("client %s: connection ended: %s", self.client_address[0], exc or type(exc).__name__)
