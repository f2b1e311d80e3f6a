"""Client tokens across a cluster: records and their revocation mirrored, per-token limits and budgets
held across instances (one admission script), and the usage rollups summed over instances."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import threading
import time
import types

import pytest

from shunt_lib.client_meter import ClientLimited, ClientMeter
from shunt_lib import token_format
from shunt_lib.client_limits import day_key
from shunt_lib.clients import Client, TokenLimits, TokenRecord
from shunt_lib.cluster_config import ClusterConfig
from shunt_lib.cluster_limits import inflight_counts
from shunt_lib.cluster_tokens import entry_doc, entry_from_doc, push, winner
from shunt_lib.config import load_config
from shunt_lib.server import make_server, start_background
from shunt_lib.token_input import TokenSpec
from shunt_lib.token_store import Entry, TokenStore
from tests.fakes.upstream import Reply
from tests.support import MSG, Proxy, wait_until, write_home


# -- the mirror's merge (pure, and in Redis with fakeredis) -----------------------------------------
def _entry(changed_s, revoked_s=None, digest=b"\x01" * 32, label="ci"):
    return Entry(TokenRecord("0123456789ab", label, 100.0, None, revoked_s, None, TokenLimits(rpm=5)), digest, changed_s)


def test_a_revocation_wins_over_any_live_copy_otherwise_the_newer_record():
    old, rotated, revoked = _entry(100.0), _entry(200.0, digest=b"\x02" * 32), _entry(150.0, revoked_s=150.0)
    assert winner(old, rotated) is rotated and winner(rotated, old) is rotated
    assert winner(rotated, revoked) is revoked and winner(revoked, rotated) is revoked  # older, but revoked
    assert winner(None, old) is old and winner(old, None) is old
    assert entry_from_doc(entry_doc(revoked)) == revoked._replace(record=revoked.record._replace(last_used_s=None))
    assert "secret" not in entry_doc(old).replace("secret_sha256", "")
    assert entry_from_doc(b"{not json") is None and entry_from_doc(None) is None


def test_pushing_a_record_merges_it_with_the_one_redis_holds():
    fakeredis = pytest.importorskip("fakeredis")
    r = fakeredis.FakeRedis()
    old, rotated, revoked = _entry(100.0), _entry(200.0, digest=b"\x02" * 32), _entry(150.0, revoked_s=150.0)
    assert push(r, "c:tokens", old) == old
    assert push(r, "c:tokens", rotated) == rotated
    assert push(r, "c:tokens", old) == rotated  # a stale copy does not undo the rotation
    assert entry_from_doc(r.hget("c:tokens", old.record.id)) == rotated
    assert push(r, "c:tokens", revoked) == revoked
    assert push(r, "c:tokens", rotated) == revoked  # nor a revocation
    assert entry_from_doc(r.hget("c:tokens", old.record.id)) == revoked


def test_the_store_calls_its_mirror_after_each_change_and_keeps_when_it_changed(tmp_path):
    path = str(tmp_path / "tokens.db")
    legacy = sqlite3.connect(path)  # a file written before changed_s existed
    legacy.execute("CREATE TABLE tokens (id TEXT PRIMARY KEY, label TEXT NOT NULL, secret_sha256 BLOB NOT NULL, "
                   "created_s REAL NOT NULL, expires_s REAL, revoked_s REAL, last_used_s REAL, rpm INTEGER, tpm INTEGER, "
                   "daily_tokens INTEGER, monthly_usd REAL, max_concurrent INTEGER, accounts TEXT NOT NULL DEFAULT '[]', "
                   "kinds TEXT NOT NULL DEFAULT '[]', models TEXT NOT NULL DEFAULT '[]')")
    legacy.execute("INSERT INTO tokens (id, label, secret_sha256, created_s) VALUES ('aaaaaaaaaaaa', 'old', x'00', 5)")
    legacy.commit()
    legacy.close()
    seen = []
    with TokenStore(path, mirror=seen.append) as store:
        assert store.entries()["aaaaaaaaaaaa"].changed_s == 5  # no changed_s yet: its creation
        record, _ = store.create(TokenSpec("ci"), 1000.0)
        store.rotate(record.id, 2000.0)
        store.revoke(record.id, 3000.0)
        assert seen == [record.id] * 3
        assert store.entries()[record.id].changed_s == 3000.0
        other = store.entries()[record.id]._replace(changed_s=4000.0)
        store.put(other._replace(record=other.record._replace(id="bbbbbbbbbbbb")))
        assert seen == [record.id] * 3  # a record from the cluster is not pushed back
        assert store.entries()["bbbbbbbbbbbb"].record.revoked_s == 3000.0


# -- three proxies on one Redis ------------------------------------------------------------------------
@pytest.fixture
def trio(tmp_path, upstream, redis_server):
    proxies, homes = [], []
    try:
        for n in range(3):
            paths = write_home(str(tmp_path / f"h{n}"), upstream.url, [("a", "api_key")], {"usage_poll_s": 0},
                               cluster={"redis_url": redis_server.url, "cluster_name": "trio"})
            srv = make_server(load_config(paths), paths, port=0)
            start_background(srv, refresh=False, recovery=False, usage=False, reload=False, alerts=False)
            proxies.append(Proxy(srv))
            homes.append(paths)
        yield types.SimpleNamespace(proxies=proxies, homes=homes)
    finally:
        for p in proxies:
            p.close()


def _create(proxy, label, **fields):
    status, _, body = proxy.request("POST", "/admin/tokens", body={"label": label, **fields})
    assert status == 200, body
    doc = json.loads(body)
    return doc["token"], doc["id"]


def _status(proxy, token):
    return proxy.request(body=MSG, headers={"x-api-key": token})[0]


def _cli(home, *argv):
    from shunt_lib.cli import main
    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("SHUNT_HOME")
    os.environ["SHUNT_HOME"] = home
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        if old is None:
            del os.environ["SHUNT_HOME"]
        else:
            os.environ["SHUNT_HOME"] = old
    return code, out.getvalue(), err.getvalue()


def test_a_token_made_on_one_instance_works_on_all_and_its_revocation_too(trio):
    p1, p2, p3 = trio.proxies
    token, token_id = _create(p1, "ci")
    for p in (p2, p3):
        assert wait_until(lambda: _status(p, token) == 200, 5), "not accepted by another instance within 5 s"
    code, out, err = _cli(trio.homes[2].home, "token", "create", "--label", "cli")
    assert code == 0, err
    cli_token = out.strip()
    assert wait_until(lambda: _status(p1, cli_token) == 200, 5) and _status(p2, cli_token) == 200
    assert p2.request("DELETE", f"/admin/tokens/{token_id}")[0] == 200
    for p in (p1, p3):
        assert wait_until(lambda: _status(p, token) == 401, 5)
    assert _status(p2, token) == 401
    code, out, err = _cli(trio.homes[0].home, "token", "rotate", token_format.parse(cli_token).id)
    assert code == 0, err
    new = out.strip()
    for p in (p2, p3):
        assert wait_until(lambda: _status(p, new) == 200 and _status(p, cli_token) == 401, 5)


def test_a_token_command_with_redis_down_says_so_and_keeps_the_change(tmp_path, upstream):
    pytest.importorskip("redis")
    from tests.redis_support import free_port
    paths = write_home(str(tmp_path / "h"), upstream.url, [("a", "api_key")],
                       cluster={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "cluster_name": "down"})
    code, out, err = _cli(paths.home, "token", "create", "--label", "offline")
    assert code == 0 and token_format.parse(out.strip()) is not None
    assert "did not answer" in err and "sees it" in err and out.strip() not in err
    with TokenStore(paths.tokens_db) as store:
        assert [r.label for r in store.list()] == ["offline"]



def test_a_token_change_saved_while_the_commands_redis_did_not_answer_reaches_the_cluster(trio):
    p1, p2, p3 = trio.proxies
    token, token_id = _create(p1, "ci")
    assert wait_until(lambda: _status(p3, token) == 200, 5)
    with TokenStore(trio.homes[0].tokens_db) as store:  # what `shunt token revoke` saves when Redis does not answer
        store.revoke(token_id, 5000.0)
    assert wait_until(lambda: _status(p1, token) == 401, 5)  # the serving shunt of that home sees its file change
    for p in (p2, p3):
        assert wait_until(lambda: _status(p, token) == 401, 5), "the revocation did not reach the other shunts"
    doc = entry_from_doc(p2.srv.cluster.link.client.hget("trio:tokens", token_id))
    assert doc is not None and doc.record.revoked_s == 5000.0


# -- the admission script against a real Redis --------------------------------------------------------
class _Instance:
    """A meter sharing its limits through its own link: one instance without a server."""

    def __init__(self, redis_server, name, clock=None, records=()):
        from shunt_lib.cluster_limits import SharedLimits
        from shunt_lib.cluster_link import Link
        self.link = Link(ClusterConfig(redis_url=redis_server.url, cluster_name="u", timeout_s=2.0), name, retry_s=0.05)
        self.meter = ClientMeter(clock=clock) if clock else ClientMeter()
        self.records = list(records)  # the token records its tokens.db holds
        srv = types.SimpleNamespace(meter=self.meter, clock=types.SimpleNamespace(time=self.meter.clock),
                                    client_tokens=types.SimpleNamespace(records=lambda: self.records))
        self.part = SharedLimits.attach(self.link, srv)
        self.link.start()
        assert self.link.healthy

    def close(self):
        self.part.stop()
        self.link.stop()

    def crash(self):
        """Gone without a word: nothing of this instance's is cleaned up in Redis (its link is closed so
        its threads end; its heartbeat is rewritten as a crash leaves it: as old as its last beat)."""
        self.link.stop()


@pytest.fixture
def three(redis_server):
    made = [_Instance(redis_server, f"i{n}") for n in range(3)]
    yield made
    for i in made:
        i.close()


def _token(**limits):
    return Client("ci", "0123456789ab", TokenRecord("0123456789ab", "ci", 0.0, limits=TokenLimits(**limits)))


def _race(instances, client, n):
    barrier, admitted, refused = threading.Barrier(n), [], []

    def go(i):
        barrier.wait()
        try:
            admitted.append(instances[i % len(instances)].meter.admit(client))
        except ClientLimited as err:
            refused.append(err)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted, refused


def test_the_script_admits_exactly_the_rpm_limit_across_racing_instances(three):
    admitted, refused = _race(three, _token(rpm=10), 45)
    assert len(admitted) == 10 and len(refused) == 35
    assert all(e.limit == "rpm" and 1 <= e.retry_after_s <= 60 for e in refused)
    assert "over its 10 requests per minute" in str(refused[0])
    assert sum(i.meter.usage()["0123456789ab"].minute_requests for i in three) == 10  # each keeps its own share


def test_concurrency_is_held_across_instances_and_freed_by_the_release(three):
    c = _token(max_concurrent=3)
    admitted, refused = _race(three, c, 12)
    assert len(admitted) == 3 and {e.limit for e in refused} == {"max_concurrent"}
    assert all(e.retry_after_s == 1 for e in refused)
    admitted[0].release()
    admitted[0].release()  # once only
    key = three[0].link.keys.token(c.token_id, "inflight")
    assert wait_until(lambda: sum(inflight_counts(three[0].link.client.hgetall(key)).values()) == 2)
    again, refused = _race(three, c, 4)
    assert len(again) == 1 and len(refused) == 3


def test_budgets_are_the_sum_of_each_instances_own_field(three):
    from shunt_lib.client_limits import day_key, month_key
    c = _token(daily_tokens=100, monthly_usd=1.0)
    record = {"input_tokens": 30, "output_tokens": 20, "cache_read_tokens": 0, "cache_creation_tokens": 0}
    three[0].meter.admit(c).finish(record, 0.2)  # 50 tokens through instance 0
    three[1].meter.admit(c).finish(record, 0.2)  # 50 through instance 1
    k = three[0].link.keys
    day = k.token(c.token_id, "day:" + day_key(three[0].meter.clock()))
    assert wait_until(lambda: {f: int(v) for f, v in three[0].link.client.hgetall(day).items()} == {b"i0": 50, b"i1": 50})
    with pytest.raises(ClientLimited) as exc:
        three[2].meter.admit(c)
    assert exc.value.limit == "daily_tokens" and "over its daily budget of 100 tokens (100 used today, UTC)" in str(exc.value)
    three[0].link.client.delete(day)  # a Redis that lost the day: each instance's rejoin rewrites its own field
    three[1].records.append(c.token)  # the token is in its tokens.db
    three[1].part._rejoin()
    assert {f: int(v) for f, v in three[0].link.client.hgetall(day).items()} == {b"i1": 50}
    assert three[2].meter.admit(c) is not None  # 50 known again, not 0 and not 150
    usd = k.token(c.token_id, "usd:" + month_key(three[0].meter.clock()))
    assert pytest.approx(sum(float(v) for v in three[0].link.client.hvals(usd))) == 0.4


_RECORD = {"input_tokens": 1, "output_tokens": 1, "cache_read_tokens": 0, "cache_creation_tokens": 0}


def test_a_request_admitted_while_redis_was_down_gives_its_slot_back_when_it_ends(redis_server):
    c = _token(max_concurrent=1)
    a, b = _Instance(redis_server, "a", records=[c.token]), _Instance(redis_server, "b", records=[c.token])
    try:
        redis_server.stop()
        ticket = a.meter.admit(c)  # Redis gone: decided by a alone
        assert not a.link.healthy
        redis_server.start()  # back, empty: a's rejoin writes its 1 in flight
        assert wait_until(lambda: a.link.healthy and b.link.healthy, 10)
        r = redis_server.client()
        key = a.link.keys.token(c.token_id, "inflight")
        assert inflight_counts(r.hgetall(key)) == {"a": 1, "b": 0} and r.pttl(key) > 0
        with pytest.raises(ClientLimited):
            b.meter.admit(c)  # the slot is held cluster-wide
        ticket.finish(_RECORD, 0.0)
        assert wait_until(lambda: inflight_counts(r.hgetall(key)) == {"a": 0, "b": 0}, 5)
        b.meter.admit(c).release()  # free on every instance again
        r.close()
    finally:
        a.close(), b.close()


def test_a_restarted_instance_frees_the_slots_it_held_before_its_crash(redis_server):
    c = _token(max_concurrent=2)
    a = _Instance(redis_server, "a", records=[c.token])
    a.meter.admit(c)  # a long stream, then kill -9
    a.crash()
    a2 = _Instance(redis_server, "a", records=[c.token])  # the same home again: the same id, nothing in flight
    b = _Instance(redis_server, "b", records=[c.token])
    try:
        held = [b.meter.admit(c), b.meter.admit(c)]  # both slots
        with pytest.raises(ClientLimited):
            b.meter.admit(c)
        for t in held:
            t.release()
    finally:
        a2.close(), b.close()


def test_the_slots_of_an_instance_whose_heartbeat_is_stale_are_freed(redis_server):
    import json as _json
    from shunt_lib.cluster_link import INSTANCE_STALE_S
    c = _token(max_concurrent=2)
    a = _Instance(redis_server, "a", records=[c.token])
    a.meter.admit(c)
    a.crash()
    r = redis_server.client()
    r.hset(a.link.keys.instances, "a", _json.dumps({"at_s": time.time() - INSTANCE_STALE_S - 5}))  # its last beat
    key = a.link.keys.token(c.token_id, "inflight")
    assert inflight_counts(r.hgetall(key)) == {"a": 1}
    b = _Instance(redis_server, "b", records=[c.token])  # sees a's heartbeat stale when it joins
    try:
        b.meter.admit(c), b.meter.admit(c)  # a's slot is not counted: it never comes back
        assert "a" not in inflight_counts(r.hgetall(key))  # and its field is gone
        r.close()
    finally:
        b.close()


def test_a_clean_stop_deletes_the_instances_in_flight_fields(redis_server):
    c = _token(max_concurrent=2)
    a = _Instance(redis_server, "a", records=[c.token])
    r = redis_server.client()
    try:
        a.meter.admit(c).release()
        key = a.link.keys.token(c.token_id, "inflight")
        assert wait_until(lambda: inflight_counts(r.hgetall(key)) == {"a": 0}, 10)
    finally:
        a.close()
    try:
        assert r.hgetall(key) == {}
    finally:
        r.close()


def test_a_token_without_limits_costs_no_redis_operation_and_redis_down_decides_locally(three, redis_server):
    calls = []
    three[0].part.admit = lambda *a: calls.append(a)  # noqa: the meter must not ask
    three[0].meter.admit(_token()).finish({"input_tokens": 1, "output_tokens": 1, "cache_read_tokens": 0,
                                           "cache_creation_tokens": 0}, 0.0)
    assert calls == []
    del three[0].part.admit
    redis_server.stop()
    c = _token(rpm=2)
    three[1].meter.admit(c), three[1].meter.admit(c)  # the first finds Redis gone: decided here, no error
    with pytest.raises(ClientLimited):
        three[1].meter.admit(c)


def _burst(proxies, token, n, body=MSG):
    barrier, got = threading.Barrier(n), []

    def go(i):
        barrier.wait()
        got.append(proxies[i % len(proxies)].request(body=body, headers={"x-api-key": token}))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_per_token_rpm_holds_across_instances_under_concurrency(trio, upstream):
    token, _ = _create(trio.proxies[0], "ci", rpm=10)
    for p in trio.proxies[1:]:
        assert wait_until(lambda: p.srv.client_tokens.check(token, 0) not in ("unknown", "malformed"), 5)
    got = _burst(trio.proxies, token, 45)
    statuses = sorted(s for s, _, _ in got)
    assert statuses.count(200) == 10 and statuses.count(429) == 35, statuses
    for status, headers, body in got:
        if status == 429:
            assert json.loads(body)["error"]["type"] == "rate_limit_error"
            assert 1 <= int(headers["retry-after"]) <= 60
    assert len(upstream.requests_for()) == 10


def test_a_daily_budget_and_max_concurrent_hold_across_instances(trio, upstream):
    p1, p2, p3 = trio.proxies
    token, token_id = _create(p1, "ci", daily_tokens=60)
    for p in (p2, p3):
        assert wait_until(lambda: p.srv.client_tokens.known(token_id), 5)
    assert _status(p1, token) == 200 and _status(p1, token) == 200  # 15 tokens each: 30
    assert _status(p2, token) == 200 and _status(p2, token) == 200  # 60 in all
    link = p3.srv.cluster.link
    day = link.keys.token(token_id, "day:" + day_key(p3.srv.clock.time()))
    assert wait_until(lambda: sum(int(v) for v in link.client.hvals(day)) == 60, 5)  # the charges went out
    status, headers, body = p3.request(body=MSG, headers={"x-api-key": token})
    assert status == 429 and "daily budget of 60 tokens (60 used today, UTC)" in json.loads(body)["error"]["message"]
    assert int(headers["retry-after"]) > 0

    held, arrived, release = _create(p1, "held", max_concurrent=2)[0], threading.Event(), threading.Event()
    for p in (p2, p3):
        assert wait_until(lambda: p.srv.client_tokens.check(held, 0) not in ("unknown", "malformed"), 5)
    upstream.script("tok-a", Reply(body=None, arrived=arrived, release=release),
                    Reply(body=None, release=release))
    out = []
    threads = [threading.Thread(target=lambda p=p: out.append(_status(p, held))) for p in (p1, p2)]
    for t in threads:
        t.start()
    assert upstream.wait_for_requests(6, timeout=10)  # both held upstream
    try:
        status, headers, body = p3.request(body=MSG, headers={"x-api-key": held})
        assert status == 429 and "at its 2 concurrent requests" in json.loads(body)["error"]["message"]
    finally:
        release.set()
        for t in threads:
            t.join()
    assert wait_until(lambda: _status(p3, held) == 200, 5)


def test_the_usage_rollups_of_every_instance_are_summed(trio, upstream):
    from shunt_lib.cluster_keys import Keys
    from shunt_lib.cluster_usage import days_between, read_rows
    token, _ = _create(trio.proxies[0], "ci")
    for n, p in enumerate(trio.proxies):
        assert wait_until(lambda: _status(p, token) == 200, 5)
        for _ in range(n):
            assert _status(p, token) == 200  # 1, 2 and 3 requests through the three instances
    client = trio.proxies[0].srv.cluster.link.client
    now = trio.proxies[0].srv.clock.time()
    days = days_between(now, now)

    def rows(by):
        return read_rows(client, Keys("trio"), days, by)
    assert wait_until(lambda: [(r["key"], r["requests"]) for r in rows("client")] == [("ci", 6)], 5), rows("client")
    assert {r["key"]: r["requests"] for r in rows("instance")} == {
        p.srv.cluster.link.instance_id: n + 1 for n, p in enumerate(trio.proxies)}
    assert rows("account")[0]["input_tokens"] == 6 * 10 and rows("account")[0]["key"] == "a"
    code, out, err = _cli(trio.homes[1].home, "usage", "--cluster", "--by", "client", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["scope"] == "cluster" and [(r["key"], r["requests"]) for r in doc["rows"]] == [("ci", 6)]


def test_a_revocation_made_while_redis_was_down_reaches_every_instance_when_it_is_back(trio, redis_server):
    p1, p2, p3 = trio.proxies
    token, token_id = _create(p1, "ci")
    assert wait_until(lambda: _status(p3, token) == 200, 5)
    redis_server.stop()
    assert wait_until(lambda: not any(p.srv.cluster.healthy for p in trio.proxies), 10)
    assert p2.request("DELETE", f"/admin/tokens/{token_id}")[0] == 200  # kept in h1's tokens.db only
    assert _status(p3, token) == 200
    redis_server.start()  # empty: rebuilt from the instances
    assert wait_until(lambda: all(p.srv.cluster.healthy for p in trio.proxies), 10)
    for p in (p1, p3):
        assert wait_until(lambda: _status(p, token) == 401, 5)
    doc = entry_from_doc(redis_server.client().hget("trio:tokens", token_id))
    assert doc is not None and doc.record.revoked_s is not None


def test_the_usage_rollups_keep_the_day_before_midnight_whole(tmp_path):
    fakeredis = pytest.importorskip("fakeredis")
    from shunt_lib.cluster_link import Link
    from shunt_lib.cluster_usage import SharedUsage, read_rows
    midnight = 1_800_000_000 // 86400 * 86400 + 86400  # a UTC midnight
    now = [midnight - 5.0]
    srv = types.SimpleNamespace(clock=types.SimpleNamespace(time=lambda: now[0]),
                                paths=types.SimpleNamespace(home=str(tmp_path)))
    link = Link(ClusterConfig(redis_url="redis://127.0.0.1:6379/0", cluster_name="u"), "i0",
                client=fakeredis.FakeRedis(), retry_s=0.05)
    part = SharedUsage(link, srv)
    link.start()
    try:
        def record(ts_s):
            return {"ts_s": ts_s, "account": "a", "client": "ci", "model": "m", "status": 200, "input_tokens": 10,
                    "output_tokens": 5, "cache_read_tokens": 0, "cache_creation_tokens": 0}
        before, after = day_key(midnight - 1), day_key(midnight)
        part.add(record(midnight - 10))  # its write is queued (lazily) ...
        now[0] = midnight + 1
        part.add(record(midnight + 1))  # ... and the day turns before it goes out
        part.add(record(midnight - 2))  # stamped before midnight, ended after it

        def requests(day):
            return [r["requests"] for r in read_rows(link.client, link.keys, [day], "client")]
        assert wait_until(lambda: requests(before) == [2] and requests(after) == [1], 10), (requests(before),
                                                                                             requests(after))
        link.client.flushall()  # a Redis restarted empty: the rejoin rewrites both days
        part._rejoin()
        assert requests(before) == [2] and requests(after) == [1]
    finally:
        link.stop()
