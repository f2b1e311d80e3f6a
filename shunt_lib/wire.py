"""HTTP/1.1 as a client sends it to shunt: request line, header fields, body; and chunk framing.

Pure functions over a file object with ``readline``/``read`` (a socket's buffered reader in the
server, ``io.BytesIO`` in tests). Each malformation raises one typed error from
:mod:`shunt_lib.errors`, which maps to one status:

========================================  ===================  ======
what is wrong                             raises               status
========================================  ===================  ======
request line not ``METHOD TARGET HTTP/x``  BadRequest           400
HTTP/2 or later on this HTTP/1.1 port     VersionNotSupported  505
header lines over 64 KiB, > 100 fields    HeadersTooLarge      431
folded line, no colon, bad field name     BadRequest           400
bad ``content-length`` or chunk framing   BadRequest           400
``chunked`` not the last transfer coding  BadRequest           400
a transfer coding other than ``chunked``  UnsupportedCoding    501
body over the limit                        BodyTooLarge         413
client closes inside the body             ClientDisconnected   (no answer: the connection is gone)
========================================  ===================  ======

The rules follow RFC 9112 (https://www.rfc-editor.org/rfc/rfc9112): obsolete line folding may be
refused with 400 (§5.2); ``Transfer-Encoding: chunked`` wins over ``Content-Length`` (§6.3) and the
connection closes after such a request; a request whose final transfer coding is not ``chunked`` is
refused with 400, one with any other coding with 501 (§6.1, §6.3); chunked coding per §7.1;
``Content-Length`` is digits only (RFC 9110 §8.6). Limits are those of ``http.client`` (65,536-byte
lines, 100 fields), with 65,536 bytes for all header lines together.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Protocol

from .errors import BadRequest, BodyTooLarge, ClientDisconnected, HeadersTooLarge, UnsupportedCoding, VersionNotSupported

MAX_HEADER_LINE = 65536
MAX_HEADER_BYTES = 65536  # all header lines together, CRLFs included (Claude Code sends about 2 KB)
MAX_HEADERS = 100
CHUNK_LINE_MAX = 4096
LAST_CHUNK = b"0\r\n\r\n"

_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# A field line as RFC 9110 §5.1 and RFC 9112 §5 define it: a token, a colon, a value of visible
# characters with spaces or tabs inside (no CR, LF or NUL), optional whitespace around it, CRLF.
_NAME = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = rb"[^\r\n\0]*"  # trailing spaces and tabs are stripped after the match (a fast character-class scan)
_FIELD = re.compile(rb"(" + _NAME + rb"):[ \t]*(" + _VALUE + rb")\r\n")
_CONTROL = re.compile(rb"[\r\n\0]")
_CONTROL_TEXT = re.compile("[\r\n\0]")
_BLOCK = re.compile(rb"(?:" + _NAME + rb":" + _VALUE + rb"\r\n)*\r\n")  # all fields and the blank line
_BLANK = (b"\r\n", b"\n", b"")


class Reader(Protocol):
    """What the parser reads from: a buffered binary stream."""

    def readline(self, limit: int = -1, /) -> bytes: ...

    def read(self, n: int = -1, /) -> bytes: ...


class RequestLine(NamedTuple):
    """A parsed request line. ``version`` is ``HTTP/0.9`` for a two-word ``GET /path`` (no headers
    follow then), ``HTTP/1.0`` or ``HTTP/1.1``; ``persistent`` is the default before headers are read
    (HTTP/1.1 and later keep the connection open)."""

    method: str
    target: str
    version: str
    persistent: bool


class Headers:
    """A request's header fields: :meth:`items` in order as sent, :attr:`by_name` (lower-case name →
    value; a repeated name's values joined with ", ", as RFC 9110 §5.3 allows), and a case-insensitive
    :meth:`get`. Stands in for ``http.client.HTTPMessage`` at a fraction of its cost."""

    __slots__ = ("_items", "by_name")

    def __init__(self, items: list[tuple[str, str]]):
        self._items = items
        by_name: dict[str, str] = {}
        for k, v in items:
            lk = k.lower()
            by_name[lk] = by_name[lk] + ", " + v if lk in by_name else v
        self.by_name = by_name

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs in the order and spelling the client sent."""
        return self._items

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name`` (any case), or ``default``."""
        return self.by_name.get(name.lower(), default)

    def __getitem__(self, name: str) -> str | None:
        return self.by_name.get(name.lower())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self.by_name


def parse_request_line(raw: bytes) -> RequestLine | None:
    """Parse a request line (with or without its CRLF) by the standard library's rules.

    :returns: the :class:`RequestLine`, or None for an empty line (a client that sent nothing).
    :raises BadRequest: not ``METHOD TARGET [HTTP/x.y]``, a malformed version, or HTTP/0.9 other than GET.
    :raises VersionNotSupported: HTTP/2.0 or later.
    """
    text = str(raw, "iso-8859-1").rstrip("\r\n")
    words = text.split()
    if not words:
        return None
    if len(words) == 3:
        version = words[2]
        try:
            if not version.startswith("HTTP/"):
                raise ValueError
            parts = version[5:].split(".")
            if len(parts) != 2 or not all(p.isdigit() and len(p) <= 10 for p in parts):
                raise ValueError
            number = int(parts[0]), int(parts[1])
        except ValueError:
            raise BadRequest(f"Bad request version ({version!r})") from None
        if number >= (2, 0):
            raise VersionNotSupported(f"Invalid HTTP version ({version})")
        target = words[1]
        if target.startswith("//"):
            target = "/" + target.lstrip("/")
        return RequestLine(words[0], target, version, number >= (1, 1))
    if len(words) == 2 and words[0] == "GET":
        return RequestLine("GET", words[1], "HTTP/0.9", False)
    if len(words) == 2:
        raise BadRequest(f"Bad HTTP/0.9 request type ({words[0]!r})")
    raise BadRequest(f"Bad request syntax ({text!r})")


def read_headers(rfile: Reader) -> Headers:
    """Read header lines up to the blank line.

    When the whole block is already buffered (a client sends its head in one go, as they do) it is
    taken in one read and parsed by one regular expression; otherwise line by line, with the same
    rules (and a message naming what is wrong).

    :raises BadRequest: a folded line, a line without a colon, a bad field name or a control character.
    :raises HeadersTooLarge: a line over 65,536 bytes, lines over :data:`MAX_HEADER_BYTES` in all, or
        more than 100 fields.
    """
    peek = getattr(rfile, "peek", None)
    if peek is not None:
        buffered = peek(MAX_HEADER_BYTES)  # a block found in here is within the total limit
        end = 2 if buffered.startswith(b"\r\n") else buffered.find(b"\r\n\r\n") + 4
        if end != 3 and _BLOCK.fullmatch(buffered, 0, end):
            lines = buffered[:end - 4].decode("latin-1").split("\r\n") if end > 2 else []
            if len(lines) <= MAX_HEADERS:
                rfile.read(end)
                items = []
                for line in lines:  # each is NAME:VALUE, as the block's match proved
                    name, _, value = line.partition(":")
                    items.append((name, value.strip(" \t")))
                return Headers(items)
    return _read_header_lines(rfile)


def simple_fields(block: bytes) -> list[tuple[str, str]] | None:
    """The fields of a header block (every line up to and with the blank line, as read) when each is a
    plain ``NAME:VALUE`` with CRLF, the form :func:`read_headers` takes in one match: ``(name, value)``
    pairs in order, values without surrounding spaces and tabs (RFC 9112 §5.1). :returns: None for any
    other form (bare LF, folded lines, no colon, control characters), which a caller parses its slower way."""
    if not _BLOCK.fullmatch(block):
        return None
    if len(block) == 2:
        return []
    pairs = []
    for line in block[:-4].decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        pairs.append((name, value.strip(" \t")))
    return pairs


def _read_header_lines(rfile: Reader) -> Headers:
    items: list[tuple[str, str]] = []
    total = 0
    while True:
        line = rfile.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise HeadersTooLarge("header line too long")
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"header fields over {MAX_HEADER_BYTES} bytes in all")
        if line in _BLANK:
            return Headers(items)
        if len(items) >= MAX_HEADERS:
            raise HeadersTooLarge(f"more than {MAX_HEADERS} headers")
        if line[:1] in (b" ", b"\t"):
            raise BadRequest("obsolete header line folding is not accepted")
        m = _FIELD.fullmatch(line if line.endswith(b"\r\n") else line.rstrip(b"\n") + b"\r\n")
        if m is None:
            raise BadRequest(f"malformed header line {line[:80]!r}")
        items.append((m[1].decode("latin-1"), m[2].rstrip(b" \t").decode("latin-1")))


def field_block(fields: list[str]) -> bytes | None:
    """``fields`` (``"name: value"`` each, latin-1) as the header block of a request: each with CRLF,
    then a blank line. :returns: None if a field breaks the rules :func:`read_headers` applies to a
    client's (a name that is not a token; CR, LF or NUL anywhere, which could smuggle in a field).
    :raises UnicodeEncodeError: (a ValueError) if a field is not latin-1, as ``http.client`` would."""
    if _CONTROL_TEXT.search("".join(fields)):
        return None
    block = ("\r\n".join(fields) + "\r\n\r\n").encode("latin-1") if fields else b"\r\n"
    return block if _BLOCK.fullmatch(block) else None


def persistent(line: RequestLine, headers: Headers) -> bool:
    """Whether the connection stays open after this request: the version's default, overridden by a
    ``close`` or ``keep-alive`` option anywhere in the ``Connection`` field's comma-separated list
    (``close`` wins; RFC 9110 §7.6.1, RFC 9112 §9.3)."""
    conn = headers.by_name.get("connection")
    if not conn:
        return line.persistent
    options = {t.strip().lower() for t in conn.split(",")}
    if "close" in options:
        return False
    return True if "keep-alive" in options else line.persistent


class Framing(NamedTuple):
    """How a request's body is delimited: ``chunked``, or ``length`` bytes (0: no body).
    ``close``: the connection must close after the answer (both ``Transfer-Encoding`` and
    ``Content-Length`` were sent, which RFC 9112 §6.3 treats as a possible smuggling attempt)."""

    chunked: bool
    length: int
    close: bool


def body_framing(headers: Headers, limit: int) -> Framing:
    """Check a request's body framing before any of the body is read.

    :param limit: the largest body accepted, bytes.
    :raises BadRequest: ``chunked`` is not the last transfer coding or appears twice, or
        ``content-length`` is not digits only (RFC 9110 §8.6 ``1*DIGIT``; a repeated "5, 5" is refused).
    :raises UnsupportedCoding: a transfer coding other than ``chunked`` (RFC 9112 §6.1: 501).
    :raises BodyTooLarge: a ``content-length`` over ``limit``.
    """
    te = headers.by_name.get("transfer-encoding")
    cl = headers.by_name.get("content-length")
    if te is not None:
        codings = [t.strip().lower() for t in te.split(",") if t.strip()]  # empty list elements are ignored
        if not codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
            raise BadRequest(f"transfer-encoding {te!r}: chunked must be the final coding, once")
        if len(codings) > 1:
            raise UnsupportedCoding(f"transfer-encoding {te!r}: shunt accepts only chunked")
        return Framing(True, 0, cl is not None)
    if cl is None:
        return Framing(False, 0, False)
    if not (cl.isascii() and cl.isdigit()):  # also refuses "-1", "+5", "1_0" and a repeated "5, 5"
        raise BadRequest("invalid content-length")
    n = int(cl)
    if n > limit:
        raise BodyTooLarge(f"request body is {n} bytes; shunt accepts at most {limit} (server.max_body_bytes)")
    return Framing(False, n, False)


def read_body(rfile: Reader, headers: Headers, limit: int, framing: Framing | None = None) -> bytes:
    """Read the request body as :func:`body_framing` finds it delimited: chunked, ``content-length``
    bytes in one read, or none.

    :param limit: the largest body accepted, bytes.
    :param framing: :func:`body_framing`'s result if the caller has it already.
    :raises BodyTooLarge: over ``limit`` (nothing more is read: the caller closes the connection).
    :raises BadRequest: / :raises UnsupportedCoding: bad framing (see :func:`body_framing`) or
        malformed chunks.
    :raises ClientDisconnected: the client closed before the end of the body.
    """
    if framing is None:
        framing = body_framing(headers, limit)
    if framing.chunked:
        return _read_chunked(rfile, limit)
    n = framing.length
    if n == 0:
        return b""
    data = rfile.read(n)
    if len(data) != n:
        raise ClientDisconnected("client closed before sending the whole body")
    return data


def discard_body(rfile: Reader, length: int) -> None:
    """Read ``length`` bytes of a body and keep none of them (64 KiB at a time).

    :raises ClientDisconnected: the client closed before the end of the body.
    """
    while length > 0:
        got = len(rfile.read(min(length, 65536)))
        if got == 0:
            raise ClientDisconnected("client closed before sending the whole body")
        length -= got


def _read_chunked(rfile: Reader, limit: int) -> bytes:
    out = bytearray()
    while True:
        line = rfile.readline(CHUNK_LINE_MAX)
        if not line.endswith(b"\n"):
            if not line:
                raise ClientDisconnected("client closed inside a chunked body")
            raise BadRequest("malformed chunked body")
        size_field = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_field):
            raise BadRequest("malformed chunk size")
        size = int(size_field, 16)
        if size == 0:
            while rfile.readline(CHUNK_LINE_MAX) not in _BLANK:
                pass  # trailer fields are ignored
            return bytes(out)
        if len(out) + size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes (server.max_body_bytes)")
        data = rfile.read(size)
        if len(data) != size:
            raise ClientDisconnected("client closed inside a chunk")
        out += data
        if rfile.readline(CHUNK_LINE_MAX) not in (b"\r\n", b"\n"):
            raise BadRequest("chunk data not followed by CRLF")


def frame_chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk: hex size, CRLF, data, CRLF (RFC 9112 §7.1). Empty data is the caller's
    mistake (it would end the body): use :data:`LAST_CHUNK` for that."""
    return b"%x\r\n%s\r\n" % (len(data), data)
