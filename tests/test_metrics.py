"""``GET /metrics``: the counters (pure), the text page (pure, read back by prometheus_client's own
parser), and the page of a running proxy after a failover, a hold, a token refresh and cache tokens."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shunt_lib.account_state import AccountSnapshot
from shunt_lib.config import load_config
from shunt_lib.errors import ConfigError
from shunt_lib.metrics import HELD_BUCKETS_S, MAX_MODELS, Histogram, Metrics
from shunt_lib.metrics_text import CONTENT_TYPE, Family, escape_label, exposition, histogram_samples, render
from shunt_lib.ratelimit import Window
from shunt_lib.router import AccountStatus, AccountView
from shunt_lib.savings import Ledger
from shunt_lib.state import PoolSnapshot
from tests.fakes.upstream import Reply, error_json, unified_headers
from tests.support import MSG, FakeClock, wait_until, write_home

KEY = "metrics-test-key-0123456789"
NOW = 1_800_000_000.0


def _record(**kw):
    base = {"ts_s": int(NOW), "account": "a", "method": "POST", "path": "/v1/messages", "model": "claude-opus-4-5",
            "status": 200, "input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 100,
            "cache_creation_tokens": 20, "cache_write_5m_tokens": 20, "cache_write_1h_tokens": 0,
            "duration_ms": 1500, "attempts": 1, "held_ms": 0, "broke": False, "request_id": None,
            "upstream_request_id": None}
    return {**base, **kw}


def _families(text: str) -> dict:
    """name → family, by prometheus_client's parser (which drops a counter's ``_total`` from the name)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def _values(family, name: str | None = None) -> dict:
    """``{frozenset(labels.items()): value}`` of a family's samples (named ``name`` if given)."""
    return {frozenset(s.labels.items()): s.value for s in family.samples if name is None or s.name == name}


def _pool(*accounts: AccountSnapshot) -> PoolSnapshot:
    return PoolSnapshot(None, list(accounts), [])


def _account(name: str, usd: float = 0.0, **view) -> AccountSnapshot:
    return AccountSnapshot(AccountView(name, **view), "", 0, 0, 0, 0, 0, Ledger({}, usd, 0))


# -- the counters ---------------------------------------------------------------------------------

def test_requests_tokens_holds_and_durations_are_counted_per_account_model_and_status():
    m = Metrics()
    m.add_request(_record())
    m.add_request(_record(held_ms=12_000, duration_ms=13_500))
    m.add_request(_record(account=None, status=529, model="", input_tokens=0, output_tokens=0, cache_read_tokens=0,
                          cache_creation_tokens=0, duration_ms=3))
    c = m.counts()
    assert c.requests == {("a", "claude-opus-4-5", "200", "local"): 2, ("-", "unknown", "529", "local"): 1}
    assert c.tokens[("a", "claude-opus-4-5", "cache_read", "local")] == 200
    assert c.tokens[("a", "claude-opus-4-5", "cache_write", "local")] == 40
    assert c.tokens[("a", "claude-opus-4-5", "input", "local")] == 20
    assert c.tokens[("a", "claude-opus-4-5", "output", "local")] == 10
    assert c.holds == 1 and c.held.count == 1 and c.held.sum == 12.0
    # shunt's own answer is no upstream's: two durations, each less the time held (1.5 s both)
    assert c.upstream.count == 2 and c.upstream.sum == pytest.approx(3.0)


def test_model_labels_are_capped_so_a_client_cannot_grow_the_page_without_bound():
    m = Metrics()
    for i in range(MAX_MODELS + 5):
        m.add_request(_record(model=f"model-{i}"))
    models = {model for _, model, _, _ in m.counts().requests}
    assert len(models) == MAX_MODELS + 1 and "other" in models
    assert m.counts().requests[("a", "other", "200", "local")] == 5


def test_failovers_and_token_refreshes_are_counted_by_reason_and_result():
    m = Metrics()
    m.add_failover("exhausted")
    m.add_failover("exhausted")
    m.add_failover("connect_error")
    m.add_refresh("a", "ok")
    m.add_refresh("a", "error")
    m.add_refresh("a", "error")
    c = m.counts()
    assert c.failovers == {"exhausted": 2, "connect_error": 1}
    assert c.refreshes == {("a", "ok"): 1, ("a", "error"): 2}


def test_a_histogram_puts_each_value_in_the_first_bucket_whose_bound_holds_it():
    h = Histogram((1.0, 5.0))
    for v in (0.5, 1.0, 3.0, 5.0, 7.0):
        h.observe(v)
    assert h.counts().buckets == (2, 2, 1) and h.counts().count == 5 and h.counts().sum == 16.5


# -- the page (pure) --------------------------------------------------------------------------------

def test_label_values_are_escaped_and_read_back_unchanged():
    odd = 'a "quoted" back\\slash\nnew line'
    assert escape_label(odd) == 'a \\"quoted\\" back\\\\slash\\nnew line'
    m = Metrics()
    m.add_request(_record(model=odd))
    fams = _families(render(m.counts(), _pool(_account("a")), NOW, 0))
    assert {s.labels["model"] for s in fams["shunt_requests"].samples} == {odd}


def test_help_text_is_escaped():
    text = exposition([Family("x_total", "counter", "one\\two\nthree", [("", (), 1)])])
    assert text.splitlines()[0] == "# HELP x_total one\\\\two\\nthree"
    assert _families(text)["x"].documentation == "one\\two\nthree"


def test_histograms_are_cumulative_up_to_inf_with_sum_and_count():
    h = Histogram(HELD_BUCKETS_S)
    for v in (0.5, 2.0, 2.0, 4000.0):
        h.observe(v)
    samples = histogram_samples(h.counts())
    buckets = [(dict(labels)["le"], v) for suffix, labels, v in samples if suffix == "_bucket"]
    assert buckets[0] == ("1.0", 1) and buckets[1] == ("5.0", 3) and buckets[-2] == ("3600.0", 3)
    assert buckets[-1] == ("+Inf", 4)
    assert [(suffix, v) for suffix, _, v in samples[-2:]] == [("_sum", 4004.5), ("_count", 4)]
    fam = _families(exposition([Family("h_seconds", "histogram", "h", samples)]))["h_seconds"]
    assert fam.type == "histogram"
    assert _values(fam, "h_seconds_bucket")[frozenset({("le", "+Inf")})] == 4


def test_every_family_has_its_type_and_help_and_counters_end_in_total():
    text = render(Metrics().counts(), _pool(_account("a")), NOW, 2)
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
    assert types == {
        "shunt_requests_total": "counter", "shunt_tokens_total": "counter", "shunt_failovers_total": "counter",
        "shunt_holds_total": "counter", "shunt_held_seconds": "histogram",
        "shunt_upstream_duration_seconds": "histogram",
        "shunt_token_refreshes_total": "counter", "shunt_inflight_requests": "gauge",
        "shunt_account_utilization": "gauge", "shunt_account_reset_seconds": "gauge", "shunt_account_status": "gauge",
        "shunt_savings_usd_total": "counter"}
    lines = text.splitlines()
    assert all(lines[i - 1].startswith(f"# HELP {line.split(' ')[2]} ") for i, line in enumerate(lines)
               if line.startswith("# TYPE "))
    fams = _families(text)
    assert fams["shunt_inflight_requests"].samples[0].value == 2
    assert fams["shunt_holds"].samples[0].value == 0


def test_account_gauges_come_from_the_snapshot_at_the_scrape_time():
    windows = {"5h": Window(0.42, NOW + 600), "7d": Window(0.9, NOW - 5), "7d_opus": Window(0.1, NOW + 1)}
    pool = _pool(_account("a", 1.25, windows=windows), _account("b", 0.5, exhausted_until_s=NOW + 60),
                 _account("c", reauth_required=True))
    fams = _families(render(Metrics().counts(), pool, NOW, 0))
    assert _values(fams["shunt_account_utilization"]) == {
        frozenset({("account", "a"), ("window", "5h")}): 0.42, frozenset({("account", "a"), ("window", "7d")}): 0.9}
    assert _values(fams["shunt_account_reset_seconds"]) == {
        frozenset({("account", "a"), ("window", "5h")}): 600.0, frozenset({("account", "a"), ("window", "7d")}): 0.0}
    status = fams["shunt_account_status"].samples
    for name, current in (("a", "available"), ("b", "exhausted"), ("c", "reauth_required")):
        mine = {s.labels["status"]: s.value for s in status if s.labels["account"] == name}
        assert set(mine) == {str(s) for s in AccountStatus} and sum(mine.values()) == 1 and mine[current] == 1
    assert fams["shunt_savings_usd"].samples[0].value == 1.75


# -- a running proxy ----------------------------------------------------------------------------------

def _scrape(proxy, headers=None):
    status, h, body = proxy.request("GET", "/metrics", headers=headers)
    assert status == 200, body
    assert h["content-type"] == CONTENT_TYPE
    return _families(body.decode())


def _cached_answer(model: str) -> bytes:
    usage = {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 3000,
             "cache_creation_input_tokens": 400, "cache_creation": {"ephemeral_5m_input_tokens": 400}}
    return json.dumps({"id": "m", "type": "message", "role": "assistant", "model": model, "stop_reason": "end_turn",
                       "content": [{"type": "text", "text": "hi"}], "usage": usage}).encode()


def test_metrics_of_a_running_proxy_after_a_failover_a_hold_and_a_refresh(make_proxy, upstream):
    clock = FakeClock()
    p = make_proxy(strategy="fill-first", max_wait_s=60, clock=clock)
    model = "claude-opus-4-5"
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "quota"),
                                   headers=unified_headers(status_5h="rejected", util_5h=1.0, now_s=clock.time())))
    upstream.token_handler = lambda req: (200, {"access_token": "tok-b2", "refresh_token": "ref-b2",
                                                "expires_in": 3600})
    upstream.script("tok-b", Reply(body=_cached_answer(model),
                                   headers=unified_headers(util_5h=0.25, now_s=clock.time())),
                    Reply(status=401, body=error_json("authentication_error", "expired")))
    upstream.script("tok-b2", Reply(body=_cached_answer(model)), Reply(body=_cached_answer(model)))
    assert p.request(body=MSG)[0] == 200  # a: quota 429, moved to b
    assert p.request(body=MSG)[0] == 200  # b: 401, token refreshed, b again
    p.pool.cool("b", clock.time() + 10, "test")
    assert p.request(body=MSG)[0] == 200  # a exhausted, b cooling: held until b is back
    assert wait_until(lambda: sum(p.srv.metrics.counts().requests.values()) == 3)

    fams = _scrape(p)
    assert _values(fams["shunt_requests"]) == {frozenset({("account", "b"), ("model", model), ("status", "200"),
                                                          ("client", "local")}): 3}
    tokens = {s.labels["kind"]: s.value for s in fams["shunt_tokens"].samples if s.labels["account"] == "b"}
    assert tokens == {"input": 36, "output": 21, "cache_read": 9000, "cache_write": 1200}
    assert _values(fams["shunt_failovers"]) == {frozenset({("reason", "exhausted")}): 1}
    assert _values(fams["shunt_token_refreshes"]) == {frozenset({("account", "b"), ("result", "ok")}): 1}
    assert fams["shunt_holds"].samples[0].value == 1
    held = _values(fams["shunt_held_seconds"], "shunt_held_seconds_count")
    assert held == {frozenset(): 1} and _values(fams["shunt_held_seconds"], "shunt_held_seconds_sum")[frozenset()] >= 10
    assert _values(fams["shunt_upstream_duration_seconds"], "shunt_upstream_duration_seconds_count") == {frozenset(): 3}
    inf = _values(fams["shunt_upstream_duration_seconds"], "shunt_upstream_duration_seconds_bucket")
    assert inf[frozenset({("le", "+Inf")})] == 3
    assert fams["shunt_inflight_requests"].samples[0].value == 0
    status = {(s.labels["account"], s.labels["status"]): s.value for s in fams["shunt_account_status"].samples}
    for name in ("a", "b"):
        assert sum(v for (n, _), v in status.items() if n == name) == 1
    assert status[("a", "exhausted")] == 1 and status[("b", "available")] == 1
    util = _values(fams["shunt_account_utilization"])
    assert util[frozenset({("account", "a"), ("window", "5h")})] == 1.0
    assert util[frozenset({("account", "b"), ("window", "5h")})] == 0.25
    assert _values(fams["shunt_account_reset_seconds"])[frozenset({("account", "a"), ("window", "5h")})] > 0
    saved = json.loads(p.request("GET", "/status")[2])["savings"]["all_time"]["usd"]
    assert saved > 0 and fams["shunt_savings_usd"].samples[0].value == pytest.approx(saved, abs=1e-4)  # /status rounds

    status_code, h, body = p.request("HEAD", "/metrics")
    assert (status_code, h["content-type"], body) == (200, CONTENT_TYPE, b"")
    assert p.request("POST", "/metrics", body={})[0] == 405


def test_metrics_need_the_remote_key_unless_metrics_public(make_proxy):
    p = make_proxy(remote_key=KEY)
    assert p.request("GET", "/metrics")[0] == 401
    assert "shunt_requests" in _scrape(p, {"x-api-key": KEY})
    p.close()
    public = make_proxy(remote_key=KEY, metrics_public=True)
    assert "shunt_account_status" in _scrape(public)
    assert public.request("GET", "/status")[0] == 401  # only /metrics is public
    assert public.request("GET", "/metrics", headers={"host": "evil.example:80"})[0] == 403  # the Host check stays


def test_metrics_public_must_be_true_or_false(tmp_path, upstream):
    with pytest.raises(ConfigError, match="metrics_public must be true or false"):
        load_config(write_home(str(tmp_path / "home"), upstream.url, [("a", "oauth")], {"metrics_public": "yes"}))
