"""Client tokens' limits and bindings through a real proxy: refusals in each door's shape with nothing
sent upstream, every path charged (a client gone mid-stream too), budgets kept across kill -9, and
``[gateway] max_inflight``. The client of a request comes from :mod:`tests.fakes.token_auth` (a
stand-in for the token store's authentication)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time

import pytest

from shunt_lib.capabilities import Capabilities
from shunt_lib.clients import TokenBinding
from shunt_lib.config import AccountConfig, load_config
from shunt_lib.server import make_server
from shunt_lib.token_usage import read_usage
from tests.fakes import token_auth
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.upstream import Reply, message_events
from tests.support import MSG, ROOT, STREAM_MSG, Proxy, ServeProcess, read_until, wait_until, write_home

CHAT = {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture
def tokens(monkeypatch):
    """``tokens[key] = client``: the handler's requests sending ``key`` carry that client."""
    table: dict = {}
    token_auth.install(table, monkeypatch.setattr)
    return table


def key(k):
    return {"x-api-key": k}


def test_over_rpm_each_door_gets_a_429_in_its_shape_naming_the_limit_and_nothing_goes_upstream(make_proxy, upstream,
                                                                                               tokens):
    tokens["k1"] = token_auth.client("ci-runner", rpm=2)
    p = make_proxy([("a", "api_key")])
    assert p.request(body=MSG, headers=key("k1"))[0] == 200
    assert p.request("POST", "/v1/chat/completions", body=CHAT, headers=key("k1"))[0] == 200
    status, headers, body = p.request(body=MSG, headers=key("k1"))
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
    err = json.loads(body)
    assert err["type"] == "error" and err["error"]["type"] == "rate_limit_error"
    assert err["error"]["message"].startswith("client token ci-runner is over its 2 requests per minute")
    status, headers, body = p.request("POST", "/v1/chat/completions", body=CHAT, headers=key("k1"))
    err = json.loads(body)["error"]
    assert status == 429 and headers["retry-after"] and (err["type"], err["code"]) == ("rate_limit_error",
                                                                                        "rate_limit_exceeded")
    assert "2 requests per minute" in err["message"]
    assert len(upstream.requests_for()) == 2
    assert p.request(body=MSG)[0] == 200  # a local request has no limits
    assert wait_until(lambda: len(p.srv.status()["recent_requests"]) == 5)
    assert [r["status"] for r in p.srv.status()["recent_requests"]] == [200, 200, 429, 429, 200]
    assert p.srv.meter.usage()["id-ci-runner"].day_requests == 2  # refusals are not charged


def test_every_path_is_charged_streamed_json_and_translated(make_proxy, upstream, tokens):
    tokens["k"] = token_auth.client("t")
    fake = FakeOpenAI().start()
    try:
        p = make_proxy([("a", "api_key"), AccountConfig("prov", "openai", base_url=fake.base_url, models=("gpt-*",),
                                                        capabilities=Capabilities())])
        assert p.request(body=MSG, headers=key("k"))[0] == 200  # JSON: 10 in, 5 out
        assert p.request(body=STREAM_MSG, headers=key("k"))[0] == 200  # streamed: 10 + 5
        assert p.request("POST", "/v1/chat/completions", body=CHAT, headers=key("k"))[0] == 200  # translated
        assert p.request("POST", "/v1/chat/completions", body=dict(CHAT, model="gpt-5"), headers=key("k"))[0] == 200
        assert p.request(body=dict(MSG, model="gpt-5"), headers=key("k"))[0] == 200  # Anthropic door, openai account
    finally:
        fake.close()
    assert wait_until(lambda: p.srv.meter.usage()["id-t"].day_requests == 5)
    u = p.srv.meter.usage()["id-t"]
    # the provider: 21 prompt of which 4 cached (cache reads apart), 5 completion; twice
    assert (u.day_tokens, u.day_cache_read_tokens) == (3 * 15 + 2 * (17 + 5), 8)


def test_a_client_gone_mid_stream_frees_its_slot_and_is_charged_what_streamed(make_proxy, upstream, tokens):
    tokens["k"] = token_auth.client("t", max_concurrent=1)
    gate, gone = threading.Event(), threading.Event()
    events = message_events(("x" * 400, "never sent"), input_tokens=30)
    upstream.script("tok-a", Reply(events=events, gates=[None, None, None, gate], on_disconnect=gone))
    p = make_proxy([("a", "oauth")])
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=20)
    conn.request("POST", "/v1/messages", body=json.dumps(STREAM_MSG), headers={"content-type": "application/json",
                                                                              "x-api-key": "k"})
    resp = conn.getresponse()
    read_until(resp, b"xxxx\"")
    assert p.request(body=MSG, headers=key("k"))[0] == 429  # its one slot is taken
    conn.close()  # the client leaves mid-stream
    assert wait_until(lambda: p.srv.meter.usage()["id-t"].day_requests == 1)
    u = p.srv.meter.usage()["id-t"]
    assert u.inflight == 0 and u.day_tokens == 30 + 100  # input + 400 characters / 4
    gate.set()
    assert p.request(body=MSG, headers=key("k"))[0] == 200  # the slot was freed, once
    assert wait_until(lambda: p.srv.meter.usage()["id-t"].inflight == 0)


def test_a_token_bound_to_models_gets_a_403_naming_the_model(make_proxy, upstream, tokens):
    tokens["k"] = token_auth.client("cheap", binding=TokenBinding(models=("claude-haiku-*",)))
    p = make_proxy([("a", "api_key")])
    status, _, body = p.request(body=dict(MSG, model="claude-opus-4-1"), headers=key("k"))
    err = json.loads(body)["error"]
    assert status == 403 and err["type"] == "permission_error" and "'claude-opus-4-1'" in err["message"]
    status, _, body = p.request("POST", "/v1/chat/completions", body=dict(CHAT, model="claude-opus-4-1"),
                                headers=key("k"))
    assert status == 403 and json.loads(body)["error"]["type"] == "permission_error"
    batch = {"requests": [{"custom_id": "1", "params": dict(MSG, model="claude-haiku-4-5")},
                          {"custom_id": "2", "params": dict(MSG, model="claude-opus-4-1")}]}
    assert p.request(path="/v1/messages/batches", body=batch, headers=key("k"))[0] == 403
    assert upstream.requests_for(path_prefix="/v1/") == []
    assert p.request(body=dict(MSG, model="claude-haiku-4-5"), headers=key("k"))[0] == 200


def test_a_token_bound_to_accounts_or_kinds_never_reaches_others(make_proxy, upstream, tokens):
    tokens["b"] = token_auth.client("only-b", binding=TokenBinding(accounts=("b",)))
    tokens["keys"] = token_auth.client("keys", binding=TokenBinding(kinds=("api_key",)))
    tokens["none"] = token_auth.client("nowhere", binding=TokenBinding(accounts=("zzz",)))
    p = make_proxy([("a", "oauth"), ("b", "oauth"), ("c", "api_key")], max_wait_s=0)
    for _ in range(3):
        assert p.request(body=MSG, headers=key("b"))[1]["x-shunt-account"] == "b"
        assert p.request(body=MSG, headers=key("keys"))[1]["x-shunt-account"] == "c"
    status, _, body = p.request(body=MSG, headers=key("none"))
    assert status == 403 and "may use only accounts zzz" in json.loads(body)["error"]["message"]
    p.pool.cool("b", time.time() + 600, "test")  # its one account cooling, a and c free: it waits for b
    status, headers, _ = p.request(body=MSG, headers=key("b"))
    assert status == 429 and int(headers["retry-after"]) > 500
    assert {r.credential for r in upstream.requests_for()} == {"tok-b", "tok-c"}


def _gateway_proxy(upstream, **gateway):
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, [("a", "api_key")])
    with open(paths.config, "a") as f:
        f.write("\n[gateway]\n" + "".join(f"{k} = {v}\n" for k, v in gateway.items()))
    return Proxy(make_server(load_config(paths), paths, port=0))


def _in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def test_past_max_inflight_a_request_waits_and_is_admitted_when_one_finishes(upstream):
    go, arrived = threading.Event(), threading.Event()
    upstream.script("tok-a", Reply(body=b'{"type":"message","usage":{"input_tokens":1,"output_tokens":1}}',
                                   arrived=arrived, release=go))
    p = _gateway_proxy(upstream, max_inflight=1, max_queue_s=20)
    try:
        first, r1 = _in_thread(lambda: p.request(body=MSG))
        assert arrived.wait(10)
        second, r2 = _in_thread(lambda: p.request(body=MSG))
        assert wait_until(lambda: p.srv.relay_gate.waiting == 1)
        assert len(upstream.requests_for()) == 1  # it waits in shunt, not upstream
        go.set()
        first.join(10)
        second.join(10)
        assert r1[0][0] == 200 and r2[0][0] == 200 and len(upstream.requests_for()) == 2
    finally:
        go.set()
        p.close()


def test_a_request_that_waits_max_queue_s_gets_a_429_with_retry_after(upstream):
    go, arrived = threading.Event(), threading.Event()
    upstream.script("tok-a", Reply(body=b"{}", arrived=arrived, release=go))
    p = _gateway_proxy(upstream, max_inflight=1, max_queue_s=0.3)
    try:
        first, r1 = _in_thread(lambda: p.request(body=MSG))
        assert arrived.wait(10)
        t0 = time.monotonic()
        status, headers, body = p.request(body=MSG)
        assert status == 429 and headers["retry-after"] == "1" and time.monotonic() - t0 >= 0.3
        assert "max_inflight" in json.loads(body)["error"]["message"]
        status, _, body = p.request("POST", "/v1/chat/completions", body=CHAT)
        assert status == 429 and json.loads(body)["error"]["code"] == "rate_limit_exceeded"
        go.set()
        first.join(10)
        assert r1[0][0] == 200 and len(upstream.requests_for()) == 1
    finally:
        go.set()
        p.close()


def test_a_spent_budget_stays_spent_across_kill_9(tmp_path, upstream):
    home = str(tmp_path / "h")
    paths = write_home(home, upstream.url, [("a", "oauth")], {"usage_poll_s": 0})
    env = dict(os.environ, PYTHONPATH=ROOT, SHUNT_HOME=home, SHUNT_TEST_TOKENS=json.dumps(
        {"k": {"label": "ci", "id": "tid", "limits": {"daily_tokens": 300}}}))
    shunt = [sys.executable, "-m", "tests.fakes.token_auth"]

    def send(port, n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        statuses = []
        for _ in range(n):
            conn.request("POST", "/v1/messages", json.dumps(MSG), {"content-type": "application/json", "x-api-key": "k"})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        conn.close()
        return statuses

    serve = ServeProcess(env, shunt=shunt, cwd=ROOT)
    load = [threading.Thread(target=send, args=(serve.port, 5)) for _ in range(4)]  # 20 x 15 tokens = 300
    for t in load:
        t.start()
    for t in load:
        t.join()
    assert wait_until(lambda: read_usage(paths.tokens_db, time.time()).get("tid", None) is not None
                      and read_usage(paths.tokens_db, time.time())["tid"].day_tokens >= 300)
    assert serve.stop(signal.SIGKILL) == -signal.SIGKILL
    serve = ServeProcess(env, shunt=shunt, cwd=ROOT)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=30)
        conn.request("POST", "/v1/messages", json.dumps(MSG), {"content-type": "application/json", "x-api-key": "k"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 429 and "daily budget of 300 tokens" in body["error"]["message"]
        assert int(resp.getheader("retry-after")) > 0
    finally:
        assert serve.stop(signal.SIGTERM) == 0
    assert len(upstream.requests_for()) == 20
