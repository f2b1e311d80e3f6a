"""Integration: what a client can hold of shunt before and without its key: the key is checked
before the body is read, ``100 Continue`` only after the checks, header sizes, deadlines for slow and
idle clients (408), and the connection cap (503)."""

import http.client
import io
import json
import socket
import time

import pytest

from shunt_lib.connections import ConnectionTable, DeadlineReader
from shunt_lib.errors import RequestTimeout
from shunt_lib.head_wait import HEAD_PEEK_BYTES, head_complete
from shunt_lib.limits import Admission, Limits, admission, body_deadline_s
from tests.support import MSG, raw, wait_until

BODY = json.dumps(MSG).encode()


def test_a_body_deadline_is_its_grace_plus_its_bytes_at_the_minimum_rate():
    limits = Limits(header_timeout_s=10, min_body_rate_bytes_s=1000)
    assert body_deadline_s(100.0, 0, limits) == 110.0
    assert body_deadline_s(100.0, 5000, limits) == 115.0  # 5,000 bytes buy 5 s more
    assert body_deadline_s(100.0, 5000, limits._replace(min_body_rate_bytes_s=0)) is None  # no minimum


def test_admission_accepts_below_the_cap_then_evicts_a_waiter_or_rejects():
    assert admission(999, 0, 1000) is Admission.ACCEPT
    assert admission(1000, 1, 1000) is Admission.EVICT
    assert admission(1000, 0, 1000) is Admission.REJECT
    assert admission(1000, 1, 1000, head_in=False) is Admission.WAIT  # a waiter's place, once its head is in
    assert admission(1000, 0, 1000, head_in=False) is Admission.REJECT


def test_a_reader_moves_from_the_idle_wait_to_the_head_deadline_at_the_first_byte():
    now = [1000.0]
    a, b = socket.socketpair()
    with a, b:
        reader = DeadlineReader(a, Limits(header_timeout_s=10, idle_timeout_s=120), 5.0, clock=lambda: now[0])
        reader.expect_idle(now[0])
        now[0] += 100  # idle, within idle_timeout_s
        b.sendall(b"GET / HTTP/1.1\r\n")
        assert reader.read(4) == b"GET "
        now[0] += 10.5  # the head is late: 10 s from its first byte, however long the idle wait allowed
        with pytest.raises(RequestTimeout, match="headers not received within 10 s"):
            reader.read(4)
        assert a.gettimeout() == 5.0  # back to the write timeout, for the 408
        reader.expect_body(now[0])
        now[0] += 11  # the body's grace (10 s) is over, and 0 bytes at any rate are too few
        with pytest.raises(RequestTimeout, match="slower than 4096 bytes/s"):
            reader.read(4)


def test_the_table_evicts_the_longest_waiting_connection_and_rejects_when_all_are_busy():
    table = ConnectionTable(Limits(max_connections=2), write_timeout_s=5.0)
    pairs = [socket.socketpair() for _ in range(4)]
    (a, _), (b, _), (c, _), (d, _) = pairs
    try:
        assert table.admit(a) is Admission.ACCEPT
        first = table.reader(a)
        table.admit(b)
        table.waiting(a)  # a began to wait again after a request: b now waited longest
        assert table.admit(c, lambda: False) is Admission.WAIT and table.counts() == (2, 2)  # c's head not in
        assert not table.reader(b).evicted
        assert table.admit(c) is Admission.EVICT and table.counts() == (2, 2)
        assert table.reader(b).evicted and not first.evicted  # b keeps its reader, to answer 408
        with pytest.raises(RequestTimeout, match="max_connections"):
            io.BufferedReader(table.reader(b)).read(1)
        assert not table.busy(b) and table.busy(a) and table.busy(c) and table.counts() == (2, 0)
        assert table.admit(d) is Admission.REJECT  # every connection busy: rejected
        for s in (a, b, c):
            table.release(s)
        assert table.counts() == (0, 0)
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def post_head(length: int, extra: bytes = b"") -> bytes:
    return (b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n" + extra
            + b"content-length: %d\r\n\r\n" % length)


def test_the_key_is_checked_before_the_body_is_read(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], remote_key="sekrit-0123456789abcdef")
    # A 31 MiB upload without the key: answered 401 at once, with none of the body sent, and closed.
    out = raw(p.port, post_head(31 << 20), timeout=5)
    assert out.startswith(b"HTTP/1.1 401 ") and b"connection: close" in out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "authentication_error"
    # Expect: 100-continue: no interim answer before a 401 or a 413, and the body is never asked for.
    out = raw(p.port, post_head(len(BODY), b"expect: 100-continue\r\n"), timeout=5)
    assert out.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in out
    out = raw(p.port, post_head(64 << 20, b"x-api-key: sekrit-0123456789abcdef\r\nexpect: 100-continue\r\n"), timeout=5)
    assert out.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in out
    # With the key, 100 Continue comes first, then the answer.
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(post_head(len(BODY), b"x-api-key: sekrit-0123456789abcdef\r\nexpect: 100-continue\r\nconnection: close\r\n"))
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(BODY)
        out = b""
        while piece := s.recv(65536):
            out += piece
    assert out.startswith(b"HTTP/1.1 200 ")
    # A 401 without a body keeps the connection (nothing is left unread).
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\nGET /status HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: sekrit-0123456789abcdef\r\n"
                  b"connection: close\r\n\r\n")
        out = b""
        while piece := s.recv(65536):
            out += piece
    assert out.startswith(b"HTTP/1.1 401 ") and b"HTTP/1.1 200 " in out
    assert len(upstream.received) == 1


def answer(s: socket.socket, *, drip: bytes = b"", every_s: float = 0.1, within_s: float = 5.0) -> bytes:
    """Read what the server sends until it closes the connection, sending ``drip`` every ``every_s``
    meanwhile (if given). :raises AssertionError: if it is still open after ``within_s``."""
    deadline = time.monotonic() + within_s
    out = b""
    s.settimeout(every_s if drip else within_s)
    while time.monotonic() < deadline:
        try:
            piece = s.recv(65536)
        except TimeoutError:
            try:
                s.sendall(drip)
            except OSError:
                pass
            continue
        except ConnectionResetError:
            return out
        if not piece:
            return out
        out += piece
    raise AssertionError(f"the connection is still open after {within_s} s; got {out!r}")


def error_of(out: bytes) -> tuple[int, str]:
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close\r\n" in head + b"\r\n", head
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]["message"]


def test_a_client_dripping_its_head_gets_408_at_the_total_deadline(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], header_timeout_s=0.5)
    started = time.monotonic()  # before the connection: the server's deadline may start before connect() returns
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nx-slow: ")
        # A byte every 0.1 s: each read is quick, the whole is too slow. A per-read timeout would keep
        # this connection open for as long as the drip goes on; the generous bound is for busy machines.
        out = answer(s, drip=b"x", within_s=30)
        took = time.monotonic() - started
    status, message = error_of(out)
    assert status == 408 and "headers not received within 0.5 s" in message
    assert took >= 0.5
    with socket.create_connection(("127.0.0.1", p.port)) as s:  # a connection that sends nothing
        assert error_of(answer(s))[0] == 408
    assert upstream.received == []


def test_an_idle_kept_alive_connection_gets_408_then_closes(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], idle_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        out = answer(s)
    first, _, rest = out.partition(b'{"status":"ok"}')
    assert first.startswith(b"HTTP/1.1 200 ")
    status, message = error_of(rest)
    assert status == 408 and "idle" in message


def test_a_kept_alive_connection_has_the_head_deadline_from_its_next_requests_first_byte(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], idle_timeout_s=60, header_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        s.sendall(b"GET /health HTTP/1.1\r\nx-slow: ")
        status, message = error_of(answer(s, drip=b"x"))
    assert status == 408 and "headers not received within 0.5 s" in message


def test_a_body_slower_than_the_minimum_rate_gets_408(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], header_timeout_s=0.5, min_body_rate_bytes_s=1000)
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        started = time.monotonic()
        s.sendall(post_head(100_000) + b"{")  # then a byte every 0.1 s: 10 bytes/s
        out = answer(s, drip=b" ")
        took = time.monotonic() - started
    status, message = error_of(out)
    assert status == 408 and "slower than 1000 bytes/s" in message
    assert 0.5 <= took < 4
    assert upstream.received == []
    # A body that keeps to the rate is served.
    status, _, _ = p.request(body=MSG)
    assert status == 200


def test_past_max_connections_the_longest_waiting_makes_room_or_the_new_one_gets_503(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], max_connections=2)
    table = p.srv.connections
    idle = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(2)]
    assert wait_until(lambda: table.counts() == (2, 2))
    # A third connection takes the place of the first (the one waiting longest), which gets 408.
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        assert answer(s).startswith(b"HTTP/1.1 200 ")
    status, message = error_of(answer(idle[0]))
    assert status == 408 and "max_connections" in message
    # Two connections busy with a request (uploading a body) cannot be evicted: a new one gets 503 at once.
    busy = [idle[1], socket.create_connection(("127.0.0.1", p.port))]
    for s in busy:
        s.sendall(post_head(1000) + b"{")
    assert wait_until(lambda: table.counts() == (2, 0))
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        out = answer(s, within_s=2)
    head = out.split(b"\r\n\r\n", 1)[0]
    status, message = error_of(out)
    assert status == 503 and b"retry-after: 1" in head and "max_connections" in message
    for s in busy + idle[:1]:
        s.close()
    assert wait_until(lambda: table.counts() == (0, 0))
    assert p.request("GET", "/health")[0] == 200


def test_a_head_is_complete_at_its_blank_line_or_at_the_most_looked_at():
    assert not head_complete(b"") and not head_complete(b"GET / HTTP/1.1\r\nhost: x\r\n")
    assert head_complete(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n") and head_complete(b"GET / HTTP/1.1\nhost: x\n\n")
    assert head_complete(b"x" * HEAD_PEEK_BYTES)  # too long to look at: the handler answers it


def test_at_the_cap_a_new_connection_takes_a_place_only_once_its_head_is_in(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], max_connections=2)
    table = p.srv.connections
    idle = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(2)]
    assert wait_until(lambda: table.counts() == (2, 2))
    # One that sends its head while held takes the place of the longest waiting, which gets 408.
    p.srv.head_grace_s = 60.0  # long enough to see it held on a busy machine
    with socket.create_connection(("127.0.0.1", p.port)) as late:
        assert wait_until(lambda: p.srv.held_count() == 1)
        assert table.counts() == (2, 2)  # no one evicted yet
        late.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        assert answer(late).startswith(b"HTTP/1.1 200 ")
    status, message = error_of(answer(idle[0]))
    assert status == 408 and "max_connections" in message
    # One that sends nothing, or part of a head, is held, evicts no one, and gets 503 when its grace ends.
    idle[0] = socket.create_connection(("127.0.0.1", p.port))
    assert wait_until(lambda: table.counts() == (2, 2))
    p.srv.head_grace_s = 0.2
    for sent in (b"", b"GET /health HTTP/1.1\r\n"):
        with socket.create_connection(("127.0.0.1", p.port)) as silent:
            silent.sendall(sent)
            status, message = error_of(answer(silent))
        assert status == 503 and "max_connections" in message
    assert table.counts() == (2, 2) and wait_until(lambda: p.srv.held_count() == 0)
    for s in idle:
        s.close()
    assert wait_until(lambda: table.counts() == (0, 0))


def test_a_client_leaving_mid_line_or_mid_answer_is_closed_quietly(make_proxy, upstream, capsys):
    p = make_proxy([("a", "oauth")])
    for data in (b"P", b"POST /v1/mess", b"GARBAGE\r\n"):
        s = socket.create_connection(("127.0.0.1", p.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = reset
        s.sendall(data)
        s.close()
    assert wait_until(lambda: p.srv.connections.counts() == (0, 0))
    assert "Traceback" not in capsys.readouterr().err


def test_a_client_that_sends_a_large_refused_body_whole_still_reads_the_answer(make_proxy, upstream):
    """Most clients send the whole body before reading: the refusal must not be lost to a reset."""
    p = make_proxy([("a", "oauth")], remote_key="sekrit-0123456789abcdef")
    big = b"x" * (8 << 20)  # over what is read and dropped with the connection kept: a lingering close
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(post_head(len(big)) + big)
        resp = http.client.HTTPResponse(s, method="POST")
        resp.begin()
        assert resp.status == 401 and resp.getheader("connection") == "close"
        assert json.loads(resp.read())["error"]["type"] == "authentication_error"
    assert upstream.received == []
