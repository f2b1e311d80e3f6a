"""PKCE login pieces, token-endpoint backoff and the usage/profile parsers (no sockets: ``responses``)."""

import base64
import hashlib
import urllib.parse

import pytest
import responses

from shunt_lib.account_info import parse_profile, parse_usage
from shunt_lib.background import TokenRefresher
from shunt_lib.config import AccountConfig, ServerConfig
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.errors import ConfigError
from shunt_lib.login import exchange_code, keychain_service, parse_paste, pkce_start
from shunt_lib.oauth import TokenManager
from shunt_lib.state import Pool

SERVER = ServerConfig(oauth_token_url="https://token.example/v1/oauth/token")


def test_pkce_url_has_every_required_parameter():
    login = pkce_start(SERVER)
    url = urllib.parse.urlsplit(login.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://claude.ai/oauth/authorize"
    q = dict(urllib.parse.parse_qsl(url.query))
    assert q["client_id"] == "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    assert q["response_type"] == "code" and q["code"] == "true"
    assert q["redirect_uri"] == "https://platform.claude.com/oauth/code/callback"
    assert "user:inference" in q["scope"].split() and "user:profile" in q["scope"].split()
    assert q["code_challenge_method"] == "S256"
    expected = base64.urlsafe_b64encode(hashlib.sha256(login.verifier.encode()).digest()).rstrip(b"=").decode()
    assert q["code_challenge"] == expected and len(login.verifier) == 43
    assert q["state"] == login.state and q["state"] != login.verifier  # the verifier never leaves the machine
    assert login.verifier not in login.url
    assert pkce_start(SERVER).state != login.state


def test_paste_back_checks_the_state():
    assert parse_paste("the-code#st8", "st8") == "the-code"
    assert parse_paste("  the-code#st8\n", "st8") == "the-code"
    assert parse_paste("https://platform.claude.com/oauth/code/callback?code=c1&state=st8", "st8") == "c1"
    for bad in ("the-code#other", "the-code", "#st8"):
        with pytest.raises(ConfigError):
            parse_paste(bad, "st8")


@responses.activate
def test_code_exchange_is_json_with_verifier_and_state():
    login = pkce_start(SERVER)
    call = responses.post(SERVER.oauth_token_url, json={"access_token": "at", "refresh_token": "rt", "expires_in": 28800,
                                                        "account": {"email_address": "me@example.com"}})
    cred = exchange_code(SERVER, login, "the-code")
    import json

    sent = json.loads(call.calls[0].request.body)
    assert sent == {"grant_type": "authorization_code", "code": "the-code", "redirect_uri": login.redirect_uri,
                    "client_id": SERVER.oauth_client_id, "code_verifier": login.verifier, "state": login.state}
    assert (cred.access_token, cred.refresh_token, cred.email) == ("at", "rt", "me@example.com")
    responses.replace(responses.POST, SERVER.oauth_token_url, status=400, json={"error": "invalid_grant"})
    with pytest.raises(ConfigError, match="invalid_grant"):
        exchange_code(SERVER, login, "used-code")


def test_keychain_service_name_for_a_config_dir():
    assert keychain_service(None) == "Claude Code-credentials"
    digest = hashlib.sha256(b"/tmp/logins/work").hexdigest()[:8]
    assert keychain_service("/tmp/logins/work") == f"Claude Code-credentials-{digest}"


def make_tm(tmp_path, now):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    cred = Credential(kind="oauth", access_token="at", refresh_token="rt", expires_at_ms=int(now[0] * 1000) + 1000)
    store.put("a", cred)
    return TokenManager(store, {"a": cred}, token_url=SERVER.oauth_token_url, clock=lambda: now[0])


@responses.activate
def test_transient_failures_back_off_exponentially_without_calls_in_between(tmp_path):
    now = [1000.0]
    tm = make_tm(tmp_path, now)
    responses.post(SERVER.oauth_token_url, status=503, body="busy")
    steps = []
    for _ in range(7):
        assert tm.refresh("a").status == "error"
        steps.append(tm.blocked_until("a") - now[0])
        assert tm.refresh("a").status == "error"  # inside the backoff: no network call
        now[0] = tm.blocked_until("a")
    assert steps == [30, 60, 120, 240, 480, 600, 600]
    assert len(responses.calls) == 7
    responses.replace(responses.POST, SERVER.oauth_token_url, json={"access_token": "new", "expires_in": 3600})
    assert tm.refresh("a").status == "ok" and tm.blocked_until("a") == 0.0


@responses.activate
def test_token_endpoint_429_honours_retry_after(tmp_path):
    now = [1000.0]
    tm = make_tm(tmp_path, now)
    responses.post(SERVER.oauth_token_url, status=429, headers={"retry-after": "90"}, json={"error": "rate_limited"})
    assert tm.refresh("a").status == "error"
    assert tm.blocked_until("a") == 1090.0


@responses.activate
def test_copy_only_credentials_are_never_refreshed(tmp_path):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    cred = Credential(kind="oauth", access_token="at", refresh_token="rt", expires_at_ms=1, copy_only=True)
    store.put("a", cred)
    tm = TokenManager(store, {"a": cred}, token_url=SERVER.oauth_token_url)
    assert tm.refresh("a", failed_access_token="at").status == "copy_only"
    refresher = TokenRefresher(Pool([AccountConfig("a")], strategy="fill-first", session_ttl_s=60), tm)
    assert refresher.tick() is None  # nothing is due, ever
    assert len(responses.calls) == 0


def test_usage_and_profile_parsing():
    usage = {"five_hour": {"utilization": 53.0, "resets_at": "2026-07-08T00:49:59.940321+00:00"},
             "seven_day": {"utilization": 8.0, "resets_at": "2026-07-13T06:00:00+00:00"},
             "seven_day_opus": None, "iguana_necktie": None, "extra_usage": {"utilization": 69.24}}
    w = parse_usage(usage, now_s=1783400000)
    assert w["5h"].utilization == 0.53 and w["7d"].utilization == 0.08
    assert int(w["5h"].reset_at_s) == 1783471799 and set(w) == {"5h", "7d"}
    assert parse_profile({"account": {"email": "me@x.com", "has_claude_max": True},
                          "organization": {"rate_limit_tier": "default_claude_max_20x"}}) == ("me@x.com", "max 20x")
    assert parse_profile({"account": {"email": "p@x.com"}, "organization": {"organization_type": "claude_pro"}}) == ("p@x.com", "pro")
    assert parse_profile({}) == ("", "")
