"""The upstream boundary over real sockets: error translation (before and during a body), the head as
received, interruption from another thread, and the client-disconnect watcher."""

from __future__ import annotations

import socket
import threading

import pytest
import urllib3

from shunt_lib.errors import UpstreamConnectError, UpstreamRequestInvalid, UpstreamStreamError
from shunt_lib.upstream import _MSG_MORE, OneWriteHTTPConnection, Upstream
from shunt_lib.watch import ClientWatch


class OneShotServer:
    """Accepts one connection, reads the request head, sends ``answer`` and then waits on ``hold`` (or closes)."""

    def __init__(self, answer: bytes, hold: threading.Event | None = None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.answer, self.hold = answer, hold
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(self.answer)
            if self.hold is not None:
                self.hold.wait(30)

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def servers():
    made: list[OneShotServer] = []
    yield lambda answer, hold=None: made.append(OneShotServer(answer, hold)) or made[-1]
    for s in made:
        s.close()


@pytest.fixture
def upstream():
    """``upstream(url, **options)`` makes an Upstream that is closed when the test ends."""
    made: list[Upstream] = []
    yield lambda url, **options: made.append(Upstream(url, **options)) or made[-1]
    for up in made:
        up.close()


def test_nothing_listening_is_a_connect_error(upstream):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    up = upstream(url, connect_timeout_s=2)
    with pytest.raises(UpstreamConnectError, match="ConnectionError|NewConnectionError|refused"):
        up.send("POST", "/v1/messages", {}, b"{}")


def test_a_header_http_client_refuses_is_a_client_error(upstream):
    up = upstream("http://127.0.0.1:9")
    with pytest.raises(UpstreamRequestInvalid):
        up.send("POST", "/v1/messages", {"x-bad": "a\nb"}, b"{}")


def test_the_head_is_kept_as_received_and_the_body_streams(servers, upstream):
    srv = servers(b"HTTP/1.1 529 Site Overloaded\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 5\r\n\r\nhello")
    up = upstream(srv.url + "/prefix")
    resp = up.send("POST", "/v1/messages?beta=true", {"content-type": "application/json"}, b"{}")
    assert (resp.head.status, resp.head.reason) == (529, "Site Overloaded")
    assert [k for k, _ in resp.head.items].count("X-A") + [k for k, _ in resp.head.items].count("x-a") == 2
    assert resp.read_small() == (b"hello", True)
    resp.release()


def test_a_body_that_breaks_off_raises_a_stream_error(servers, upstream):
    srv = servers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    up = upstream(srv.url)
    resp = up.send("GET", "/v1/models", {}, None)
    with pytest.raises(UpstreamStreamError):
        list(resp.iter_body())
    resp.abort()


def test_a_small_read_stops_at_its_limit(servers, upstream):
    srv = servers(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\n0123456789")
    up = upstream(srv.url)
    resp = up.send("GET", "/v1/models", {}, None)
    data, complete = resp.read_small(limit=4)
    assert not complete and data.startswith(b"0123") and b"".join(resp.iter_body()) == b"0123456789"[len(data):]
    resp.release()


def test_interrupt_unblocks_a_read_waiting_on_a_silent_upstream(servers, upstream):
    hold = threading.Event()
    srv = servers(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n", hold)
    up = upstream(srv.url, idle_timeout_s=30)
    resp = up.send("POST", "/v1/messages", {}, b"{}")
    pieces = resp.iter_body()
    assert next(pieces) == b"first"
    threading.Timer(0.05, resp.interrupt).start()  # a client hangs up while the upstream is silent
    with pytest.raises(UpstreamStreamError):
        next(pieces)
    resp.abort()
    resp.interrupt()  # harmless once closed


def test_the_watcher_calls_back_once_when_a_client_hangs_up():
    watch = ClientWatch()
    a, b = socket.socketpair()
    gone = threading.Event()
    calls = []
    try:
        assert watch.add(a, lambda: (calls.append(1), gone.set()))
        b.close()
        assert gone.wait(10) and calls == [1]
        watch.remove(a)  # already removed: a no-op
        c, d = socket.socketpair()
        assert watch.add(c, lambda: calls.append(2))
        d.sendall(b"pipelined request")  # data, not a hang-up: the watch ends without a call
        watch.remove(c)
        c.close()
        d.close()
        assert not watch.add(c, lambda: None)  # a closed socket cannot be watched
        assert calls == [1]
    finally:
        a.close()
        watch.close()


class CaptureServer:
    """Accepts connections one after another; records each request's bytes (head and body) and answers 204."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head = data.split(b"\r\n\r\n", 1)[0].lower()
                length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n")[0]) if b"content-length: " in head else 0
                while len(data) < len(head) + 4 + length:
                    data += conn.recv(65536)
                self.requests.append(data)
                conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (closing alone does not, on Linux)
        self.thread.join()
        self.sock.close()


def test_requests_go_out_byte_for_byte_as_urllib3_would_send_them():
    import json
    import os

    srv = CaptureServer()
    fx = json.load(open(os.path.join(os.path.dirname(__file__), "fixtures", "claude-code-2.1.328-turn1.json")))
    headers = {k: v for k, v in fx["headers"].items() if k not in ("host", "content-length", "connection")}
    body = json.dumps(fx["body"]).encode()
    plain = urllib3.HTTPConnectionPool("127.0.0.1", srv.port, retries=False)
    up = Upstream(f"http://127.0.0.1:{srv.port}")
    try:
        for method, target, hdrs, data in (("POST", "/v1/messages?beta=true", headers, body),
                                           ("GET", "/v1/models", {"x-api-key": "k"}, None),
                                           ("POST", "/v1/messages", {}, b"{}")):
            plain.urlopen(method, target, body=data, headers=hdrs, retries=False).release_conn()
            up.send(method, target, hdrs, data).release()
        assert len(srv.requests) == 6
        for vanilla, ours in zip(srv.requests[0::2], srv.requests[1::2]):
            assert ours == vanilla
    finally:
        plain.close()
        up.close()
        srv.close()


class RecordingSocket:
    def __init__(self):
        self.calls: list[tuple[bytes, int]] = []

    def sendall(self, data, flags=0):
        self.calls.append((bytes(data), flags))

    def settimeout(self, timeout):
        pass


def connection() -> OneWriteHTTPConnection:
    conn = OneWriteHTTPConnection("example.test", 80)
    conn.sock = RecordingSocket()
    return conn


def test_the_head_leaves_with_the_body_and_bad_fields_never_leave():
    conn = connection()
    conn.request("POST", "/v1/messages", body=b'{"a":1}', headers={"x-a": "1", "User-Agent": "u"})
    head = (b"POST /v1/messages HTTP/1.1\r\nHost: example.test\r\nAccept-Encoding: identity\r\n"
            b"Content-Length: 7\r\nx-a: 1\r\nUser-Agent: u\r\n\r\n")
    if _MSG_MORE:  # Linux: two sends, the first flagged "more follows", no copy of the body
        assert conn.sock.calls == [(head, _MSG_MORE), (b'{"a":1}', 0)]
    else:
        assert conn.sock.calls == [(head + b'{"a":1}', 0)]
    conn = connection()
    conn.request("GET", "/v1/models", headers={"x-a": "1"})  # no body: the head alone
    assert [flags for _, flags in conn.sock.calls] == [0] and conn.sock.calls[0][0].startswith(b"GET /v1/models")
    for bad in ({"x-a": "1\r\nx-injected: 1"}, {"bad name": "1"}, {"x-a": "nul\0"}):
        conn = connection()
        with pytest.raises(ValueError):
            conn.request("POST", "/v1/messages", body=b"{}", headers=bad)
        assert conn.sock.calls == []


def test_failures_are_described_in_words_without_reprs():
    import http.client
    import ssl

    from urllib3.exceptions import NewConnectionError, ProtocolError

    from shunt_lib.upstream import describe_failure

    conn = OneWriteHTTPConnection("api.example", 443)
    refused = NewConnectionError(conn, "Failed to establish a new connection: [Errno 111] Connection refused")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert describe_failure(refused, "api.example:443") == "could not connect to api.example:443: connection refused"
    gai = socket.gaierror(-2, "Name or service not known")
    assert describe_failure(gai, "h:443") == "could not connect to h:443: the name does not resolve (Name or service not known)"
    closed = ProtocolError("Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection"))
    assert describe_failure(closed, "h:443") == "h:443 closed the connection before answering"
    tls = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert describe_failure(tls, "h:443").startswith("could not connect to h:443: TLS failed")
    for exc in (refused, gai, closed, tls):
        assert "object at 0x" not in describe_failure(exc, "h:443")


def test_only_a_non_streaming_generation_waits_long_for_its_head():
    from shunt_lib.relay import head_comes_late

    assert head_comes_late("POST", "/v1/messages", b'{"model": "m", "max_tokens": 9000}')
    assert not head_comes_late("POST", "/v1/messages?beta=true", b'{"model": "m", "stream" : true}')
    assert not head_comes_late("POST", "/v1/messages/count_tokens", b'{"model": "m"}')
    assert not head_comes_late("GET", "/v1/models", None)
    nested = b'{"stream": true, "tools": [{"input_schema": {"stream": false}}]}'  # the last "stream" is not the key
    assert not head_comes_late("POST", "/v1/messages", nested)
    assert head_comes_late("POST", "/v1/messages", b'{"messages": [{"content": "say \\"stream\\": true"}], "stream": false}')
    # the outermost object's own "stream": false ends the body: a nested "stream": true before it does not count
    tool = b'{"tools": [{"input_schema": {"stream": true}}], "stream": false}\n'
    assert head_comes_late("POST", "/v1/messages", tool)
    assert not head_comes_late("POST", "/v1/messages", b'{"tools": [{"input_schema": {"stream": false}}], "stream": true}')
