"""Browsers and web pages: the Host/Origin/content-type decisions (pure), then the same attacks sent
over raw sockets with exactly the headers a browser sends (DNS rebinding, a cross-site form post,
preflights), and dot segments that would leave /v1/."""

import http.client
import json
import os
import socket

import pytest

from shunt_lib.cors import preflight_fields
from shunt_lib.errors import BadRequest, PermissionDenied, UnsupportedMediaType
from shunt_lib.guard import Policy, check_request, host_allowed, require_json, split_authority
from tests.fakes.upstream import Reply, message_json
from tests.support import MSG, open_stream, read_until, write_home

POLICY = Policy.build(port=8082, bind_host="127.0.0.1", allowed_hosts=["shunt.lan"],
                      allowed_origins=["http://localhost:3000"])
CHROME = ("User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n"
          "Accept: */*\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
          "Connection: keep-alive\r\n")


# -- pure decisions ---------------------------------------------------------------------------------
def test_split_authority():
    assert split_authority("127.0.0.1:8082") == ("127.0.0.1", 8082)
    assert split_authority("LocalHost") == ("localhost", None)
    assert split_authority("[::1]:8082") == ("::1", 8082)
    assert split_authority("[::1]") == ("::1", None)
    for bad in ("::1:8082", "a:b", "a:99999", "a, b", "user@a:1", "[::1", "[::1]x", "a b", ""):
        assert split_authority(bad) is None, bad


def test_host_names_shunt_answers_to():
    for ok in ("127.0.0.1:8082", "localhost:8082", "[::1]:8082", "127.0.0.5:8082", "LOCALHOST:8082", "shunt.lan:8082",
               "127.0.0.1", "localhost"):
        assert host_allowed(POLICY, ok), ok
    for refused in ("evil.example:8082", "evil.example", "localhost:8083", "127.0.0.1.nip.io:8082",
                    "localhost.evil.example:8082", "0.0.0.0:8082", "10.0.0.1:8082"):
        assert not host_allowed(POLICY, refused), refused
    with pytest.raises(BadRequest):
        host_allowed(POLICY, "a, b")
    lan = Policy.build(port=8082, bind_host="192.168.1.5")
    assert host_allowed(lan, "192.168.1.5:8082") and not host_allowed(lan, "shunt.lan:8082")


def test_a_forwarded_port_is_accepted_only_when_configured():
    tunnel = Policy.build(port=8082, bind_host="127.0.0.1", allowed_hosts=["localhost:9000", "[::1]:9000"])
    assert host_allowed(tunnel, "localhost:9000") and host_allowed(tunnel, "[::1]:9000")
    assert host_allowed(tunnel, "localhost:8082") and not host_allowed(tunnel, "127.0.0.1:9000")
    assert not host_allowed(POLICY, "localhost:9000")
    assert check_request(tunnel, {"host": "localhost:9000", "origin": "http://localhost:9000"}) == "http://localhost:9000"


def test_origins_shunt_accepts():
    assert check_request(POLICY, {"host": "127.0.0.1:8082"}) is None  # a non-browser client
    assert check_request(POLICY, {}) is None  # no Host: HTTP/1.0 tools; browsers always send one
    own = {"host": "127.0.0.1:8082", "origin": "http://127.0.0.1:8082"}
    assert check_request(POLICY, own) == "http://127.0.0.1:8082"
    assert check_request(POLICY, dict(own, origin="http://localhost:8082")) == "http://localhost:8082"
    assert check_request(POLICY, dict(own, origin="http://localhost:3000", **{"sec-fetch-site": "same-site"})) \
        == "http://localhost:3000"
    for refused in ("http://evil.example:8082", "null", "http://localhost:3001", "https://127.0.0.1:8082",
                    "http://127.0.0.1:9999"):
        with pytest.raises(PermissionDenied):
            check_request(POLICY, dict(own, origin=refused))
    for site in ("cross-site", "same-site"):  # an <img> or <script> load from another page carries no Origin
        with pytest.raises(PermissionDenied):
            check_request(POLICY, {"host": "127.0.0.1:8082", "sec-fetch-site": site})
    for site in ("same-origin", "none"):
        assert check_request(POLICY, {"host": "127.0.0.1:8082", "sec-fetch-site": site}) is None


def test_claude_code_as_captured_passes():
    for turn in (1, 2):
        with open(os.path.join(os.path.dirname(__file__), "fixtures", f"claude-code-2.1.328-turn{turn}.json")) as f:
            headers = {k.lower(): v for k, v in json.load(f)["headers"].items()}
        assert check_request(POLICY, headers) is None


def test_rebinding_host_is_refused_unless_the_request_carries_the_key():
    rebound = {"host": "evil.example:8082", "sec-fetch-site": "same-origin"}
    with pytest.raises(PermissionDenied, match="allowed_hosts"):
        check_request(POLICY, rebound)
    assert check_request(POLICY, rebound, check_host=False) is None  # /health
    assert check_request(POLICY, rebound, carries_key=True) is None
    # With the key, a page served from the name the client used is same-origin; another origin is not.
    assert check_request(POLICY, dict(rebound, origin="http://evil.example:8082"), carries_key=True)
    with pytest.raises(PermissionDenied):
        check_request(POLICY, dict(rebound, origin="http://other.example"), carries_key=True)


def test_preflight_fields():
    asked = {"access-control-request-method": "POST",
             "access-control-request-headers": "content-type,x-api-key,anthropic-version",
             "access-control-request-private-network": "true"}
    fields = preflight_fields("http://localhost:3000", asked)
    assert fields["access-control-allow-origin"] == "http://localhost:3000"
    assert fields["access-control-allow-methods"] == "POST"
    assert fields["access-control-allow-headers"] == "content-type, x-api-key, anthropic-version"
    assert fields["access-control-allow-private-network"] == "true"
    assert "Origin" in fields["vary"] and int(fields["access-control-max-age"]) > 0
    assert preflight_fields(None, asked) == {"allow": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"}
    odd = preflight_fields("http://localhost:3000", {"access-control-request-method": "PO ST",
                                                     "access-control-request-headers": "a b"})
    assert "access-control-allow-headers" not in odd and "," in odd["access-control-allow-methods"]


def test_control_posts_need_json():
    require_json("POST", "/use", {"content-type": "application/json"})
    require_json("POST", "/use", {"content-type": "Application/JSON; charset=utf-8"})
    for bad in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"},
                {"content-type": "multipart/form-data; boundary=x"}, {}):
        with pytest.raises(UnsupportedMediaType):
            require_json("POST", "/use", bad)


# -- over the wire, as a browser sends it -------------------------------------------------------------
def exchange(port: int, head: str, body: bytes = b""):
    """Send one request (``head``: request line and fields, no blank line) and read one answer.

    :returns: (status, {lower-case name: value}, body).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + (f"Content-Length: {len(body)}\r\n" if body else "").encode() + b"\r\n" + body)
        resp = http.client.HTTPResponse(s, method=head.split(" ", 1)[0])
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def error_type(body: bytes) -> str:
    doc = json.loads(body)
    assert doc["type"] == "error" and doc["error"]["message"]
    return doc["error"]["type"]


def test_a_rebinding_page_cannot_read_status_pin_an_account_or_send_messages(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")])
    host = f"evil.example:{p.port}"
    # Same-origin for the browser once evil.example resolves to 127.0.0.1: a GET carries no Origin.
    status, _, body = exchange(p.port, f"GET /status HTTP/1.1\r\nHost: {host}\r\n{CHROME}Sec-Fetch-Site: same-origin\r\n"
                                       "Sec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\nReferer: http://" + host + "/\r\n")
    assert status == 403 and error_type(body) == "permission_error" and b"accounts" not in body
    for path, payload in (("/use", b'{"account":"b"}'), ("/v1/messages", json.dumps(MSG).encode())):
        status, _, body = exchange(p.port, f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{CHROME}"
                                           f"Content-Type: application/json\r\nOrigin: http://{host}\r\n"
                                           "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\n", payload)
        assert status == 403 and error_type(body) == "permission_error"
    assert p.pool.pinned is None and upstream.received == []
    # The same requests by shunt's own names go through.
    for name in ("127.0.0.1", "localhost"):
        status, _, body = exchange(p.port, f"GET /status HTTP/1.1\r\nHost: {name}:{p.port}\r\n{CHROME}"
                                           "Sec-Fetch-Site: same-origin\r\n")
        assert status == 200 and "accounts" in json.loads(body)


def test_a_cross_site_text_plain_form_post_cannot_pin_an_account(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")])
    form = (f"POST /use HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\n{CHROME}Content-Type: text/plain\r\n"
            "Origin: http://evil.example:8082\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n"
            "Sec-Fetch-Dest: document\r\nReferer: http://evil.example:8082/\r\n")
    status, _, body = exchange(p.port, form, b'{"account":"b"}')
    assert status == 403 and error_type(body) == "permission_error"
    # Without Origin (an old browser, a plugin) the media type still refuses it.
    status, _, body = exchange(p.port, f"POST /use HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\nContent-Type: text/plain\r\n",
                               b'{"account":"b"}')
    assert status == 415 and error_type(body) == "invalid_request_error"
    status, _, body = exchange(p.port, f"POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\n"
                                       "Content-Type: application/x-www-form-urlencoded\r\n", b"a=1")
    assert status == 415
    # A cross-site <img>/<script> load carries no Origin but says where it comes from.
    status, _, _ = exchange(p.port, f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\n{CHROME}"
                                    "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image\r\n")
    assert status == 403
    assert p.pool.pinned is None and upstream.received == []


def test_preflights_are_answered_by_shunt_and_never_forwarded(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], allowed_origins=["http://localhost:3000"])
    ask = (f"OPTIONS /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\n{CHROME}"
           "Access-Control-Request-Method: POST\r\n"
           "Access-Control-Request-Headers: anthropic-version,content-type,x-api-key\r\n"
           "Sec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n")
    status, headers, body = exchange(p.port, ask + "Origin: http://evil.example:8082\r\nSec-Fetch-Site: cross-site\r\n")
    assert status == 403 and error_type(body) == "permission_error"
    assert not any(k.startswith("access-control-") for k in headers)
    status, headers, body = exchange(p.port, ask + "Origin: http://localhost:3000\r\nSec-Fetch-Site: same-site\r\n")
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-allow-headers"] == "anthropic-version, content-type, x-api-key"
    status, headers, _ = exchange(p.port, f"OPTIONS /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\n")
    assert status == 204 and "POST" in headers["allow"]  # not a browser's: no CORS fields
    # A rebinding page's preflight names its own host.
    status, _, _ = exchange(p.port, ask.replace(f"127.0.0.1:{p.port}", f"evil.example:{p.port}")
                            + f"Origin: http://evil.example:{p.port}\r\n")
    assert status == 403
    assert upstream.received == []


def test_an_allowed_origin_gets_shunts_cors_answer_and_never_the_upstreams(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], allowed_origins=["http://localhost:3000"])
    upstream_cors = {"access-control-allow-origin": "*", "access-control-expose-headers": "request-id",
                     "access-control-allow-credentials": "true"}
    upstream.script("tok-a", Reply(body=message_json(), headers=upstream_cors),
                    Reply(body=message_json(), headers=upstream_cors))
    post = (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\n{CHROME}Content-Type: application/json\r\n"
            "anthropic-version: 2023-06-01\r\nanthropic-dangerous-direct-browser-access: true\r\n")
    status, headers, _ = exchange(p.port, post + "Origin: http://localhost:3000\r\nSec-Fetch-Site: same-site\r\n",
                                  json.dumps(MSG).encode())
    assert status == 200 and headers["x-shunt-account"] == "a"
    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    assert headers["access-control-expose-headers"] == "*" and "access-control-allow-credentials" not in headers
    assert upstream.received[0].header("origin") == "http://localhost:3000"  # forwarded as the client sent it
    status, headers, _ = exchange(p.port, post, json.dumps(MSG).encode())  # no Origin: no CORS fields at all
    assert status == 200 and not any(k.startswith("access-control-") for k in headers)
    # shunt's own errors carry them too, so the page can read why.
    status, headers, body = exchange(p.port, f"POST /use HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\n"
                                             "Content-Type: application/json\r\nOrigin: http://localhost:3000\r\n",
                                     b'{"account":"nope"}')
    assert status == 400 and headers["access-control-allow-origin"] == "http://localhost:3000"


def test_names_keys_health_and_clients_without_host(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], allowed_hosts=["shunt.lan"], remote_key="s3cret-0123456789abcdef")
    assert exchange(p.port, f"GET /status HTTP/1.1\r\nHost: shunt.lan:{p.port}\r\nx-api-key: s3cret-0123456789abcdef\r\n")[0] == 200
    assert exchange(p.port, f"GET /status HTTP/1.1\r\nHost: [::1]:{p.port}\r\nx-api-key: s3cret-0123456789abcdef\r\n")[0] == 200
    # Any Host with the key (a rebinding page cannot know it); without it, a foreign Host is refused.
    assert exchange(p.port, f"GET /status HTTP/1.1\r\nHost: box.example:{p.port}\r\nx-api-key: s3cret-0123456789abcdef\r\n")[0] == 200
    assert exchange(p.port, f"GET /status HTTP/1.1\r\nHost: box.example:{p.port}\r\n")[0] == 403
    assert exchange(p.port, f"GET /status HTTP/1.1\r\nHost: 127.0.0.1:{p.port + 1}\r\nx-api-key: s3cret-0123456789abcdef\r\n")[0] == 200
    assert exchange(p.port, f"GET /status HTTP/1.1\r\nHost: 127.0.0.1:{p.port + 1}\r\n")[0] == 403
    assert exchange(p.port, f"GET /health HTTP/1.1\r\nHost: box.example:{p.port}\r\n")[0] == 200
    assert exchange(p.port, "GET /status HTTP/1.0\r\nx-api-key: s3cret-0123456789abcdef\r\n")[0] == 200  # no Host at all
    status, _, body = exchange(p.port, "GET /status HTTP/1.1\r\nHost: a, b\r\nx-api-key: s3cret-0123456789abcdef\r\n")
    assert status == 200  # the key lifts the Host check, malformed or not
    status, _, body = exchange(p.port, "GET /status HTTP/1.1\r\nHost: a, b\r\n")
    assert status == 400 and error_type(body) == "invalid_request_error"


def test_allowed_hosts_and_origins_are_validated_at_load():
    from shunt_lib.config import parse_config
    from shunt_lib.errors import ConfigError

    server = parse_config({"server": {"allowed_hosts": ["Shunt.LAN", "[::1]", "10.0.0.2"],
                                      "allowed_origins": ["http://LocalHost:3000/", "https://app.example"]}}).server
    assert server.allowed_hosts == ("shunt.lan", "::1", "10.0.0.2")
    assert server.allowed_origins == ("http://localhost:3000", "https://app.example")
    assert parse_config({"server": {"allowed_hosts": ["LocalHost:9000", "[::1]:9000", "::1"]}}).server.allowed_hosts \
        == ("localhost:9000", "[::1]:9000", "::1")
    for key, bad in (("allowed_hosts", "shunt.lan"), ("allowed_hosts", ["shunt.lan:99999"]),
                     ("allowed_hosts", ["shunt.lan:"]), ("allowed_hosts", ["shunt.lan:0"]),
                     ("allowed_hosts", ["http://shunt.lan"]), ("allowed_origins", ["localhost:3000"]),
                     ("allowed_origins", ["http://localhost:3000/app"]), ("allowed_origins", ["*"]),
                     ("allowed_origins", [3000])):
        with pytest.raises(ConfigError, match=f"server.{key}"):
            parse_config({"server": {key: bad}})


def test_a_refused_request_with_a_large_body_still_gets_its_answer(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    body = json.dumps(dict(MSG, pad="x" * (2 << 20))).encode()  # more than the socket buffers hold
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        for host in ("evil.example", "127.0.0.1"):  # refused, then served on the same connection
            s.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: {host}:{p.port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            resp = http.client.HTTPResponse(s, method="POST")
            resp.begin()
            resp.read()
            assert resp.status == (403 if host == "evil.example" else 200)
    assert len(upstream.received) == 1


def test_an_allowed_origin_can_read_a_stream(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], allowed_origins=["http://localhost:3000"])
    conn, resp = open_stream(p.port, headers={"origin": "http://localhost:3000"})
    try:
        assert resp.status == 200 and resp.getheader("access-control-allow-origin") == "http://localhost:3000"
        assert b"message_stop" in read_until(resp, b"message_stop")
    finally:
        conn.close()


def test_a_tunnel_port_works_once_configured(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    ask = "GET /status HTTP/1.1\r\nHost: localhost:9000\r\n"  # through ssh -L 9000:127.0.0.1:PORT
    assert exchange(p.port, ask)[0] == 403
    write_home(os.environ["SHUNT_HOME"], upstream.url, [("a", "oauth")], {"allowed_hosts": ["localhost:9000"]})
    assert json.loads(p.request("POST", "/reload", {})[2])["server_applied"] == ["allowed_hosts"]
    assert exchange(p.port, ask)[0] == 200


def test_the_usual_host_values_need_no_parsing_and_agree_with_the_parser():
    for value in POLICY.usual_hosts:
        assert host_allowed(POLICY, value), value
    assert "127.0.0.1:8082" in POLICY.usual_hosts and "localhost:8082" in POLICY.usual_hosts
