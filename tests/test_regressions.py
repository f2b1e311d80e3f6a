"""Regression tests for failure paths found in review: retry storms, removed accounts, cancelled
streams, odd bodies, HTTP/1.0 framing, huge error bodies, lost rotations, stale flags."""

import errno
import json
import socket
import threading
import time

from shunt_lib.cli import main
from shunt_lib.config import AccountConfig, Paths
from tests.fakes.upstream import Reply, error_json, message_json, sse_events, unified_headers
from tests.support import MSG, STREAM_MSG, FakeClock, raw, send_raw, write_home


def test_a_failing_account_is_not_hammered_while_another_cools(make_proxy, upstream):
    clock = FakeClock()
    p = make_proxy([("a", "oauth"), ("b", "oauth")], max_wait_s=30, clock=clock)
    p.pool.cool("b", clock.time() + 10, "test")
    upstream.script("tok-a", *[Reply(status=500, body=error_json("api_error", "boom")) for _ in range(50)])
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    assert len(upstream.requests_for("tok-a")) <= 2  # once before the hold, at most once after


def test_an_account_removed_mid_request_does_not_break_the_request(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    arrived, release = threading.Event(), threading.Event()
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "quota"), arrived=arrived,
                                   release=release, headers=unified_headers(status_5h="rejected", util_5h=1.0)))
    result = []
    client = threading.Thread(target=lambda: result.append(p.request(body=MSG)))
    client.start()
    assert arrived.wait(10)  # the request is on a, waiting for a's answer
    p.pool.sync_accounts([AccountConfig("b", "oauth")])  # a reload removes a
    release.set()  # a answers 429 for an account the pool no longer has
    client.join()
    status, h, _ = result[0]
    assert status == 200 and h["x-shunt-account"] == "b"
    assert [r.credential for r in upstream.requests_for()] == ["tok-a", "tok-b"]
    assert p.pool.names() == ["b"]


def test_a_cancelled_stream_still_counts_its_usage(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth")])
    gates = [None] + [threading.Event() for _ in range(5)]
    upstream.script("tok-a", Reply(events=sse_events(input_tokens=50000), gates=gates))
    s = send_raw(p.port, json.dumps(STREAM_MSG).encode())
    got = b""
    while b"message_start" not in got:
        got += s.recv(65536)
    s.close()  # the user pressed Esc
    assert events.wait_for("dropped", timeout=5) and events.wait_for("request")
    doc = p.srv.status()
    assert doc["accounts"][0]["requests"] == 1 and doc["accounts"][0]["input_tokens"] == 50000
    last = doc["recent_requests"][-1]
    assert (last["account"], last["status"]) == ("a", 499)


def test_a_client_reset_during_a_large_body_is_recorded(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth")])
    upstream.script("tok-a", Reply(body=message_json(text="x" * 4_000_000)))
    s = socket.create_connection(("127.0.0.1", p.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = json.dumps(MSG).encode()
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    s.recv(100)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST
    assert events.wait_for("request", timeout=10)
    assert p.srv.status()["recent_requests"][-1]["account"] == "a"


def test_stream_inside_the_conversation_does_not_make_a_held_json_request_sse(make_proxy, upstream):
    clock = FakeClock()
    p = make_proxy([("a", "oauth")], max_wait_s=30, hold_first_ping_s=0.1, clock=clock)
    body = dict(MSG, stream=False, messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "x"}]}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {"stream": True}}]}, {"role": "user", "content": "go"}])
    upstream.script("tok-a", Reply(body=message_json()))
    p.pool.cool("a", clock.time() + 10, "test")
    status, h, out = p.request(body=body)
    assert status == 200 and h["content-type"] == "application/json" and json.loads(out)["type"] == "message"


def test_odd_bodies_and_headers_get_answers_not_dropped_connections(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    odd = dict(MSG, tools=[{"name": 1}, {"name": "b"}])
    assert p.request(body=odd)[0] == 200
    deep = b'{"messages":' + b"[" * 100000 + b"]" * 100000 + b"}"
    assert p.request(body=deep)[0] == 200  # forwarded as is; upstream decides
    out = raw(p.port, b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-foo: a\rb\r\ncontent-length: 2\r\n\r\n{}")
    assert out.startswith(b"HTTP/1.1 400")


def test_http10_clients_get_close_delimited_bodies_and_bad_chunks_are_refused(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    s = send_raw(p.port, json.dumps(STREAM_MSG).encode(), version=b"HTTP/1.0")
    out = b""
    while True:
        piece = s.recv(65536)
        if not piece:
            break
        out += piece
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"".join(sse_events())
    for bad in (b"-1\r\n", b"0x10\r\n", b"1_0\r\n"):
        out = raw(p.port, b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n" + bad + b"x" * 16 + b"\r\n0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400"), bad
    out = raw(p.port, b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")


def test_error_bodies_over_1_mib_pass_through_whole(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    big = error_json("invalid_request_error", "x" * 3_000_000)
    upstream.script("tok-a", Reply(status=400, body=big))
    status, h, out = p.request(body=MSG)
    assert status == 400 and out == big and h["x-shunt-account"] == "a"
    assert p.request(body=MSG)[0] == 200  # the connection pool is fine afterwards


def test_a_rotated_pair_survives_a_failed_save(make_proxy, upstream):
    from shunt_lib.background import TokenRefresher

    calls = []
    upstream.token_handler = lambda req: (calls.append(req["refresh_token"]) or 200,
                                          {"access_token": "tok-new", "refresh_token": "ref-new", "expires_in": 28800})
    p = make_proxy([("a", "oauth")], expires_at_ms=int((time.time() + 60) * 1000))
    store = p.srv.tokens.store

    def disk_full(name, cred):
        raise OSError(errno.ENOSPC, "No space left on device")

    store.put = disk_full  # this store's writes fail, as on a full disk
    r = TokenRefresher(p.pool, p.srv.tokens)
    r.tick()
    assert calls == ["ref-a"] and p.srv.tokens.get("a").refresh_token == "ref-new"  # kept in memory
    assert p.request(body=MSG)[0] == 200 and upstream.requests_for()[-1].credential == "tok-new"
    del store.put  # the disk has room again
    r.tick()  # saves the pending pair, makes no second refresh
    assert calls == ["ref-a"]
    assert p.srv.tokens.store.load()["a"].refresh_token == "ref-new"


def test_a_new_key_added_while_stopped_clears_disabled(tmp_path, upstream, monkeypatch):
    import io

    import responses

    paths = write_home(str(tmp_path / "h"), upstream.url, [("ci", "api_key")])
    monkeypatch.setenv("SHUNT_HOME", paths.home)
    with open(paths.state, "w") as f:
        json.dump({"accounts": {"ci": {"disabled": True}}, "sessions": {}}, f)
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-ant-new\n"))
    with responses.RequestsMock() as rsps:
        rsps.get(upstream.url + "/v1/models", json={"data": []})
        assert main(["add-account", "ci", "--api-key"]) == 0
    assert json.load(open(Paths(paths.home).state))["accounts"]["ci"]["disabled"] is False
