"""OpenAI-compatible providers' rate-limit headers and 429s (pure; no sockets)."""

import json

import pytest

from shunt_lib.openai_ratelimit import (BILLING_RECHECK_S, classify_openai, openai_error, parse_duration_s,
                                        parse_openai_rate_limits)
from shunt_lib.outcome import THROTTLE_DEFAULT_S, Action
from shunt_lib.ratelimit import Window

NOW = 1_790_000_000.0


@pytest.mark.parametrize("text, seconds", [
    ("1m30s", 90.0), ("6ms", 0.006), ("20s", 20.0), ("2h3m0.5s", 7380.5), ("0s", 0.0), ("1s", 1.0),
    ("6m0s", 360.0), ("59.56s", 59.56), ("7.66s", 7.66), (".5s", 0.5), ("1.s", 1.0), ("2m59.56s", 179.56),
    ("1h", 3600.0), ("250us", 0.00025), ("3µs", 3e-6), ("10ns", 1e-8), ("20", 20.0), ("0.25", 0.25), (" 20s ", 20.0),
])
def test_durations(text, seconds):
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "-1", "-1s", "1d", "1m30", "s", "m5", "abc", "1 m", "nan", "inf",
                                  "99999999h", "1e400", "1,5s", 20])
def test_odd_durations_are_absent(text):
    assert parse_duration_s(text) is None


def test_the_openai_header_set_becomes_requests_and_tokens_windows():
    # The example in https://platform.openai.com/docs/guides/rate-limits ("Rate limits in headers").
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-limit-tokens": "150000",
               "x-ratelimit-remaining-requests": "59", "x-ratelimit-remaining-tokens": "149984",
               "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}
    rl = parse_openai_rate_limits(headers, NOW)
    assert rl.windows["requests"] == Window(pytest.approx(1 / 60), NOW + 1, "allowed")
    assert rl.windows["tokens"] == Window(pytest.approx(16 / 150000), NOW + 360, "allowed")
    assert not rl.rejected and rl.exhausted_until_s is None


def test_groq_style_headers_and_an_empty_window():
    # https://console.groq.com/docs/rate-limits: requests per day, tokens per minute.
    headers = {"x-ratelimit-limit-requests": "14400", "x-ratelimit-limit-tokens": "18000",
               "x-ratelimit-remaining-requests": "14370", "x-ratelimit-remaining-tokens": "0",
               "x-ratelimit-reset-requests": "2m59.56s", "x-ratelimit-reset-tokens": "7.66s"}
    rl = parse_openai_rate_limits(headers, NOW)
    assert rl.windows["tokens"] == Window(1.0, pytest.approx(NOW + 7.66), "rejected")
    assert rl.windows["requests"].reset_at_s == pytest.approx(NOW + 179.56)


def test_unusable_headers_give_nothing():
    assert parse_openai_rate_limits({}, NOW) is None
    # Azure's Responses API has been seen sending -1 and 0.
    assert parse_openai_rate_limits({"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1",
                                     "x-ratelimit-reset-tokens": "0"}, NOW) is None
    assert parse_openai_rate_limits({"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "0"}, NOW) is None
    rl = parse_openai_rate_limits({"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "4",
                                   "x-ratelimit-reset-requests": "soon"}, NOW)
    assert rl.windows == {"requests": Window(pytest.approx(0.6), None, "allowed")}


def body(type_, code, message="m"):
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


QUOTA = body("insufficient_quota", "insufficient_quota",
             "You exceeded your current quota, please check your plan and billing details.")


def test_insufficient_quota_is_exhaustion_with_advice_naming_the_provider():
    o = classify_openai(429, {"retry-after": "1"}, QUOTA, NOW, account="or", provider="OpenRouter")
    assert (o.action, o.until_s, o.reason) == (Action.EXHAUSTED, NOW + BILLING_RECHECK_S, "insufficient quota (billing)")
    assert "OpenRouter" in o.advice and "'or'" in o.advice and "credit" in o.advice


@pytest.mark.parametrize("raw", [
    body("insufficient_quota", "project_spend_limit_exceeded"),
    body("insufficient_quota", None),
    body("requests", "credit_balance_exhausted"),
    json.dumps([{"error": {"message": "quota", "type": "insufficient_quota", "code": None}}]).encode(),  # a list body
])
def test_the_billing_codes_are_exhaustion(raw):
    assert classify_openai(429, {}, raw, NOW).action is Action.EXHAUSTED


def test_rate_limit_exceeded_cools_until_the_reset_of_the_exhausted_window():
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "1m30s", "x-ratelimit-limit-tokens": "1000",
               "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "2h"}
    o = classify_openai(429, headers, body("requests", "rate_limit_exceeded"), NOW)
    assert (o.action, o.until_s, o.reason) == (Action.THROTTLE, NOW + 90, "rate limit exceeded (429)")
    assert o.advice == ""


def test_retry_after_wins_over_the_headers_and_a_bare_429_gets_the_default():
    headers = {"retry-after-ms": "2500", "x-ratelimit-limit-tokens": "10", "x-ratelimit-remaining-tokens": "0",
               "x-ratelimit-reset-tokens": "30s"}
    assert classify_openai(429, headers, body("tokens", "rate_limit_exceeded"), NOW).until_s == NOW + 2.5
    assert classify_openai(429, {"retry-after": "0"}, b"", NOW).until_s == NOW + 1.0  # at least a second
    o = classify_openai(429, {}, b"Too Many Requests", NOW)
    assert (o.action, o.until_s, o.reason) == (Action.THROTTLE, NOW + THROTTLE_DEFAULT_S, "throttled (429)")
    # No window exhausted: the latest reset given.
    h = {"x-ratelimit-limit-tokens": "10", "x-ratelimit-remaining-tokens": "3", "x-ratelimit-reset-tokens": "12s"}
    assert classify_openai(429, h, body("tokens", "rate_limit_exceeded"), NOW).until_s == NOW + 12


@pytest.mark.parametrize("status, action", [(200, Action.SUCCESS), (401, Action.AUTH), (403, Action.FORBIDDEN),
                                            (500, Action.SERVER_ERROR), (503, Action.SERVER_ERROR),
                                            (529, Action.OVERLOADED), (400, Action.RETURN), (404, Action.RETURN)])
def test_other_statuses_are_classified_as_on_the_anthropic_path(status, action):
    assert classify_openai(status, {}, body("invalid_request_error", None), NOW).action is action


def test_error_bodies_that_are_not_objects():
    assert openai_error(b"") == ("", "", "")
    assert openai_error(b"[]") == ("", "", "")
    assert openai_error(b'{"error": "nope"}') == ("", "", "")
    assert openai_error(b'{"error": {"type": 3, "code": "c", "message": "m"}}') == ("", "c", "m")
    assert openai_error(b"\xff") == ("", "", "")
