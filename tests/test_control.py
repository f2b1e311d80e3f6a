"""The control paths: which [server] edits a reload applies and which it names for a restart, and
405 for a wrong method."""

import json
import os

import pytest

from shunt_lib.config import LIVE_KEYS, ServerConfig, server_changes
from tests.support import MSG, write_home


def test_server_changes_split_live_keys_from_restart_keys():
    old = ServerConfig()
    new = ServerConfig(port=9000, max_wait_s=5, allowed_hosts=("box",), upstream_url="https://x.example")
    assert server_changes(old, new) == (["max_wait_s", "allowed_hosts"], ["port", "upstream_url"])
    assert server_changes(old, old) == ([], [])
    assert {"host", "port", "upstream_url"}.isdisjoint(LIVE_KEYS)


def test_a_reload_applies_live_server_keys_and_names_the_ones_needing_a_restart(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], strategy="fill-first")
    home = os.environ["SHUNT_HOME"]
    assert p.request(body=MSG, headers={"host": f"box.lan:{p.port}"})[0] == 403
    write_home(home, upstream.url, [("a", "oauth")], {"strategy": "round-robin", "max_body_bytes": 2048,
                                                       "max_wait_s": 7, "allowed_hosts": ["box.lan"], "port": 9999,
                                                       "usage_poll_s": 5})
    status, _, body = p.request("POST", "/reload", {})
    assert status == 200
    answer = json.loads(body)
    assert answer["server_applied"] == ["strategy", "max_wait_s", "max_body_bytes", "allowed_hosts"]
    assert answer["restart_required"] == ["port", "usage_poll_s"]
    assert p.srv.pool.strategy == "round-robin" and p.srv.relay.max_wait_s == 7
    assert p.request(body=MSG, headers={"host": f"box.lan:{p.port}"})[0] == 200
    status, _, body = p.request(body=dict(MSG, pad="x" * 4096))
    assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large"
    assert p.srv.port != 9999 and p.srv.config.server.port != 9999  # still on the port it was started on
    # Nothing new: nothing applied, and the pending keys are named again until a restart.
    answer = json.loads(p.request("POST", "/reload", {})[2])
    assert answer["server_applied"] == [] and answer["restart_required"] == ["port", "usage_poll_s"]


def test_a_reload_may_not_drop_the_key_of_a_shunt_listening_beyond_loopback(make_proxy, upstream):
    p = make_proxy([("a", "oauth")], host="0.0.0.0", remote_key="k1-0123456789abcdef")
    write_home(os.environ["SHUNT_HOME"], upstream.url, [("a", "oauth")], {"host": "0.0.0.0"})
    status, _, body = p.request("POST", "/reload", {}, headers={"x-api-key": "k1-0123456789abcdef"})
    assert status == 400 and "remote_key" in json.loads(body)["error"]["message"]
    assert p.request(body=MSG)[0] == 401  # the key is still required
    write_home(os.environ["SHUNT_HOME"], upstream.url, [("a", "oauth")], {"host": "0.0.0.0", "remote_key": "k2-0123456789abcdef"})
    assert p.request("POST", "/reload", {}, headers={"x-api-key": "k1-0123456789abcdef"})[0] == 200
    assert p.request(body=MSG, headers={"x-api-key": "k1-0123456789abcdef"})[0] == 401
    assert p.request(body=MSG, headers={"x-api-key": "k2-0123456789abcdef"})[0] == 200


@pytest.mark.parametrize("method,path,allow", [("POST", "/status", "GET, HEAD"), ("GET", "/use", "POST"),
                                               ("DELETE", "/reload", "POST"), ("POST", "/health", "GET, HEAD"),
                                               ("PUT", "/use", "POST")])
def test_a_wrong_method_on_a_control_path_is_405(make_proxy, upstream, method, path, allow):
    p = make_proxy([("a", "oauth")])
    status, headers, body = p.request(method, path, {})
    assert status == 405 and headers["allow"] == allow
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert p.pool.pinned is None and upstream.received == []


def test_head_is_get_without_a_body_and_unknown_paths_stay_404(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    status, headers, body = p.request("HEAD", "/status")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert p.request("GET", "/nothing")[0] == 404 and p.request("POST", "/nothing", {})[0] == 404
