"""What reaches upstream and what comes back: the pure forwarding rules, then the real proxy in front of
a fake upstream on 127.0.0.1:0."""

import json
import time
import os

from shunt_lib.forwarding import ResponseHead, narrow_accept_encoding, response_head, upstream_headers
from tests.support import MSG

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "claude-code-2.1.328-turn1.json")


def test_accept_encoding_is_narrowed_to_what_zlib_decodes():
    assert narrow_accept_encoding("gzip, deflate, br, zstd") == "gzip, deflate"
    assert narrow_accept_encoding("br, zstd") is None
    assert narrow_accept_encoding("gzip;q=1.0, identity") == "gzip;q=1.0, identity"


def test_upstream_headers_replace_credentials_and_keep_the_rest():
    client = [("Authorization", "Bearer client"), ("x-api-key", "client-key"), ("Host", "127.0.0.1:8082"),
              ("Connection", "keep-alive, x-hop"), ("x-hop", "1"), ("Keep-Alive", "5"), ("anthropic-beta", "a-1,b-2"),
              ("x-claude-code-session-id", "s"), ("user-agent", "claude-cli/2"), ("accept-encoding", "gzip, br"),
              ("content-length", "10"), ("x-custom", "v")]
    h = upstream_headers(client, "oauth", "acct-token")
    assert h["authorization"] == "Bearer acct-token"
    assert "x-api-key" not in h and "host" not in h and "connection" not in h and "x-hop" not in h
    assert "keep-alive" not in h and "content-length" not in h
    assert h["anthropic-beta"] == "a-1,b-2,oauth-2025-04-20"
    assert h["user-agent"] == "claude-cli/2" and h["x-custom"] == "v" and h["accept-encoding"] == "gzip"
    h = upstream_headers([("anthropic-beta", "oauth-2025-04-20,x")], "oauth", "t")
    assert h["anthropic-beta"] == "oauth-2025-04-20,x"
    h = upstream_headers([], "oauth", "t")
    assert h["anthropic-beta"] == "oauth-2025-04-20" and "accept-encoding" not in h
    h = upstream_headers(client, "api_key", "sk-key")
    assert h["x-api-key"] == "sk-key" and "authorization" not in h and h["anthropic-beta"] == "a-1,b-2"


def test_response_head_keeps_status_reason_and_headers_and_frames_anew():
    head = ResponseHead.from_items(529, "", [("Content-Type", "application/json"), ("Content-Length", "12"),
                                             ("Transfer-Encoding", "chunked"), ("Connection", "keep-alive"),
                                             ("X-Shunt-Account", "spoofed"), ("request-id", "r1")])
    assert head.by_name["request-id"] == "r1"
    assert response_head(head, "a", content_length=12) == (
        b"HTTP/1.1 529 Overloaded\r\nContent-Type: application/json\r\nrequest-id: r1\r\nx-shunt-account: a\r\n"
        b"content-length: 12\r\n\r\n")
    assert response_head(head._replace(reason="Site Busy"), None).startswith(b"HTTP/1.1 529 Site Busy\r\n")
    ok = ResponseHead.from_items(200, "OK", [("content-type", "text/event-stream")])
    assert response_head(ok, "b", chunked=True).endswith(b"x-shunt-account: b\r\ntransfer-encoding: chunked\r\n\r\n")
    assert response_head(ok, "b", close=True).endswith(b"x-shunt-account: b\r\nconnection: close\r\n\r\n")


def test_real_claude_code_request_is_forwarded_byte_for_byte(make_proxy, upstream, events):
    with open(FIXTURE) as f:
        fx = json.load(f)
    body = json.dumps(fx["body"]).encode()
    headers = {k: v for k, v in fx["headers"].items() if k not in ("host", "content-length", "connection")}
    p = make_proxy([("a", "oauth")])
    status, h, out = p.request(path=fx["path"], body=body, headers=headers)
    assert status == 200 and h["x-shunt-account"] == "a"
    (got,) = upstream.requests_for("tok-a")
    assert got.path == "/v1/messages?beta=true"  # method, path and query string unchanged
    assert got.body == body
    assert got.header("authorization") == "Bearer tok-a"
    assert got.header("x-api-key") is None
    assert got.header("anthropic-beta") == fx["headers"]["anthropic-beta"] + ",oauth-2025-04-20"
    assert got.header("accept-encoding") == "gzip, deflate"
    for name in ("user-agent", "x-claude-code-session-id", "x-stainless-package-version", "x-app",
                 "anthropic-version", "anthropic-dangerous-direct-browser-access", "x-stainless-timeout"):
        assert got.header(name) == fx["headers"][name], name
    assert got.header("host") == upstream.url.split("//")[1]
    # Usage was counted from the streamed reply.
    assert events.wait_for("request")
    acct = p.srv.status()["accounts"][0]
    assert acct["requests"] == 1 and acct["input_tokens"] == 10 and acct["output_tokens"] == 5


def test_api_key_account_gets_x_api_key(make_proxy, upstream):
    p = make_proxy([("k", "api_key")])
    status, h, _ = p.request(body=MSG, headers={"authorization": "Bearer client", "anthropic-beta": "x-1"})
    assert status == 200 and h["x-shunt-account"] == "k"
    (got,) = upstream.requests_for("tok-k")
    assert got.header("x-api-key") == "tok-k" and got.header("authorization") is None
    assert got.header("anthropic-beta") == "x-1"


def test_other_v1_paths_and_methods_are_forwarded(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    assert p.request(path="/v1/messages/count_tokens?beta=true", body=MSG)[0] == 200
    status, h, _ = p.request(method="GET", path="/v1/models?limit=1000")
    assert status == 200 and h["x-shunt-account"] == "a"
    paths = [(r.method, r.path) for r in upstream.received]
    assert ("POST", "/v1/messages/count_tokens?beta=true") in paths and ("GET", "/v1/models?limit=1000") in paths


def test_paths_outside_v1_are_anthropic_404(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    status, _, body = p.request(method="GET", path="/api/hello")
    assert status == 404
    assert json.loads(body)["error"]["type"] == "not_found_error"
    assert upstream.received == []


def test_health_status_and_use(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth"), ("b", "oauth")])
    assert p.request(method="GET", path="/health") [0:3:2] == (200, b'{"status":"ok"}')
    status, _, body = p.request(method="POST", path="/use", body={"account": "nope"})
    assert status == 400 and "nope" in json.loads(body)["error"]["message"]
    assert p.request(method="POST", path="/use", body=b"{bad")[0] == 400
    assert p.pool.pinned is None  # bad input changed nothing
    assert json.loads(p.request(method="POST", path="/use", body={"account": "b"})[2]) == {"pinned_account": "b"}
    for _ in range(3):
        assert p.request(body=MSG)[1]["x-shunt-account"] == "b"
    assert events.wait_for("request", count=3)
    doc = json.loads(p.request(method="GET", path="/status")[2])
    assert doc["pinned_account"] == "b" and doc["strategy"] == "least-utilization"
    b = [a for a in doc["accounts"] if a["name"] == "b"][0]
    for key in ("name", "kind", "email", "status", "utilization_5h", "utilization_7d", "reset_5h_at_s", "reset_7d_at_s",
                "cooldown_until_s", "requests", "input_tokens", "output_tokens", "cache_read_tokens",
                "cache_creation_tokens", "active_sessions"):
        assert key in b
    assert b["requests"] == 3 and len(doc["recent_requests"]) == 3 and "version" in doc and "started_at_s" in doc
    p.request(method="POST", path="/use", body={"account": "auto"})
    assert p.pool.pinned is None


def test_sessions_stick_and_new_sessions_spread(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")])
    first = {s: p.request(body=MSG, headers={"x-claude-code-session-id": s})[1]["x-shunt-account"] for s in ("s1", "s2")}
    assert first["s1"] != first["s2"]  # the second session avoids the account with an active session
    for _ in range(3):
        for s in ("s1", "s2"):
            assert p.request(body=MSG, headers={"x-claude-code-session-id": s})[1]["x-shunt-account"] == first[s]


def test_utilization_headers_feed_status(make_proxy, upstream):
    from tests.fakes.upstream import Reply, message_json, unified_headers

    p = make_proxy([("a", "oauth")])
    reset = int(time.time()) + 3600
    upstream.script("tok-a", Reply(body=message_json(), headers=unified_headers(util_5h=0.42, util_7d=0.17, reset_5h=reset)))
    p.request(body=MSG)
    a = p.srv.status()["accounts"][0]
    assert a["utilization_5h"] == 0.42 and a["utilization_7d"] == 0.17 and a["reset_5h_at_s"] == reset


def test_remote_key_guards_everything_but_health(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], remote_key="s3cret-key-0123456789")
    assert p.request(method="GET", path="/health")[0] == 200
    status, _, body = p.request(body=MSG)
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
    assert p.request(method="GET", path="/status")[0] == 401
    assert p.request(body=MSG, headers={"x-api-key": "wrong"})[0] == 401
    assert upstream.received == []
    assert p.request(body=MSG, headers={"x-api-key": "s3cret-key-0123456789"})[0] == 200
    assert p.request(body=MSG, headers={"authorization": "Bearer s3cret-key-0123456789"})[0] == 200
    for r in upstream.received:
        assert r.header("x-api-key") is None and r.header("authorization") == "Bearer tok-a"
