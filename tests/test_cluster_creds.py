"""Shared OAuth credentials (shunt_lib.cluster_creds): the Redis scripts, the reconcile rule, and the
cluster-wide refresh of two in-process instances on fakeredis (one token call, no rotated-out token
ever sent, a stopped holder's intent respected)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from shunt_lib.cluster_config import ClusterConfig
from shunt_lib.cluster_cred_store import (CAS_LUA, CLEAR_LUA, INTENT_LUA, PUT_LUA, RELEASE_LUA, Shared,
                                          parse_shared, reconcile, supersedes, token_digest)
from shunt_lib.cluster_creds import ClusterCredentials
from shunt_lib.cluster_keys import Keys
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.oauth import RefreshStatus, TokenManager
from tests.fakes.rotating_tokens import RotatingTokens
from tests.support import wait_until

fakeredis = pytest.importorskip("fakeredis")
pytest.importorskip("lupa", reason="fakeredis runs Lua scripts with lupa (pip install -e '.[test]')")

K = Keys("t")
CRED = K.credential("w")
LOCK = K.refresh_lock("w")


def oauth(access: str, refresh: str, expires_at_ms: int = 2_000_000_000_000) -> Credential:
    return Credential(kind="oauth", access_token=access, refresh_token=refresh, expires_at_ms=expires_at_ms)



def _held_answer():
    """(answered, release, hold): ``hold`` as a token endpoint's ``before_answer`` sets ``answered`` and
    waits for ``release`` before the endpoint answers."""
    answered, release = threading.Event(), threading.Event()

    def hold(token):
        answered.set()
        assert release.wait(10)
    return answered, release, hold

def test_the_compare_and_set_refuses_a_stale_version_and_clears_the_intent():
    r = fakeredis.FakeRedis()
    cas = r.register_script(CAS_LUA)
    assert cas(keys=[CRED], args=[0, "one"]) == [1, 1]  # nothing there yet: version 0
    r.hset(CRED, "refreshing", "a/1:1")
    assert cas(keys=[CRED], args=[0, "stale"]) == [0, 1]  # a slow holder that read version 0
    assert r.hget(CRED, "cred") == b"one" and r.hget(CRED, "refreshing") == b"a/1:1"
    assert cas(keys=[CRED], args=[1, "two"]) == [1, 2]
    assert r.hmget(CRED, "v", "cred", "refreshing") == [b"2", b"two", None]
    put = r.register_script(PUT_LUA)
    r.hset(CRED, "refreshing", "b/2:2")
    assert put(keys=[CRED], args=["login"]) == 3  # a new login: whatever the version
    assert r.hmget(CRED, "v", "cred", "refreshing") == [b"3", b"login", None]


def test_only_the_owner_releases_the_lock_or_writes_an_intent():
    r = fakeredis.FakeRedis()
    release, intent, clear = (r.register_script(s) for s in (RELEASE_LUA, INTENT_LUA, CLEAR_LUA))
    assert r.set(LOCK, "a/1", nx=True, px=10_000)
    assert not r.set(LOCK, "b/2", nx=True, px=10_000)
    assert intent(keys=[CRED, LOCK], args=["b/2", "b/2:0"]) == 0 and r.hget(CRED, "refreshing") is None
    assert intent(keys=[CRED, LOCK], args=["a/1", "a/1:0"]) == 1
    assert release(keys=[LOCK], args=["b/2"]) == 0 and r.get(LOCK) == b"a/1"
    assert release(keys=[LOCK], args=["a/1"]) == 1 and r.get(LOCK) is None
    assert clear(keys=[CRED], args=["b/2:0"]) == 0 and r.hget(CRED, "refreshing") == b"a/1:0"
    assert clear(keys=[CRED], args=["a/1:0"]) == 1 and r.hget(CRED, "refreshing") is None


def test_reconcile_takes_the_later_expiry_and_an_intent_blocks_only_other_owners():
    old, new = oauth("t1", "r1", 1_000), oauth("t2", "r2", 2_000)
    assert reconcile(new, old) == "upload" and reconcile(old, new) == "adopt"
    assert reconcile(new, None) == "upload" and reconcile(None, new) == "adopt"
    assert reconcile(new, new) == "keep" and reconcile(None, None) == "keep"
    assert reconcile(oauth("t3", "r3", 2_000), new) == "adopt"  # a tie: the shared one, so every instance agrees
    assert Shared(4, None, "host-1/ab:4").blocking_intent("host-2/cd") == "host-1/ab"
    assert Shared(4, None, "host-1/ab:4").blocking_intent("host-1/ab") == ""  # our own (a timed-out call)
    assert Shared(5, None, "host-1/ab:4").blocking_intent("host-2/cd") == ""  # an older version's
    spent = {token_digest("r1")}  # this instance sent r1: old is rotated out
    assert supersedes(oauth("t0", "r0", 500), old, spent, by_expiry=False)  # over a pair rotated out here
    assert not supersedes(old, new, spent, by_expiry=True) and not supersedes(new, new, spent, by_expiry=True)
    assert supersedes(new, old, set(), by_expiry=True) and not supersedes(new, old, set(), by_expiry=False)
    assert supersedes(new, None, set(), by_expiry=False)  # over nothing
    doc = json.dumps(new.to_json())
    assert parse_shared("w", [b"3", doc.encode(), None]) == Shared(3, new, "")
    assert parse_shared("w", [None, b"{bad", None]) == Shared(0, None, "")
    api_key = json.dumps({"kind": "api_key", "api_key": "sk-1"}).encode()
    assert parse_shared("w", [b"1", api_key, None]).cred is None  # only OAuth credentials are shared


class Instance:
    """One in-process instance: its own home, token manager, link and shared credentials."""

    def __init__(self, tmp_path, server, name: str, token_url: str, cred: Credential):
        from shunt_lib.cluster_link import Link
        home = tmp_path / name
        home.mkdir()
        self.store = CredentialStore(str(home / "credentials.json"))
        self.store.put("w", cred)
        self.tokens = TokenManager(self.store, {"w": cred}, token_url=token_url)
        cfg = ClusterConfig(redis_url="redis://127.0.0.1:1/0", cluster_name="t", timeout_s=0.5, refresh_lock_ttl_s=5)
        self.link = Link(cfg, name, client=fakeredis.FakeRedis(server=server), retry_s=0.05)
        self.reauth: list[tuple[str, bool]] = []
        self.part = ClusterCredentials(self.link, self.tokens, names=lambda: ["w"],
                                       mark_reauth=lambda n, needed: self.reauth.append((n, needed)))
        self.tokens.coordinator = self.part
        self.link.on("cred", self.part.sync.on_notice)
        self.rejoin = self.part.sync.rejoin  # a test may wrap it
        self.link.on_rejoin(lambda: self.rejoin())
        self.link.start()
        assert self.link.healthy

    def close(self):
        self.part.stop()
        self.link.stop()
        self.tokens.close()


@pytest.fixture
def cluster(tmp_path, upstream):
    server = fakeredis.FakeServer()
    made = []

    def make(name, cred=None):
        cred = cred or oauth("tok-w", "ref-w", int((time.time() + 600) * 1000))  # a rotation expires later
        inst = Instance(tmp_path, server, name, upstream.url + "/v1/oauth/token", cred)
        made.append(inst)
        return inst

    yield make
    for inst in made:
        inst.close()


def test_one_instance_refreshes_and_the_other_takes_the_written_pair_without_a_call(cluster, upstream):
    rot = upstream.token_handler = RotatingTokens("ref-w")
    a, b = cluster("a"), cluster("b")
    result = a.tokens.refresh("w", failed_access_token="tok-w")
    assert result.status is RefreshStatus.OK and result.credential.access_token == "tok-new-1"
    assert wait_until(lambda: b.tokens.get("w").access_token == "tok-new-1", 5)  # the notice
    assert wait_until(lambda: b.store.load()["w"].refresh_token == "ref-new-1", 5)  # and the offline copy
    again = b.tokens.refresh("w", failed_access_token="tok-w")
    assert again.status is RefreshStatus.OK and again.credential.access_token == "tok-new-1"
    assert rot.received == ["ref-w"]
    assert a.store.load()["w"].access_token == "tok-new-1"


def test_a_waiting_instance_adopts_the_holders_write_and_never_calls(cluster, upstream):
    answered, release, hold = _held_answer()

    rot = upstream.token_handler = RotatingTokens("ref-w", before_answer=hold)
    a, b = cluster("a"), cluster("b")
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("a", a.tokens.refresh("w", failed_access_token="tok-w")))
    t.start()
    assert answered.wait(10)  # a holds the cluster lock and has sent ref-w
    u = threading.Thread(target=lambda: got.setdefault("b", b.tokens.refresh("w", failed_access_token="tok-w")))
    u.start()
    release.set()
    t.join(10), u.join(10)
    assert got["a"].credential.access_token == got["b"].credential.access_token == "tok-new-1"
    assert rot.received == ["ref-w"]


def test_another_owners_intent_is_never_sent_and_marks_the_account(cluster, upstream):
    rot = upstream.token_handler = RotatingTokens("ref-w")
    a, b = cluster("a"), cluster("b")
    r = a.link.client
    r.hset(CRED, "refreshing", f"dead-host/0bad:{int(r.hget(CRED, 'v'))}")  # a holder killed mid-refresh
    result = b.tokens.refresh("w", failed_access_token="tok-w")
    assert result.status is RefreshStatus.INVALID_GRANT
    assert "dead-host was refreshing" in result.message and "shunt add-account w" in result.message
    assert ("w", True) in b.reauth and rot.received == []
    assert r.get(LOCK) is None  # released


def test_a_slow_holder_whose_write_comes_too_late_adopts_the_newer_one(cluster, upstream):
    def overtaken(token):  # while a's call is out, another login is written
        b.tokens.set("w", oauth("tok-login", "ref-login", 2_100_000_000_000), login=True)

    rot = upstream.token_handler = RotatingTokens("ref-w", before_answer=overtaken)
    a, b = cluster("a"), cluster("b")
    result = a.tokens.refresh("w", failed_access_token="tok-w")
    assert result.status is RefreshStatus.OK and result.credential.access_token == "tok-login"
    assert a.tokens.get("w").access_token == "tok-login" and a.store.load()["w"].access_token == "tok-login"
    assert int(a.link.client.hget(CRED, "v")) == 2  # the login's version stays
    assert rot.received == ["ref-w"]


def test_a_rejoin_uploads_what_redis_lacks_and_the_later_expiry_wins(cluster):
    a = cluster("a", oauth("tok-a", "ref-a", 1_000_000))
    doc = json.loads(a.link.client.hget(CRED, "cred"))
    assert doc["access_token"] == "tok-a"
    b = cluster("b", oauth("tok-b", "ref-b", 2_000_000))  # a later rotation on b: it wins
    assert json.loads(a.link.client.hget(CRED, "cred"))["access_token"] == "tok-b"
    assert wait_until(lambda: a.tokens.get("w").access_token == "tok-b", 5)
    c = cluster("c", oauth("tok-c", "ref-c", 1_500_000))  # an older one: c adopts
    assert c.tokens.get("w").access_token == "tok-b" and c.store.load()["w"].access_token == "tok-b"
    assert os.stat(c.store.path).st_mode & 0o777 == 0o600
    assert b.tokens.get("w").access_token == "tok-b"


def test_after_redis_restarted_empty_the_versions_start_again_and_notices_still_land(cluster, upstream):
    rot = upstream.token_handler = RotatingTokens("ref-w")
    a, b = cluster("a"), cluster("b")
    assert a.tokens.refresh("w", failed_access_token="tok-w").credential.access_token == "tok-new-1"
    assert wait_until(lambda: b.tokens.get("w").access_token == "tok-new-1", 5)
    a.link.client.flushall()  # Redis restarted without persistence; each instance rejoins
    a.part.sync.rejoin(), b.part.sync.rejoin()
    assert int(a.link.client.hget(CRED, "v")) == 1
    assert a.tokens.refresh("w", failed_access_token="tok-new-1").credential.access_token == "tok-new-2"
    assert wait_until(lambda: b.tokens.get("w").access_token == "tok-new-2", 5)  # version 2 again: not ignored
    assert rot.received == ["ref-w", "ref-new-1"]


def test_with_redis_down_the_refresh_is_local_and_its_rotation_wins_on_rejoin(cluster, upstream, tmp_path):
    rot = upstream.token_handler = RotatingTokens("ref-w")
    a, b = cluster("a"), cluster("b")
    server = a.link.client.connection_pool.connection_kwargs["server"]
    server.connected = False  # Redis unreachable
    result = a.tokens.refresh("w", failed_access_token="tok-w")
    assert result.status is RefreshStatus.OK and result.credential.access_token == "tok-new-1"
    assert not a.link.healthy and a.store.load()["w"].access_token == "tok-new-1"  # the local path
    server.connected = True
    assert wait_until(lambda: b.tokens.get("w").access_token == "tok-new-1", 10)  # a's later expiry won
    assert rot.received == ["ref-w"]


def test_a_new_login_seen_by_a_reload_reaches_every_instance(tmp_path, upstream):
    from shunt_lib.config import load_config
    from shunt_lib.server import make_server
    from tests.support import write_home
    fake = fakeredis.FakeServer()
    servers = []
    try:
        for name in "ab":
            paths = write_home(str(tmp_path / name), upstream.url, [("w", "oauth")],
                               cluster={"redis_url": "redis://127.0.0.1:1/0", "cluster_name": "t"})
            servers.append(make_server(load_config(paths), paths, port=0, cluster_client=fakeredis.FakeRedis(server=fake)))
        a, b = servers
        a.pool.set_flag("w", reauth_required=True)
        b.pool.set_flag("w", reauth_required=True)
        login = oauth("tok-login", "ref-login", 1_000)  # expires before the shared one: pushed all the same
        a.tokens.store.put("w", login)
        assert a.reload()["updated"] == ["w"]
        assert wait_until(lambda: b.tokens.get("w").access_token == "tok-login", 5)
        assert wait_until(lambda: b.tokens.store.load()["w"].refresh_token == "ref-login", 5)
        assert not b.pool.needs_login("w")
    finally:
        for srv in servers:
            srv.close()


def shared_refresh_token(inst) -> str:
    return json.loads(inst.link.client.hget(CRED, "cred"))["refresh_token"]


def test_a_refresh_whose_write_finds_redis_restarted_empty_writes_its_pair(cluster, upstream):
    a_box = {}
    rot = upstream.token_handler = RotatingTokens("ref-w", before_answer=lambda token: a_box["a"].link.client.flushall())
    a = a_box["a"] = cluster("a")  # Redis loses everything while a's call is out: its CAS on version 1 is refused
    result = a.tokens.refresh("w", failed_access_token="tok-w")
    assert result.status is RefreshStatus.OK and result.credential.refresh_token == "ref-new-1"
    assert a.tokens.get("w").refresh_token == a.store.load()["w"].refresh_token == "ref-new-1"
    assert shared_refresh_token(a) == "ref-new-1"
    rot.before_answer = None
    assert a.tokens.refresh("w", force=True).status is RefreshStatus.OK
    assert rot.received == ["ref-w", "ref-new-1"]  # the spent one never again


def test_a_refused_write_over_the_pair_it_rotated_out_still_writes_the_new_pair(cluster, upstream):
    def restarted(token):  # Redis restarts empty; b rejoins first and uploads the pair a is rotating out
        a.link.client.flushall()
        b.part.sync.rejoin()

    rot = upstream.token_handler = RotatingTokens("ref-w", before_answer=restarted)
    a, b = cluster("a"), cluster("b")
    a.link.client.hset(CRED, "v", 5)  # a reads version 5 under the lock; after the restart Redis is at 1
    result = a.tokens.refresh("w", failed_access_token="tok-w")
    assert result.status is RefreshStatus.OK and result.credential.refresh_token == "ref-new-1"
    assert shared_refresh_token(a) == "ref-new-1" and int(a.link.client.hget(CRED, "v")) == 2
    assert a.tokens.get("w").refresh_token == "ref-new-1"
    assert wait_until(lambda: b.tokens.get("w").refresh_token == "ref-new-1", 5)
    rot.before_answer = None
    assert b.tokens.refresh("w", failed_access_token="tok-new-1").status is RefreshStatus.OK
    assert rot.received == ["ref-w", "ref-new-1"]


def test_a_local_refresh_answered_while_the_link_rejoins_reaches_the_other_instances(cluster, upstream):
    answered, release, hold = _held_answer()

    rot = upstream.token_handler = RotatingTokens("ref-w", before_answer=hold)
    a, b = cluster("a"), cluster("b")
    server = a.link.client.connection_pool.connection_kwargs["server"]
    server.connected = False
    a.link.down("test: Redis unreachable")
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("r", a.tokens.refresh("w", failed_access_token="tok-w")))
    t.start()
    assert answered.wait(10)  # the local path: ref-w is sent

    def rejoin():  # the answer lands after a's rejoin offered its (old) pair, before the link counts as ok
        a.part.sync.rejoin()
        release.set()
        t.join(10)

    a.rejoin = rejoin
    server.connected = True
    assert wait_until(lambda: a.link.healthy, 10)
    assert done["r"].status is RefreshStatus.OK and a.tokens.get("w").refresh_token == "ref-new-1"
    assert shared_refresh_token(a) == "ref-new-1"
    rot.before_answer = None
    assert b.tokens.refresh("w", failed_access_token="tok-w").credential.refresh_token == "ref-new-1"
    assert a.tokens.refresh("w", failed_access_token="tok-new-1").credential.refresh_token == "ref-new-2"
    assert rot.received == ["ref-w", "ref-new-1"]


def test_a_rotation_whose_write_failed_is_pushed_by_the_rejoin_even_before_it_is_kept(cluster, upstream):
    def redis_gone(token):  # Redis goes away after the call left: a's write fails
        server.connected = False

    rot = upstream.token_handler = RotatingTokens("ref-w", before_answer=redis_gone)
    a, b = cluster("a"), cluster("b")
    server = a.link.client.connection_pool.connection_kwargs["server"]

    def rejoin_first(name, result):  # after the failed write, before the new pair is kept: Redis is back
        server.connected = True
        assert wait_until(lambda: a.link.healthy, 10)

    a.tokens.listeners.append(rejoin_first)
    result = a.tokens.refresh("w", failed_access_token="tok-w")
    assert result.status is RefreshStatus.OK and a.tokens.get("w").refresh_token == "ref-new-1"
    assert shared_refresh_token(a) == "ref-new-1"
    rot.before_answer = None
    assert b.tokens.refresh("w", failed_access_token="tok-w").credential.refresh_token == "ref-new-1"
    assert rot.received == ["ref-w"]


def test_under_the_lock_a_newer_pair_here_replaces_an_older_shared_one(cluster, upstream):
    rot = upstream.token_handler = RotatingTokens("ref-local")
    a = cluster("a")
    newer = oauth("tok-local", "ref-local", int((time.time() + 3000) * 1000))  # Redis still holds ref-w (expires sooner)
    a.tokens.adopt("w", newer)
    result = a.tokens.refresh("w", failed_access_token="tok-local")
    assert result.status is RefreshStatus.OK and result.credential.refresh_token == "ref-new-1"
    assert rot.received == ["ref-local"]  # never ref-w
    assert shared_refresh_token(a) == "ref-new-1" and a.store.load()["w"].refresh_token == "ref-new-1"


def test_a_late_adoption_never_reverts_a_newer_rotation_made_here(cluster, upstream):
    rot = upstream.token_handler = RotatingTokens("ref-w")
    a, b = cluster("a"), cluster("b")
    assert b.tokens.refresh("w", failed_access_token="tok-w").credential.access_token == "tok-new-1"
    assert wait_until(lambda: a.tokens.get("w").access_token == "tok-new-1", 5)
    version_2 = a.part.hashes.read(a.link.client, "w")  # what b wrote: a late notice of it is handled now
    late = threading.Event()
    paused, go = threading.Event(), threading.Event()
    get = a.tokens.get

    def slow_get(name):  # the late adopter stops between its version check and its adoption
        if threading.current_thread() is late_thread:
            paused.set()
            assert go.wait(10)
        return get(name)

    a.tokens.get = slow_get
    late_thread = threading.Thread(target=lambda: (a.part.sync.use("w", version_2, why="late"), late.set()))
    late_thread.start()
    assert wait_until(lambda: paused.is_set() or late.is_set(), 5)
    assert a.tokens.refresh("w", failed_access_token="tok-new-1").credential.access_token == "tok-new-2"
    go.set()
    late_thread.join(10)
    assert a.tokens.get("w").access_token == "tok-new-2" and a.store.load()["w"].access_token == "tok-new-2"
    assert rot.received == ["ref-w", "ref-new-1"]
