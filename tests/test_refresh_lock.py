"""Token refreshes lock per account (threads and processes), and a refresh that timed out is 'maybe rotated'."""

import fcntl
import os
import threading

import requests
import responses

from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.oauth import TokenManager
from shunt_lib.refresh_lock import AccountLocks, lock_file_name

URL = "https://token.example/v1/oauth/token"
NOW = 1_000_000.0


def expired(name):
    return Credential(kind="oauth", access_token=f"at-{name}", refresh_token=f"rt-{name}",
                      expires_at_ms=int(NOW * 1000) - 1)


def store_with(tmp_path, *names):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    for n in names:
        store.put(n, expired(n))
    return store


def test_three_expired_accounts_refresh_in_parallel_against_a_slow_token_endpoint(tmp_path, upstream):
    store = store_with(tmp_path, "a", "b", "c")
    arrived, all_in, overlapped = [], threading.Event(), []
    guard = threading.Lock()

    def slow_endpoint(req):  # holds every call until all three are inside it at once
        with guard:
            arrived.append(req["refresh_token"])
            if len(arrived) == 3:
                all_in.set()
        overlapped.append(all_in.wait(10))
        n = req["refresh_token"][3:]
        return 200, {"access_token": f"new-at-{n}", "refresh_token": f"new-rt-{n}", "expires_in": 3600}

    upstream.token_handler = slow_endpoint
    tm = TokenManager(store, store.load(), token_url=upstream.url + "/v1/oauth/token", clock=lambda: NOW)
    results = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, tm.refresh(n, failed_access_token=f"at-{n}")))
               for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tm.close()
    assert sorted(arrived) == ["rt-a", "rt-b", "rt-c"] and overlapped == [True, True, True]
    assert {n: r.credential.access_token for n, r in results.items()} == {n: f"new-at-{n}" for n in "abc"}
    assert {n: c.refresh_token for n, c in store.load().items()} == {n: f"new-rt-{n}" for n in "abc"}


@responses.activate
def test_another_process_holding_one_accounts_lock_does_not_hold_up_the_others(tmp_path):
    store = store_with(tmp_path, "a", "b")
    responses.post(URL, json={"access_token": "new-at", "refresh_token": "new-rt", "expires_in": 3600})
    tm = TokenManager(store, store.load(), token_url=URL, clock=lambda: NOW)
    other = os.open(str(tmp_path / lock_file_name("a")), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)  # a separate open file description: conflicts like another process
    a_done = threading.Event()
    worker = threading.Thread(target=lambda: (tm.refresh("a", failed_access_token="at-a"), a_done.set()))
    try:
        worker.start()
        assert tm.refresh("b", failed_access_token="at-b").status == "ok"  # b is not behind a
        assert not a_done.is_set()  # a waits for the other holder
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
        worker.join()
    assert a_done.is_set() and tm.get("a").access_token == "new-at"


def test_the_lock_file_is_private_and_a_symlink_in_its_place_is_refused(tmp_path):
    locks = AccountLocks(str(tmp_path))
    with locks.hold("a"):
        pass
    assert oct(os.stat(locks.path("a")).st_mode & 0o777) == "0o600"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, locks.path("b"))
    store = store_with(tmp_path, "b")
    tm = TokenManager(store, store.load(), token_url=URL, clock=lambda: NOW)
    r = tm.refresh("b", failed_access_token="at-b")
    assert r.status == "error" and "refresh lock" in r.message
    assert victim.read_text() == "keep" and os.path.islink(locks.path("b"))
    assert lock_file_name("../x") != "refresh-../x.lock" and "/" not in lock_file_name("../x")


@responses.activate
def test_a_timed_out_refresh_is_maybe_rotated_and_a_refusal_after_it_says_so(tmp_path):
    store = store_with(tmp_path, "a")
    now = [NOW]
    cooled = []
    tm = TokenManager(store, store.load(), token_url=URL, clock=lambda: now[0],
                      cool=lambda *a: cooled.append(a))
    responses.post(URL, body=requests.ReadTimeout("read timed out"))
    r = tm.refresh("a", failed_access_token="at-a")
    assert r.status == "error" and r.maybe_rotated and "did not answer" in r.message
    assert cooled == [("a", NOW + 30, "token refresh failed: token endpoint did not answer within 20 s")]
    now[0] += 31
    responses.replace(responses.POST, URL, status=400, json={"error": "invalid_grant"})
    r = tm.refresh("a", failed_access_token="at-a")
    assert r.status == "invalid_grant" and "timed out" in r.message and "lost" in r.message
    assert len(responses.calls) == 2


@responses.activate
def test_after_a_timeout_a_pair_rotated_by_another_process_is_read_back_not_refreshed_again(tmp_path):
    store = store_with(tmp_path, "a")
    tm = TokenManager(store, store.load(), token_url=URL, clock=lambda: NOW)
    responses.post(URL, body=requests.ReadTimeout("read timed out"))
    assert tm.refresh("a", failed_access_token="at-a").maybe_rotated
    store.put("a", Credential(kind="oauth", access_token="other-at", refresh_token="other-rt",
                              expires_at_ms=int(NOW * 1000) + 3_600_000))  # another process got the new pair
    r = tm.refresh("a", failed_access_token="at-a", force=True)
    assert r.status == "ok" and r.credential.access_token == "other-at" and len(responses.calls) == 1
