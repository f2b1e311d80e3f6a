"""Savings: day buckets over time (pure, time as an argument), state.json round trip, and the
savings of a real proxied request in /status and in `shunt status`."""

import json

import pytest

from shunt_lib.config import AccountConfig
from shunt_lib.pricing import Price, PriceBook
from shunt_lib.savings import DAY_S, Ledger, savings_summary
from shunt_lib.state import Pool
from shunt_lib.status_view import render_status
from tests.fakes.upstream import Reply
from tests.support import MSG, wait_until

T0 = 1_800_000_000 - 1_800_000_000 % DAY_S + 3600  # 01:00 UTC on some day


def spans(s):
    return {k: (round(v["usd"], 6), v["unpriced_requests"]) for k, v in s.items()}


def test_day_buckets_roll_into_today_7d_30d_and_all_time():
    led = Ledger()
    led.add(T0 - 40 * DAY_S, 100.0)  # outside every window but all_time
    led.add(T0 - 20 * DAY_S, 10.0)
    led.add(T0 - 6 * DAY_S, 1.0)     # the 7th day back: in 7d
    led.add(T0 - 7 * DAY_S, 2.0)     # the 8th: only 30d
    led.add(T0 - 3600, 0.5)          # 00:00 today UTC
    led.add(T0, None)                # unpriced
    assert spans(savings_summary([led], T0)) == {
        "today": (0.5, 1), "7d": (1.5, 1), "30d": (13.5, 1), "all_time": (113.5, 1)}
    # a day later today is empty; 30 days later only all_time is left
    assert spans(savings_summary([led], T0 + DAY_S))["today"] == (0, 0)
    assert spans(savings_summary([led], T0 + 40 * DAY_S)) == {
        "today": (0, 0), "7d": (0, 0), "30d": (0, 0), "all_time": (113.5, 1)}
    assert min(led.days) > (T0 // DAY_S) - 30  # buckets older than 30 days are dropped
    other = Ledger()
    other.add(T0, 2.0)
    assert spans(savings_summary([led, other], T0))["today"] == (2.5, 1)


def test_ledger_json_round_trip_drops_bad_entries():
    led = Ledger()
    led.add(T0, 1.25)
    led.add(T0, None)
    assert Ledger.from_json(json.loads(json.dumps(led.to_json()))) == led
    bad = {"days": {"x": [1, 1], str(T0 // DAY_S): [-1, 2], "5": [1.0, -1], "6": [float("inf"), 1], "7": [2.0, 3]},
           "all_usd": "lots", "all_unpriced": -4}
    assert Ledger.from_json(bad) == Ledger({7: [2.0, 3]}, 0.0, 0)
    assert Ledger.from_json(None) == Ledger()


def _record(model, ts_s, **tokens):
    return {"ts_s": ts_s, "account": "a", "method": "POST", "path": "/v1/messages", "model": model, "status": 200,
            "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_creation_tokens": 0,
            "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0, "duration_ms": 1, "attempts": 1, "held_ms": 0,
            "broke": False, "request_id": None, "upstream_request_id": None, **tokens}


def test_pool_counts_savings_with_overrides_and_they_survive_state_json():
    pool = Pool([AccountConfig("a"), AccountConfig("b")], strategy="round-robin", session_ttl_s=60)
    pool.record_request(_record("claude-haiku-4-5", T0, input_tokens=1_000_000))        # $1
    pool.record_request(_record("my-model-1", T0, output_tokens=1_000_000))             # unpriced
    pool.prices = PriceBook({"my-model": Price(0, 3, 0, 0, 0, "config.toml", "")})
    pool.record_request(_record("my-model-1", T0, output_tokens=1_000_000))             # $3 by override
    doc = json.loads(json.dumps(pool.to_json(T0)))
    again = Pool([AccountConfig("a"), AccountConfig("b")], strategy="round-robin", session_ttl_s=60)
    again.load_json(doc, T0 + 1)
    for p in (pool, again):
        a, b = p.snapshot(T0).accounts
        assert spans(savings_summary([a.savings], T0))["today"] == (4.0, 1)
        assert spans(savings_summary([b.savings], T0))["all_time"] == (0, 0)


def test_a_proxied_request_is_priced_with_its_cache_tokens_in_status_and_shunt_status(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="round-robin")
    usage = {"input_tokens": 1000, "output_tokens": 2000, "cache_read_input_tokens": 100_000,
             "cache_creation_input_tokens": 30_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 10_000, "ephemeral_1h_input_tokens": 20_000}}
    body = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                       "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "usage": usage})
    upstream.script("tok-a", Reply(body=body.encode()))
    upstream.script("tok-b", Reply(body=body.encode()))
    status, _, _ = p.request(body=dict(MSG, model="claude-sonnet-4-5"))
    assert status == 200
    p.request(body=MSG)  # claude-test via the default fake answer: unpriced
    assert wait_until(lambda: p.srv.status()["savings"]["all_time"]["unpriced_requests"] == 1)  # counted after relaying
    # 1000*3 + 2000*15 + 100000*0.30 + 10000*3.75 + 20000*6, per million
    expected = (3000 + 30000 + 30000 + 37500 + 120000) / 1e6
    _, _, raw = p.request(method="GET", path="/status")
    doc = json.loads(raw)
    for span in ("today", "7d", "30d", "all_time"):
        assert doc["savings"][span]["usd"] == pytest.approx(expected)
        assert doc["savings"][span]["unpriced_requests"] == 1
    per = {a["name"]: a["savings"]["all_time"] for a in doc["accounts"]}
    assert sum(v["usd"] for v in per.values()) == pytest.approx(expected)
    assert sum(v["unpriced_requests"] for v in per.values()) == 1
    served = {r["account"] for r in doc["recent_requests"]}
    assert all(per[n] == {"usd": 0.0, "unpriced_requests": 0} for n in per if n not in served)
    out = render_status(doc)
    assert "saved (API list prices) today $0.2205 · 7d $0.2205 · 30d $0.2205 · all $0.2205 · 1 unpriced" in out
    assert "SAVED 30D" in out and "$0.2205" in out.split("SAVED 30D", 1)[1]


def test_pricing_overrides_apply_on_reload(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    with open(p.srv.paths.config, "a") as f:
        f.write('\n[pricing."claude-test"]\ninput = 1000000\noutput = 0\ncache_write_5m = 0\n'
                'cache_write_1h = 0\ncache_read = 0\n')
    assert p.request(path="/reload", body={})[0] == 200
    assert p.request(body=MSG)[0] == 200  # the fake answers model claude-test, 10 input tokens
    # The request is counted just after its answer is relayed, so the client may read it first.
    assert wait_until(lambda: p.srv.status()["savings"]["all_time"]["usd"] > 0)
    assert p.srv.status()["savings"]["all_time"] == {"usd": 10.0, "unpriced_requests": 0}
