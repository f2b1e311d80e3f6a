"""The only module that talks HTTP to the Anthropic API on the request path (urllib3, pooled).

One :class:`urllib3.HTTPConnectionPool` per upstream origin, shared by all accounts (urllib3 keeps no
cookies, so nothing crosses accounts). No retries, no redirects, no content decoding: shunt decides
retries itself and forwards bytes unchanged. urllib3 and socket errors are translated to
:class:`~shunt_lib.errors.UpstreamConnectError` / :class:`~shunt_lib.errors.UpstreamStreamError`
here and nowhere else, including errors raised while a body streams.

:meth:`Upstream.send` returns an :class:`UpstreamResponse`; the relay sees nothing of urllib3, so a
test can drive it with any object that has the same methods.
"""

from __future__ import annotations

import urllib.parse
from typing import Iterator

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from .errors import UpstreamConnectError, UpstreamRequestInvalid, UpstreamStreamError
from .forwarding import ResponseHead


class UpstreamResponse:
    """One upstream answer: its :attr:`head`, and its body still unread on the connection.

    Read the body with :meth:`iter_body` or :meth:`read_small`, then hand the connection back with
    :meth:`release` (body read to the end) or drop it with :meth:`abort`. :meth:`interrupt` may be
    called from another thread to unblock a read (a client that hung up).
    """

    __slots__ = ("head", "_resp")

    def __init__(self, resp: urllib3.BaseHTTPResponse):
        self._resp = resp
        self.head = ResponseHead.from_items(resp.status, resp.reason or "", list(resp.headers.items()))

    def iter_body(self, chunk_size: int = 65536) -> Iterator[bytes]:
        """Yield the raw (undecoded) body piece by piece, as soon as each piece arrives.

        Chunked responses yield each HTTP chunk; others yield whatever one socket read returns.
        :raises UpstreamStreamError: if the connection breaks or times out mid-body.
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
        except (Urllib3Error, OSError, ValueError, AttributeError) as exc:
            raise UpstreamStreamError(f"{type(exc).__name__}: {exc}") from exc

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
    :param read_timeout_s: longest silence between two reads of the response, seconds.
    """

    def __init__(self, base_url: str, *, maxsize: int = 64, connect_timeout_s: float = 10.0,
                 read_timeout_s: float = 600.0):
        parsed = urllib.parse.urlsplit(base_url)
        self.prefix = parsed.path.rstrip("/")
        self._pool = urllib3.connection_from_url(
            f"{parsed.scheme}://{parsed.netloc}",
            maxsize=maxsize,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        )

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> UpstreamResponse:
        """Send one request; return its response with the body unread.

        :param path: path and query string, forwarded unchanged (e.g. ``/v1/messages?beta=true``).
        :param headers: the headers to send, as built by :func:`~shunt_lib.forwarding.upstream_headers`.
        :param body: sent as is (no copy), or None for no body.
        :raises UpstreamConnectError: on connect/send errors or a timeout before the response head.
        :raises UpstreamRequestInvalid: if a header cannot be sent as given.
        """
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
            )
        except (Urllib3Error, OSError) as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # http.client's header validation
            raise UpstreamRequestInvalid(str(exc)) from exc
        return UpstreamResponse(resp)

    def close(self) -> None:
        """Close every pooled connection (any thread; requests in flight keep theirs until done)."""
        self._pool.close()
