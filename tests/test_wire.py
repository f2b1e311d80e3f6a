"""The HTTP/1.1 request parser over BytesIO: request line, headers, bodies, and the error each fault raises."""

import io

import pytest

from shunt_lib import errors
from shunt_lib.wire import (
    LAST_CHUNK,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    Framing,
    Headers,
    RequestLine,
    body_framing,
    frame_chunk,
    parse_request_line,
    persistent,
    read_body,
    read_headers,
)


def headers(raw: bytes) -> Headers:
    """Parse ``raw`` both ways: line by line (``BytesIO`` cannot peek) and as one buffered block;
    both must give the same fields, or raise the same error."""
    outcomes = []
    for stream in (io.BytesIO(raw), io.BufferedReader(io.BytesIO(raw), 1 << 16)):
        try:
            h = read_headers(stream)
            outcomes.append((h.items(), stream.read()))
        except errors.ShuntError as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1], outcomes
    if isinstance(outcomes[0], type):
        raise outcomes[0]("(see the line-by-line parse)")
    return Headers(outcomes[0][0])


def test_request_lines_and_their_defaults():
    assert parse_request_line(b"POST /v1/messages?beta=true HTTP/1.1\r\n") == RequestLine(
        "POST", "/v1/messages?beta=true", "HTTP/1.1", True)
    assert parse_request_line(b"GET /health HTTP/1.0\r\n") == RequestLine("GET", "/health", "HTTP/1.0", False)
    assert parse_request_line(b"GET //v1//models HTTP/1.1\r\n").target == "/v1//models"
    assert parse_request_line(b"GET /old\r\n") == RequestLine("GET", "/old", "HTTP/0.9", False)
    assert parse_request_line(b"\r\n") is None and parse_request_line(b"") is None


@pytest.mark.parametrize("line, error", [
    (b"GARBAGE\r\n", errors.BadRequest),
    (b"POST /old\r\n", errors.BadRequest),  # HTTP/0.9 knows only GET
    (b"POST /v1/messages HTTP/1.1 extra\r\n", errors.BadRequest),
    (b"POST /v1/messages HTTPS/1.1\r\n", errors.BadRequest),
    (b"POST /v1/messages HTTP/1\r\n", errors.BadRequest),
    (b"POST /v1/messages HTTP/1.x\r\n", errors.BadRequest),
    (b"POST /v1/messages HTTP/2.0\r\n", errors.VersionNotSupported),
    (b"POST /v1/messages HTTP/9.9\r\n", errors.VersionNotSupported),
])
def test_bad_request_lines_raise_one_typed_error_each(line, error):
    with pytest.raises(error) as exc:
        parse_request_line(line)
    assert exc.value.status == {errors.BadRequest: 400, errors.VersionNotSupported: 505}[error]


def test_headers_keep_order_and_spelling_and_join_repeats():
    h = headers(b"Host: x\r\nX-Dup: 1\r\ncontent-type: application/json\r\nx-dup: 2\r\nEmpty:\r\n\r\nBODY")
    assert h.items() == [("Host", "x"), ("X-Dup", "1"), ("content-type", "application/json"), ("x-dup", "2"), ("Empty", "")]
    assert h.by_name == {"host": "x", "x-dup": "1, 2", "content-type": "application/json", "empty": ""}
    assert h.get("X-DUP") == "1, 2" and h["CONTENT-TYPE"] == "application/json" and "host" in h and "nope" not in h
    assert h.get("nope", "d") == "d"
    assert headers(b"\n").items() == [] and headers(b"").items() == []  # LF alone ends them too; EOF ends them


def test_header_value_whitespace_is_trimmed():
    assert headers(b"a:   spaced \t\r\n\r\n").by_name["a"] == "spaced"


def test_the_line_by_line_parse_names_the_fault():
    with pytest.raises(errors.BadRequest, match="folding"):
        read_headers(io.BytesIO(b"x-folded: a\r\n  b\r\n\r\n"))
    with pytest.raises(errors.HeadersTooLarge, match="too long"):
        read_headers(io.BytesIO(b"x-long: " + b"v" * 70000 + b"\r\n\r\n"))
    with pytest.raises(errors.BadRequest, match="malformed header line"):
        read_headers(io.BytesIO(b"bad name: v\r\n\r\n"))


def test_a_buffered_block_is_taken_in_one_read_and_no_further():
    stream = io.BufferedReader(io.BytesIO(b"a: 1\r\nb: 2\r\n\r\n{\"body\": 1}"), 1 << 16)
    assert read_headers(stream).items() == [("a", "1"), ("b", "2")]
    assert stream.read() == b'{"body": 1}'
    stream = io.BufferedReader(io.BytesIO(b"\r\nrest"), 1 << 16)
    assert read_headers(stream).items() == [] and stream.read() == b"rest"
    small = io.BufferedReader(io.BytesIO(b"a: 1\r\n" + b"x-pad: " + b"p" * 100 + b"\r\n\r\nrest"), 16)
    assert len(read_headers(small).items()) == 2 and small.read() == b"rest"  # the block outgrew the buffer


@pytest.mark.parametrize("raw, error, needle", [
    (b"x-folded: a\r\n  b\r\n\r\n", errors.BadRequest, "folding"),
    (b"no colon here\r\n\r\n", errors.BadRequest, "malformed"),
    (b"bad name: v\r\n\r\n", errors.BadRequest, "malformed"),
    (b": no name\r\n\r\n", errors.BadRequest, "malformed"),
    (b"x: a\x00b\r\n\r\n", errors.BadRequest, "malformed"),
    (b"x: a\rb\r\n\r\n", errors.BadRequest, "malformed"),
    (b"x\x01y: v\r\n\r\n", errors.BadRequest, "malformed"),  # a name is a token (RFC 9110 §5.1)
    (b"caf\xe9: v\r\n\r\n", errors.BadRequest, "malformed"),
    (b"x-long: " + b"v" * 70000 + b"\r\n\r\n", errors.HeadersTooLarge, "too long"),
    (b"".join(b"x-h%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n", errors.HeadersTooLarge, "more than 100"),
])
def test_bad_headers_raise_one_typed_error_each(raw, error, needle):
    with pytest.raises(error):
        headers(raw)
    with pytest.raises(error, match=needle):
        read_headers(io.BytesIO(raw))


def test_header_lines_are_bounded_in_total_not_only_each():
    block = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(70)) + b"\r\n"  # 70 lines of 1 KB
    assert len(block) > MAX_HEADER_BYTES
    with pytest.raises(errors.HeadersTooLarge, match="in all"):
        read_headers(io.BytesIO(block))
    with pytest.raises(errors.HeadersTooLarge):
        headers(block)
    fits = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(60)) + b"\r\n"
    assert len(headers(fits).items()) == 60


def test_exactly_100_headers_are_fine():
    assert len(headers(b"".join(b"x-h%d: v\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n").items()) == MAX_HEADERS


def test_connection_persistence_by_version_and_header():
    v11, v10 = parse_request_line(b"GET / HTTP/1.1"), parse_request_line(b"GET / HTTP/1.0")
    assert persistent(v11, Headers([])) and not persistent(v10, Headers([]))
    assert not persistent(v11, Headers([("Connection", "Close")]))
    assert persistent(v10, Headers([("connection", "keep-alive")]))
    # Connection is a list of options (RFC 9110 §7.6.1): close anywhere in it closes.
    assert not persistent(v11, Headers([("Connection", "close, x-foo")]))
    assert not persistent(v11, Headers([("Connection", "x-foo"), ("connection", " Close")]))
    assert not persistent(v10, Headers([("Connection", "keep-alive, close")]))
    assert persistent(v10, Headers([("Connection", "x-foo,keep-alive")]))
    assert persistent(v11, Headers([("Connection", "x-foo")])) and not persistent(v10, Headers([("Connection", "x")]))


def body(raw: bytes, hdrs: list, limit: int = 1 << 20) -> bytes:
    return read_body(io.BytesIO(raw), Headers(hdrs), limit)


def test_content_length_body_is_read_in_one_piece_and_no_further():
    stream = io.BytesIO(b"hello, worldNEXT REQUEST")
    assert read_body(stream, Headers([("Content-Length", "12")]), 100) == b"hello, world"
    assert stream.read() == b"NEXT REQUEST"
    assert body(b"ignored", []) == b""  # no framing: no body
    assert body(b"", [("content-length", "0")]) == b""


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "+120", "1_20", " 5x", "5, 5", "1e3", "٣", ""])
def test_bad_content_length_is_400(value):
    with pytest.raises(errors.BadRequest, match="content-length"):
        body(b"12345", [("content-length", value)])


@pytest.mark.parametrize("value, error", [
    ("gzip", errors.BadRequest),  # chunked must be the final coding (RFC 9112 §6.3)
    ("chunked, gzip", errors.BadRequest),
    ("chunked, chunked", errors.BadRequest),
    ("xchunked", errors.BadRequest),
    ("chunked;q=1", errors.BadRequest),
    ("", errors.BadRequest),
    ("gzip, chunked", errors.UnsupportedCoding),  # understood framing, but a coding shunt cannot undo: 501
    ("identity, chunked", errors.UnsupportedCoding),
])
def test_transfer_codings_other_than_a_final_chunked_are_refused(value, error):
    with pytest.raises(error) as exc:
        body(b"5\r\nhello\r\n0\r\n\r\n", [("transfer-encoding", value)])
    assert exc.value.status == {errors.BadRequest: 400, errors.UnsupportedCoding: 501}[error]


def test_framing_is_decided_before_the_body_is_read():
    assert body_framing(Headers([("Transfer-Encoding", "Chunked")]), 10) == Framing(True, 0, False)
    assert body_framing(Headers([("transfer-encoding", "chunked,"), ("content-length", "3")]), 10) == Framing(True, 0, True)
    assert body_framing(Headers([("content-length", "10")]), 10) == Framing(False, 10, False)
    assert body_framing(Headers([]), 10) == Framing(False, 0, False)
    with pytest.raises(errors.BodyTooLarge):
        body_framing(Headers([("content-length", "11")]), 10)


def test_limits_are_enforced_before_reading():
    stream = io.BytesIO(b"x" * 100)
    with pytest.raises(errors.BodyTooLarge) as exc:
        read_body(stream, Headers([("content-length", "100")]), 99)
    assert exc.value.status == 413 and stream.tell() == 0
    with pytest.raises(errors.BodyTooLarge):
        body(b"40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n", [("transfer-encoding", "chunked")], limit=63)


def test_short_bodies_mean_the_client_left():
    with pytest.raises(errors.ClientDisconnected):
        body(b"abc", [("content-length", "10")])
    with pytest.raises(errors.ClientDisconnected):
        body(b"a\r\nabc", [("transfer-encoding", "chunked")])
    with pytest.raises(errors.ClientDisconnected):
        body(b"", [("transfer-encoding", "chunked")])


def test_chunked_bodies_with_extensions_and_trailers():
    raw = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\nNEXT"
    stream = io.BytesIO(raw)
    assert read_body(stream, Headers([("Transfer-Encoding", "chunked"), ("content-length", "3")]), 100) == b"hello, world"
    assert stream.read() == b"NEXT"  # chunked wins over content-length; the trailer is consumed


@pytest.mark.parametrize("raw", [b"-1\r\n", b"0x10\r\n", b"1_0\r\n", b"zz\r\n", b"1" * 17 + b"\r\n",
                                 b"2\r\n{}XX0\r\n\r\n", b"3" + b" " * 5000])
def test_malformed_chunks_are_400(raw):
    with pytest.raises(errors.BadRequest):
        body(raw + b"x" * 16 + b"\r\n0\r\n\r\n", [("transfer-encoding", "chunked")])


def test_chunk_framing_round_trips_through_the_parser():
    framed = frame_chunk(b"ab") + frame_chunk(b"x" * 300) + LAST_CHUNK
    assert framed.startswith(b"2\r\nab\r\n12c\r\n")
    assert body(framed, [("transfer-encoding", "chunked")]) == b"ab" + b"x" * 300
