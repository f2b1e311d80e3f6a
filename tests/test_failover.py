"""Integration: every rule under "When an upstream answer is not 2xx"."""

import json
import threading
import time

from shunt_lib.sessions import id_key
from tests.fakes.upstream import Reply, error_json, unified_headers
from tests.support import MSG, raw

QUOTA_MSG = "This request would exceed your account's rate limit. Please try again later."


def creds(upstream):
    return [r.credential for r in upstream.requests_for()]


def test_quota_429_marks_exhausted_and_moves_request_and_session(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    reset = int(time.time()) + 3600
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", QUOTA_MSG),
                                   headers=unified_headers(status_5h="rejected", util_5h=1.0, reset_5h=reset)))
    status, h, body = p.request(body=MSG, headers={"x-claude-code-session-id": "s"})
    assert status == 200 and h["x-shunt-account"] == "b"
    assert creds(upstream) == ["tok-a", "tok-b"]
    a = p.srv.status()["accounts"][0]
    assert a["status"] == "exhausted" and a["cooldown_until_s"] == reset and a["utilization_5h"] == 1.0
    # The session moved with the request and stays on b.
    assert p.request(body=MSG, headers={"x-claude-code-session-id": "s"})[1]["x-shunt-account"] == "b"
    assert p.pool.session_account(id_key("s"), time.time()) == "b"
    assert creds(upstream) == ["tok-a", "tok-b", "tok-b"]


def test_throttle_429_cools_for_retry_after_and_retries_elsewhere(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth"), ("c", "oauth")], strategy="fill-first")
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "slow down"), headers={"retry-after": "7"}))
    before = time.time()
    status, h, _ = p.request(body=MSG, headers={"x-claude-code-session-id": "s1"})
    assert status == 200 and h["x-shunt-account"] == "b"
    a = p.srv.status()["accounts"][0]
    assert a["status"] == "cooling" and before + 6 <= a["cooldown_until_s"] <= time.time() + 7
    # A huge retry-after is capped at 120 s.
    upstream.script("tok-b", Reply(status=429, body=error_json("rate_limit_error", "slow"), headers={"retry-after": "9999"}))
    status, h, _ = p.request(body=MSG, headers={"x-claude-code-session-id": "s1"})
    assert status == 200 and h["x-shunt-account"] == "c"
    b = p.srv.status()["accounts"][1]
    assert b["status"] == "cooling" and b["cooldown_until_s"] <= time.time() + 121


def test_extra_usage_429_is_returned_unchanged_without_cooldown(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    body = error_json("rate_limit_error", "Extra usage is required for 1M context")
    upstream.script("tok-a", Reply(status=429, body=body, headers=unified_headers()))
    status, h, out = p.request(body=MSG)
    assert (status, out, h["x-shunt-account"]) == (429, body, "a")
    assert creds(upstream) == ["tok-a"]
    assert p.srv.status()["accounts"][0]["status"] == "available"


def test_overloaded_is_retried_once_elsewhere_then_returned(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth"), ("c", "oauth")], strategy="fill-first")
    over = error_json("overloaded_error", "Overloaded")
    upstream.script("tok-a", Reply(status=529, body=over))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    assert all(a["status"] == "available" for a in p.srv.status()["accounts"])  # not marked
    upstream.script("tok-a", Reply(status=529, body=over))
    upstream.script("tok-b", Reply(status=529, body=over))
    assert raw(p.port, b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
               % (len(json.dumps(MSG)), json.dumps(MSG).encode())).startswith(b"HTTP/1.1 529 Overloaded\r\n")
    upstream.script("tok-a", Reply(status=529, body=over))
    upstream.script("tok-b", Reply(status=529, body=over))
    status, _, out = p.request(body=MSG)
    assert status == 529 and out == over
    assert sorted(creds(upstream)[-2:]) == ["tok-a", "tok-b"]  # one retry only: c was never tried
    assert "tok-c" not in creds(upstream)


def test_401_refreshes_once_saves_and_retries_same_account(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    upstream.token_handler = lambda req: (200, {"access_token": "tok-a2", "refresh_token": "ref-a2", "expires_in": 3600})
    upstream.script("tok-a", Reply(status=401, body=error_json("authentication_error", "OAuth token has expired")))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "a"
    assert creds(upstream) == ["tok-a", "tok-a2"]
    saved = json.load(open(p.srv.paths.credentials))["accounts"]["a"]
    assert saved["access_token"] == "tok-a2" and saved["refresh_token"] == "ref-a2"
    assert upstream.token_calls == 1


def test_invalid_grant_marks_reauth_required_and_fails_over(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    upstream.token_handler = lambda req: (400, {"error": "invalid_grant", "error_description": "revoked"})
    upstream.script("tok-a", Reply(status=401, body=error_json("authentication_error", "OAuth token revoked")))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    assert p.srv.status()["accounts"][0]["status"] == "reauth_required"


def test_second_401_after_refresh_marks_reauth_required(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    upstream.token_handler = lambda req: (200, {"access_token": "tok-a2", "refresh_token": "r2", "expires_in": 3600})
    upstream.script("tok-a", Reply(status=401, body=error_json("authentication_error", "expired")))
    upstream.script("tok-a2", Reply(status=401, body=error_json("authentication_error", "still no")))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    assert creds(upstream) == ["tok-a", "tok-a2", "tok-b"]
    assert p.srv.status()["accounts"][0]["status"] == "reauth_required"


def test_api_key_401_disables_the_account(make_proxy, upstream):
    p = make_proxy([("k", "api_key"), ("b", "oauth")], strategy="fill-first")
    upstream.script("tok-k", Reply(status=401, body=error_json("authentication_error", "invalid x-api-key")))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    assert upstream.token_calls == 0
    assert p.srv.status()["accounts"][0]["status"] == "disabled"


def test_all_accounts_unauthorized_returns_the_last_body(make_proxy, upstream):
    p = make_proxy([("k", "api_key")])
    body = error_json("authentication_error", "invalid x-api-key")
    upstream.script("tok-k", Reply(status=401, body=body))
    assert p.request(body=MSG)[0:3:2] == (401, body)


def test_403_cools_30_minutes_and_all_403_returns_last_body(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    upstream.script("tok-a", Reply(status=403, body=error_json("permission_error", "forbidden a")))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    a = p.srv.status()["accounts"][0]
    assert a["status"] == "cooling" and a["cooldown_until_s"] >= time.time() + 1790
    last = error_json("permission_error", "forbidden b")
    upstream.script("tok-b", Reply(status=403, body=last))
    status, h, out = p.request(body=MSG)
    assert (status, out, h["x-shunt-account"]) == (403, last, "b")


def test_5xx_and_connection_errors_move_to_another_account(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    for code in (500, 502, 503, 504):
        upstream.script("tok-a", Reply(status=code, body=error_json("api_error", "boom")))
        status, h, _ = p.request(body=MSG, headers={"x-claude-code-session-id": f"s{code}"})
        assert status == 200 and h["x-shunt-account"] == "b", code
    assert p.srv.status()["accounts"][0]["status"] == "available"
    # Every account 5xx: the last upstream body comes back unchanged.
    upstream.script("tok-a", Reply(status=502, body=b"bad gateway a"))
    upstream.script("tok-b", Reply(status=503, body=b"unavailable b"))
    assert p.request(body=MSG, headers={"x-claude-code-session-id": "new"})[0:3:2] == (503, b"unavailable b")


def test_connection_error_before_any_byte_fails_over(tmp_path, upstream, monkeypatch):
    import socket

    from shunt_lib.config import load_config
    from shunt_lib.server import make_server
    from tests.support import Proxy, write_home

    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there now
    paths = write_home(str(tmp_path / "h"), dead_url, [("a", "oauth")])
    srv = make_server(load_config(paths), paths, port=0)
    p = Proxy(srv)
    try:
        status, h, body = p.request(body=MSG)
        assert status == 502 and json.loads(body)["error"]["type"] == "api_error"
        assert "tok-a" not in body.decode()
    finally:
        p.close()


def test_other_statuses_are_returned_unchanged(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    body = error_json("invalid_request_error", "messages: Extra inputs are not permitted")
    upstream.script("tok-a", Reply(status=400, body=body, headers={"request-id": "req_9"}))
    status, h, out = p.request(body=MSG)
    assert (status, out, h["request-id"], h["x-shunt-account"]) == (400, body, "req_9", "a")
    assert creds(upstream) == ["tok-a"]


def test_fifty_concurrent_401s_cause_exactly_one_refresh(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])

    def token(req):
        # Hold the refresh until every request has been answered 401 with the old token.
        assert upstream.wait_for_requests(50, "tok-a", timeout=60)
        return 200, {"access_token": "tok-new", "refresh_token": "ref-new", "expires_in": 3600}

    upstream.token_handler = token
    upstream.script("tok-a", *[Reply(status=401, body=error_json("authentication_error", "expired")) for _ in range(50)])
    results = []

    def client():
        results.append(p.request(body=MSG, timeout=90)[0])

    threads = [threading.Thread(target=client) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 50
    assert upstream.token_calls == 1
    assert len(upstream.requests_for("tok-a")) == 50 and len(upstream.requests_for("tok-new")) == 50


def test_quota_free_calls_still_work_when_every_account_is_out_of_quota(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first", max_wait_s=0)
    now = time.time()
    p.pool.mark_exhausted("a", now + 3600)
    p.pool.cool("b", now + 600, "test")
    assert p.request(body=MSG)[0] == 429  # a generation still waits for quota
    status, h, _ = p.request(path="/v1/messages/count_tokens", body={"model": "m", "messages": MSG["messages"]})
    assert status == 200 and h["x-shunt-account"] == "a"
    status, h, _ = p.request("GET", "/v1/models?limit=1000")
    assert status == 200 and h["x-shunt-account"] == "a"
    assert [r.path for r in upstream.requests_for(path_prefix="/v1/")] == ["/v1/messages/count_tokens", "/v1/models?limit=1000"]
    assert p.srv.status()["accounts"][0]["status"] == "exhausted"  # unchanged by the quota-free calls


def test_a_quota_free_call_every_account_refused_is_answered_not_held(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], max_wait_s=60)
    reset = int(time.time()) + 30
    p.pool.mark_exhausted("a", reset)
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", QUOTA_MSG),
                                   headers=unified_headers(status_5h="rejected", util_5h=1.0, reset_5h=reset)))
    started = time.monotonic()
    status, _, _ = p.request(path="/v1/messages/count_tokens", body={"model": "m", "messages": MSG["messages"]},
                             timeout=20)
    assert status == 429 and time.monotonic() - started < 10  # not held until a recovers
    assert len(upstream.requests_for(path_prefix="/v1/messages/count_tokens")) == 1
