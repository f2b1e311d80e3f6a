"""Integration: what a client can hold of shunt before and without its key: the key is checked
before the body is read, ``100 Continue`` only after the checks, header sizes, deadlines for slow and
idle clients (408), and the connection cap (503)."""

import json
import socket

from tests.support import MSG, raw

BODY = json.dumps(MSG).encode()


def post_head(length: int, extra: bytes = b"") -> bytes:
    return (b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" + extra
            + b"content-length: %d\r\n\r\n" % length)


def test_the_key_is_checked_before_the_body_is_read(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], remote_key="sekrit")
    # A 31 MiB upload without the key: answered 401 at once, with none of the body sent, and closed.
    out = raw(p.port, post_head(31 << 20), timeout=5)
    assert out.startswith(b"HTTP/1.1 401 ") and b"connection: close" in out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "authentication_error"
    # Expect: 100-continue: no interim answer before a 401 or a 413, and the body is never asked for.
    out = raw(p.port, post_head(len(BODY), b"expect: 100-continue\r\n"), timeout=5)
    assert out.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in out
    out = raw(p.port, post_head(64 << 20, b"x-api-key: sekrit\r\nexpect: 100-continue\r\n"), timeout=5)
    assert out.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in out
    # With the key, 100 Continue comes first, then the answer.
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(post_head(len(BODY), b"x-api-key: sekrit\r\nexpect: 100-continue\r\nconnection: close\r\n"))
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(BODY)
        out = b""
        while piece := s.recv(65536):
            out += piece
    assert out.startswith(b"HTTP/1.1 200 ")
    # A 401 without a body keeps the connection (nothing is left unread).
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nhost: x\r\n\r\nGET /status HTTP/1.1\r\nhost: x\r\nx-api-key: sekrit\r\n"
                  b"connection: close\r\n\r\n")
        out = b""
        while piece := s.recv(65536):
            out += piece
    assert out.startswith(b"HTTP/1.1 401 ") and b"HTTP/1.1 200 " in out
    assert len(upstream.received) == 1
