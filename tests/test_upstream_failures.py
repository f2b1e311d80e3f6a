"""Integration: an upstream that cannot be reached, or accepts and never answers, or stalls mid-stream."""

import json
import socket
import threading
import time

from shunt_lib.config import load_config
from shunt_lib.server import make_server
from tests.fakes.upstream import Reply, sse_events
from tests.support import MSG, STREAM_MSG, Proxy, open_stream, read_until, send_raw, write_home


def test_an_unreachable_host_is_tried_twice_not_once_per_account_and_named_in_words(tmp_path, events):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    paths = write_home(str(tmp_path / "h"), f"http://127.0.0.1:{port}", [("a", "oauth"), ("b", "oauth"), ("c", "oauth")],
                       {"strategy": "fill-first"})
    p = Proxy(make_server(load_config(paths), paths, port=0))
    try:
        status, _, body = p.request(body=MSG)
    finally:
        p.close()
    err = json.loads(body)["error"]
    assert status == 502 and err["type"] == "api_error"
    assert f"could not connect to 127.0.0.1:{port}: connection refused" in err["message"]
    assert " object at 0x" not in err["message"] and "tok-" not in err["message"]
    # One move to another account (a transient failure may pass), not one attempt per account.
    assert [r.account for r in events.records if getattr(r, "event", None) == "connect_error"] == ["a", "b"]


def test_an_upstream_that_never_answers_gets_504_after_the_first_byte_timeout_and_no_failover(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first", upstream_first_byte_timeout_s=0.5)
    never = threading.Event()
    upstream.script("tok-a", Reply(release=never))
    try:
        started = time.monotonic()
        status, _, body = p.request(body=STREAM_MSG)
        assert time.monotonic() - started < 10  # not 600 s per account
        err = json.loads(body)["error"]
        assert status == 504 and err["type"] == "timeout_error" and "no response head within 0.5 s" in err["message"]
        assert [r.credential for r in upstream.requests_for()] == ["tok-a"]  # b would wait as long
    finally:
        never.set()


def test_a_client_that_leaves_while_the_head_is_awaited_is_noticed(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth")])  # the first-byte timeout stays at 120 s
    arrived, never = threading.Event(), threading.Event()
    upstream.script("tok-a", Reply(arrived=arrived, release=never))
    try:
        s = send_raw(p.port, json.dumps(MSG).encode())
        assert arrived.wait(10)
        s.close()
        assert events.wait_for("dropped", timeout=5)  # at once, not when the upstream finally answers
        assert events.wait_for("request", timeout=5)
        assert p.srv.status()["recent_requests"][-1]["status"] == 499
    finally:
        never.set()


def test_a_stream_that_stalls_ends_with_an_error_event_after_the_idle_timeout(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth")], upstream_idle_timeout_s=0.5)
    never = threading.Event()
    upstream.script("tok-a", Reply(events=sse_events(), gates=[None, None, never]))
    conn, resp = open_stream(p.port)
    try:
        assert resp.status == 200
        got = read_until(resp, b"event: error")
        assert b"message_start" in got and b"event: error" in got
        got += resp.read()  # the stream ends after the error event
        assert b"127.0.0.1:%d sent nothing for 0.5 s" % int(upstream.url.rsplit(":", 1)[1]) in got
    finally:
        never.set()
        conn.close()
    assert events.wait_for("request")
    record = p.srv.status()["recent_requests"][-1]
    assert record["input_tokens"] == 10  # what the stream used is counted
