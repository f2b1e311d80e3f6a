"""The cluster-wide token refresh through real ``shunt serve`` processes on one real Redis: three
instances answered 401 by the dozen make ONE token call and all use its answer; a refresh holder
killed (kill -9) before its write never lets a rotated-out refresh token be sent and leaves the
account ``reauth_required`` elsewhere; one killed after its write leaves the others logged in."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading

import pytest

from tests.fakes.rotating_tokens import RotatingTokens
from tests.support import MSG, ServeProcess, wait_until, write_home

ACCOUNT = "work"


def start(tmp_path, upstream, redis_server, name: str, hang: str = "", **cluster) -> ServeProcess:
    """An instance on its own "machine" (home) with the same login of ``work`` as the others."""
    from tests.redis_support import redis_env
    home = str(tmp_path / name)
    write_home(home, upstream.url, [(ACCOUNT, "oauth")],
               cluster={"redis_url": redis_server.url, "cluster_name": "refresh", **cluster})
    env = dict(redis_env(), SHUNT_HOME=home)
    env.pop("SHUNT_TEST_HANG_REFRESH", None)
    if hang:
        env["SHUNT_TEST_HANG_REFRESH"] = hang
    return ServeProcess(env)


def post(port: int, instance: str, timeout: float = 30.0) -> int:
    """One Messages request; ``x-test-instance`` travels upstream unchanged, so the fake can tell the instances apart."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/messages", json.dumps(MSG), {"content-type": "application/json",
                                                               "x-test-instance": instance})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return -1  # the instance was killed
    finally:
        conn.close()


def account_status(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/status")
        doc = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return next(a["status"] for a in doc["accounts"] if a["name"] == ACCOUNT)


def sent_by(upstream, credential: str, instance: str) -> int:
    return sum(1 for r in upstream.requests_for(credential) if r.header("x-test-instance") == instance)


@pytest.fixture
def serves():
    running: list[ServeProcess] = []
    yield running
    for p in running:
        p.stop(signal.SIGTERM if p.proc.poll() is None else signal.SIGKILL)


def test_fifty_401s_on_each_of_three_instances_make_one_token_call(redis_server, upstream, tmp_path, serves):
    total = 150
    rot = RotatingTokens("ref-work", before_answer=lambda _: upstream.wait_for_requests(total, "tok-work", 30))
    upstream.token_handler = rot
    upstream.refused.add("tok-work")  # the old access token has expired: 401 for everyone
    for name in "abc":
        serves.append(start(tmp_path, upstream, redis_server, name))
    results: list[int] = []
    threads = [threading.Thread(target=lambda p=p, n=n: results.append(post(p.port, n, 60)))
               for p, n in zip(serves, "abc") for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * total
    assert rot.received == ["ref-work"] and upstream.token_calls == 1
    for name in "abc":
        assert sent_by(upstream, "tok-work", name) == 50 and sent_by(upstream, "tok-new-1", name) == 50


def kill_mid_refresh(tmp_path, upstream, redis_server, serves, hang: str) -> ServeProcess:
    """Instances a (holding the refresh, stopped at ``hang`` and killed), b and c; returns a."""
    upstream.refused.add("tok-work")
    a = start(tmp_path, upstream, redis_server, "a", hang=hang, refresh_lock_ttl_s=1)
    serves.append(a)
    serves.extend(start(tmp_path, upstream, redis_server, n, refresh_lock_ttl_s=1) for n in "bc")
    held = threading.Thread(target=post, args=(a.port, "a"))
    held.start()
    assert wait_until(lambda: any("test seam" in line for line in a.log), 10)
    a.stop(signal.SIGKILL)
    held.join()
    return a


def test_a_holder_killed_before_its_write_never_lets_a_spent_token_be_sent(redis_server, upstream, tmp_path, serves):
    rot = upstream.token_handler = RotatingTokens("ref-work")
    kill_mid_refresh(tmp_path, upstream, redis_server, serves, "answered")
    b, c = serves[1], serves[2]
    statuses = [post(b.port, "b"), post(c.port, "c"), post(b.port, "b")]
    assert 200 not in statuses and -1 not in statuses
    assert rot.received == ["ref-work"]  # only the dead holder's call: ref-work is spent, never sent again
    assert account_status(b.port) == account_status(c.port) == "reauth_required"
    assert any("stopped before saving" in line for line in b.log + c.log)
    assert upstream.requests_for("tok-new-1") == []


def test_a_holder_killed_after_its_write_leaves_the_others_logged_in(redis_server, upstream, tmp_path, serves):
    rot = upstream.token_handler = RotatingTokens("ref-work")
    kill_mid_refresh(tmp_path, upstream, redis_server, serves, "written")
    b, c = serves[1], serves[2]
    assert [post(b.port, "b"), post(c.port, "c")] == [200, 200]
    assert sent_by(upstream, "tok-new-1", "b") == sent_by(upstream, "tok-new-1", "c") == 1
    assert rot.received == ["ref-work"]  # no further token call
    assert account_status(b.port) != "reauth_required" and account_status(c.port) != "reauth_required"
    for name in "bc":
        path = os.path.join(str(tmp_path / name), "credentials.json")
        assert wait_until(lambda path=path: "ref-new-1" in open(path).read(), 5)  # the offline copy
