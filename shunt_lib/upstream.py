"""The only module that talks HTTP to the Anthropic API on the request path (urllib3, pooled).

One :class:`urllib3.HTTPConnectionPool` per upstream origin, shared by all accounts (urllib3 keeps no
cookies, so nothing crosses accounts). No retries, no redirects, no content decoding: shunt decides
retries itself and forwards bytes unchanged. urllib3 and socket errors are translated to
:class:`~shunt_lib.errors.UpstreamConnectError` / :class:`~shunt_lib.errors.UpstreamStreamError`
here and nowhere else, including errors raised while a body streams, with a message that names the
host and the cause in words (:func:`describe_failure`), never an object's repr.

Three timeouts, because one number cannot fit both a dead host and a long generation: the TCP/TLS
connect timeout; the first-byte timeout, the longest wait for the response head once the request is
sent (a host that accepts and never answers); and the idle timeout, the longest silence between two
reads of the body once the head is in (a stream that stalls). A request waiting for its head can be
cancelled from another thread (:class:`Cancel`): a client that hung up, or shunt stopping.

:meth:`Upstream.send` returns an :class:`UpstreamResponse`; the relay sees nothing of urllib3, so a
test can drive it with any object that has the same methods.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import urllib.parse
from typing import Iterator

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NameResolutionError, ReadTimeoutError
from urllib3.util import SKIP_HEADER

from .errors import UpstreamConnectError, UpstreamHeadTimeout, UpstreamRequestInvalid, UpstreamStreamError
from .forwarding import ResponseHead
from .upstream_head import HeadResponse, last_fields
from .wire import field_block

#: Linux's "more data follows" send flag: the head waits for the body's first bytes in one segment.
_MSG_MORE = getattr(socket, "MSG_MORE", 0)

#: The wait for the head of a request whose head comes only with its whole answer (a non-streaming
#: generation), seconds, when longer than the first-byte timeout: the official SDKs' default request
#: timeout is 10 minutes (https://github.com/anthropics/anthropic-sdk-python, ``DEFAULT_TIMEOUT``).
LONG_HEAD_TIMEOUT_S = 600.0

_sending = threading.local()  # .cancel: the Cancel of the request this thread is sending, if any


class Cancel:
    """Aborts one upstream request from another thread while it waits for the response head.

    :meth:`cancel` shuts the request's socket down (at once if it is already connected, else as soon as
    the request is sent); the waiting :meth:`Upstream.send` then raises
    :class:`~shunt_lib.errors.UpstreamConnectError`. Once :meth:`Upstream.send` has returned, cancelling
    does nothing (the connection may be back in the pool): interrupt the response instead. Any thread.
    """

    __slots__ = ("_lock", "_sock", "cancelled")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None  # guarded by _lock
        self.cancelled = False

    def cancel(self) -> None:
        """Abort the request (idempotent)."""
        with self._lock:
            self.cancelled = True
            sock = self._sock
        if sock is not None:
            _shut(sock)

    def _arm(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            cancelled = self.cancelled
        if cancelled and sock is not None:
            _shut(sock)

    def _disarm(self) -> None:
        with self._lock:
            self._sock = None


def _shut(sock: socket.socket) -> None:
    """Shut ``sock`` down at the TCP level so a read blocked on it in another thread returns (for a TLS
    socket, without touching its SSL object, which the reading thread still uses)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def describe_failure(exc: BaseException, origin: str) -> str:
    """What went wrong before an upstream answer, in words: ``could not connect to HOST:PORT: connection
    refused``, ``HOST:PORT closed the connection before answering``. Never an object's repr.

    :param exc: the exception urllib3 (or a socket) raised; its cause chain is examined.
    :param origin: ``host:port`` of the upstream.
    """
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 10:  # the exception, its causes, and exceptions carried in its args
        e = todo.pop(0)
        if e in chain:
            continue
        chain.append(e)
        todo += [x for x in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
                 if isinstance(x, BaseException)]

    def has(*types: type) -> BaseException | None:
        return next((x for x in chain if isinstance(x, types)), None)

    prefix = f"could not connect to {origin}: "
    gai = has(socket.gaierror)
    if has(NameResolutionError) or gai:
        return prefix + "the name does not resolve" + (f" ({gai.strerror})" if gai is not None and gai.strerror else "")
    if has(ConnectionRefusedError):
        return prefix + "connection refused"
    if has(urllib3.exceptions.ConnectTimeoutError, TimeoutError):
        return prefix + "timed out"
    tls = has(ssl.SSLError)
    if tls is not None:
        return prefix + "TLS failed (" + str(getattr(tls, "reason", None) or tls.strerror or type(tls).__name__) + ")"
    if has(http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return f"{origin} closed the connection before answering"
    os_err = has(OSError)
    if os_err is not None and os_err.strerror:
        return prefix + os_err.strerror[:1].lower() + os_err.strerror[1:]
    return prefix + type(chain[-1]).__name__


class OneWrite:
    """How shunt's upstream connections send a request (mixed into urllib3's two connection classes).

    urllib3 sends the head in one write and the body in another, and ``http.client`` validates each
    header field with two regular expressions. A forwarded request's fields were checked when the
    client sent them (:mod:`shunt_lib.wire`) and shunt's own are plain: here the fields urllib3 and
    ``http.client`` put are collected as they are, checked in one pass over the whole block, and the
    head leaves with the body: in the same ``send`` (``MSG_MORE`` on Linux, so without a copy), or
    concatenated on TLS. The bytes on the wire are the ones urllib3 would send.
    """

    _fields: list[str] | None = None  # the fields of the head being built ("name: value")
    _head: bytes | None = None  # a head built and not sent yet: it goes with the body

    def putrequest(self, method: str, url: str, skip_host: bool = False, skip_accept_encoding: bool = False) -> None:
        self._fields, self._head = [], None
        super().putrequest(method, url, skip_host=skip_host, skip_accept_encoding=skip_accept_encoding)

    def putheader(self, header: str | bytes, *values) -> None:
        if self._fields is None or len(values) != 1:
            return super().putheader(header, *values)
        value = values[0]
        if value is SKIP_HEADER:
            return None
        if type(header) is str and type(value) is str:  # nearly always: one f-string, encoded with the block
            self._fields.append(f"{header}: {value}")
        else:
            name = header.decode("latin-1") if isinstance(header, bytes) else header
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            self._fields.append(f"{name}: {text}")

    def send(self, data) -> None:
        if self._fields is not None:  # http.client's head: the request line and a blank line
            fields, self._fields = self._fields, None
            block = field_block(fields)
            if block is None:
                raise ValueError("a header field name or value cannot be sent (a control character or a bad name)")
            self._head = data[:-2] + block
            return None
        head = self._head
        if head is None:
            return super().send(data)
        self._head = None
        if self.sock is None:
            self.connect()
        if _MSG_MORE and not isinstance(self.sock, ssl.SSLSocket) and isinstance(data, (bytes, bytearray)):
            self.sock.sendall(head, _MSG_MORE)
            return super().send(data)
        return super().send(head + data)

    def request(self, method, url, body=None, headers=None, **options) -> None:
        super().request(method, url, body=body, headers=headers, **options)
        if self._head is not None:  # a request without a body
            head, self._head = self._head, None
            super().send(head)
        cancel = getattr(_sending, "cancel", None)
        if cancel is not None:  # sent: from here until the head arrives, another thread may abort it
            cancel._arm(self.sock)


class OneWriteHTTPConnection(OneWrite, HTTPConnection):
    """urllib3's plain-HTTP connection, sending as :class:`OneWrite` says, reading heads with
    :class:`~shunt_lib.upstream_head.HeadResponse`."""

    response_class = HeadResponse


class OneWriteHTTPSConnection(OneWrite, HTTPSConnection):
    """urllib3's TLS connection, sending as :class:`OneWrite` says, reading heads with
    :class:`~shunt_lib.upstream_head.HeadResponse`."""

    response_class = HeadResponse


class UpstreamResponse:
    """One upstream answer: its :attr:`head`, and its body still unread on the connection.

    Read the body with :meth:`iter_body` or :meth:`read_small`, then hand the connection back with
    :meth:`release` (body read to the end) or drop it with :meth:`abort`. :meth:`interrupt` may be
    called from another thread to unblock a read (a client that hung up).
    """

    __slots__ = ("head", "_resp", "_origin", "_idle_s")

    def __init__(self, resp: urllib3.BaseHTTPResponse, origin: str = "the upstream", idle_timeout_s: float | None = None,
                 items: list[tuple[str, str]] | None = None):
        self._resp = resp
        self._origin, self._idle_s = origin, idle_timeout_s
        if items is None:  # not read by HeadResponse: take them from urllib3's copy
            items = list(resp.headers.items())
        self.head = ResponseHead.from_items(resp.status, resp.reason or "", items)

    def iter_body(self, chunk_size: int = 65536) -> Iterator[bytes]:
        """Yield the raw (undecoded) body piece by piece, as soon as each piece arrives.

        Chunked responses yield each HTTP chunk; others yield whatever one socket read returns.
        :raises UpstreamStreamError: if the connection breaks or times out mid-body (the message says
            which, in words).
        """
        resp = self._resp
        try:
            if resp.chunked and resp.supports_chunked_reads():
                yield from resp.read_chunked(None, decode_content=False)
            else:
                while True:
                    data = resp.read1(chunk_size, decode_content=False)
                    if not data:
                        break
                    yield data
        # AttributeError: urllib3 sets its file object to None when interrupt() shut the socket down.
        except ReadTimeoutError as exc:
            idle = f" for {self._idle_s:g} s" if self._idle_s is not None else ""
            raise UpstreamStreamError(f"{self._origin} sent nothing{idle}") from exc
        except (Urllib3Error, OSError, ValueError, AttributeError) as exc:
            raise UpstreamStreamError(f"{self._origin} broke the connection off ({type(exc).__name__})") from exc

    def read_small(self, limit: int = 1 << 20) -> tuple[bytes, bool]:
        """Read an (error) body, raw, stopping after ``limit`` bytes.

        :returns: ``(bytes read, complete)``; ``complete`` is False if the body is longer than ``limit``
            (the rest is still unread: continue with :meth:`iter_body`).
        :raises UpstreamStreamError: on failure.
        """
        out = bytearray()
        for piece in self.iter_body():
            out += piece
            if len(out) > limit:
                return bytes(out), False
        return bytes(out), True

    def release(self) -> None:
        """Return the connection to the pool (call only when the body was read to its end)."""
        self._resp.release_conn()

    def abort(self) -> None:
        """Close the connection: the body was not read to its end (or the client left)."""
        self._resp.close()

    def interrupt(self) -> None:
        """Shut the socket down so a read blocked in another thread returns at once (any thread)."""
        try:
            self._resp.shutdown()
        except Exception:  # already released or closed: nothing to unblock
            pass


class Upstream:
    """A pooled connection to ``base_url``.

    :param base_url: e.g. ``https://api.anthropic.com`` (a path prefix is kept).
    :param maxsize: connections kept alive for reuse (excess ones are opened and closed).
    :param connect_timeout_s: TCP/TLS connect timeout, seconds.
    :param first_byte_timeout_s: longest wait for the response head once the request is sent, seconds
        (the default for :meth:`send`).
    :param idle_timeout_s: longest silence between two reads of the body once the head is in, seconds.
    """

    def __init__(self, base_url: str, *, maxsize: int = 64, connect_timeout_s: float = 10.0,
                 first_byte_timeout_s: float = 120.0, idle_timeout_s: float = 300.0):
        parsed = urllib.parse.urlsplit(base_url)
        self.prefix = parsed.path.rstrip("/")
        self.origin = f"{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
        self.connect_timeout_s = connect_timeout_s
        self.first_byte_timeout_s = first_byte_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._timeouts: dict[float, urllib3.Timeout] = {}  # by head wait: one object, not one per request
        self._pool = urllib3.connection_from_url(
            f"{parsed.scheme}://{parsed.netloc}",
            maxsize=maxsize,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=first_byte_timeout_s),
        )
        self._pool.ConnectionCls = OneWriteHTTPSConnection if parsed.scheme == "https" else OneWriteHTTPConnection

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None, *,
             long_head: bool = False, cancel: Cancel | None = None) -> UpstreamResponse:
        """Send one request; return its response with the body unread (body reads then time out after
        ``idle_timeout_s`` of silence).

        :param path: path and query string, forwarded unchanged (e.g. ``/v1/messages?beta=true``).
        :param headers: the headers to send, as built by :func:`~shunt_lib.forwarding.upstream_headers`.
        :param body: sent as is (no copy), or None for no body.
        :param long_head: the head comes only with the whole answer (see
            :func:`~shunt_lib.relay.head_comes_late`): wait for it up to :data:`LONG_HEAD_TIMEOUT_S` if
            that is longer than ``first_byte_timeout_s``.
        :param cancel: lets another thread abort the wait for the head.
        :raises UpstreamHeadTimeout: no head in time.
        :raises UpstreamConnectError: on connect/send errors, a cancel, or a connection closed before the head;
            the message comes from :func:`describe_failure`.
        :raises UpstreamRequestInvalid: if a header cannot be sent as given.
        """
        last_fields()  # nothing left from an earlier request of this thread
        wait_s = max(self.first_byte_timeout_s, LONG_HEAD_TIMEOUT_S) if long_head else self.first_byte_timeout_s
        timeout = self._timeouts.get(wait_s)
        if timeout is None:
            timeout = self._timeouts[wait_s] = urllib3.Timeout(connect=self.connect_timeout_s, read=wait_s)
        _sending.cancel = cancel
        try:
            resp = self._pool.urlopen(
                method,
                self.prefix + path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                release_conn=False,
                timeout=timeout,
            )
        except ReadTimeoutError as exc:
            raise UpstreamHeadTimeout(f"{self.origin} sent no response head within {wait_s:g} s") from exc
        except (Urllib3Error, OSError) as exc:
            if cancel is not None and cancel.cancelled:
                raise UpstreamConnectError("cancelled while waiting for the response head") from exc
            raise UpstreamConnectError(describe_failure(exc, self.origin)) from exc
        except ValueError:  # http.client's header validation: its text quotes the value (maybe a credential)
            raise UpstreamRequestInvalid("a header field name or value cannot be sent (a control character "
                                         "or a bad name)") from None
        finally:
            _sending.cancel = None
            if cancel is not None:
                cancel._disarm()
        conn = resp.connection
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.settimeout(self.idle_timeout_s)  # the next request on it sets its own again
            except OSError:
                pass
        return UpstreamResponse(resp, self.origin, self.idle_timeout_s, last_fields())

    def close(self) -> None:
        """Close every pooled connection (any thread; requests in flight keep theirs until done)."""
        self._pool.close()
