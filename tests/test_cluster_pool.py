"""Account state, pin, overrides and sessions shared between instances: key use on fakeredis, the
session scripts on a real redis-server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from shunt_lib.cluster_accounts import SharedAccounts, SharedSettings
from shunt_lib.cluster_config import ClusterConfig
from shunt_lib.cluster_sessions import SharedSessions
from shunt_lib.config import AccountConfig
from shunt_lib.overrides import Overrides
from shunt_lib.ratelimit import RateLimitInfo, Window
from shunt_lib.state import Pool
from tests.support import wait_until

fakeredis = pytest.importorskip("fakeredis")

ACCOUNTS = (AccountConfig("x"), AccountConfig("y"))


class Member:
    """One instance: a pool, its overrides and the parts sharing them over a link."""

    def __init__(self, ident: str, client, tmp_path, *, sessions: bool = False, start: bool = True):
        from shunt_lib.cluster_link import Link
        self.pool = Pool(ACCOUNTS, strategy="fill-first", session_ttl_s=600)
        self.overrides = Overrides(str(tmp_path / f"overrides-{ident}.json"))
        self.link = Link(ClusterConfig(redis_url="redis://127.0.0.1:6379/0", cluster_name="t", timeout_s=0.5),
                         ident, client=client, retry_s=0.05)
        self.parts = [SharedAccounts(self.link, self.pool, windows_every_s=0.2),
                      SharedSettings(self.link, self.pool, self.overrides)]
        if sessions:
            self.parts.append(SharedSessions(self.link, self.pool))
        if start:
            self.link.start()

    def status(self, name: str) -> dict:
        return self.pool.shared_fields(name)

    def stop(self) -> None:
        for p in reversed(self.parts):
            p.stop()
        self.link.stop()


@pytest.fixture
def members(tmp_path):
    server = fakeredis.FakeServer()
    made = []

    def make(ident, **kw):
        m = Member(ident, fakeredis.FakeRedis(server=server), tmp_path, **kw)
        made.append(m)
        return m
    make.client = fakeredis.FakeRedis(server=server)
    yield make
    for m in made:
        m.stop()


def _entry(client, key: str, field: str) -> dict:
    raw = client.hget(key, field)
    return json.loads(raw) if raw is not None else {}


def test_an_exhaustion_and_a_reset_reach_the_other_instance_and_each_keeps_its_own_field(members):
    a, b = members("a"), members("b")
    until = time.time() + 3600
    a.pool.mark_exhausted("x", until, "wait")
    assert wait_until(lambda: b.status("x")["exhausted_until_s"] == until, 5)
    assert b.status("x")["exhausted_advice"] == "wait"
    doc = _entry(members.client, "t:{x}:state", "a")["doc"]
    assert doc["exhausted_until_s"] == until and doc["exhausted_set_s"] > 0
    assert b.pool.route(None, frozenset(), time.time()).name == "y"  # b routes around it from memory
    b.pool.reset("x")  # shunt reset on b clears it on a too
    assert wait_until(lambda: a.status("x")["exhausted_until_s"] == 0.0, 5)
    assert _entry(members.client, "t:{x}:state", "b")["doc"]["exhausted_cleared_s"] > 0
    b.pool.set_flag("y", disabled=True)
    assert wait_until(lambda: a.status("y")["disabled"], 5)


def test_window_updates_are_coalesced_and_still_arrive(members):
    a, b = members("a"), members("b")
    notices = []
    b.link.on("account", notices.append)
    now = time.time()
    for i in range(50):
        a.pool.record_rate_limits("x", RateLimitInfo({"5h": Window(i / 100, now + 3600, "allowed")}), now)
    assert wait_until(lambda: b.status("x")["windows"].get("5h") == Window(0.49, now + 3600, "allowed"), 5)
    assert 1 <= len(notices) <= 3  # 50 updates, at most one write per 0.2 s


def test_a_joining_instance_merges_what_redis_holds_and_rewrites_its_own_field(members, tmp_path):
    a = members("a")
    until = time.time() + 3600
    a.pool.cool("y", until, "403")
    assert wait_until(lambda: _entry(members.client, "t:{y}:state", "a").get("doc", {}).get("cooldown_until_s")
                      == until, 5)
    b = members("b")  # joins after the notice was sent: reads it on joining
    assert b.status("y")["cooldown_until_s"] == until and b.status("y")["cooldown_reason"] == "403"
    assert _entry(members.client, "t:{y}:state", "b")["doc"]["cooldown_until_s"] == until


def test_a_pin_and_an_override_set_on_one_instance_hold_on_the_others(members, tmp_path):
    a, b = members("a"), members("b")
    a.pool.set_pin("y")
    assert wait_until(lambda: b.pool.pinned == "y", 5)
    assert json.loads(members.client.get("t:pin"))["value"] == "y"
    b.overrides.set({"model": "claude-other"})
    assert wait_until(lambda: a.overrides.doc()["global"] == {"model": "claude-other"}, 5)
    assert json.loads((tmp_path / "overrides-a.json").read_text())["global"] == {"model": "claude-other"}
    a.pool.set_pin(None)
    assert wait_until(lambda: b.pool.pinned is None, 5)
    c = members("c")  # a newcomer takes both from Redis
    assert c.pool.pinned is None and c.overrides.doc()["global"] == {"model": "claude-other"}


def test_no_cluster_no_cost_the_pool_tells_nobody():
    pool = Pool(ACCOUNTS, strategy="fill-first", session_ttl_s=60)
    assert pool.changes is None and pool.shared_sessions is None
    pool.mark_exhausted("x", time.time() + 60)  # nothing attached: nothing called
    assert pool.route("s:" + "0" * 32, frozenset(), time.time()).name == "y"


# -- sessions: the scripts need a real Redis ----------------------------------------------------------
SESSION = "s:" + "ab" * 16


def test_a_new_session_is_claimed_once_and_adopted_elsewhere(redis_server, tmp_path):
    a = Member("a", redis_server.client(), tmp_path, sessions=True)
    b = Member("b", redis_server.client(), tmp_path, sessions=True)
    b.pool.set_strategy("round-robin")
    try:
        r = redis_server.client()
        now = time.time()
        assert a.pool.route(SESSION, frozenset(), now).name == "x"
        assert r.get(f"t:session:{SESSION}") == b"x" and 0 < r.pttl(f"t:session:{SESSION}") <= 600_000
        b.pool.route(None, frozenset(), now)  # b's round-robin would give y next
        choice = b.pool.route(SESSION, frozenset(), now)
        assert (choice.name, choice.reason) == ("x", "session")
        assert b.pool.session_account(SESSION, now) == "x"
        # x cannot take it on b: b moves it to y with a compare-and-set, and a follows
        b.pool.mark_exhausted("x", now + 3600)
        assert b.pool.route(SESSION, frozenset(), now).name == "y"
        assert r.get(f"t:session:{SESSION}") == b"y"
    finally:
        a.stop(), b.stop()


def test_the_move_script_never_moves_a_session_another_instance_moved_first(redis_server, tmp_path):
    a = Member("a", redis_server.client(), tmp_path, sessions=True)
    try:
        r = redis_server.client()
        r.set(f"t:session:{SESSION}", "y", px=10_000)
        sessions = a.parts[-1]
        assert sessions._claim(SESSION, "x", "z") == "y"  # it no longer names x: left as it is
        assert r.get(f"t:session:{SESSION}") == b"y"
        assert sessions._claim(SESSION, "y", "x") == "x" and r.get(f"t:session:{SESSION}") == b"x"
        r.delete(f"t:session:{SESSION}")
        assert sessions._claim(SESSION, "y", "x") == "x"  # gone (expired): taken
    finally:
        a.stop()


def test_live_sessions_are_put_back_on_rejoining_without_overwriting(redis_server, tmp_path):
    a = Member("a", redis_server.client(), tmp_path, sessions=True, start=False)
    other = "s:" + "cd" * 16
    now = time.time()
    a.pool.route(SESSION, frozenset(), now)  # bound while not connected: decided locally
    a.pool.route(other, frozenset(), now)
    r = redis_server.client()
    r.set(f"t:session:{other}", "y", px=10_000)  # another instance bound it meanwhile
    a.link.start()
    try:
        assert r.get(f"t:session:{SESSION}") == b"x" and r.pttl(f"t:session:{SESSION}") > 500_000
        assert r.get(f"t:session:{other}") == b"y"
    finally:
        a.stop()


def test_a_mark_made_while_the_link_rejoins_reaches_the_others(members):
    a, b = members("a"), members("b")
    until = time.time() + 3600
    marked = threading.Event()

    def mark_once():  # a change made on a while its rejoin runs (after the accounts' handler read a's state)
        if not marked.is_set():
            a.pool.mark_exhausted("x", until, "429 while rejoining")
            marked.set()

    a.link.on_rejoin(mark_once)  # runs after the parts' handlers, at a's next join
    a.link.down("test: a brief outage")
    assert marked.wait(5) and wait_until(lambda: a.link.healthy, 5)
    assert wait_until(lambda: b.status("x")["exhausted_until_s"] == until, 5)  # queued while joining, sent once ok


def test_a_session_bound_apart_during_an_outage_is_on_one_account_after_the_rejoin(redis_server, tmp_path):
    a = Member("a", redis_server.client(), tmp_path, sessions=True, start=False)
    b = Member("b", redis_server.client(), tmp_path, sessions=True, start=False)
    b.pool.set_strategy("round-robin")
    now = time.time()
    b.pool.route(None, frozenset(), now)  # b's round-robin gives y next
    assert a.pool.route(SESSION, frozenset(), now).name == "x"  # both decide alone: split
    assert b.pool.route(SESSION, frozenset(), now).name == "y"
    a.link.start()  # a puts its binding back first
    b.link.start()  # b finds a's and adopts it
    r = redis_server.client()
    try:
        assert r.get(f"t:session:{SESSION}") == b"x"
        assert b.pool.session_account(SESSION, now + 1) == "x"
        assert a.pool.route(SESSION, frozenset(), now + 1).name == b.pool.route(SESSION, frozenset(), now + 1).name == "x"
    finally:
        r.close(), a.stop(), b.stop()


def test_a_split_binding_whose_account_cannot_take_it_here_is_moved_to_this_instances(redis_server, tmp_path):
    a = Member("a", redis_server.client(), tmp_path, sessions=True, start=False)
    now = time.time()
    assert a.pool.route(SESSION, frozenset(), now).name == "x"
    a.pool.mark_exhausted("y", now + 3600)  # y cannot take a request here (nor anywhere: the state is shared)
    r = redis_server.client()
    r.set(f"t:session:{SESSION}", "y", px=60_000)  # another instance bound it to y meanwhile
    a.link.start()
    try:
        assert a.pool.session_account(SESSION, now + 1) == "x"
        assert r.get(f"t:session:{SESSION}") == b"x"  # moved, so that instance adopts x when it leaves y
    finally:
        r.close(), a.stop()


def test_a_failover_of_one_request_leaves_the_session_on_its_account_on_every_instance(redis_server, tmp_path):
    a = Member("a", redis_server.client(), tmp_path, sessions=True)
    b = Member("b", redis_server.client(), tmp_path, sessions=True)
    r = redis_server.client()
    try:
        now = time.time()
        assert a.pool.route(SESSION, frozenset(), now).name == "x"
        assert b.pool.route(SESSION, frozenset(), now).name == "x"  # adopted
        # one request on a fails on x (a 529: no mark anyone sees) and is retried elsewhere
        assert a.pool.route(SESSION, frozenset({"x"}), now).name == "y"
        assert r.get(f"t:session:{SESSION}") == b"x"
        later = now + 5
        assert a.pool.route(SESSION, frozenset(), later).name == b.pool.route(SESSION, frozenset(), later).name == "x"
        # x unusable (a mark every instance sees): the session moves, once, and both follow
        a.pool.mark_exhausted("x", now + 3600)
        assert a.pool.route(SESSION, frozenset({"x"}), later).name == "y"
        assert r.get(f"t:session:{SESSION}") == b"y"
        assert wait_until(lambda: b.status("x")["exhausted_until_s"] == now + 3600, 5)
        assert b.pool.route(SESSION, frozenset(), later).name == "y"
    finally:
        r.close(), a.stop(), b.stop()


def test_a_newer_pin_of_an_account_this_instance_lacks_is_not_overwritten_on_rejoining(members):
    a = members("a")
    a.pool.set_pin("y")  # a's pin, older
    assert wait_until(lambda: json.loads(members.client.get("t:pin") or "{}").get("value") == "y", 5)
    newer = {"value": "z", "at_s": time.time() + 1}  # set later by an instance that has account z
    members.client.set("t:pin", json.dumps(newer))
    a.link.down("test: a brief outage")
    assert wait_until(lambda: a.link.healthy, 5)
    assert json.loads(members.client.get("t:pin")) == newer
    assert a.pool.pinned == "y"  # a cannot honour z; it keeps what it had


def test_a_session_bound_while_the_link_rejoins_reaches_redis(redis_server, tmp_path):
    a = Member("a", redis_server.client(), tmp_path, sessions=True)
    r = redis_server.client()
    bound = threading.Event()

    def route_once():  # a new session arrives after the sessions' handler put the live bindings back
        if not bound.is_set():
            a.pool.route(SESSION, frozenset(), time.time())
            bound.set()

    a.link.on_rejoin(route_once)
    try:
        a.link.down("test: a brief outage")
        assert bound.wait(5) and wait_until(lambda: a.link.healthy, 5)
        assert wait_until(lambda: r.get(f"t:session:{SESSION}") == b"x", 5)
    finally:
        r.close(), a.stop()
