from shunt_lib.ratelimit import parse_rate_limits, parse_retry_after_s, parse_rfc3339_s

# A captured subscription 429 (docs/protocol.md §4.2).
FIXTURE_429 = {
    "anthropic-ratelimit-unified-status": "rejected",
    "anthropic-ratelimit-unified-representative-claim": "five_hour",
    "anthropic-ratelimit-unified-reset": "1785518400",
    "anthropic-ratelimit-unified-5h-status": "rejected",
    "anthropic-ratelimit-unified-5h-reset": "1785518400",
    "anthropic-ratelimit-unified-5h-utilization": "1.01",
    "anthropic-ratelimit-unified-5h-surpassed-threshold": "1.0",
    "anthropic-ratelimit-unified-7d-status": "allowed",
    "anthropic-ratelimit-unified-7d-reset": "1786006800",
    "anthropic-ratelimit-unified-7d-utilization": "0.69",
    "anthropic-ratelimit-unified-fallback-percentage": "0.5",
    "anthropic-ratelimit-unified-overage-status": "rejected",
    "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
    "retry-after": "7835",
}


def test_unified_429_fixture_is_exhausted_until_5h_reset():
    rl = parse_rate_limits(FIXTURE_429, now_s=1785510000)
    assert rl.rejected
    assert rl.exhausted_until_s == 1785518400
    assert rl.windows["5h"].utilization == 1.01
    assert rl.windows["5h"].status == "rejected"
    assert rl.windows["7d"].utilization == 0.69
    assert rl.windows["7d"].reset_at_s == 1786006800
    assert "overage" not in rl.windows and "fallback" not in rl.windows


def test_allowed_200_headers_are_not_rejected():
    h = {k: v for k, v in FIXTURE_429.items()}
    h["anthropic-ratelimit-unified-status"] = "allowed"
    h["anthropic-ratelimit-unified-5h-status"] = "allowed_warning"
    rl = parse_rate_limits(h, now_s=0)
    assert not rl.rejected and rl.exhausted_until_s is None


def test_model_scoped_weekly_window_rejection_counts():
    h = {"anthropic-ratelimit-unified-7d_sonnet-utilization": "1.0",
         "anthropic-ratelimit-unified-7d_sonnet-status": "rejected",
         "anthropic-ratelimit-unified-7d_sonnet-reset": "2000"}
    rl = parse_rate_limits(h, now_s=0)
    assert rl.rejected and rl.exhausted_until_s == 2000 and "7d_sonnet" in rl.windows


def test_overall_rejected_without_window_uses_unified_reset():
    rl = parse_rate_limits({"anthropic-ratelimit-unified-status": "rejected", "anthropic-ratelimit-unified-reset": "1234"}, 0)
    assert rl.rejected and rl.exhausted_until_s == 1234


def test_api_key_headers_give_per_minute_windows():
    h = {"anthropic-ratelimit-tokens-limit": "100000", "anthropic-ratelimit-tokens-remaining": "75000",
         "anthropic-ratelimit-tokens-reset": "2026-11-21T10:00:30Z",
         "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
         "anthropic-ratelimit-requests-reset": "2026-11-21T10:00:05Z"}
    now = parse_rfc3339_s("2026-11-21T10:00:00Z", 1.8e9)
    rl = parse_rate_limits(h, now_s=now)
    assert rl.windows["tokens"].utilization == 0.25
    assert rl.windows["tokens"].reset_at_s == now + 30
    assert rl.windows["requests"].utilization == 1.0 and rl.windows["requests"].status == "rejected"


def test_no_headers_is_none():
    assert parse_rate_limits({"content-type": "application/json"}, 0) is None


def test_retry_after_forms():
    assert parse_retry_after_s({"retry-after": "30"}, 0) == 30
    assert parse_retry_after_s({"retry-after-ms": "1500", "retry-after": "30"}, 0) == 1.5
    assert parse_retry_after_s({"retry-after": "Thu, 01 Jan 1970 00:01:40 GMT"}, now_s=40) == 60
    assert parse_retry_after_s({"retry-after": "soon"}, 0) is None
    assert parse_retry_after_s({}, 0) is None


BAD_NUMBERS = ["inf", "-inf", "nan", "1e308", "99999999999", "-5", "0x10", ""]


def test_numbers_out_of_bounds_are_dropped_not_trusted():
    now = 1785510000
    for bad in BAD_NUMBERS:
        h = {"anthropic-ratelimit-unified-status": "rejected", "anthropic-ratelimit-unified-reset": bad,
             "anthropic-ratelimit-unified-5h-status": "rejected", "anthropic-ratelimit-unified-5h-reset": bad,
             "anthropic-ratelimit-unified-5h-utilization": bad}
        rl = parse_rate_limits(h, now_s=now)
        assert rl.rejected and rl.exhausted_until_s is None, bad  # no believable reset: the caller's fallback applies
        assert rl.windows["5h"] == (None, None, "rejected"), bad
        assert parse_retry_after_s({"retry-after": bad, "retry-after-ms": bad}, now) in (None, 0.0), bad
    huge = {"anthropic-ratelimit-tokens-limit": "1e308", "anthropic-ratelimit-tokens-remaining": "inf",
            "anthropic-ratelimit-tokens-reset": "9999-12-31T23:59:59Z"}
    assert parse_rate_limits(huge, now) is None
    assert parse_retry_after_s({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, now) is None
    assert parse_rfc3339_s("9999-12-31T23:59:59Z", now) is None


def test_a_429_with_an_infinite_reset_still_exhausts_for_a_finite_time():
    from shunt_lib.outcome import Action, classify
    now = 1785510000
    h = {"anthropic-ratelimit-unified-status": "rejected", "anthropic-ratelimit-unified-reset": "inf",
         "retry-after": "1e308"}
    out = classify(429, h, b"{}", parse_rate_limits(h, now), now)
    assert out.action is Action.EXHAUSTED and now < out.until_s <= now + 5 * 3600


def test_the_pool_429_describes_the_pool_and_stops_pointless_sdk_retries():
    from shunt_lib.pool_limit import SHORT_RETRY_S, pool_limit_headers
    from shunt_lib.ratelimit import Window
    from shunt_lib.router import AccountView

    now = 1_000_000.0
    a = AccountView("a", 0, exhausted_until_s=now + 7200, windows={
        "5h": Window(1.02, now + 7200, "rejected"), "7d": Window(0.41, now + 86400, "allowed")})
    b = AccountView("b", 1, exhausted_until_s=now + 3 * 86400, windows={
        "5h": Window(0.2, now + 9000, "allowed"), "7d": Window(1.0, now + 3 * 86400, "rejected"),
        "tokens": Window(0.5, now + 30, "allowed")})
    gone = AccountView("c", 2, reauth_required=True, windows={"5h": Window(0.0, now + 60, "allowed")})
    h = pool_limit_headers([a, b, gone], now, now + 7200)
    assert h["retry-after"] == "7200" and h["x-should-retry"] == "false"  # hours: a quick retry cannot help
    p = "anthropic-ratelimit-unified-"
    assert (h[p + "status"], h[p + "reset"], h[p + "representative-claim"]) == ("rejected", str(int(now) + 7200), "five_hour")
    assert (h[p + "5h-utilization"], h[p + "5h-reset"], h[p + "5h-status"]) == ("0.2", str(int(now) + 7200), "allowed")
    assert (h[p + "7d-utilization"], h[p + "7d-reset"], h[p + "7d-status"]) == ("0.41", str(int(now) + 86400), "allowed")
    assert not any("tokens" in k for k in h)  # API-key windows are not unified windows
    soon = pool_limit_headers([a], now, now + SHORT_RETRY_S)
    assert soon["retry-after"] == str(SHORT_RETRY_S) and soon["x-should-retry"] == "true"
