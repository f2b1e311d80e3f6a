"""The relay in-process: an upstream stand-in, a client connection over BytesIO, virtual time.

These drive :class:`~shunt_lib.relay.Relay` through paths that sockets reach only by luck (a bug in
the middle of a request, an error body that breaks off, a held stream whose answer is too large), and
prove that a new dialect plugs in without touching the relay.
"""

from __future__ import annotations

import io
import json
import socket
from typing import Callable, Iterator

import pytest

from shunt_lib.config import AccountConfig
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.dialect import AnthropicPassthrough, PassThrough, ProxyRequest, UpstreamRequest
from shunt_lib.errors import ShuntError, UpstreamStreamError
from shunt_lib.forwarding import ResponseHead
from shunt_lib.oauth import TokenManager
from shunt_lib.relay import Relay
from shunt_lib.state import Pool
from shunt_lib.watch import ClientWatch
from shunt_lib.wire import Headers, read_body, read_headers
from tests.fakes.upstream import error_json, message_json, sse_events
from tests.support import FakeClock


class MockResponse:
    """An upstream answer with the methods of :class:`~shunt_lib.upstream.UpstreamResponse`."""

    def __init__(self, status: int, body: bytes | list[bytes] = b"", headers: dict | None = None,
                 break_after: int | None = None):
        pieces = body if isinstance(body, list) else [body]
        hdrs = dict(headers or {})
        if not isinstance(body, list):
            hdrs.setdefault("content-length", str(len(body)))
        self.head = ResponseHead.from_items(status, "", list(hdrs.items()))
        self.pieces, self.break_after = pieces, break_after
        self.released = self.aborted = False

    def iter_body(self, chunk_size: int = 65536) -> Iterator[bytes]:
        for i, piece in enumerate(self.pieces):
            if self.break_after is not None and i >= self.break_after:
                raise UpstreamStreamError("ProtocolError: connection broken")
            yield piece

    def read_small(self, limit: int = 1 << 20) -> tuple[bytes, bool]:
        out = b""
        for piece in self.iter_body():
            out += piece
            if len(out) > limit:
                return out, False
        return out, True

    def release(self) -> None:
        self.released = True

    def abort(self) -> None:
        self.aborted = True

    def interrupt(self) -> None:
        pass


class MockUpstream:
    """``send`` asks ``handler(credential, UpstreamRequest)`` for a :class:`MockResponse` (or raises)."""

    def __init__(self, handler: Callable[[str, UpstreamRequest], MockResponse]):
        self.handler = handler
        self.sent: list[tuple[str, UpstreamRequest]] = []

    def send(self, method, target, headers, body, *, long_head=False, cancel=None):
        cred = headers.get("x-api-key") or headers.get("authorization", "")[7:]
        req = UpstreamRequest(method, target, headers, body)
        self.sent.append((cred, req))
        return self.handler(cred, req)


class Conn:
    """The client side as :class:`~shunt_lib.client.ClientStream` sees it: a socket to watch and a wfile."""

    def __init__(self, version: str = "HTTP/1.1"):
        self.connection, self.peer = socket.socketpair()
        self.wfile = io.BytesIO()
        self.request_version = version
        self.close_connection = False

    def response(self) -> tuple[int, dict, bytes]:
        """(status, headers by lower-case name, de-chunked body) of what was written."""
        rfile = io.BytesIO(self.wfile.getvalue())
        status = int(rfile.readline().split()[1])
        headers = read_headers(rfile)
        if "content-length" in headers or "transfer-encoding" in headers:
            body = read_body(rfile, headers, 1 << 30)
        else:
            body = rfile.read()
        return status, headers.by_name, body

    def close(self) -> None:
        self.connection.close()
        self.peer.close()


@pytest.fixture
def relay_env(tmp_path):
    """``make(accounts, handler, clock=None, max_wait_s=0)`` → (relay, pool, upstream); closes its watcher."""
    watches = []

    def make(accounts, handler, *, clock=None, max_wait_s=0):
        store = CredentialStore(str(tmp_path / "credentials.json"))
        creds = {}
        for name, kind in accounts:
            creds[name] = (Credential(kind="oauth", access_token=f"tok-{name}", refresh_token=f"ref-{name}",
                                      expires_at_ms=4102444800000) if kind == "oauth"
                           else Credential(kind="api_key", api_key=f"tok-{name}"))
            store.put(name, creds[name])
        pool = Pool([AccountConfig(n, k) for n, k in accounts], strategy="fill-first", session_ttl_s=600)
        upstream = MockUpstream(handler)
        watch = ClientWatch()
        watches.append(watch)
        relay = Relay(max_wait_s, pool, TokenManager(store, creds, token_url="http://127.0.0.1:9/token"), upstream, watch,
                      clock=clock or FakeClock(), overload_backoff_s=0.0, hold_first_ping_s=5, hold_ping_interval_s=15)
        return relay, pool, upstream

    yield make
    for w in watches:
        w.close()


def request(body: dict | bytes, target="/v1/messages", headers=None) -> ProxyRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ProxyRequest("POST", target, Headers(list((headers or {"content-type": "application/json"}).items())), data)


MSG = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def serve(relay, req, dialect=None, version="HTTP/1.1") -> tuple[Conn, tuple[int, dict, bytes]]:
    conn = Conn(version)
    try:
        relay.handle(conn, req, dialect) if dialect else relay.handle(conn, req)
        return conn, conn.response()
    finally:
        conn.close()


def test_failover_then_success_is_recorded_once_with_its_attempts(relay_env):
    relay, pool, up = relay_env([("a", "oauth"), ("b", "oauth")],
                                lambda cred, req: MockResponse(503, error_json("api_error", "down")) if cred == "tok-a"
                                else MockResponse(200, message_json(), {"content-type": "application/json"}))
    conn, (status, headers, body) = serve(relay, request(MSG))
    assert status == 200 and headers["x-shunt-account"] == "b" and json.loads(body)["type"] == "message"
    assert [c for c, _ in up.sent] == ["tok-a", "tok-b"]
    (rec,) = pool.snapshot(0).recent
    assert (rec["account"], rec["status"], rec["attempts"], rec["model"]) == ("b", 200, 2, "claude-test")
    assert not conn.close_connection


def test_a_bug_costs_one_request_a_json_500_and_the_connection(relay_env, caplog):
    def boom(cred, req):
        raise RuntimeError("a bug")

    relay, pool, _ = relay_env([("a", "oauth")], boom)
    conn, (status, _, body) = serve(relay, request(MSG))
    assert status == 500 and json.loads(body)["error"]["type"] == "api_error"
    assert conn.close_connection
    assert "internal error relaying POST /v1/messages" in caplog.text
    assert pool.snapshot(0).recent[-1]["status"] == 500


def test_an_error_body_that_breaks_off_is_classified_as_empty(relay_env):
    relay, _, up = relay_env([("a", "oauth"), ("b", "oauth")],
                             lambda cred, req: MockResponse(500, [b'{"type":"err'], break_after=0) if cred == "tok-a"
                             else MockResponse(200, message_json()))
    _, (status, headers, _) = serve(relay, request(MSG))
    assert status == 200 and headers["x-shunt-account"] == "b"
    assert [c for c, _ in up.sent] == ["tok-a", "tok-b"]


def test_a_held_stream_whose_error_answer_is_over_1_mib_ends_with_an_sse_error(relay_env):
    clock = FakeClock()
    relay, pool, _ = relay_env([("a", "oauth")], lambda cred, req: MockResponse(400, b"x" * (2 << 20)),
                               clock=clock, max_wait_s=60)
    pool.cool("a", clock.time() + 30, "test")
    conn, (status, headers, body) = serve(relay, request(dict(MSG, stream=True)))
    assert status == 200 and headers["x-shunt-held"] == "1"
    assert body.count(b"event: ping") == 2  # at 5 and 20 s
    err = json.loads(body.split(b"event: error\ndata: ", 1)[1].split(b"\n\n")[0])
    assert err["error"]["type"] == "api_error" and "over 1 MiB" in err["error"]["message"]
    assert pool.snapshot(0).recent[-1]["status"] == 400


def test_http10_clients_get_a_close_delimited_stream(relay_env):
    relay, _, _ = relay_env([("a", "oauth")], lambda cred, req: MockResponse(
        200, sse_events(), {"content-type": "text/event-stream"}))
    conn, (status, headers, body) = serve(relay, request(dict(MSG, stream=True)), version="HTTP/1.0")
    assert status == 200 and "transfer-encoding" not in headers and headers["connection"] == "close"
    assert body == b"".join(sse_events()) and conn.close_connection


class ShoutingExchange(PassThrough):
    """The toy dialect's attempts: its own head, an upper-cased body, its own error shape."""

    def client_head(self, head):
        return ResponseHead.from_items(head.status, head.reason, [("content-type", "text/plain")])

    def client_body(self, head, pieces):
        return (p.upper() for p in pieces)

    def client_error(self, head, body):
        return head, json.dumps({"error": {"message": json.loads(body)["error"]["message"]}}).encode()


class Shouting(AnthropicPassthrough):
    """A toy dialect: only API-key accounts, its own path and error shape, and an upper-cased answer."""

    name = "shouting"
    account_kinds = frozenset({"api_key"})
    ping = b": keep-alive\n\n"

    def exchange(self, request, account, secret):
        up = super().exchange(request, account, secret).request
        return ShoutingExchange(up._replace(target="/v1/messages", headers={**up.headers, "x-dialect": "shouting"}))

    def error_body(self, err: ShuntError) -> bytes:
        return json.dumps({"error": {"message": err.message, "type": err.error_type}}).encode()


def test_a_new_dialect_plugs_in_without_touching_the_relay(relay_env):
    relay, pool, up = relay_env([("o", "oauth"), ("k", "api_key")],
                                lambda cred, req: MockResponse(200, [b"hello ", b"world"], {"content-type": "text/x"}))
    _, (status, headers, body) = serve(relay, request(MSG, target="/v1/shout"), Shouting())
    assert status == 200 and body == b"HELLO WORLD" and headers["content-type"] == "text/plain"
    assert headers["x-shunt-account"] == "k" and "transfer-encoding" in headers  # shunt frames what the dialect made
    (cred, sent), = up.sent
    assert cred == "tok-k" and sent.target == "/v1/messages" and sent.headers["x-dialect"] == "shouting"
    # Its errors come back in its shape: an upstream error, and shunt's own when its accounts are out.
    relay.upstream.handler = lambda cred, req: MockResponse(400, error_json("invalid_request_error", "no"))
    _, (status, _, body) = serve(relay, request(MSG), Shouting())
    assert status == 400 and json.loads(body) == {"error": {"message": "no"}}
    pool.mark_exhausted("k", 4102444800)
    _, (status, headers, body) = serve(relay, request(MSG), Shouting())
    assert status == 429 and json.loads(body)["error"]["type"] == "rate_limit_error" and "retry-after" in headers
    assert "k resets at" in json.loads(body)["error"]["message"] and "o " not in json.loads(body)["error"]["message"]
    assert len(up.sent) == 2  # the OAuth account was never asked


def test_the_dialects_ping_keeps_a_held_stream_alive(relay_env):
    clock = FakeClock()
    relay, pool, _ = relay_env([("k", "api_key")], lambda cred, req: MockResponse(200, [b"ok"], {"content-type": "text/event-stream"}),
                               clock=clock, max_wait_s=60)
    pool.cool("k", clock.time() + 10, "test")
    _, (status, _, body) = serve(relay, request(dict(MSG, stream=True)), Shouting())
    assert status == 200 and body == b": keep-alive\n\n: x-shunt-account k\n\nOK"


class WatchedAtWrite(Conn):
    """A client whose every write notes whether the watcher still watched its socket then."""

    def __init__(self, watch: ClientWatch):
        super().__init__()
        self.watched_at_write: list[bool] = []
        outer, buf = self, self.wfile

        class Recording(io.BytesIO):
            def write(self, data):
                outer.watched_at_write.append(watch.watched(outer.connection))
                return buf.write(data)

        self.wfile = Recording()
        self.response_bytes = buf

    def response(self):
        self.wfile = self.response_bytes
        return super().response()


@pytest.mark.parametrize("answer", [
    lambda: MockResponse(200, [b'{"type":', b'"message"}'], {"content-type": "application/json", "content-length": "18"}),
    lambda: MockResponse(200, sse_events(), {"content-type": "text/event-stream"}),
    lambda: MockResponse(400, error_json("invalid_request_error", "bad"), {"content-type": "application/json"}),
], ids=["content-length", "event-stream", "error-answered-whole"])
def test_the_client_is_no_longer_watched_when_its_answer_completes(relay_env, answer):
    # A kept-alive client sends its next request as soon as its answer is complete: were it still watched
    # then, the watcher would wake (a thread switch and a peek) on nearly every request.
    seen_at_head_wait = []
    relay, _, _ = relay_env([("a", "oauth")], lambda cred, req: (
        seen_at_head_wait.append(relay.watch.watched(conn.connection)), answer())[1])
    conn = WatchedAtWrite(relay.watch)
    try:
        relay.handle(conn, request(MSG))
        status, _, _ = conn.response()
    finally:
        conn.close()
    assert seen_at_head_wait == [True]  # a client leaving during the head wait is still noticed
    assert status in (200, 400) and conn.watched_at_write[-1] is False
