"""The head of an upstream answer, read without the ``email`` package on the common path.

``http.client`` parses every response head with ``email.parser`` (a general RFC 5322 parser) and
answers each ``msg.get(name)`` by a scan of all fields; urllib3 then copies the fields into its own
dict. On shunt's small requests that was about a quarter of the Python work per request. Here a head
whose fields are all plain ``NAME:VALUE`` lines (what HTTP servers send) is split by
:func:`~shunt_lib.wire.simple_fields`, the same rule shunt applies to clients' heads; any other head
(obsolete line folding, bare LF, a line without a colon) goes to ``http.client.parse_headers``, so its
meaning is the standard library's. Status line, ``1xx`` answers, framing and keep-alive are decided as
``http.client.HTTPResponse.begin`` decides them (Python 3.11–3.14).
"""

from __future__ import annotations

import http.client
import threading

from .wire import simple_fields

MAX_LINE = 65536  # http.client's limits on a response head: bytes per line, and fields
MAX_FIELDS = 100

#: The fields ``http.client.HTTPResponse.begin`` looks up: kept in a dict, the rest only in the list.
FRAMING = frozenset({"transfer-encoding", "content-length", "connection", "keep-alive"})

_received = threading.local()  # .items: the fields of the head this thread read last


class HeadMessage(http.client.HTTPMessage):
    """An ``http.client.HTTPMessage`` built from ``(name, value)`` pairs, with the framing fields
    ``http.client`` asks for (:data:`FRAMING`) kept in a dict; :meth:`get` of any other name scans
    the fields as ``email.message.Message.get`` does.

    Read-only in use: ``http.client`` and urllib3 only read a response's fields, and shunt never changes
    them (a framing field set after construction is not seen by :meth:`get`)."""

    def __init__(self, pairs: list[tuple[str, str]]):
        super().__init__()
        framing: dict[str, str] = {}
        for name, value in pairs:
            self.set_raw(name, value)
            key = name.lower()
            if key in FRAMING and key not in framing:
                framing[key] = value
        self._framing = framing

    def get(self, name, failobj=None):
        """The first value of field ``name`` (any case), or ``failobj``: as ``email.message.Message.get``."""
        key = name.lower()
        if key in FRAMING:
            return self._framing.get(key, failobj)
        for k, v in self.raw_items():
            if k.lower() == key:
                return v
        return failobj

    def items(self):
        """``(name, value)`` pairs in order, as received."""
        return list(self.raw_items())


def read_fields(fp) -> http.client.HTTPMessage:
    """Read a head's field lines up to the blank line from ``fp`` (a binary file with ``readline``).

    :raises http.client.LineTooLong: a line over :data:`MAX_LINE` bytes.
    :raises http.client.HTTPException: more than :data:`MAX_FIELDS` fields.
    """
    lines = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_FIELDS:
            raise http.client.HTTPException(f"got more than {MAX_FIELDS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    block = b"".join(lines)
    pairs = simple_fields(block)
    if pairs is None:
        import email.parser  # the standard library's reading of an unusual head

        return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(block.decode("iso-8859-1"))
    return HeadMessage(pairs)


def last_fields() -> list[tuple[str, str]] | None:
    """The ``(name, value)`` pairs of the last head this thread read with :class:`HeadResponse` (and
    forget them), or None if it read none since the last call."""
    items = getattr(_received, "items", None)
    _received.items = None
    return items


class HeadResponse(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` whose head is read by :func:`read_fields` (set as a connection's
    ``response_class``). The rest of ``begin`` follows ``http.client``: skip ``100 Continue`` heads, the
    version, chunked framing, keep-alive, and the content length."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()  # http.client's own status-line reader
            if status != http.client.CONTINUE:
                break
            read_fields(self.fp)  # a 100 answer's fields are dropped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = read_fields(self.fp)
        _received.items = self.msg.items()
        tr_enc = self.msg.get("transfer-encoding")
        self.chunked = bool(tr_enc) and tr_enc.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.msg.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True
