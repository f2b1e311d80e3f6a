"""Integration: stopping with streams in flight: refuse new connections at once, let streams finish
within ``drain_timeout_s``, end the rest with an SSE ``error`` event and record what they used."""

import json
import os
import signal
import socket
import threading

import pytest

from tests.fakes.upstream import Reply, sse_events
from tests.support import ServeProcess, open_stream, read_until, wait_until, write_home


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):  # reset: it was queued as the listener closed
        return True
    return False


def saved_recent(path: str) -> list:
    with open(path) as f:
        return json.load(f)["recent_requests"]


def test_close_refuses_new_connections_at_once_and_lets_a_stream_finish(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], drain_timeout_s=20)
    go = threading.Event()
    upstream.script("tok-a", Reply(events=sse_events(), gates=[None, go]))
    conn, resp = open_stream(p.port)
    closing = threading.Thread(target=p.srv.close)
    try:
        assert b"message_start" in read_until(resp, b"message_start")
        closing.start()
        assert wait_until(lambda: refused(p.port), timeout=3)  # not after the 20 s drain
        go.set()
        rest = resp.read()  # the stream ends normally, within the drain
        assert b"message_stop" in rest and b"event: error" not in rest
        closing.join(10)
        assert not closing.is_alive()
    finally:
        go.set()
        conn.close()
        if closing.is_alive() or not closing.ident:
            closing.join(10)
    assert saved_recent(p.srv.paths.state)[-1]["status"] == 200


def test_a_stream_still_running_after_the_drain_ends_with_an_error_event_and_its_usage_is_saved(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], drain_timeout_s=0.3)
    never = threading.Event()
    upstream.script("tok-a", Reply(events=sse_events(), gates=[None, None, never]))
    conn, resp = open_stream(p.port)
    try:
        assert b"message_start" in read_until(resp, b"content_block_start")
        p.srv.close()
        rest = resp.read()
    finally:
        never.set()
        conn.close()
    data = rest.split(b"event: error\ndata: ", 1)[1].split(b"\n\n")[0]
    assert json.loads(data)["error"]["type"] == "overloaded_error"
    record = saved_recent(p.srv.paths.state)[-1]  # counted before state.json was flushed
    assert record["account"] == "a" and record["input_tokens"] == 10


@pytest.mark.parametrize("drain_timeout_s, second_signal", [(0.5, False), (3600, True)],
                         ids=["the drain times out", "a second SIGTERM ends the drain at once"])
def test_sigterm_on_shunt_serve_ends_a_stream_with_an_error_event_and_exits_cleanly(tmp_path, upstream, drain_timeout_s,
                                                                                    second_signal):
    home = str(tmp_path / "h")
    paths = write_home(home, upstream.url, [("a", "oauth")], {"drain_timeout_s": drain_timeout_s, "usage_poll_s": 0})
    never = threading.Event()
    upstream.script("tok-a", Reply(events=sse_events(), gates=[None, None, never]))
    serve = ServeProcess(dict(os.environ, SHUNT_HOME=home))
    conn, resp = open_stream(serve.port)
    try:
        read_until(resp, b"content_block_start")
        serve.proc.send_signal(signal.SIGTERM)
        if second_signal:  # no hour-long wait for the stream
            assert wait_until(lambda: refused(serve.port))  # the first signal was taken: the drain has begun
            serve.proc.send_signal(signal.SIGTERM)
        rest = resp.read()
        assert b"event: error" in rest and b"overloaded_error" in rest
        assert serve.stop(signal.SIGTERM) == 0
    finally:
        never.set()
        conn.close()
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.stop(signal.SIGKILL)
    assert saved_recent(paths.state)[-1]["input_tokens"] == 10


def test_a_new_request_on_a_kept_alive_connection_during_the_drain_gets_529(make_proxy, upstream):
    import http.client

    from tests.support import MSG

    p = make_proxy([("a", "oauth")], drain_timeout_s=20)
    idle = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    idle.request("POST", "/v1/messages", body=json.dumps(MSG), headers={"content-type": "application/json"})
    assert idle.getresponse().read() and True
    go = threading.Event()
    upstream.script("tok-a", Reply(events=sse_events(), gates=[None, go]))
    conn, resp = open_stream(p.port)  # keeps the drain going
    closing = threading.Thread(target=p.srv.close)
    try:
        read_until(resp, b"message_start")
        closing.start()
        assert wait_until(lambda: refused(p.port), timeout=3)
        idle.request("POST", "/v1/messages", body=json.dumps(MSG), headers={"content-type": "application/json"})
        answer = idle.getresponse()
        assert answer.status == 529 and json.loads(answer.read())["error"]["type"] == "overloaded_error"
        assert answer.getheader("connection") == "close"
    finally:
        go.set()
        conn.close()
        idle.close()
        if closing.ident:
            closing.join(10)
    assert [r.credential for r in upstream.requests_for()] == ["tok-a", "tok-a"]  # the 529 never went up
