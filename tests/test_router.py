import pytest

from shunt_lib.ratelimit import Window
from shunt_lib.router import AccountView, Choice, choose_account, pick_by_strategy, score, soonest_recovery, window_health

NOW = 1_000_000.0


def v(name, index=0, **kw):
    return AccountView(name=name, index=index, **kw)


def test_window_health_is_time_weighted():
    # 90% used but resets in 10 min beats 60% used resetting in 3 h (5h window).
    soon = window_health(Window(0.9, NOW + 600), 18000, NOW)
    later = window_health(Window(0.6, NOW + 3 * 3600), 18000, NOW)
    assert soon == pytest.approx(1 - 0.9 * 600 / 18000)
    assert later == pytest.approx(1 - 0.6 * 3 * 3600 / 18000)
    assert soon > later


def test_passed_reset_counts_as_unused_and_unknown_is_full_weight():
    assert window_health(Window(0.99, NOW - 1), 18000, NOW) == 1.0
    assert window_health(Window(0.5, None), 18000, NOW) == 0.5
    assert window_health(Window(None, None), 18000, NOW) == 1.0


def test_score_multiplies_windows_and_divides_by_sessions():
    a = v("a", windows={"5h": Window(0.5, NOW + 18000), "7d": Window(0.5, NOW + 604800)}, active_sessions=1)
    assert score(a, NOW) == pytest.approx(0.5 * 0.5 / 2)


def test_least_utilization_prefers_headroom_and_spreads_sessions():
    fresh = v("fresh", 1)
    used = v("used", 0, windows={"5h": Window(0.8, NOW + 10000)})
    assert pick_by_strategy([used, fresh], "least-utilization", NOW).name == "fresh"
    busy = v("busy", 0, active_sessions=3)
    idle = v("idle", 1, windows={"5h": Window(0.3, NOW + 18000)})
    assert pick_by_strategy([busy, idle], "least-utilization", NOW).name == "idle"


def test_ties_go_to_config_order():
    assert pick_by_strategy([v("b", 1), v("a", 0)], "least-utilization", NOW).name == "a"


def test_reset_first_drains_soonest_reset():
    a = v("a", 0, windows={"5h": Window(0.3, NOW + 4 * 3600)})
    b = v("b", 1, windows={"5h": Window(0.3, NOW + 900)})
    c = v("c", 2)
    assert pick_by_strategy([a, b, c], "reset-first", NOW).name == "b"
    assert pick_by_strategy([a, c], "reset-first", NOW).name == "a"


def test_fill_first_and_round_robin():
    views = [v("c", 2), v("a", 0), v("b", 1)]
    assert pick_by_strategy(views, "fill-first", NOW).name == "a"
    assert [pick_by_strategy(views, "round-robin", NOW, i).name for i in range(4)] == ["a", "b", "c", "a"]


def test_unknown_strategy_raises():
    with pytest.raises(ValueError):
        pick_by_strategy([v("a")], "random", NOW)


def test_every_strategy_skips_unusable_accounts():
    views = [v("cool", 0, cooldown_until_s=NOW + 5), v("exh", 1, exhausted_until_s=NOW + 5),
             v("re", 2, reauth_required=True), v("dis", 3, disabled=True), v("ok", 4)]
    for strategy in ("least-utilization", "reset-first", "fill-first", "round-robin"):
        assert choose_account(views, strategy=strategy, now_s=NOW).name == "ok"


def test_pin_beats_session_and_strategy_but_fails_over_when_exhausted():
    views = [v("a", 0), v("b", 1)]
    assert choose_account(views, strategy="fill-first", now_s=NOW, pinned="b", session_account="a").reason == "pinned"
    views = [v("a", 0), v("b", 1, exhausted_until_s=NOW + 100)]
    c = choose_account(views, strategy="fill-first", now_s=NOW, pinned="b")
    assert c.name == "a" and c.reason == "fill-first"


def test_session_stays_while_usable_and_moves_when_not():
    views = [v("a", 0), v("b", 1, windows={"5h": Window(0.9, NOW + 9000)})]
    c = choose_account(views, strategy="least-utilization", now_s=NOW, session_account="b")
    assert (c.name, c.reason) == ("b", "session")
    views[1] = v("b", 1, cooldown_until_s=NOW + 30)
    assert choose_account(views, strategy="least-utilization", now_s=NOW, session_account="b").name == "a"


def test_tried_accounts_are_never_chosen_again():
    views = [v("a", 0), v("b", 1)]
    assert choose_account(views, strategy="fill-first", now_s=NOW, tried={"a"}).name == "b"
    assert choose_account(views, strategy="fill-first", now_s=NOW, tried={"a", "b"}) is None


def test_soonest_recovery_ignores_accounts_needing_a_human():
    views = [v("a", 0, exhausted_until_s=NOW + 300), v("b", 1, cooldown_until_s=NOW + 30),
             v("c", 2, reauth_required=True), v("d", 3, disabled=True)]
    assert soonest_recovery(views, NOW) == (NOW + 30, "b")
    assert soonest_recovery(views[2:], NOW) is None


def test_status_order():
    assert v("a", disabled=True, reauth_required=True).status(NOW) == "disabled"
    assert v("a", reauth_required=True, exhausted_until_s=NOW + 1).status(NOW) == "reauth_required"
    assert v("a", exhausted_until_s=NOW + 1, cooldown_until_s=NOW + 1).status(NOW) == "exhausted"
    assert v("a", cooldown_until_s=NOW + 1).status(NOW) == "cooling"
    assert v("a", cooldown_until_s=NOW - 1).status(NOW) == "available"


def test_quota_free_requests_are_counting_tokens_and_listing_models():
    from shunt_lib.router import is_quota_free

    assert is_quota_free("POST", "/v1/messages/count_tokens?beta=true")
    assert is_quota_free("GET", "/v1/models?limit=1000") and is_quota_free("GET", "/v1/models/claude-x")
    assert not is_quota_free("POST", "/v1/messages") and not is_quota_free("POST", "/v1/models")
    assert not is_quota_free("GET", "/v1/modelsx") and not is_quota_free("POST", "/v1/messages/batches")


def test_a_quota_free_request_may_use_any_account_whose_credential_works():
    from shunt_lib.router import choose_credential_holder

    now = 1000.0
    views = [AccountView("a", 0, reauth_required=True), AccountView("b", 1, exhausted_until_s=now + 3600),
             AccountView("c", 2, cooldown_until_s=now + 60), AccountView("d", 3, disabled=True)]
    assert choose_account(views, strategy="fill-first", now_s=now) is None
    assert choose_credential_holder(views) == Choice("b", "quota-free")
    assert choose_credential_holder(views, tried={"b"}).name == "c"
    assert choose_credential_holder(views, session_account="c").name == "c"
    assert choose_credential_holder(views, tried={"b", "c"}) is None  # a and d need a human
