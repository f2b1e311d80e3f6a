"""Client tokens across a cluster: records and their revocation mirrored, per-token limits and budgets
held across instances (one admission script), and the usage rollups summed over instances."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import threading
import types

import pytest

from shunt_lib.client_meter import ClientLimited, ClientMeter
from shunt_lib import token_format
from shunt_lib.client_limits import day_key
from shunt_lib.clients import Client, TokenLimits, TokenRecord
from shunt_lib.cluster_config import ClusterConfig
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
        assert wait_until(lambda: _status(p, token) == 200, 2), "not accepted by another instance within 2 s"
    code, out, err = _cli(trio.homes[2].home, "token", "create", "--label", "cli")
    assert code == 0, err
    cli_token = out.strip()
    assert wait_until(lambda: _status(p1, cli_token) == 200, 2) and _status(p2, cli_token) == 200
    assert p2.request("DELETE", f"/admin/tokens/{token_id}")[0] == 200
    for p in (p1, p3):
        assert wait_until(lambda: _status(p, token) == 401, 2)
    assert _status(p2, token) == 401
    code, out, err = _cli(trio.homes[0].home, "token", "rotate", token_format.parse(cli_token).id)
    assert code == 0, err
    new = out.strip()
    for p in (p2, p3):
        assert wait_until(lambda: _status(p, new) == 200 and _status(p, cli_token) == 401, 2)


def test_a_token_command_with_redis_down_says_so_and_keeps_the_change(tmp_path, upstream):
    pytest.importorskip("redis")
    from tests.redis_support import free_port
    paths = write_home(str(tmp_path / "h"), upstream.url, [("a", "api_key")],
                       cluster={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "cluster_name": "down"})
    code, out, err = _cli(paths.home, "token", "create", "--label", "offline")
    assert code == 0 and token_format.parse(out.strip()) is not None
    assert "did not answer" in err and "reconnects" in err and out.strip() not in err
    with TokenStore(paths.tokens_db) as store:
        assert [r.label for r in store.list()] == ["offline"]
