"""Client tokens: the format, the store (tokens.db), the server's index, the authentication decision,
the handler's refusals in both dialects, /admin/tokens, and the ``shunt token`` commands (in-process
and as subprocesses, against a running ``shunt serve``)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest

from shunt_lib import auth, token_format
from shunt_lib.clients import ADMIN, LOCAL, TokenBinding, TokenLimits, TokenRecord
from shunt_lib.config import Paths, load_config
from shunt_lib.server import make_server
from shunt_lib.token_index import ClientTokens, TokenWatcher
from shunt_lib.token_input import spec_from_fields
from shunt_lib.token_store import TokenError, TokenStore, UnknownToken
from tests.fakes.upstream import Reply, message_json
from tests.support import MSG, ROOT, Proxy, ServeProcess, wait_until, write_home

ADMIN_KEY = "admin-key-0123456789abcdef"
CHAT = {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}


def spec(label="ci", **kw):
    return spec_from_fields(dict(label=label, **kw))


def store_in(home: str) -> TokenStore:
    return TokenStore(Paths(home).tokens_db)


# -- the format ------------------------------------------------------------------------------------
def test_a_token_is_the_prefix_a_hex_id_and_a_256_bit_secret():
    tid, secret = token_format.new_id(), token_format.new_secret()
    token = token_format.make_token(tid, secret)
    assert len(tid) == 12 and all(c in "0123456789abcdef" for c in tid)
    assert len(secret) == 43 and "=" not in secret
    assert token.startswith("shunt_") and token_format.parse(token) == (tid, secret)
    assert len(token_format.hash_secret(secret)) == 32


@pytest.mark.parametrize("bad", ["", "shunt_", "shunt_0123456789ab", "shunt_0123456789AB_" + "a" * 43,
                                 "shunt_0123456789ab-" + "a" * 43, "shunt_0123456789ab_" + "a" * 42,
                                 "shunt_0123456789ab_" + "a" * 44, "shunt_0123456789ab_" + "a" * 42 + "=",
                                 "sk-ant-" + "a" * 50])
def test_malformed_tokens_do_not_parse(bad):
    assert token_format.parse(bad) is None


def test_verify_compares_in_constant_time(monkeypatch):
    calls = []
    real = token_format.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(token_format.hmac, "compare_digest", spy)
    secret = token_format.new_secret()
    stored = token_format.hash_secret(secret)
    assert token_format.verify(secret, stored) and calls == [(stored, stored)]
    assert not token_format.verify(token_format.new_secret(), stored) and len(calls) == 2


# -- the store and the index ----------------------------------------------------------------------
def test_the_store_creates_tokens_db_0600_and_keeps_only_a_hash(tmp_path):
    home = str(tmp_path / "h")
    with store_in(home) as store:
        record, token = store.create(spec(rpm=5, models="claude-*"), 1000.0)
        assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
        for suffix in ("-wal", "-shm"):
            if os.path.exists(store.path + suffix):
                assert stat.S_IMODE(os.stat(store.path + suffix).st_mode) == 0o600
    secret = token_format.parse(token).secret
    with open(Paths(home).tokens_db, "rb") as f:
        assert secret.encode() not in f.read()
    assert record.limits == TokenLimits(rpm=5) and record.binding == TokenBinding(models=("claude-*",))


def test_the_store_makes_the_file_0600_before_writing_even_with_a_loose_umask(tmp_path):
    old = os.umask(0)
    try:
        with store_in(str(tmp_path / "h")) as store:
            store.create(spec(), 1.0)
            assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    finally:
        os.umask(old)


def test_labels_are_unique_among_live_tokens_and_rotate_keeps_the_id(tmp_path):
    with store_in(str(tmp_path)) as store:
        first, _ = store.create(spec("laptop"), 1000.0)
        with pytest.raises(TokenError, match="already labelled"):
            store.create(spec("laptop"), 1001.0)
        store.revoke(first.id, 1002.0)
        with pytest.raises(TokenError, match="already revoked"):
            store.revoke(first.id, 1003.0)
        second, token = store.create(spec("laptop", ttl="1m"), 1004.0)  # a revoked token's label is free again
        rotated, new_token = store.rotate(second.id)
        assert rotated.id == second.id and rotated.label == "laptop" and new_token != token
        assert token_format.parse(new_token).id == second.id
        with pytest.raises(UnknownToken):
            store.rotate("0123456789ab")
        with pytest.raises(TokenError, match="revoked"):
            store.rotate(first.id)
        third, _ = store.create(spec("laptop"), 1004.0 + 61)  # the ttl'd one expired: its label is free too
        assert [r.label for r in store.list()] == ["laptop"] * 3 and third.expires_s is None


def test_the_schema_is_idempotent_and_tolerates_other_tables(tmp_path):
    with store_in(str(tmp_path)) as store:
        store.create(spec(), 1.0)
        store.conn.execute("CREATE TABLE usage (token_id TEXT, n INTEGER)")
        store.conn.execute("INSERT INTO usage VALUES ('x', 1)")
    with store_in(str(tmp_path)) as store:
        assert len(store.list()) == 1
        assert store.conn.execute("SELECT n FROM usage").fetchone() == (1,)


def test_the_index_checks_tokens_and_says_why_it_refuses(tmp_path):
    with store_in(str(tmp_path)) as store:
        live, live_token = store.create(spec("live", ttl="1h"), 1000.0)
        gone, gone_token = store.create(spec("gone"), 1000.0)
        store.revoke(gone.id, 1001.0)
    index = ClientTokens(store.path)
    try:
        assert index.poll() and not index.poll()
        assert index.check(live_token, 1002.0) == live
        wrong_secret = token_format.make_token(live.id, token_format.new_secret())
        assert index.check(wrong_secret, 1002.0) == "unknown"  # the right id is not enough
        assert index.check(token_format.make_token("0123456789ab", token_format.new_secret()), 1002.0) == "unknown"
        assert index.check(gone_token, 1002.0) == "revoked"
        assert index.check(live_token, 1000.0 + 3600) == "expired"
        assert index.check("shunt_nope", 1002.0) == "malformed"
    finally:
        index.close()


def test_the_index_follows_other_connections_and_the_file_itself(tmp_path):
    path = str(tmp_path / "tokens.db")
    index = ClientTokens(path)
    try:
        assert not index.poll() and len(index) == 0 and not os.path.exists(path)  # a missing file is not created
        with TokenStore(path) as store:
            record, token = store.create(spec(), 1.0)
        assert index.poll() and index.check(token, 2.0) == record
        with TokenStore(path) as store:
            store.revoke(record.id, 3.0)
        assert index.poll() and index.check(token, 4.0) == "revoked"
        os.remove(path)
        assert index.poll() and len(index) == 0  # an allow-list: no file, no tokens
        with TokenStore(path) as store:
            record, token = store.create(spec(), 5.0)
        assert index.poll() and index.check(token, 6.0) == record  # a new file (new inode) is opened
    finally:
        index.close()


def test_last_use_is_written_in_batches_not_per_request(tmp_path):
    path = str(tmp_path / "tokens.db")
    with TokenStore(path) as store:
        record, token = store.create(spec(), 1.0)
    index = ClientTokens(path)
    index.poll()
    for now in (10.0, 20.0, 15.0):
        index.check(token, now)
    with TokenStore(path) as store:
        assert store.get(record.id).last_used_s is None
    index.flush_used()
    with TokenStore(path) as store:
        assert store.get(record.id).last_used_s == 15.0  # the last check's time (never moved back below a stored one)
    index.close()


def test_the_watcher_reloads_within_a_poll_and_flushes_at_stop(tmp_path):
    path = str(tmp_path / "tokens.db")
    index = ClientTokens(path)
    watcher = TokenWatcher(index, poll_s=0.05, touch_interval_s=3600)
    watcher.start()
    try:
        with TokenStore(path) as store:
            record, token = store.create(spec(), time.time())
        assert wait_until(lambda: index.check(token, time.time()) == record, timeout=1.0)
    finally:
        watcher.stop()
    with TokenStore(path) as store:
        assert store.get(record.id).last_used_s is not None


# -- input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, message", [
    ({"label": ""}, "label"), ({"label": "x" * 65}, "label"), ({"label": "tab\there"}, "label"),
    ({}, "label"), ({"label": "a", "ttl": "3x"}, "ttl"), ({"label": "a", "ttl": "0d"}, "ttl"),
    ({"label": "a", "rpm": 0}, "rpm"), ({"label": "a", "tpm": -5}, "tpm"), ({"label": "a", "rpm": 1.5}, "rpm"),
    ({"label": "a", "monthly_usd": 0}, "monthly_usd"), ({"label": "a", "kinds": "oauth,nope"}, "kinds"),
    ({"label": "a", "accounts": "a", "kinds": "oauth"}, "not both"), ({"label": "a", "accounts": "bad name"}, "accounts"),
    ({"label": "a", "colour": "red"}, "unknown field"), ({"label": "a", "max_concurrent": True}, "max_concurrent"),
])
def test_bad_input_is_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        spec_from_fields(fields)


def test_good_input_becomes_limits_and_binding():
    s = spec_from_fields({"label": "ci job", "ttl": "12h", "kinds": ["api_key", "openai"], "models": "claude-*, gpt-4o",
                          "rpm": "60", "tpm": 1000, "daily_tokens": 5, "monthly_usd": 12.5, "max_concurrent": 2})
    assert s.ttl_s == 12 * 3600 and s.binding == TokenBinding((), ("api_key", "openai"), ("claude-*", "gpt-4o"))
    assert s.limits == TokenLimits(rpm=60, tpm=1000, daily_tokens=5, monthly_usd=12.5, max_concurrent=2)


# -- the decision -----------------------------------------------------------------------------------
@pytest.mark.parametrize("address, loopback", [("127.0.0.1", True), ("127.9.8.7", True), ("::1", True),
                                               ("::ffff:127.0.0.1", True), ("10.0.0.1", False),
                                               ("192.168.1.20", False), ("::ffff:10.1.1.1", False),
                                               ("2001:db8::1", False), ("fe80::1%eth0", False), ("junk", False)])
def test_loopback_peers(address, loopback):
    assert auth.is_loopback_peer(address) is loopback


def _check(valid: dict):
    def check(token, now):
        return valid.get(token, "unknown") if token_format.parse(token) else "malformed"
    return check


def test_the_decision_for_every_mode():
    record = TokenRecord("0123456789ab", "ci", 1.0)
    good = token_format.make_token(record.id, "a" * 43)
    check = _check({good: record})

    def d(given, loopback, mode, key=ADMIN_KEY):
        return auth.decide(given, loopback, mode, key, check, 2.0)

    for mode in ("remote", "always", "never"):
        for loopback in (True, False):
            assert d(ADMIN_KEY, loopback, mode) == auth.Decision(ADMIN, control=True)
            got = d(good, loopback, mode)
            assert got.client.name == "ci" and got.client.token == record and not got.control
            assert d("shunt_bad", loopback, mode).reason == "malformed"
            assert d(token_format.make_token("ba9876543210", "b" * 43), loopback, mode).reason == "unknown"
    assert d("", True, "remote") == auth.Decision(LOCAL, control=True)
    assert d("sk-placeholder", True, "remote") == auth.Decision(LOCAL, control=True)  # a local tool's own key
    assert d("", False, "remote").reason == "missing"
    assert d("sk-placeholder", False, "remote").reason == "not_a_token"
    assert d("", True, "always").reason == "missing"
    assert d("", True, "never") == auth.Decision(LOCAL, control=True)
    assert d("", False, "never") == auth.Decision(LOCAL, control=False)  # never: data paths, not the control API
    assert d(ADMIN_KEY, False, "always", key="").reason == "not_a_token"  # no admin key configured: nothing matches


# -- the handler --------------------------------------------------------------------------------------
@pytest.fixture
def gateway(upstream):
    """``gateway(require_token=..., admin_key=...)`` → a running Proxy whose config has that [gateway] table;
    tokens created before are in its index at once."""
    proxies = []

    def factory(accounts=(("a", "oauth"), ("k", "api_key")), server=None, **table):
        paths = write_home(os.environ["SHUNT_HOME"], upstream.url, list(accounts), server)
        if table:
            with open(paths.config, "a") as f:
                f.write("\n[gateway]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()))
        p = Proxy(make_server(load_config(paths), paths, port=0))
        proxies.append(p)
        return p

    yield factory
    for p in proxies:
        p.close()


def home_store() -> TokenStore:
    return store_in(os.environ["SHUNT_HOME"])


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def test_a_client_token_reaches_upstream_as_its_client(gateway, upstream, caplog):
    with home_store() as store:
        record, token = store.create(spec("laptop"), time.time())
    p = gateway(require_token="always")
    seen = []
    p.srv.relay.finish.listeners.append(seen.append)
    caplog.set_level(logging.DEBUG, logger="shunt")
    assert p.request(body=MSG, headers={"x-api-key": token})[0] == 200
    assert p.request(body=MSG, headers=bearer(token))[0] == 200
    assert p.request(path="/v1/chat/completions", body=CHAT, headers=bearer(token))[0] == 200
    assert len(upstream.received) == 3
    for r in upstream.received:
        assert token not in json.dumps(r.headers) and r.credential in ("tok-a", "tok-k")
    assert wait_until(lambda: len(seen) == 3)  # recorded just after the answer
    assert [(s["client"], s["token_id"]) for s in seen] == [("laptop", record.id)] * 3
    assert token_format.parse(token).secret not in caplog.text


def _error(body):
    doc = json.loads(body)
    return doc["error"]


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_every_refusal_is_a_401_in_the_clients_shape_and_nothing_goes_upstream(gateway, upstream, dialect, caplog):
    now = time.time()
    with home_store() as store:
        revoked, revoked_token = store.create(spec("old"), now)
        store.revoke(revoked.id, now)
        expired, expired_token = store.create(spec("short", ttl="1m"), now)
        store.conn.execute("UPDATE tokens SET expires_s = ? WHERE id = ?", (now - 1, expired.id))
        live, live_token = store.create(spec("live"), now)
    p = gateway(require_token="always")
    caplog.set_level(logging.INFO, logger="shunt")
    path, body = ("/v1/messages", MSG) if dialect == "anthropic" else ("/v1/chat/completions", CHAT)
    unknown = token_format.make_token(live.id, token_format.new_secret())
    cases = {"missing": {}, "unknown": bearer(unknown), "expired": {"x-api-key": expired_token},
             "revoked": bearer(revoked_token), "malformed": bearer("shunt_not-a-token"),
             "not a shunt client token": {"x-api-key": "sk-ant-something-else"}}
    words = {"missing": "no client token", "unknown": "unknown client token", "expired": "expired",
             "revoked": "revoked", "malformed": "malformed", "not a shunt client token": "neither"}
    for case, headers in cases.items():
        status, _, answer = p.request(path=path, body=body, headers=headers)
        assert status == 401, case
        doc = json.loads(answer)
        if dialect == "anthropic":
            assert doc["type"] == "error" and doc["error"]["type"] == "authentication_error"
        else:
            assert "type" not in doc and doc["error"]["type"] == "authentication_error"
            assert doc["error"]["code"] == "invalid_api_key"
        assert words[case] in doc["error"]["message"], case
        for sent in headers.values():
            assert sent.removeprefix("Bearer ") not in answer.decode()
    assert upstream.received == []
    for secret_bearing in (unknown, expired_token, revoked_token, live_token):
        assert token_format.parse(secret_bearing).secret not in caplog.text
    assert "sk-ant-something-else" not in caplog.text
    assert f"a revoked client token (id {revoked.id})" in caplog.text


def test_the_sdks_see_an_authentication_error(gateway, upstream):
    import anthropic
    import openai

    p = gateway(require_token="always")
    with anthropic.Anthropic(base_url=p.url, api_key="shunt_0123456789ab_" + "x" * 43, max_retries=0) as c:
        with pytest.raises(anthropic.AuthenticationError, match="unknown client token"):
            c.messages.create(**MSG)
    with openai.OpenAI(base_url=p.url + "/v1", api_key="sk-not-a-shunt-token", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError, match="neither a shunt client token"):
            c.chat.completions.create(**CHAT)
    assert upstream.received == []


def test_the_sdks_and_a_client_token_end_to_end(gateway, upstream):
    import anthropic
    import openai

    with home_store() as store:
        _, token = store.create(spec("sdk"), time.time())
    p = gateway(require_token="always")
    with anthropic.Anthropic(base_url=p.url, api_key=token, max_retries=0) as c:
        assert c.messages.create(**MSG).content[0].text
    with anthropic.Anthropic(base_url=p.url, auth_token=token, max_retries=0) as c:  # ANTHROPIC_AUTH_TOKEN: Bearer
        assert c.messages.create(**MSG).content[0].text
    with openai.OpenAI(base_url=p.url + "/v1", api_key=token, max_retries=0) as c:
        assert c.chat.completions.create(**CHAT).choices[0].message.content
    assert len(upstream.received) == 3


def test_a_client_token_never_opens_the_control_api(gateway, upstream):
    with home_store() as store:
        _, token = store.create(spec(), time.time())
    p = gateway(admin_key=ADMIN_KEY)  # remote: from loopback, a tokenless request may
    for method, path in (("GET", "/status"), ("POST", "/use"), ("POST", "/reset"), ("POST", "/reload"),
                         ("GET", "/history"), ("GET", "/recent"), ("GET", "/metrics"), ("GET", "/admin/tokens"),
                         ("POST", "/admin/tokens"), ("DELETE", "/admin/tokens/0123456789ab")):
        status, _, body = p.request(method=method, path=path, body={} if method == "POST" else None,
                                    headers={"x-api-key": token})
        assert status == 403 and _error(body)["type"] == "permission_error", path
    assert p.request(method="GET", path="/status")[0] == 200  # tokenless, from loopback
    assert p.request(method="GET", path="/status", headers={"x-api-key": ADMIN_KEY})[0] == 200
    assert upstream.received == []


def test_remote_peers_need_a_token_or_the_admin_key(gateway, upstream, monkeypatch):
    with home_store() as store:
        _, token = store.create(spec(), time.time())
    p = gateway(admin_key=ADMIN_KEY)
    monkeypatch.setattr(auth, "is_loopback_peer", lambda address: False)
    status, _, body = p.request(body=MSG)
    assert status == 401 and "no client token" in _error(body)["message"]
    status, _, body = p.request(path="/chat/completions", body=CHAT, headers={"x-api-key": "sk-anything"})
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert p.request(method="GET", path="/status")[0] == 401
    assert upstream.received == []
    assert p.request(body=MSG, headers={"x-api-key": token})[0] == 200
    assert p.request(body=MSG, headers={"x-api-key": ADMIN_KEY})[0] == 200
    assert p.request(method="GET", path="/status", headers={"x-api-key": ADMIN_KEY})[0] == 200
    assert len(upstream.received) == 2


def test_require_token_never_and_always(gateway, upstream, monkeypatch):
    p = gateway(require_token="never", admin_key=ADMIN_KEY)
    monkeypatch.setattr(auth, "is_loopback_peer", lambda address: False)
    assert p.request(body=MSG)[0] == 200  # never: no token needed, from anywhere
    status, _, body = p.request(method="GET", path="/status")
    assert status == 403 and _error(body)["type"] == "permission_error"  # but the control API is not open
    monkeypatch.setattr(auth, "is_loopback_peer", lambda address: True)
    assert p.request(method="GET", path="/status")[0] == 200
    q = gateway(require_token="always")
    assert q.request(body=MSG)[0] == 401  # always: loopback too
    assert q.request(method="GET", path="/health")[0] == 200
    assert len(upstream.received) == 1


def test_remote_is_the_default_and_loopback_needs_nothing(gateway, upstream):
    p = gateway()
    seen = []
    p.srv.relay.finish.listeners.append(seen.append)
    assert p.srv.config.gateway.require_token == "remote"
    assert p.request(body=MSG, headers={"x-api-key": "placeholder"})[0] == 200
    assert wait_until(lambda: seen)  # recorded just after the answer
    assert seen[0]["client"] == "local" and seen[0]["token_id"] is None


def test_the_old_remote_key_is_the_admin_key_and_still_guards_loopback(gateway, upstream, caplog, monkeypatch):
    import shunt_lib.config as config_module

    monkeypatch.setattr(config_module, "_warned_remote_key", False)
    caplog.set_level(logging.WARNING, logger="shunt")
    p = gateway(server={"remote_key": ADMIN_KEY})
    assert p.srv.config.gateway.admin_key == ADMIN_KEY and p.srv.config.gateway.require_token == "always"
    assert sum("remote_key is deprecated" in r.getMessage() for r in caplog.records) == 1
    load_config(p.srv.paths)
    assert sum("remote_key is deprecated" in r.getMessage() for r in caplog.records) == 1  # once
    assert ADMIN_KEY not in caplog.text
    assert p.request(body=MSG)[0] == 401
    assert p.request(body=MSG, headers={"x-api-key": ADMIN_KEY})[0] == 200


def test_the_admin_key_lets_a_request_name_any_host(gateway, upstream, monkeypatch):
    p = gateway(admin_key=ADMIN_KEY)
    with home_store() as store:
        _, token = store.create(spec(), time.time())
    p.srv.client_tokens.refresh()
    assert p.request(body=MSG, headers={"host": "elsewhere.example", "x-api-key": ADMIN_KEY})[0] == 200
    assert p.request(body=MSG, headers={"host": "elsewhere.example", "x-api-key": token})[0] == 403  # a token is not the key


# -- /admin/tokens --------------------------------------------------------------------------------------
def test_the_control_api_creates_lists_rotates_and_revokes(gateway, upstream):
    p = gateway(require_token="always", admin_key=ADMIN_KEY)
    key = {"x-api-key": ADMIN_KEY}
    status, _, body = p.request(path="/admin/tokens", body={"label": "api", "ttl": "1h", "rpm": 3,
                                                            "models": ["claude-*"]}, headers=key)
    assert status == 200
    created = json.loads(body)
    token, tid = created["token"], created["id"]
    assert token_format.parse(token).id == tid and created["limits"] == {"rpm": 3} and created["state"] == "live"
    assert created["binding"] == {"models": ["claude-*"]} and created["expires_s"] > created["created_s"]
    assert p.request(body=MSG, headers=bearer(token))[0] == 200  # at once: the server reloaded its index

    status, _, body = p.request(method="GET", path="/admin/tokens", headers=key)
    listed = json.loads(body)["tokens"]
    assert [t["id"] for t in listed] == [tid] and "token" not in listed[0] and listed[0]["last_used_s"] is not None
    assert token_format.parse(token).secret not in body.decode()

    def usage():  # charged just after the answer is relayed
        return json.loads(p.request(method="GET", path="/admin/tokens", headers=key)[2])["tokens"][0]["usage"]
    assert wait_until(lambda: usage() is not None and usage()["today"]["requests"] == 1)
    assert usage()["today"]["tokens"] == 15 and usage()["last_minute"]["requests"] == 1 and usage()["inflight"] == 0

    status, _, body = p.request(path=f"/admin/tokens/{tid}/rotate", body={}, headers=key)
    rotated = json.loads(body)["token"]
    assert status == 200 and rotated != token and token_format.parse(rotated).id == tid
    status, _, body = p.request(body=MSG, headers=bearer(token))
    assert status == 401 and "unknown" in _error(body)["message"]
    assert p.request(body=MSG, headers=bearer(rotated))[0] == 200

    status, _, body = p.request(method="DELETE", path=f"/admin/tokens/{tid}", headers=key)
    assert status == 200 and json.loads(body)["revoked"]["state"] == "revoked"
    status, _, body = p.request(body=MSG, headers=bearer(rotated))
    assert status == 401 and "revoked" in _error(body)["message"]

    assert p.request(method="DELETE", path=f"/admin/tokens/{tid}", headers=key)[0] == 400  # already revoked
    assert p.request(method="DELETE", path="/admin/tokens/0123456789ab", headers=key)[0] == 404
    assert p.request(method="DELETE", path="/admin/tokens/nope", headers=key)[0] == 404
    assert p.request(method="PUT", path="/admin/tokens", headers=key)[0] == 405
    status, _, body = p.request(path="/admin/tokens", body={"label": "x", "rpm": 0}, headers=key)
    assert status == 400 and "rpm" in _error(body)["message"]
    status, _, body = p.request(path="/admin/tokens", body={"label": "x"}, headers=dict(key, **{"content-type": "text/plain"}))
    assert status == 415
    assert len(upstream.received) == 2


# -- the command line -----------------------------------------------------------------------------------
def shunt(*args, home, check=True):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "shunt.py"), *args], capture_output=True, text=True,
                          env=dict(os.environ, SHUNT_HOME=home), timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_the_token_commands(tmp_path):
    home = str(tmp_path / "h")
    made = shunt("token", "create", "--label", "laptop", "--ttl", "30d", "--kinds", "api_key", "--models",
                 "claude-*", "--rpm", "60", "--tpm", "1000", "--daily-tokens", "50000", "--monthly-usd", "2.5",
                 "--max-concurrent", "2", home=home)
    token = made.stdout.strip()
    assert made.stdout == token + "\n" and token_format.parse(token) is not None  # nothing else on stdout
    tid = token_format.parse(token).id
    assert tid in made.stderr and "only this once" in made.stderr
    assert stat.S_IMODE(os.stat(Paths(home).tokens_db).st_mode) == 0o600

    listed = json.loads(shunt("token", "list", "--json", home=home).stdout)
    assert listed[0]["id"] == tid and listed[0]["limits"] == {"rpm": 60, "tpm": 1000, "daily_tokens": 50000,
                                                               "monthly_usd": 2.5, "max_concurrent": 2}
    assert listed[0]["binding"] == {"kinds": ["api_key"], "models": ["claude-*"]} and listed[0]["usage"] == {}
    table = shunt("token", "list", home=home).stdout
    assert "laptop" in table and tid in table and "live" in table and token_format.parse(token).secret not in table

    rotated = shunt("token", "rotate", tid, home=home).stdout.strip()
    assert token_format.parse(rotated).id == tid and rotated != token
    shunt("token", "revoke", tid, home=home)
    assert "revoked" in shunt("token", "list", home=home).stdout
    for args, message in ((("token", "revoke", tid), "already revoked"), (("token", "revoke", "0123456789ab"), "no client token"),
                          (("token", "revoke", "xyz"), "not a token id"), (("token", "create", "--label", ""), "label"),
                          (("token", "create", "--label", "a", "--ttl", "soon"), "ttl"),
                          (("token", "create", "--label", "a", "--rpm", "0"), "rpm"),
                          (("token", "create", "--label", "a", "--monthly-usd", "x"), "monthly"),
                          (("token", "create", "--label", "a", "--kinds", "oauth", "--accounts", "a"), "not allowed")):
        proc = shunt(*args, home=home, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.stdout == ""


def test_an_expired_token_is_listed_as_expired(tmp_path):
    home = str(tmp_path / "h")
    tid = token_format.parse(shunt("token", "create", "--label", "short", "--ttl", "1m", home=home).stdout.strip()).id
    with sqlite3.connect(Paths(home).tokens_db) as conn:  # a minute passes
        conn.execute("UPDATE tokens SET expires_s = ? WHERE id = ?", (time.time() - 1, tid))
    assert json.loads(shunt("token", "list", "--json", home=home).stdout)[0]["state"] == "expired"
    shunt("token", "create", "--label", "short", home=home)  # its label is free again


def test_a_running_serve_sees_the_cli_within_a_second(tmp_path, upstream):
    home = str(tmp_path / "h")
    write_home(home, upstream.url, [("a", "oauth")], {"usage_poll_s": 0})
    with open(Paths(home).config, "a") as f:
        f.write('\n[gateway]\nrequire_token = "always"\n')
    serve = ServeProcess(dict(os.environ, SHUNT_HOME=home))
    try:
        proxy = Proxy.__new__(Proxy)
        proxy.port = serve.port

        def status(token):
            return proxy.request(body=MSG, headers=bearer(token))[0]

        token = shunt("token", "create", "--label", "ci", home=home).stdout.strip()
        created = time.monotonic()
        assert wait_until(lambda: status(token) == 200, timeout=1.0), "a new token was not accepted within 1 s"
        assert time.monotonic() - created < 1.0
        shunt("token", "revoke", token_format.parse(token).id, home=home)
        revoked = time.monotonic()
        assert wait_until(lambda: status(token) == 401, timeout=1.0), "the revocation was not seen within 1 s"
        assert time.monotonic() - revoked < 1.0
    finally:
        assert serve.stop(2) == 0
    assert token_format.parse(token).secret not in "".join(serve.log)
    with TokenStore(Paths(home).tokens_db) as store:
        assert store.list()[0].last_used_s is not None  # written at stop
    (listed,) = json.loads(shunt("token", "list", "--json", home=home).stdout)  # what serve charged, from tokens.db
    served = listed["usage"]["requests_today"]  # the requests answered 200 before the revocation was seen
    assert served >= 1 and listed["usage"]["tokens_today"] == 15 * served


def test_a_per_token_override_must_name_a_token_that_exists(gateway, upstream):
    p = gateway()
    with home_store() as store:
        record, _ = store.create(spec("ci"), time.time())
    p.srv.client_tokens.poll()
    status, _, body = p.request(path="/overrides", body={"token": "0123456789ab", "model": "claude-x"})
    assert status == 400 and "no client token" in _error(body)["message"]
    assert p.request(path="/overrides", body={"token": record.id, "model": "claude-x"})[0] == 200


def test_fifty_racing_requests_of_one_token_get_exactly_its_rpm_and_its_concurrency(gateway, upstream):
    p = gateway(require_token="always")
    with home_store() as store:
        _, rpm_token = store.create(spec("burst", rpm=10), time.time())
        _, conc_token = store.create(spec("wide", max_concurrent=3), time.time())
    p.srv.client_tokens.poll()
    start = threading.Barrier(50)

    def race(token):
        statuses = []

        def one():
            start.wait(10)
            statuses.append(p.request(body=MSG, headers=bearer(token))[0])
        threads = [threading.Thread(target=one) for _ in range(50)]
        for t in threads:
            t.start()
        return threads, statuses

    threads, statuses = race(rpm_token)
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [200] * 10 + [429] * 40
    assert len(upstream.received) == 10  # refusals send nothing upstream

    release = threading.Event()
    upstream.script("tok-a", *[Reply(body=message_json(), release=release) for _ in range(3)])
    threads, statuses = race(conc_token)
    assert wait_until(lambda: len(statuses) == 47)  # three hold their places upstream; the rest are refused
    release.set()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [200] * 3 + [429] * 47
