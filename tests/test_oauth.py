import json
import threading

import responses

from shunt_lib.background import TokenRefresher
from shunt_lib.config import AccountConfig
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.oauth import CLIENT_ID, TokenManager
from shunt_lib.state import Pool

URL = "https://token.example/v1/oauth/token"


def manager(tmp_path, now=1000.0):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    cred = Credential(kind="oauth", access_token="old-at", refresh_token="old-rt", expires_at_ms=int(now * 1000) + 60_000)
    store.put("a", cred)
    return TokenManager(store, {"a": cred}, token_url=URL, clock=lambda: now), store


@responses.activate
def test_refresh_sends_refresh_grant_and_saves_rotated_pair_first(tmp_path):
    tm, store = manager(tmp_path)
    responses.post(URL, json={"access_token": "new-at", "refresh_token": "new-rt", "expires_in": 28800})
    r = tm.refresh("a", failed_access_token="old-at")
    assert r.status == "ok" and r.credential.access_token == "new-at"
    sent = json.loads(responses.calls[0].request.body)
    assert sent == {"grant_type": "refresh_token", "refresh_token": "old-rt", "client_id": CLIENT_ID}
    saved = store.load()["a"]
    assert (saved.access_token, saved.refresh_token, saved.expires_at_ms) == ("new-at", "new-rt", (1000 + 28800) * 1000)
    assert tm.get("a").access_token == "new-at"


@responses.activate
def test_missing_refresh_token_in_answer_keeps_the_old_one(tmp_path):
    tm, store = manager(tmp_path)
    responses.post(URL, json={"access_token": "new-at", "expires_in": 100})
    assert tm.refresh("a").credential.refresh_token == "old-rt"


@responses.activate
def test_invalid_grant_and_transient_errors(tmp_path):
    tm, store = manager(tmp_path)
    responses.post(URL, status=400, json={"error": "invalid_grant", "error_description": "refresh token revoked"})
    assert tm.refresh("a").status == "invalid_grant"
    assert store.load()["a"].access_token == "old-at"  # nothing changed
    responses.replace(responses.POST, URL, status=503, body="busy")
    assert tm.refresh("a").status == "error"


@responses.activate
def test_concurrent_refreshes_make_one_call(tmp_path):
    tm, _ = manager(tmp_path)
    responses.post(URL, json={"access_token": "new-at", "refresh_token": "new-rt", "expires_in": 100})
    results = []
    barrier = threading.Barrier(20)

    def worker():
        barrier.wait()
        results.append(tm.refresh("a", failed_access_token="old-at"))

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(responses.calls) == 1
    assert all(r.status == "ok" and r.credential.access_token == "new-at" for r in results)


@responses.activate
def test_the_refresher_refreshes_only_tokens_inside_their_margin(tmp_path):
    now = 1000.0
    store = CredentialStore(str(tmp_path / "credentials.json"))
    creds = {"a": Credential(kind="oauth", access_token="at-a", refresh_token="rt-a", expires_at_ms=int((now + 60) * 1000)),
             "b": Credential(kind="oauth", access_token="at-b", refresh_token="rt-b", expires_at_ms=int((now + 3600) * 1000))}
    for name, cred in creds.items():
        store.put(name, cred)
    tm = TokenManager(store, creds, token_url=URL, clock=lambda: now)
    pool = Pool([AccountConfig("a"), AccountConfig("b")], strategy="fill-first", session_ttl_s=60)
    responses.post(URL, json={"access_token": "new-at", "refresh_token": "new-rt", "expires_in": 28800})
    next_due = TokenRefresher(pool, tm, margin_s=300, jitter_s=0, clock=lambda: now).tick()
    assert [json.loads(c.request.body)["refresh_token"] for c in responses.calls] == ["rt-a"]
    assert tm.get("a").access_token == "new-at" and tm.get("b").access_token == "at-b"
    assert next_due == now + 3600 - 300  # b falls due 5 minutes before it expires


@responses.activate
def test_an_absurd_expires_in_gets_the_default_hour_instead_of_an_overflow(tmp_path):
    tm, store = manager(tmp_path)
    responses.post(URL, body=b'{"access_token": "new-at", "refresh_token": "new-rt", "expires_in": 1e999}',
                   content_type="application/json")
    r = tm.refresh("a", failed_access_token="old-at")
    assert r.status == "ok" and r.credential.expires_at_ms == (1000 + 3600) * 1000
