"""The upstream response head reader decides everything as http.client does, on any head."""

import http.client
import io

import pytest

from shunt_lib.upstream_head import HeadMessage, HeadResponse, last_fields


class FakeSock:
    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, mode):
        return io.BytesIO(self.data)


HEADS = [
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"ok\": true}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nrequest-id: req_1\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 529 \r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Empty:\r\nx-spaces:   padded\t \r\n\r\n",
    b"HTTP/1.1 100 Continue\r\nx-hint: 1\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    # unusual heads go to the standard library's own parser
    b"HTTP/1.1 200 OK\r\nx-folded: one\r\n two\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 429 Too Many Requests\r\nanthropic-ratelimit-unified-status: rejected\r\nretry-after: 30\r\n"
    b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
]


def parse(cls, data: bytes, method: str = "POST"):
    resp = cls(FakeSock(data), method=method)
    resp.begin()
    return resp


@pytest.mark.parametrize("data", HEADS)
@pytest.mark.parametrize("method", ["POST", "HEAD"])
def test_the_same_decisions_and_fields_as_http_client(data, method):
    ours, theirs = parse(HeadResponse, data, method), parse(http.client.HTTPResponse, data, method)
    for attr in ("status", "reason", "version", "chunked", "length", "will_close"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    # the same fields, values without the trailing whitespace RFC 9112 says is not part of them
    assert [(k, v.rstrip(" \t")) for k, v in ours.msg.items()] == [(k, v.rstrip(" \t")) for k, v in theirs.msg.items()]
    for name in ("content-length", "Content-Length", "set-cookie", "x-missing", "transfer-encoding"):
        assert (ours.msg.get(name) or "").rstrip(" \t") == (theirs.msg.get(name) or "").rstrip(" \t")
        assert ours.msg.get_all(name) == theirs.msg.get_all(name) or name == "x-spaces"
    assert ours.read() == theirs.read()
    assert isinstance(ours.msg, http.client.HTTPMessage)  # urllib3 checks this (assert_header_parsing)


def test_a_plain_head_skips_the_email_parser_and_is_kept_for_the_relay():
    resp = parse(HeadResponse, HEADS[12])
    assert type(resp.msg) is HeadMessage
    assert last_fields() == [("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("X-Empty", ""), ("x-spaces", "padded")]
    assert last_fields() is None  # taken once
    assert type(parse(HeadResponse, HEADS[14]).msg) is http.client.HTTPMessage  # folded: the standard library's way


def test_limits_as_http_client():
    long_line = b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70000 + b"\r\n\r\n"
    many = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x%d: 1\r\n" % i for i in range(101)) + b"\r\n"
    for data, exc in ((long_line, http.client.LineTooLong), (many, http.client.HTTPException)):
        with pytest.raises(exc):
            parse(HeadResponse, data)
        with pytest.raises(exc):
            parse(http.client.HTTPResponse, data)
    with pytest.raises(http.client.RemoteDisconnected):
        parse(HeadResponse, b"")
    with pytest.raises(http.client.UnknownProtocol):
        parse(HeadResponse, b"HTTP/2.0 200 OK\r\n\r\n")
