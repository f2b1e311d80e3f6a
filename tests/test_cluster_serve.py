"""Three real ``shunt serve`` processes on one Redis, in front of one upstream, behave as one pool."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import threading
import time

from tests.fakes.upstream import Reply, error_json, unified_headers
from tests.support import MSG, ServeProcess, wait_until, write_home

QUOTA_MSG = "This request would exceed your account's rate limit. Please try again later."
_n = itertools.count()
PROPAGATION_BOUND_S = 0.1  # the bound: an account exhausted through one instance is avoided by the others


def _call(port: int, method: str, path: str, body=None, headers=None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        hdrs = {"content-type": "application/json", "anthropic-version": "2023-06-01", **(headers or {})}
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _account(port: int, session: str | None = None) -> str:
    """The account a request through ``port`` went to (without ``session``: a new conversation each time)."""
    body = MSG if session else dict(MSG, messages=[{"role": "user", "content": f"hi {next(_n)}"}])
    status, h, body = _call(port, "POST", "/v1/messages", body,
                            {"x-claude-code-session-id": session} if session else None)
    assert status == 200, body
    return h["x-shunt-account"]


def _status(port: int) -> dict:
    return json.loads(_call(port, "GET", "/status")[2])


def _state_of(port: int, name: str) -> str:
    return next(a["status"] for a in _status(port)["accounts"] if a["name"] == name)


def test_three_instances_share_sessions_exhaustion_pin_and_overrides(redis_server, upstream, tmp_path):
    cluster = {"redis_url": redis_server.url, "cluster_name": "three"}
    procs: list[ServeProcess] = []
    try:
        for i in range(3):
            paths = write_home(str(tmp_path / f"h{i}"), upstream.url, [("a", "oauth"), ("b", "oauth")],
                               server_extra={"strategy": "round-robin", "usage_poll_s": 0}, cluster=cluster)
            procs.append(ServeProcess(dict(os.environ, SHUNT_HOME=paths.home)))
        ports = [p.port for p in procs]
        assert all(_status(p)["cluster"]["state"] == "ok" for p in ports)

        # A session stays on one account whichever instance its requests reach (alone, instance 1,
        # whose round-robin is one request ahead, would bind it to the other account).
        _account(ports[1])
        got = {_account(ports[i % 3], "conversation-1") for i in range(6)}
        assert len(got) == 1
        first = got.pop()
        other = "b" if first == "a" else "a"

        # Exhausted through instance 0: the others see it within 100 ms of the 429 leaving the upstream.
        sent = threading.Event()
        upstream.script(f"tok-{first}", Reply(status=429, body=error_json("rate_limit_error", QUOTA_MSG),
                                              headers=unified_headers(status_5h="rejected", util_5h=1.0,
                                                                      reset_5h=time.time() + 3600),
                                              arrived=sent))
        assert _account(ports[0], "conversation-1") == other  # moved there by instance 0
        assert sent.is_set()
        started = time.monotonic()
        assert wait_until(lambda: all(_state_of(p, first) == "exhausted" for p in ports[1:]), 5, interval=0.002)
        elapsed = time.monotonic() - started
        assert elapsed <= PROPAGATION_BOUND_S, f"the other instances saw it after {elapsed * 1000:.0f} ms"
        for p in ports[1:]:
            assert _account(p, "conversation-1") == other and _account(p) == other and _account(p) == other

        # A pin set on one instance is honoured by all, and so is unpinning.
        assert _call(ports[0], "POST", "/reset", {"account": first})[0] == 200
        assert wait_until(lambda: all(_state_of(p, first) != "exhausted" for p in ports), 5)
        assert _call(ports[1], "POST", "/use", {"account": first})[0] == 200
        assert wait_until(lambda: all(_status(p)["pinned_account"] == first for p in ports), 5)
        assert {_account(ports[i % 3]) for i in range(6)} == {first}
        assert _call(ports[2], "POST", "/use", {"account": "auto"})[0] == 200
        assert wait_until(lambda: all(_status(p)["pinned_account"] is None for p in ports), 5)
        assert {_account(ports[0]) for _ in range(4)} == {"a", "b"}  # round-robin again

        # An override set on one instance is in the others' /status.
        assert _call(ports[0], "POST", "/overrides", {"model": "claude-elsewhere"})[0] == 200
        assert wait_until(lambda: all(_status(p)["overrides"]["global"] == {"model": "claude-elsewhere"}
                                      for p in ports), 5)
    finally:
        for p in procs:
            p.stop(signal.SIGTERM)
