"""The only module that talks HTTP to the Anthropic API on the hot path (urllib3, pooled).

One :class:`urllib3.HTTPConnectionPool` per upstream origin, shared by all accounts (urllib3 keeps no
cookies, so nothing crosses accounts). No retries, no redirects, no content decoding: shunt decides
retries itself and forwards bytes unchanged. urllib3 errors are translated to
:class:`UpstreamConnectError` here and nowhere else.
"""

from __future__ import annotations

import urllib.parse

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error


class UpstreamConnectError(Exception):
    """The request could not be sent or no response head arrived. Nothing reached the client,
    so the request is safe to retry on another account."""


class UpstreamRequestInvalid(ValueError):
    """The request cannot be sent as given (``http.client`` refused a header name or value): a client error."""


class UpstreamStreamError(Exception):
    """The upstream body broke off after its head arrived (bytes may already be with the client)."""


class Upstream:
    """A pooled connection to ``base_url``.

    :param base_url: e.g. ``https://api.anthropic.com`` (a path prefix is kept).
    :param maxsize: connections kept alive for reuse (excess ones are opened and closed).
    :param connect_timeout_s: TCP/TLS connect timeout.
    :param read_timeout_s: longest silence between two reads of the response.
    """

    def __init__(self, base_url: str, *, maxsize: int = 64, connect_timeout_s: float = 10.0, read_timeout_s: float = 600.0):
        parsed = urllib.parse.urlsplit(base_url)
        self.prefix = parsed.path.rstrip("/")
        self.pool = urllib3.connection_from_url(
            f"{parsed.scheme}://{parsed.netloc}",
            maxsize=maxsize,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        )

    def send(self, method: str, path: str, headers: urllib3.HTTPHeaderDict, body: bytes | None) -> urllib3.BaseHTTPResponse:
        """Send one request; return the response with its body unread (``preload_content=False``).

        :param path: path and query string, forwarded unchanged (e.g. ``/v1/messages?beta=true``).
        :raises UpstreamConnectError: on connect/send errors or a timeout before the response head.
        :raises UpstreamRequestInvalid: if a header cannot be sent as given.
        """
        try:
            return self.pool.urlopen(
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

    def close(self) -> None:
        self.pool.close()


def iter_body(resp: urllib3.BaseHTTPResponse, chunk_size: int = 65536):
    """Yield the raw (undecoded) body of ``resp`` piece by piece, as soon as each piece arrives.

    Chunked responses yield each HTTP chunk; others yield whatever one socket read returns.
    :raises UpstreamStreamError: if the upstream connection breaks or times out mid-body.
    """
    try:
        if resp.chunked and resp.supports_chunked_reads():
            yield from resp.read_chunked(None, decode_content=False)
        else:
            while True:
                data = resp.read1(chunk_size, decode_content=False)
                if not data:
                    break
                yield data
    except (Urllib3Error, OSError, ValueError, AttributeError) as exc:
        raise UpstreamStreamError(f"{type(exc).__name__}: {exc}") from exc


def read_small(resp: urllib3.BaseHTTPResponse, limit: int = 1 << 20) -> tuple[bytes, bool]:
    """Read an (error) body, raw, stopping after ``limit`` bytes.

    :returns: ``(bytes read, complete)``; ``complete`` is False if the body is longer than ``limit``
        (the rest is still unread on ``resp``).
    :raises UpstreamStreamError: on failure.
    """
    out = bytearray()
    for piece in iter_body(resp):
        out += piece
        if len(out) > limit:
            return bytes(out), False
    return bytes(out), True
