"""The pool's state in-process: expiry, reloads, routing's fast path, persistence, bad files, the writer."""

import json
import logging
import os

import pytest

from shunt_lib.config import AccountConfig
from shunt_lib.outcome import Action, Outcome
from shunt_lib.ratelimit import RateLimitInfo, Window
from shunt_lib.sessions import SessionTable, id_key
from shunt_lib.state import RECENT_MAX, Pool
from shunt_lib.state_doc import saved_state
from shunt_lib.state_file import StateWriter, edit_saved_state, load_state
from tests.support import FakeClock

NOW = 1_000_000.0
K1 = id_key("1")


def pool(*names, strategy="fill-first", ttl=600) -> Pool:
    return Pool([AccountConfig(n) for n in names], strategy=strategy, session_ttl_s=ttl)


def record(account, **kw):
    r = {"ts_s": int(NOW), "account": account, "method": "POST", "path": "/v1/messages", "model": "m", "status": 200,
         "input_tokens": 1, "output_tokens": 2, "cache_read_tokens": 3, "cache_creation_tokens": 4, "cache_write_5m_tokens": 1,
         "cache_write_1h_tokens": 3, "duration_ms": 5, "attempts": 1, "held_ms": 0, "broke": False, "request_id": "r1", "upstream_request_id": None,
         "client": "local", "token_id": None}
    r.update(kw)
    return r


def test_clear_expired_frees_accounts_and_says_when_the_next_one_expires(caplog):
    caplog.set_level(logging.INFO, logger="shunt.events")
    p = pool("a", "b", "c")
    p.cool("a", NOW + 10, "throttled (429)")
    p.mark_exhausted("b", NOW + 100)
    p.set_flag("c", reauth_required=True)
    assert p.clear_expired(NOW) == ([], NOW + 10)
    assert p.clear_expired(NOW + 10) == (["a"], NOW + 100)
    assert p.clear_expired(NOW + 500) == (["b"], None)
    assert [v.status(NOW + 500) for v in p.views(NOW + 500)] == ["available", "available", "reauth_required"]
    assert "account a is available again" in caplog.text and "account b is available again" in caplog.text
    assert "account c is available again" not in caplog.text  # c needs a human


def test_a_cooldown_is_never_shortened_and_outcomes_map_to_effects():
    p = pool("a", "b", "c")
    p.cool("a", NOW + 100, "forbidden (403)")
    p.cool("a", NOW + 10, "throttled (429)")
    p.record_outcome("b", Outcome(Action.THROTTLE, until_s=NOW + 30, reason="throttled (429)"))
    p.record_outcome("c", Outcome(Action.EXHAUSTED, until_s=NOW + 3600))
    p.record_outcome("c", Outcome(Action.SERVER_ERROR))  # no effect on the account
    a, b, c = p.snapshot(NOW).accounts
    assert (a.view.cooldown_until_s, a.cooldown_reason) == (NOW + 100, "forbidden (403)")
    assert (b.view.cooldown_until_s, b.cooldown_reason) == (NOW + 30, "throttled (429)")
    assert c.view.exhausted_until_s == NOW + 3600 and c.view.cooldown_until_s == 0
    p.record_outcome("gone", Outcome(Action.EXHAUSTED, until_s=NOW + 1))  # an account removed by a reload: ignored


def test_a_success_after_the_reset_ends_an_exhaustion_early():
    p = pool("a")
    p.mark_exhausted("a", NOW + 10)
    p.record_rate_limits("a", RateLimitInfo({"5h": Window(0.2, NOW + 18000, "allowed")}), NOW + 5)
    assert not p.any_usable(NOW + 5)  # not yet past its reset
    p.record_rate_limits("a", RateLimitInfo({"7d": Window(0.3, None, "allowed")}), NOW + 11)
    assert p.any_usable(NOW + 11)
    (a,) = p.views(NOW + 11)
    assert set(a.windows) == {"5h", "7d"}  # windows merge, one response at a time


def test_sync_accounts_keeps_state_drops_removed_ones_and_their_sessions_and_pin():
    p = pool("a", "b")
    p.mark_exhausted("a", NOW + 100)
    p.route(K1, frozenset(), NOW)  # bound to a? a is exhausted: fill-first picks b
    assert p.session_account(K1, NOW) == "b"
    p.set_pin("b")
    added, removed = p.sync_accounts([AccountConfig("c"), AccountConfig("a")])
    assert (added, removed) == (["c"], ["b"])
    assert p.names() == ["c", "a"] and p.pinned is None and p.session_account(K1, NOW) is None
    assert [v.index for v in p.views(NOW)] == [0, 1]
    assert p.views(NOW)[1].exhausted_until_s == NOW + 100  # a kept its state
    p.sync_accounts([AccountConfig("c"), AccountConfig("a", "api_key")])
    assert p.views(NOW)[1].exhausted_until_s == 0 and p.views(NOW)[1].kind == "api_key"  # a new kind is a new account


def test_route_fast_path_keeps_a_session_on_its_usable_account():
    p = pool("a", "b", strategy="least-utilization")
    first = p.route("s:x", frozenset(), NOW).name
    version = p.version
    choice = p.route("s:x", frozenset(), NOW + 1)
    assert (choice.name, choice.reason) == (first, "session")
    assert p.version == version  # renewing a binding is not worth a state write
    other = "b" if first == "a" else "a"
    assert p.route("s:x", frozenset({first}), NOW + 2).name == other  # tried: moves, and the session follows
    assert p.session_account("s:x", NOW + 2) == other
    p.set_pin(first)
    assert p.route("s:x", frozenset(), NOW + 3).reason == "pinned"
    assert p.route("s:y", frozenset({"a", "b"}), NOW) is None


def test_route_and_recovery_respect_account_kinds():
    p = Pool([AccountConfig("o"), AccountConfig("k", "api_key")], strategy="fill-first", session_ttl_s=60)
    keys = frozenset({"api_key"})
    assert p.route(None, frozenset(), NOW).name == "o"
    assert p.route(None, frozenset(), NOW, kinds=keys).name == "k"
    p.mark_exhausted("k", NOW + 50)
    assert p.route(None, frozenset(), NOW, kinds=keys) is None
    assert p.any_usable(NOW) and not p.any_usable(NOW, kinds=keys)
    assert p.soonest_recovery(NOW, kinds=keys) == (NOW + 50, "k")
    assert [v.name for v in p.views(NOW, kinds=keys)] == ["k"]


def test_round_robin_advances_and_requests_are_counted():
    p = pool("a", "b", strategy="round-robin")
    assert [p.route(None, frozenset(), NOW).name for _ in range(4)] == ["a", "b", "a", "b"]
    for i in range(RECENT_MAX + 5):
        p.record_request(record("a" if i % 2 else None))
    snap = p.snapshot(NOW)
    assert snap.accounts[0].requests == (RECENT_MAX + 5) // 2 and snap.accounts[0].cache_read_tokens == 3 * snap.accounts[0].requests
    assert len(snap.recent) == RECENT_MAX


def test_state_round_trips_through_json():
    p = pool("a", "b")
    p.mark_exhausted("a", NOW + 100)
    p.cool("b", NOW + 50, "throttled (429)")
    p.set_flag("b", disabled=True)
    p.record_rate_limits("b", RateLimitInfo({"5h": Window(0.5, NOW + 3600, "allowed")}), NOW)
    p.route(K1, frozenset(), NOW)
    p.set_pin("b")
    p.record_request(record("b"))
    doc = json.loads(json.dumps(p.to_json(NOW)))
    q = pool("a", "b")
    q.load_json(doc, NOW + 1)
    assert q.to_json(NOW + 1) == dict(doc, saved_at_s=NOW + 1)
    # Expired sessions, unknown accounts and a pin on a removed account are dropped.
    r = pool("a")
    r.load_json(doc, NOW + 10_000)
    assert r.pinned is None and r.session_account(K1, NOW + 10_000) is None and r.names() == ["a"]


@pytest.mark.parametrize("garbage", [
    b"", b"not json", b"[1, 2]", b'{"accounts": []}', b'{"accounts": {"a": "x"}, "sessions": [], "recent_requests": {}}',
    b'{"accounts": {"a": {"cooldown_until_s": "soon", "requests": -3, "disabled": "yes", "windows": [],'
    b' "cooldown_reason": 5}}, "sessions": {K1: {"account": "a", "expires_at_s": true}}, "pinned_account": 7}',
])
def test_garbage_state_json_starts_fresh_without_raising(tmp_path, garbage, caplog):
    path = tmp_path / "state.json"
    path.write_bytes(garbage)
    p = pool("a")
    load_state(p, str(path), NOW)
    (a,) = p.snapshot(NOW).accounts
    assert a.view.usable(NOW) and not a.view.disabled and a.requests == 0 and a.view.windows == {}
    assert p.pinned is None and p.session_account(K1, NOW) is None


def test_state_writer_writes_on_change_and_on_stop(tmp_path):
    path = str(tmp_path / "state.json")
    p = pool("a")
    w = StateWriter(p, path, interval_s=3600, clock=FakeClock(NOW))
    w.tick()
    assert json.load(open(path))["accounts"]["a"]["requests"] == 0
    mtime = os.stat(path).st_mtime_ns
    w.tick()
    assert os.stat(path).st_mtime_ns == mtime  # nothing changed: nothing written
    p.record_request(record("a"))
    w.start()
    w.stop()  # the final flush happens even though the interval never elapsed
    saved = json.load(open(path))
    assert saved["accounts"]["a"]["requests"] == 1 and saved["saved_at_s"] == NOW
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_edit_saved_state_clears_flags_or_forgets_an_account(tmp_path):
    path = str(tmp_path / "state.json")
    edit_saved_state(path, "a", forget=True)  # no file: nothing to do
    assert not os.path.exists(path)
    p = pool("a", "b")
    assert p.route(K1, frozenset(), NOW).name == "a"
    p.set_flag("a", reauth_required=True, disabled=True)
    p.set_pin("a")
    with open(path, "w") as f:
        json.dump(p.to_json(NOW), f)
    edit_saved_state(path, "a", forget=False)
    saved = json.load(open(path))
    assert saved["accounts"]["a"]["reauth_required"] is False and saved["accounts"]["a"]["disabled"] is False
    edit_saved_state(path, "a", forget=True)
    saved = json.load(open(path))
    assert "a" not in saved["accounts"] and saved["sessions"] == {} and saved["pinned_account"] is None
    with open(path, "w") as f:
        f.write("{broken")
    edit_saved_state(path, "b", forget=True)  # an unreadable file is left alone
    assert open(path).read() == "{broken"


def test_session_table_slides_prunes_and_counts():
    t = SessionTable(ttl_s=10, max_entries=3)
    t.bind("k1", "a", NOW)
    t.bind("k2", "a", NOW + 5)
    t.bind("k3", "b", NOW + 5)
    assert t.account("k1", NOW + 9) == "a" and t.account("k1", NOW + 10) is None and t.account(None, NOW) is None
    assert t.active_counts(["a", "b", "c"], NOW + 11) == {"a": 1, "b": 1, "c": 0}
    t.bind("k4", "c", NOW + 11)  # full: the expired k1 is pruned to make room
    assert len(t) == 3 and t.account("k4", NOW + 11) == "c"
    t.bind("k5", "c", NOW + 12)  # full of live bindings: the least recently used (k2) is evicted
    assert len(t) == 3 and t.account("k2", NOW + 12) is None and t.account("k3", NOW + 12) == "b"
    assert t.active_counts(["a", "b", "c"], NOW + 12) == {"a": 0, "b": 1, "c": 2}
    t.keep_accounts({"c"})
    assert len(t) == 2 and t.active_counts(["b", "c"], NOW + 12) == {"b": 0, "c": 2}


def test_fresh_usage_with_room_clears_an_exhaustion_and_usage_without_room_keeps_it(caplog):
    caplog.set_level(logging.INFO, logger="shunt.events")
    p = pool("a", "b")
    p.mark_exhausted("a", NOW + 3600)
    p.mark_exhausted("b", NOW + 3600)
    full = {"5h": Window(1.0, NOW + 3600, ""), "7d": Window(0.3, NOW + 86400, "")}
    assert not p.record_usage("a", full, NOW)  # still at 100 %: stays exhausted
    assert not p.record_usage("a", {}, NOW) and not p.record_usage("a", {"5h": Window(None, None, "")}, NOW)
    assert [v.status(NOW) for v in p.views(NOW)] == ["exhausted", "exhausted"]
    assert p.record_usage("a", {"5h": Window(0.4, NOW + 3600, ""), "7d": Window(0.3, NOW + 86400, "")}, NOW)
    assert [v.status(NOW) for v in p.views(NOW)] == ["available", "exhausted"]
    assert "account a is available again (its usage shows room)" in caplog.text
    assert p.views(NOW)[0].windows["5h"].utilization == 0.4


def test_reset_clears_exhaustion_and_cooldowns_but_not_flags_a_human_must_fix():
    p = pool("a", "b", "c")
    p.mark_exhausted("a", NOW + 3600)
    p.cool("b", NOW + 60, "throttled (429)")
    p.set_flag("c", reauth_required=True)
    assert p.reset("a") == ["a"]
    assert [v.status(NOW) for v in p.views(NOW)] == ["available", "cooling", "reauth_required"]
    assert p.reset(None) == ["b"]
    assert [v.status(NOW) for v in p.views(NOW)] == ["available", "available", "reauth_required"]
    with pytest.raises(KeyError):
        p.reset("nobody")


def test_a_recent_request_saved_before_request_ids_existed_is_restored_without_them():
    from shunt_lib.record import record_from_json

    old = {k: v for k, v in record("a").items()
           if k not in ("request_id", "upstream_request_id", "broke", "cache_write_5m_tokens", "cache_write_1h_tokens")}
    assert record_from_json(old) == dict(old, request_id=None, upstream_request_id=None, broke=False,
                                         cache_write_5m_tokens=0, cache_write_1h_tokens=0)
    assert record_from_json(dict(old, cache_write_1h_tokens=-1)) is None
    assert record_from_json(dict(old, request_id=["not", "a", "string"])) is None


def test_saved_state_keeps_known_parts_of_the_right_shape_and_drops_the_rest():
    doc = {"version": 1, "pinned_account": "gone", "sessions": {"k": 1},
           "accounts": {"a": {"requests": 3}, "b": "not an object", "gone": {}},
           "recent_requests": [record("a", ts_s=1), {"bad": 1}, record("a", ts_s=2), record("a", ts_s=3)]}
    saved = saved_state(doc, {"a", "b"}, max_recent=3)
    assert saved.accounts == [("a", {"requests": 3})] and saved.pinned is None and saved.sessions == {"k": 1}
    assert not saved.hashed_keys and [r["ts_s"] for r in saved.recent] == [2, 3]
    assert saved_state(dict(doc, version=2, pinned_account="b"), {"a", "b"}, 3)[2:4] == (True, "b")
    assert saved_state([], {"a"}, 3) is None


def test_anthropic_traffic_is_never_routed_to_an_openai_account():
    """An openai account's key must never be sent to Anthropic: the pass-through dialect leaves it out."""
    from shunt_lib.dialect import ANTHROPIC

    p = Pool([AccountConfig("o", "openai", base_url="http://127.0.0.1:1/v1"), AccountConfig("a")],
             strategy="fill-first", session_ttl_s=60)
    assert p.route("s", set(), 1000.0, kinds=ANTHROPIC.account_kinds).name == "a"
    assert p.route(None, {"a"}, 1000.0, kinds=ANTHROPIC.account_kinds) is None


def test_exhaustion_advice_is_kept_saved_and_cleared_with_the_exhaustion():
    p = pool("a", "b")
    p.record_outcome("a", Outcome(Action.EXHAUSTED, until_s=NOW + 3600, advice="add credit"))
    p.record_outcome("a", Outcome(Action.EXHAUSTED, until_s=NOW + 3600))  # a racing repeat keeps it
    p.mark_exhausted("b", NOW + 100)
    a, b = p.snapshot(NOW).accounts
    assert (a.exhausted_advice, b.exhausted_advice) == ("add credit", "")
    q = pool("a", "b")
    q.load_json(json.loads(json.dumps(p.to_json(NOW))), NOW + 1)  # survives a restart
    assert q.snapshot(NOW + 1).accounts[0].exhausted_advice == "add credit"
    p.clear_expired(NOW + 3600)
    assert p.snapshot(NOW + 3600).accounts[0].exhausted_advice == ""
    q.reset("a")
    assert q.snapshot(NOW + 1).accounts[0].exhausted_advice == ""
