"""The control endpoints the live views drive: ``GET /recent``, ``POST /strategy``, ``POST /alerts``."""

from __future__ import annotations

import json
import os
import tomllib

from shunt_lib.recent import RecentRequests
from tests.fakes.upstream import Reply, error_json
from tests.support import MSG, wait_until

QUOTA_MSG = "This request would exceed your account's rate limit. Please try again later."


def _rec(i, **kw):
    base = {"ts_s": 1000 + i, "account": "a", "model": "m", "status": 200, "input_tokens": 1, "output_tokens": 2,
            "cache_read_tokens": 0, "cache_creation_tokens": 0, "duration_ms": 5, "held_ms": 0, "attempts": 1,
            "broke": False, "request_id": f"r{i}", "method": "POST", "path": "/v1/messages", "body_secret": "x"}
    return {**base, **kw}


def test_recent_ring_numbers_requests_and_keeps_the_last_ones():
    ring = RecentRequests(maxlen=3)
    for i in range(5):
        ring.add(_rec(i, held_ms=10 if i == 3 else 0, attempts=2 if i == 4 else 1))
    doc = ring.after(0)
    assert doc["last_seq"] == 5 and [r["seq"] for r in doc["requests"]] == [3, 4, 5]
    assert [(r["held"], r["moved"]) for r in doc["requests"]] == [(False, False), (True, False), (False, True)]
    assert "body_secret" not in doc["requests"][0] and "path" not in doc["requests"][0]
    assert [r["seq"] for r in ring.after(4)["requests"]] == [5]
    assert [r["seq"] for r in ring.after(0, limit=1)["requests"]] == [5]
    assert ring.after(5)["requests"] == []


def test_recent_shows_finished_requests_with_the_failover_marker(make_proxy, upstream):
    proxy = make_proxy(strategy="fill-first")
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", QUOTA_MSG)))
    assert proxy.request(body=MSG)[0] == 200
    assert wait_until(lambda: json.loads(proxy.request("GET", "/recent?after=0")[2])["last_seq"] == 1)  # counted
    status, _, body = proxy.request("GET", "/recent?after=0&limit=10")  # just after the answer is relayed
    doc = json.loads(body)
    assert status == 200 and doc["last_seq"] == 1
    (row,) = doc["requests"]
    assert row["account"] == "b" and row["status"] == 200 and row["moved"] is True and row["model"] == "claude-test"
    assert json.loads(proxy.request("GET", "/recent?after=1")[2])["requests"] == []
    assert proxy.request("GET", "/recent?after=x")[0] == 400


def test_strategy_is_applied_and_saved_in_config(make_proxy):
    proxy = make_proxy()
    status, _, body = proxy.request("POST", "/strategy", body={"strategy": "fill-first"})
    assert (status, json.loads(body)) == (200, {"strategy": "fill-first"})
    assert json.loads(proxy.request("GET", "/status")[2])["strategy"] == "fill-first"
    with open(os.path.join(os.environ["SHUNT_HOME"], "config.toml"), "rb") as f:
        assert tomllib.load(f)["server"]["strategy"] == "fill-first"
    status, _, body = proxy.request("POST", "/strategy", body={"strategy": "random"})
    assert status == 400 and "least-utilization" in json.loads(body)["error"]["message"]
    assert json.loads(proxy.request("GET", "/status")[2])["strategy"] == "fill-first"


def test_alerts_mute_is_shown_in_status_and_survives_a_restart(make_proxy):
    proxy = make_proxy()
    assert json.loads(proxy.request("GET", "/status")[2])["alerts"] == {"muted": False}
    status, _, body = proxy.request("POST", "/alerts", body={"muted": True})
    assert (status, json.loads(body)) == (200, {"muted": True})
    assert json.loads(proxy.request("GET", "/status")[2])["alerts"] == {"muted": True}
    assert proxy.request("POST", "/alerts", body={"muted": "yes"})[0] == 400
    proxy.close()
    again = make_proxy()
    assert json.loads(again.request("GET", "/status")[2])["alerts"] == {"muted": True}
    assert json.loads(again.request("POST", "/alerts", body={"muted": False})[2]) == {"muted": False}
    assert oct(os.stat(os.path.join(os.environ["SHUNT_HOME"], "alerts.json")).st_mode & 0o777) == "0o600"
