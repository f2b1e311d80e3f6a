"""Integration: bad input gets a clear Anthropic-shaped error and changes no state."""

import json
import time

from tests.support import MSG, raw


def test_body_over_max_body_bytes_is_413(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], max_body_bytes=2048)
    status, h, body = p.request(body=b"x" * 4096)
    assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large"
    assert upstream.received == []
    # Chunked uploads are limited too.
    out = raw(p.port, b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n"
                 b"1000\r\n" + b"y" * 4096 + b"\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413")


def test_chunked_request_body_is_forwarded(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    body = json.dumps(MSG).encode()
    out = raw(p.port, b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
                 + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert out.startswith(b"HTTP/1.1 200")
    assert upstream.received[0].body == body


def test_malformed_http_gets_json_400(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    for bad in (b"GARBAGE\r\n\r\n", b"POST /v1/messages HTTP/9.9\r\n\r\n",
                b"POST /v1/messages HTTP/1.1\r\ncontent-length: abc\r\n\r\n",
                b"POST /v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"):
        out = raw(p.port, bad)
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] in (b"400", b"505"), out
        assert json.loads(body)["type"] == "error"
    # A transfer coding shunt cannot undo gets 501, one that is not finally chunked 400; both close.
    for te, status in ((b"gzip, chunked", b"501"), (b"chunked, gzip", b"400"), (b"xchunked", b"400")):
        out = raw(p.port, b"POST /v1/messages HTTP/1.1\r\ntransfer-encoding: " + te + b"\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        assert out.split(b" ", 2)[1] == status and out.count(b"HTTP/1.1") == 1, out
    assert upstream.received == []
    assert p.srv.status()["accounts"][0]["requests"] == 0


def test_tokens_never_appear_in_status_errors_or_logs(make_proxy, upstream, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="shunt")
    p = make_proxy([("a", "oauth")], max_wait_s=0)
    p.request(body=MSG)
    p.pool.cool("a", time.time() + 60, "test")
    status, _, body = p.request(body=MSG)
    assert status == 429
    doc = json.dumps(p.srv.status())
    for secret in ("tok-a", "ref-a"):
        assert secret not in doc and secret not in body.decode() and secret not in caplog.text


def test_header_parsing_rules(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    body = json.dumps(MSG).encode()
    head = b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n" % len(body)
    folded = raw(p.port, head + b"x-folded: a\r\n  b\r\n\r\n" + body)
    assert folded.startswith(b"HTTP/1.1 400") and b"folding" in folded
    assert raw(p.port, head + b"no colon here\r\n\r\n" + body).startswith(b"HTTP/1.1 400")
    assert raw(p.port, head + b"bad name: v\r\n\r\n" + body).startswith(b"HTTP/1.1 400")
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(101))
    assert raw(p.port, head + many + b"\r\n" + body).startswith(b"HTTP/1.1 431")
    assert raw(p.port, head + b"x-long: " + b"v" * 70000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
    assert upstream.received == []
    # Expect: 100-continue gets its interim answer; repeated headers are forwarded joined.
    out = raw(p.port, head + b"expect: 100-continue\r\nx-dup: 1\r\nX-Dup: 2\r\nconnection: close\r\n\r\n" + body)
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
    assert upstream.received[-1].header("x-dup") == "1, 2"
    # HTTP/1.0 closes after the answer (raw() fails if the connection stays open).
    out = raw(p.port, b"POST /v1/messages HTTP/1.0\r\ncontent-length: %d\r\n\r\n" % len(body) + body, timeout=5)
    assert b" 200 " in out.split(b"\r\n")[0]
