from shunt_lib.outcome import Action, classify
from shunt_lib.ratelimit import parse_rate_limits
from tests.fakes.upstream import error_json, unified_headers

NOW = 1_000_000.0


def c(status, headers=None, body=b""):
    headers = headers or {}
    return classify(status, headers, body, parse_rate_limits(headers, NOW), NOW)


def test_success():
    assert c(200).action is Action.SUCCESS


def test_quota_429_is_exhausted_until_the_rejected_window_resets():
    h = unified_headers(status_5h="rejected", util_5h=1.0, reset_5h=NOW + 4000)
    o = c(429, h, error_json("rate_limit_error", "This request would exceed your account's rate limit."))
    assert o.action is Action.EXHAUSTED and o.until_s == NOW + 4000
    h = unified_headers(status_7d="rejected", util_7d=1.0, reset_7d=NOW + 90000)
    assert c(429, h).until_s == NOW + 90000


def test_throttle_429_uses_retry_after_clamped():
    assert c(429, {"retry-after": "10"}).until_s == NOW + 10
    assert c(429, {"retry-after": "7835"}).until_s == NOW + 120
    assert c(429, {}).until_s == NOW + 30
    o = c(429, unified_headers(), error_json("rate_limit_error", "slow down"))
    assert o.action is Action.THROTTLE  # unified headers present but nothing rejected


def test_extra_usage_429_is_returned():
    o = c(429, unified_headers(), error_json("rate_limit_error", "Extra usage is required for long context requests."))
    assert o.action is Action.RETURN


def test_overloaded_auth_forbidden_server_errors_and_others():
    assert c(529, {}, error_json("overloaded_error", "Overloaded")).action is Action.OVERLOADED
    assert c(503, {}, error_json("overloaded_error", "Overloaded")).action is Action.OVERLOADED
    assert c(401).action is Action.AUTH
    o = c(403)
    assert o.action is Action.FORBIDDEN and o.until_s == NOW + 1800
    for s in (500, 502, 503, 504):
        assert c(s).action is Action.SERVER_ERROR
    for s in (400, 404, 413, 422):
        assert c(s, {}, error_json("invalid_request_error", "bad")).action is Action.RETURN
