"""Integration: SSE relayed as it arrives, broken streams, holds with pings, and client disconnects."""

import json
import math
import socket
import threading
import time

from tests.fakes.upstream import Reply, error_json, sse_events
from tests.support import MSG, FakeClock, open_stream, read_until


def test_events_reach_the_client_as_the_upstream_sends_them(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    evs = sse_events(text="streamed")
    gates = [None] + [threading.Event() for _ in evs[1:]]
    upstream.script("tok-a", Reply(events=evs, gates=gates))
    conn, resp = open_stream(p.port)
    assert resp.status == 200 and resp.getheader("x-shunt-account") == "a"
    assert resp.getheader("content-type") == "text/event-stream"
    # Each event arrives while the upstream is still holding back the next one: nothing is buffered.
    got = read_until(resp, b"message_start")
    assert b"content_block_start" not in got
    for i in range(1, len(evs)):
        gates[i].set()
        got += read_until(resp, evs[i].split(b"\n")[0] + b"\n")
    got += resp.read()
    assert got == b"".join(evs)
    conn.close()


def test_stream_broken_after_bytes_ends_with_sse_error_event(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    upstream.script("tok-a", Reply(events=sse_events(), break_after=2))
    conn, resp = open_stream(p.port)
    body = resp.read()  # the chunked stream is properly terminated
    first_two = b"".join(sse_events()[:2])
    assert body.startswith(first_two)
    tail = body[len(first_two):]
    assert tail.startswith(b"event: error\ndata: ")
    err = json.loads(tail.split(b"data: ", 1)[1])
    assert err["error"]["type"] == "api_error"
    assert len(upstream.requests_for()) == 1  # never retried once bytes were sent
    assert events.wait_for("stream_error")
    assert events.wait_for("request")
    line = [r.getMessage() for r in events.records if getattr(r, "event", None) == "request"][-1]
    assert "status=200" in line and line.split(" id=")[0].endswith(" stream=broken"), line  # the access line says it broke
    assert p.srv.status()["recent_requests"][-1]["broke"] is True
    conn.close()


def test_hold_then_succeed_after_a_reset(make_proxy, upstream, events):
    clock = FakeClock()
    p = make_proxy([("a", "oauth"), ("b", "oauth")], max_wait_s=300, clock=clock)
    started = clock.time()
    reset = started + 90  # longer than the 1 s the hold loop sleeps at most at a time
    p.pool.mark_exhausted("a", reset)
    p.pool.mark_exhausted("b", reset + 5)
    status, h, body = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "a"
    assert reset <= clock.time() < reset + 1.1  # released right after a's reset, not b's
    assert events.wait_for("hold") and events.wait_for("request")
    assert upstream.requests_for() and all(r.credential == "tok-a" for r in upstream.requests_for())
    assert p.srv.status()["recent_requests"][-1]["held_ms"] >= 90_000


def test_held_stream_gets_200_and_pings_then_the_stream(make_proxy, upstream):
    clock = FakeClock()
    p = make_proxy([("a", "oauth")], max_wait_s=300, hold_first_ping_s=5, hold_ping_interval_s=15, clock=clock)
    p.pool.cool("a", clock.time() + 50, "test")
    conn, resp = open_stream(p.port)
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    assert resp.getheader("x-shunt-held") == "1"
    body = resp.read()
    assert body.count(b"event: ping") == 3  # at 5, 20 and 35 s; at 50 s a recovers instead
    assert body.index(b"event: ping") < body.index(b": x-shunt-account a") < body.index(b"event: message_start")
    assert body.endswith(b"event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n")
    conn.close()


def test_held_stream_upstream_error_becomes_sse_error_event(make_proxy, upstream):
    clock = FakeClock()
    p = make_proxy([("a", "oauth")], max_wait_s=30, clock=clock)
    err = error_json("invalid_request_error", "max_tokens: too large")
    upstream.script("tok-a", Reply(status=400, body=err))
    p.pool.cool("a", clock.time() + 10, "test")
    conn, resp = open_stream(p.port)
    assert resp.status == 200
    body = resp.read()
    assert b"event: ping" in body
    data = body.split(b"event: error\ndata: ", 1)[1].split(b"\n\n")[0]
    assert json.loads(data) == json.loads(err)
    conn.close()


def test_past_max_wait_answers_429_with_retry_after_and_resets(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], max_wait_s=2)
    now = time.time()
    p.pool.mark_exhausted("a", now + 3600)
    p.pool.mark_exhausted("b", now + 7200)
    status, h, body = p.request(body=MSG)
    assert status == 429
    err = json.loads(body)["error"]
    assert err["type"] == "rate_limit_error"
    assert "a resets at" in err["message"] and "b resets at" in err["message"]
    assert 3590 <= int(h["retry-after"]) <= 3601
    assert h["x-should-retry"] == "false"  # an SDK's retries within seconds cannot reach an hour away
    assert h["anthropic-ratelimit-unified-status"] == "rejected"
    assert int(h["anthropic-ratelimit-unified-reset"]) == math.ceil(now + 3600)
    assert upstream.received == []


def test_quota_429_on_every_account_is_held_then_answered(make_proxy, upstream):
    from tests.fakes.upstream import unified_headers

    p = make_proxy([("a", "oauth")], max_wait_s=1)
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "quota"),
                                   headers=unified_headers(status_5h="rejected", util_5h=1.0, reset_5h=time.time() + 600)))
    status, h, body = p.request(body=MSG)
    assert status == 429 and json.loads(body)["error"]["type"] == "rate_limit_error"
    assert int(h["retry-after"]) > 500  # never a 500/503 for quota


def test_client_disconnect_while_held_is_dropped_at_once(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth")], max_wait_s=60)
    p.pool.cool("a", time.time() + 50, "test")
    s = socket.create_connection(("127.0.0.1", p.port))
    body = json.dumps(MSG).encode()
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
              % (len(body), body))
    assert events.wait_for("hold")
    s.close()
    assert events.wait_for("dropped", timeout=30)  # long before a recovers (50 s): noticed at once
    assert upstream.received == []


def test_client_disconnect_mid_stream_closes_the_upstream_response(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth")])
    evs = sse_events()
    gone = threading.Event()
    gates = [None] + [threading.Event() for _ in evs[1:]]  # the upstream stalls after message_start
    upstream.script("tok-a", Reply(events=evs, gates=gates, on_disconnect=gone))
    conn, resp = open_stream(p.port)
    read_until(resp, b"message_start")
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert events.wait_for("dropped", timeout=5)
    assert gone.wait(5)  # shunt closed its upstream connection while the upstream was silent
