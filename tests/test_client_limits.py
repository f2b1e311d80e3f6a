"""Client tokens' limits: the pure decisions, the meter under racing threads, charging, the durable
budgets in tokens.db, and the estimate of a cut stream's output."""

from __future__ import annotations

import calendar
import json
import os
import stat
import threading

import pytest

from shunt_lib import client_limits as cl
from shunt_lib.client_limits import Use, check
from shunt_lib.client_meter import ClientLimited, ClientMeter
from shunt_lib.clients import TokenLimits
from shunt_lib.openai_usage import OpenAIUsageTap
from shunt_lib.pricing import PriceBook
from shunt_lib.token_usage import UsageWriter, load_totals, open_db, read_usage
from shunt_lib.usage import UsageTap
from shunt_lib import sse
from tests.fakes.token_auth import client
from tests.support import wait_until

T0 = calendar.timegm((2026, 3, 14, 12, 0, 0))  # a Saturday noon, UTC


def rec(i=0, o=0, cr=0, cw=0, model="claude-sonnet-4-5", ts=T0):
    return {"input_tokens": i, "output_tokens": o, "cache_read_tokens": cr, "cache_creation_tokens": cw,
            "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0, "model": model, "ts_s": ts}


# -- the pure decisions ------------------------------------------------------------------------------
def test_rpm_refuses_the_next_request_until_the_oldest_leaves_the_window():
    lim = TokenLimits(rpm=3)
    assert check(lim, Use(admissions=[T0 - 50, T0 - 10]), T0) is None
    r = check(lim, Use(admissions=[T0 - 70, T0 - 50, T0 - 20, T0 - 10]), T0)  # the one 70 s ago is out
    assert r.limit == "rpm" and r.retry_after_s == 10 and r.reason == "over its 3 requests per minute"


def test_tpm_counts_the_window_and_frees_when_enough_tokens_leave_it():
    lim = TokenLimits(tpm=1000)
    assert check(lim, Use(charges=[(T0 - 30, 999)]), T0) is None
    r = check(lim, Use(charges=[(T0 - 90, 5000), (T0 - 40, 600), (T0 - 5, 500)]), T0)
    assert r.limit == "tpm" and r.retry_after_s == 20  # when the 600 leaves, 500 < 1000
    assert check(lim, Use(charges=[(T0 - 40, 600), (T0 - 5, 500)], window_tokens=1100), T0).retry_after_s == 20


def test_budgets_reset_at_the_next_utc_day_and_month():
    r = check(TokenLimits(daily_tokens=100), Use(day_tokens=100), T0)
    assert r.limit == "daily_tokens" and r.retry_after_s == 12 * 3600 and "daily budget of 100 tokens" in r.reason
    r = check(TokenLimits(monthly_usd=5), Use(month_usd=5.01), T0)
    assert r.limit == "monthly_usd" and r.retry_after_s == calendar.timegm((2026, 4, 1, 0, 0, 0)) - T0
    assert "$5.00" in r.reason
    assert cl.next_month_s(calendar.timegm((2026, 12, 31, 23, 0, 0))) == calendar.timegm((2027, 1, 1, 0, 0, 0))


def test_concurrency_retries_in_a_second_and_the_limit_freeing_last_is_named():
    assert check(TokenLimits(max_concurrent=2), Use(inflight=2), T0).retry_after_s == 1
    r = check(TokenLimits(max_concurrent=1, daily_tokens=10), Use(inflight=1, day_tokens=10), T0)
    assert r.limit == "daily_tokens"
    assert check(TokenLimits(), Use(inflight=10 ** 6, day_tokens=10 ** 12), T0) is None


# -- the meter: one atomic check-and-take ----------------------------------------------------------------
def _race(meter, c, n=50):
    barrier, admitted, refused = threading.Barrier(n), [], []

    def go():
        barrier.wait()
        try:
            admitted.append(meter.admit(c))
        except ClientLimited as err:
            refused.append(err)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted, refused


@pytest.mark.parametrize("limit", ["rpm", "max_concurrent"])
def test_fifty_racing_threads_never_get_more_admitted_than_the_limit(limit):
    for _ in range(20):
        meter = ClientMeter()
        admitted, refused = _race(meter, client("ci-runner", **{limit: 7}))
        assert len(admitted) == 7 and len(refused) == 43
    err = refused[0]
    assert err.status == 429 and err.error_type == "rate_limit_error" and err.headers["retry-after"]
    assert err.message.startswith("client token ci-runner is ")


def test_a_ticket_frees_its_slot_once_however_often_it_is_ended():
    meter, c = ClientMeter(clock=lambda: T0), client("t", max_concurrent=2)
    a, b = meter.admit(c), meter.admit(c)
    with pytest.raises(ClientLimited):
        meter.admit(c)
    a.finish(rec(i=1))
    a.release()
    a.finish(rec(i=1))
    assert meter.usage()["id-t"].inflight == 1 and meter.usage()["id-t"].day_tokens == 1  # charged once
    meter.admit(c)
    with pytest.raises(ClientLimited):
        meter.admit(c)
    b.release()
    assert meter.usage()["id-t"].inflight == 1


def test_charges_count_writes_not_reads_and_price_unpriced_models_at_zero():
    now = [T0]
    meter = ClientMeter(prices=lambda: PriceBook(), clock=lambda: now[0])
    c = client("t", tpm=1000)
    meter.charge("id-t", rec(i=100, o=200, cr=5000, cw=300))  # sonnet 4.5: 3 in, 15 out, 3.75 write, 0.3 read
    meter.charge("id-t", rec(i=1000, o=1000, model="my-local-model"))
    u = meter.usage()["id-t"]
    assert (u.day_tokens, u.day_cache_read_tokens, u.day_requests, u.minute_tokens) == (2600, 5000, 2, 2600)
    assert u.day_cost_usd == pytest.approx((100 * 3 + 200 * 15 + 300 * 3.75 + 5000 * 0.3) / 1e6)
    err = pytest.raises(ClientLimited, meter.admit, c).value
    assert err.limit == "tpm" and err.retry_after_s == 60 and "1,000 tokens per minute" in err.message
    now[0] += 61
    meter.admit(c)


def test_the_daily_budget_starts_again_at_midnight_utc_and_the_monthly_one_on_the_first():
    now = [calendar.timegm((2026, 3, 31, 23, 59, 0))]
    meter = ClientMeter(clock=lambda: now[0], prices=lambda: PriceBook())
    daily, monthly = client("d", daily_tokens=50), client("m", monthly_usd=0.001)
    meter.charge("id-d", rec(i=50))
    meter.charge("id-m", rec(o=100))  # $0.0015
    err = pytest.raises(ClientLimited, meter.admit, daily).value
    assert err.retry_after_s == 60 and err.headers["x-should-retry"] == "true"
    err = pytest.raises(ClientLimited, meter.admit, monthly).value
    assert "monthly budget of $0.00" in err.message and err.retry_after_s == 60
    now[0] += 61
    meter.admit(daily).release()
    meter.admit(monthly).release()
    assert meter.usage()["id-m"].month_cost_usd == 0


# -- durable budgets ----------------------------------------------------------------------------------
def test_charges_are_written_in_batches_and_read_back_by_day_and_month(tmp_path):
    path = str(tmp_path / "tokens.db")
    other = open_db(path)  # the token store's connection, its own table, in the same file
    other.execute("CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, label TEXT)")
    writer = UsageWriter(path, interval_s=0.01)
    now = [T0 - 86400]
    meter = ClientMeter(clock=lambda: now[0], sink=writer.add, prices=lambda: PriceBook())
    writer.start()
    try:
        meter.charge("id-a", rec(i=10, o=10, cr=7))  # yesterday
        now[0] = T0
        for _ in range(3):
            meter.charge("id-a", rec(i=100, o=100))
        meter.charge("id-b", rec(i=1))
        assert wait_until(lambda: read_usage(path, T0).get("id-b") is not None)
    finally:
        writer.stop()
        other.close()
    u = read_usage(path, T0)["id-a"]
    assert (u.day_tokens, u.day_requests, u.month_tokens, u.month_requests, u.month_cache_read_tokens) == (600, 3, 620, 4, 7)
    assert u.month_cost_usd == pytest.approx((310 * 3 + 310 * 15 + 7 * 0.3) / 1e6)
    assert read_usage(path, T0 + 40 * 86400) == {}  # another month
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    fresh = ClientMeter(clock=lambda: T0)
    conn = open_db(path)
    fresh.load(load_totals(conn, T0))
    conn.close()
    with pytest.raises(ClientLimited):
        fresh.admit(client("a", "id-a", daily_tokens=600))
    assert read_usage(str(tmp_path / "none.db"), T0) == {}
    json.dumps(u.as_dict())


# -- a cut stream is charged for what it streamed ----------------------------------------------------
def test_a_stream_cut_before_its_final_usage_estimates_the_output_it_streamed():
    start = sse.json_event("message_start", {"type": "message_start", "message": {
        "model": "claude-x", "usage": {"input_tokens": 40, "output_tokens": 1}}})
    deltas = [sse.json_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": k, f: "x" * 100}})
              for k, f in (("text_delta", "text"), ("thinking_delta", "thinking"), ("input_json_delta", "partial_json"))]
    tap = UsageTap("text/event-stream")
    for piece in [start, *deltas]:
        tap.feed(piece)
    assert tap.usage["input_tokens"] == 40 and tap.usage["output_tokens"] == 75  # 300 characters / 4
    tap.feed(sse.json_event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 90}}))
    assert tap.usage["output_tokens"] == 90  # the real count once it came
    tap = OpenAIUsageTap("text/event-stream")
    tap.feed(b'data: {"choices":[{"delta":{"content":"' + b"y" * 41 + b'"}}]}\n\n')
    assert tap.usage["output_tokens"] == 11
