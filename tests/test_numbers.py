"""Numbers from outside (headers, the usage endpoint, state.json) are checked where they enter."""

import json
import logging
import os

import pytest

from shunt_lib.account_info import parse_usage
from shunt_lib.config import AccountConfig
from shunt_lib.numbers import count, epoch_s, finite, fraction
from shunt_lib.state import Pool
from shunt_lib.state_file import StateWriter, load_state, report_due
from shunt_lib.status import status_document
from tests.fakes.upstream import Reply, error_json
from tests.support import MSG, FakeClock

NOW = 1_785_510_000.0
BAD = [float("inf"), float("-inf"), float("nan"), 1e308, -1, True, "5", None, [1], 10 ** 400]


def test_the_boundary_checks_accept_sane_numbers_only():
    assert finite(3, 0, 10) == 3.0 and epoch_s(NOW + 60, NOW) == NOW + 60 and fraction(1.01) == 1.01 and count(7) == 7
    for bad in BAD:
        assert epoch_s(bad, NOW) is None and fraction(bad) is None and count(bad) is None, bad
    assert epoch_s(NOW + 400 * 86400, NOW) is None and epoch_s(99999999999, NOW) is None  # more than a year ahead
    assert count(2.0) is None and count(-3) is None


def test_usage_poll_numbers_out_of_bounds_are_left_out():
    data = {"five_hour": {"utilization": float("inf"), "resets_at": "2026-08-01T00:00:00Z"},
            "seven_day": {"utilization": 20, "resets_at": "9999-12-31T23:59:59Z"},
            "seven_day_opus": {"utilization": -3}, "seven_day_sonnet": {"utilization": "12"}}
    assert parse_usage(data, NOW) == {"7d": (0.2, None, "")}


def test_a_state_json_full_of_absurd_numbers_loads_clean_and_status_works(tmp_path):
    hostile = {"version": 2, "pinned_account": "a", "accounts": {"a": {
        "cooldown_until_s": 1e308, "exhausted_until_s": 99999999999, "rate_limits_at_s": float("inf"),
        "requests": 10 ** 30, "input_tokens": -5, "output_tokens": 1.5, "cooldown_reason": ["x"],
        "windows": {"5h": {"utilization": float("nan"), "reset_at_s": float("inf"), "status": 3},
                    "7d": {"utilization": "0.5", "reset_at_s": "soon"}}}},
        "sessions": {"s:" + "0" * 32: {"account": "a", "expires_at_s": float("inf")},
                     "s:" + "1" * 32: {"account": ["a"], "expires_at_s": NOW + 5}},
        "recent_requests": [{"ts_s": float("inf")}, "x", {"account": "a"}]}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(hostile))  # Python writes inf/nan as Infinity/NaN, and reads them back
    p = Pool([AccountConfig("a")], strategy="fill-first", session_ttl_s=60)
    load_state(p, str(path), NOW)
    (a,) = p.snapshot(NOW).accounts
    assert a.view.usable(NOW) and a.requests == a.input_tokens == a.output_tokens == 0
    assert a.view.windows == {"5h": (None, None, ""), "7d": (None, None, "")}
    assert p.snapshot(NOW).recent == [] and p.session_account("s:" + "0" * 32, NOW) is None
    doc = status_document(p.snapshot(NOW), {}, NOW, version="t", started_at_s=NOW, strategy="fill-first")
    json.dumps(doc, allow_nan=False)
    json.dumps(p.to_json(NOW), allow_nan=False)


@pytest.mark.parametrize("garbage", [b"{broken", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_a_corrupt_state_json_is_kept_aside_before_a_fresh_one_is_written(tmp_path, garbage, caplog):
    path = tmp_path / "state.json"
    path.write_bytes(garbage)
    p = Pool([AccountConfig("a")], strategy="fill-first", session_ttl_s=60)
    load_state(p, str(path), NOW)
    aside = tmp_path / f"state.json.corrupt-{int(NOW)}"
    assert aside.read_bytes() == garbage and not path.exists()
    assert "kept as" in caplog.text
    w = StateWriter(p, str(path), clock=FakeClock(NOW))
    w.flush()
    assert json.loads(path.read_text())["version"] == 2 and aside.read_bytes() == garbage


def test_an_unwritable_state_json_is_logged_once_a_minute(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="shunt.state")
    path = tmp_path / "state.json"
    os.mkdir(path)  # a directory where the file should be: every write fails
    clock = FakeClock(NOW)
    p = Pool([AccountConfig("a")], strategy="fill-first", session_ttl_s=60)
    w = StateWriter(p, str(path), clock=clock)
    for _ in range(300):  # 30 s of ticks every 100 ms
        p.cool("a", NOW + 5, "x")
        w.tick()
        clock.advance(0.1)
    assert len(caplog.records) == 1
    clock.advance(31)
    w.tick()
    assert len(caplog.records) == 2
    assert report_due(None, 0) and not report_due(10, 69) and report_due(10, 70)


def test_absurd_rate_limit_headers_leave_status_and_requests_working(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "quota"), headers={
        "anthropic-ratelimit-unified-status": "rejected", "anthropic-ratelimit-unified-reset": "inf",
        "anthropic-ratelimit-unified-5h-status": "rejected", "anthropic-ratelimit-unified-5h-reset": "1e308",
        "anthropic-ratelimit-unified-5h-utilization": "nan", "retry-after": "99999999999"}))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    status, _, body = p.request("GET", "/status")
    a = json.loads(body)["accounts"][0]
    assert status == 200 and a["status"] == "exhausted" and a["cooldown_until_s"] < NOW + 366 * 86400
