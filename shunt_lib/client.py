"""The client side of one proxied request: everything shunt writes to the client, and what it has written.

:class:`ClientStream` owns the response bytes and the flags that decide what a failure may still do
(the rule waitress calls "wrote_header"): until :attr:`ClientStream.wrote` is set, the relay may try
another account or answer with its own error; after that it can only end an SSE stream with an
``error`` event. A held streaming request has already been sent ``200`` and pings
(:attr:`~ClientStream.sse_head_sent`), so its eventual error is an SSE ``error`` event too.

HTTP/1.0 clients get close-delimited bodies instead of chunked ones (RFC 9112 §6.1).
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Iterator, Protocol

from . import sse
from .errors import ClientGone, UpstreamStreamError
from .forwarding import ResponseHead, json_head, response_head
from .usage import decode_body, make_decoder
from .watch import ClientWatch
from .wire import LAST_CHUNK, frame_chunk

#: The head of a held streaming request, sent before the account that will serve it is known.
HELD_HEAD = ResponseHead.from_items(200, "OK", [("content-type", "text/event-stream; charset=utf-8"),
                                               ("cache-control", "no-cache"), ("x-shunt-held", "1")])


class ClientConnection(Protocol):
    """What a :class:`ClientStream` needs of the connection (``BaseHTTPRequestHandler``'s attributes)."""

    connection: socket.socket
    wfile: object
    request_version: str
    close_connection: bool


class ClientStream:
    """Writes one request's response to the client. Used by the request's own thread only, except
    :attr:`gone`, which the disconnect watcher sets.

    :param conn: the handler that owns the client connection.
    Flags: :attr:`wrote` (a byte reached the client), :attr:`sse_head_sent` (a held stream's 200 is
    out), :attr:`chunked_ok` (HTTP/1.1 framing; False for HTTP/1.0), :attr:`gone` (the client left).
    """

    __slots__ = ("_conn", "chunked_ok", "wrote", "sse_head_sent", "gone", "_watch", "_framed", "_pending",
                 "_decoder", "_left")

    def __init__(self, conn: ClientConnection):
        self._conn = conn
        self.chunked_ok = conn.request_version != "HTTP/1.0"
        self.wrote = False
        self.sse_head_sent = False
        self.gone = threading.Event()
        self._watch: ClientWatch | None = None
        self._framed = False  # the body being relayed is framed by shunt (chunked or close-delimited)
        self._pending = b""  # a JSON answer's head, sent with its first body piece (one write)
        self._decoder = None  # a held stream's gzip/deflate decoder (its head went out before encoding was known)
        self._left: int | None = None  # body bytes still to relay of an answer with a content-length

    # -- bytes ----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write raw bytes. :raises ClientGone: if the client hung up (and :attr:`gone` is set)."""
        try:
            self._conn.wfile.write(data)
        except OSError as exc:
            self.gone.set()
            raise ClientGone(str(exc)) from exc
        self.wrote = True

    def write_last(self, data: bytes) -> None:
        """Write the bytes that complete the answer, having stopped watching the client first: a
        kept-alive client sends its next request as soon as it has them, which would otherwise wake
        the watcher (a thread switch, a peek and a second unregister) on most requests."""
        self.unwatch()
        self.write(data)

    def frame(self, data: bytes) -> bytes:
        """One piece of a body whose length is not known up front: a chunk, or raw for HTTP/1.0."""
        return frame_chunk(data) if self.chunked_ok else data

    def end_body(self) -> bytes:
        """The end of such a body: the last chunk, or nothing (HTTP/1.0 ends with the connection)."""
        if self.chunked_ok:
            return LAST_CHUNK
        self.close_after()
        return b""

    def close_after(self) -> None:
        """Close the connection once this request is done."""
        self._conn.close_connection = True

    # -- hang-ups ---------------------------------------------------------------------------------
    def watch(self, watcher: ClientWatch, on_gone: Callable[[], None]) -> None:
        """Have ``watcher`` call ``on_gone`` (on its own thread; it must not block) and set :attr:`gone`
        if the client hangs up. Idempotent; :meth:`unwatch` ends it."""
        if self._watch is not None:
            return

        def gone() -> None:
            self.gone.set()
            on_gone()

        if watcher.add(self._conn.connection, gone):
            self._watch = watcher

    def unwatch(self) -> None:
        """Stop watching the client for hang-ups (idempotent)."""
        if self._watch is not None:
            self._watch.remove(self._conn.connection)
            self._watch = None

    # -- a held streaming request -----------------------------------------------------------------
    def ping(self, ping: bytes = sse.PING) -> None:
        """Send a keep-alive event, first sending the held stream's 200 and SSE head if not done yet."""
        if not self.sse_head_sent:
            self.write(response_head(HELD_HEAD, None, chunked=self.chunked_ok, close=not self.chunked_ok))
            self.sse_head_sent = True
        self.write(self.frame(ping))

    def end_with_sse_error(self, body: bytes) -> None:
        """End a held stream with an SSE ``error`` event carrying ``body`` (JSON, compacted)."""
        self.write_last(self.frame(sse.error_event(body)) + self.end_body())

    # -- whole answers ----------------------------------------------------------------------------
    def send_json(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer with a JSON body shunt wrote (its own error), or an SSE error event if held. After
        :meth:`close_after`, the head says ``connection: close``."""
        if self.sse_head_sent:
            self.end_with_sse_error(body)
        else:
            self.write_last(json_head(status, len(body), headers, close=self._conn.close_connection) + body)

    def send_upstream_answer(self, account: str, head: ResponseHead, raw: bytes) -> None:
        """Send an upstream answer read whole (an error), unchanged; an SSE error event if held."""
        if self.sse_head_sent:
            self.end_with_sse_error(decode_body(raw, head.by_name.get("content-encoding", "")))
        else:
            self.write_last(response_head(head, account, content_length=len(raw)) + raw)

    # -- an answer relayed as it arrives ------------------------------------------------------------
    def start_answer(self, head: ResponseHead, account: str, *, no_body: bool, eager: bool) -> None:
        """Begin relaying ``head``'s answer; then :meth:`send_piece` per body piece, then
        :meth:`finish_answer` or :meth:`fail_answer`.

        :param no_body: a HEAD request or a 204/304: the head is all there is.
        :param eager: send the head now (an event stream); else it rides with the first body piece.
        """
        self._decoder = None
        if self.sse_head_sent:  # 200 and SSE headers are out: send decoded events after an SSE comment
            self._framed = True
            self._decoder = make_decoder(head.by_name.get("content-encoding", ""))
            self._pending = b""
            self.write(self.frame(sse.comment(f"x-shunt-account {account}")))
            return
        length = head.by_name.get("content-length")
        framed = self._framed = length is None and not no_body
        if framed and not self.chunked_ok:
            self.close_after()
        self._pending = response_head(head, account, content_length=None if framed else length,
                                      chunked=framed and self.chunked_ok, close=framed and not self.chunked_ok)
        self._left = None
        if not framed and not no_body:
            try:
                self._left = int(length)
            except (TypeError, ValueError):
                pass
        if no_body:
            self.write_last(self._pending)
            self._pending = b""
        elif eager:
            self.write(self._pending)
            self._pending = b""

    def send_piece(self, piece: bytes) -> None:
        """Relay one piece of the body (decoded first on a held stream)."""
        data = self._decoder.decompress(piece) if self._decoder is not None else piece
        if data:
            out = self._pending + (self.frame(data) if self._framed else data)
            self._pending = b""
            if self._left is not None:
                self._left -= len(data)
                if self._left <= 0:  # the last piece of a content-length body
                    self.write_last(out)
                    return
            self.write(out)

    def relay_body(self, pieces: Iterator[bytes]) -> UpstreamStreamError | None:
        """Relay body pieces as they arrive, until they end, the client leaves or the upstream breaks off.

        :returns: the error that broke the upstream body off, or None.
        """
        try:
            for piece in pieces:
                if self.gone.is_set():
                    return None
                self.send_piece(piece)
        except UpstreamStreamError as exc:
            return exc
        return None

    def finish_answer(self) -> None:
        """The body ended normally: send what is still pending and the end of a framed body."""
        if self._pending or self._framed:
            self.write_last(self._pending + (self.end_body() if self._framed else b""))
            self._pending = b""

    def fail_answer(self, event: bytes, *, sse_stream: bool) -> None:
        """The upstream body broke off: send what is pending; end an event stream with ``event`` (an
        SSE ``error`` event), or close the connection (a truncated body cannot be marked otherwise)."""
        if self._pending:
            self.write(self._pending)
            self._pending = b""
        if self._framed and (sse_stream or self.sse_head_sent):
            self.write((self.frame(event) if event else b"") + self.end_body())
        else:
            self.close_after()

