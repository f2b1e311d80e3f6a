"""Integration: accounts that stay logged in: refresh, rotation, recovery, usage polls, login and logout."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from shunt_lib.cli import main
from shunt_lib.config import Paths, load_config
from shunt_lib.credentials import CredentialStore
from shunt_lib.server import start_background
from tests.fakes.upstream import Reply, error_json
from tests.support import MSG, ServeProcess, open_stream, read_until, write_home

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rotating_token_endpoint(upstream, delay_s=0.0):
    """Each call hands out tok-new<N>/ref-new<N>; returns an Event set at the first call."""
    called = threading.Event()

    def handler(req):
        called.set()
        time.sleep(delay_s)
        n = upstream.token_calls
        return 200, {"access_token": f"tok-new{n}", "refresh_token": f"ref-new{n}", "expires_in": 28800}

    upstream.token_handler = handler
    return called


def test_proactive_refresh_happens_before_expiry(make_proxy, upstream, events):
    called = rotating_token_endpoint(upstream)
    expires_at_ms = int((time.time() + 120) * 1000)  # inside the 5-minute margin
    p = make_proxy([("a", "oauth")], expires_at_ms=expires_at_ms)
    start_background(p.srv, recovery=False, usage=False, reload=False)
    assert called.wait(10)
    assert events.wait_for("token_refreshed")  # logged once the rotated pair is on disk
    assert p.srv.tokens.get("a").access_token == "tok-new1"
    saved = CredentialStore(p.srv.paths.credentials).load()["a"]
    assert saved.access_token == "tok-new1" and saved.refresh_token == "ref-new1"
    assert saved.expires_at_ms > expires_at_ms and time.time() * 1000 < expires_at_ms  # before expiry
    sent = [r for r in upstream.received if r.path.startswith("/v1/oauth/token")][0]
    assert json.loads(sent.body)["refresh_token"] == "ref-a"
    assert p.request(body=MSG)[0] == 200
    assert upstream.requests_for()[-1].credential == "tok-new1"
    assert upstream.token_calls == 1


def test_two_processes_racing_a_refresh_make_one_call(tmp_path, upstream):
    rotating_token_endpoint(upstream, delay_s=0.5)
    home = str(tmp_path / "h")
    write_home(home, upstream.url, [("a", "oauth")], expires_at_ms=int((time.time() + 60) * 1000))
    go = str(tmp_path / "go")
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.fakes.refresh_worker", home, "a",
                               upstream.url + "/v1/oauth/token", "race", go], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"  # both are waiting at the start line
    open(go, "w").close()
    outs = [p.communicate(timeout=30)[0].split() for p in procs]
    assert upstream.token_calls == 1
    assert outs == [["ok", "tok-new1"], ["ok", "tok-new1"]]


def test_kill_9_right_after_rotation_keeps_the_new_pair_and_the_proxy_works(tmp_path, upstream):
    rotating_token_endpoint(upstream)
    home = str(tmp_path / "h")
    paths = write_home(home, upstream.url, [("a", "oauth")], {"usage_poll_s": 0})
    env = dict(os.environ, PYTHONPATH=ROOT, SHUNT_HOME=home)
    r = subprocess.run([sys.executable, "-m", "tests.fakes.refresh_worker", home, "a", upstream.url + "/v1/oauth/token",
                        "kill-after-put"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == -signal.SIGKILL
    saved = CredentialStore(paths.credentials).load()["a"]
    assert (saved.access_token, saved.refresh_token) == ("tok-new1", "ref-new1")
    serve = ServeProcess(env)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{serve.port}/v1/messages", data=json.dumps(MSG).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            assert resp.status == 200
        assert upstream.requests_for()[-1].credential == "tok-new1"
    finally:
        assert serve.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("step, rotated", [("before-fsync", False), ("before-replace", False), ("after-replace", True)])
def test_a_kill_at_any_step_leaves_a_valid_credentials_file(tmp_path, upstream, step, rotated):
    rotating_token_endpoint(upstream)
    home = str(tmp_path / "h")
    paths = write_home(home, upstream.url, [("a", "oauth"), ("b", "oauth")])
    r = subprocess.run([sys.executable, "-m", "tests.fakes.refresh_worker", home, "a", upstream.url + "/v1/oauth/token",
                        f"kill-{step}"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, timeout=30)
    assert r.returncode == -signal.SIGKILL
    creds = CredentialStore(paths.credentials).load()  # parses: never torn or empty
    assert creds["b"].access_token == "tok-b"
    assert creds["a"].access_token == ("tok-new1" if rotated else "tok-a")
    assert oct(os.stat(paths.credentials).st_mode & 0o777) == "0o600"


def test_invalid_grant_then_recovery_when_the_endpoint_is_fixed(make_proxy, upstream, events):
    upstream.token_handler = lambda req: (400, {"error": "invalid_grant", "error_description": "refresh token revoked"})
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first", recovery_interval_s=1)
    upstream.script("tok-a", Reply(status=401, body=error_json("authentication_error", "OAuth token revoked")))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    a = p.srv.status()["accounts"][0]
    assert a["status"] == "reauth_required" and "shunt add-account a" in a["action"]
    assert any("shunt add-account a" in r.getMessage() for r in events.records)  # the fix is in the log
    rotating_token_endpoint(upstream)  # the endpoint works again
    start_background(p.srv, refresh=False, usage=False, reload=False)
    assert events.wait_for("reauth_recovered", timeout=10)
    a = p.srv.status()["accounts"][0]
    assert a["status"] == "available" and a["action"] is None
    assert p.request(body=MSG, headers={"x-claude-code-session-id": "new"})[1]["x-shunt-account"] == "a"


def test_network_errors_from_the_token_endpoint_cool_the_account_until_the_next_try(make_proxy, upstream):
    upstream.token_handler = lambda req: (503, {"error": "temporarily_unavailable"})
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first")
    upstream.script("tok-a", Reply(status=401, body=error_json("authentication_error", "expired")))
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b"
    a = p.srv.status()["accounts"][0]
    blocked = p.srv.tokens.blocked_until("a")
    assert blocked > time.time() + 20
    # Not reauth_required: cooling until the next refresh try, saying why.
    assert a["status"] == "cooling" and a["cooldown_until_s"] == int(blocked) and a["action"] is None
    assert a["cooldown_reason"] == "token refresh failed: token endpoint answered 503 temporarily_unavailable"
    # So the next requests go straight to b instead of failing on a first.
    assert p.request(body=MSG)[1]["x-shunt-account"] == "b"
    assert [r.credential for r in upstream.requests_for()] == ["tok-a", "tok-b", "tok-b"]
    assert upstream.token_calls == 1


def test_usage_and_profile_give_routing_data_before_the_first_request(make_proxy, upstream):
    from shunt_lib.background import UsagePoller

    reset = int(time.time()) + 3600
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(reset))
    upstream.usage["tok-a"] = {"five_hour": {"utilization": 53.0, "resets_at": iso},
                               "seven_day": {"utilization": 8.0, "resets_at": iso.replace("+00:00", "Z")}, "tangelo": None}
    upstream.profile["tok-a"] = {"account": {"email": "a@example.com", "has_claude_max": True}}
    p = make_proxy([("a", "oauth"), ("b", "oauth")])  # b's usage call fails (404): still routable
    poller = UsagePoller(p.pool, p.srv.tokens, upstream.url, p.srv.http, interval_s=3600)
    poller.start()
    p.srv.background.append(poller)
    assert poller.polled.wait(10)
    a, b = p.srv.status()["accounts"]
    assert a["utilization_5h"] == 0.53 and a["utilization_7d"] == 0.08 and a["reset_5h_at_s"] == reset
    assert a["email"] == "a@example.com" and a["plan"] == "max"
    assert b["status"] == "available" and b["utilization_5h"] is None
    usage_req = [r for r in upstream.received if r.path == "/api/oauth/usage" and r.credential == "tok-a"][0]
    assert usage_req.header("anthropic-beta") == "oauth-2025-04-20"
    # Routing already prefers b, which has more headroom.
    assert p.request(body=MSG)[1]["x-shunt-account"] == "b"
    assert upstream.requests_for() and all(r.path.startswith("/v1/messages") for r in upstream.requests_for())


def test_add_account_runs_claude_login_in_its_own_dir_and_imports_it(tmp_path, upstream, monkeypatch, capsys):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "claude"
    script.write_text("""#!/bin/sh
[ "$1 $2" = "auth login" ] || exit 3
mkdir -p "$CLAUDE_CONFIG_DIR"
cat > "$CLAUDE_CONFIG_DIR/.credentials.json" <<EOF
{"claudeAiOauth": {"accessToken": "tok-work", "refreshToken": "ref-work", "expiresAt": 4102444800000, "subscriptionType": "max"}}
EOF
echo '{"oauthAccount": {"emailAddress": "work@example.com"}}' > "$CLAUDE_CONFIG_DIR/.claude.json"
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, [])
    assert main(["add-account", "work"]) == 0
    out = capsys.readouterr().out
    assert "work@example.com" in out and "plan max" in out
    cred = CredentialStore(paths.credentials).load()["work"]
    assert (cred.access_token, cred.refresh_token, cred.email) == ("tok-work", "ref-work", "work@example.com")
    assert os.path.exists(os.path.join(paths.login_dir("work"), ".credentials.json"))
    assert [a.name for a in load_config(paths).accounts] == ["work"]
    # remove deletes config, credentials, state and the login directory.
    with open(paths.state, "w") as f:
        json.dump({"accounts": {"work": {"requests": 3}}, "sessions": {"s:x": {"account": "work", "expires_at_s": 9e9}},
                   "pinned_account": "work"}, f)
    assert main(["remove", "work"]) == 0
    assert not os.path.exists(paths.login_dir("work"))
    state = json.load(open(paths.state))
    assert state["accounts"] == {} and state["sessions"] == {} and state["pinned_account"] is None
    assert load_config(paths).accounts == () and CredentialStore(paths.credentials).load() == {}


def test_add_account_without_claude_points_at_paste(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["add-account", "work"]) == 2
    assert "--paste" in capsys.readouterr().err


def test_import_warns_about_the_live_login_and_copy_only_never_refreshes(tmp_path, capsys):
    live = tmp_path / "userhome" / ".claude" / ".credentials.json"
    live.parent.mkdir(parents=True)
    live.write_text(json.dumps({"claudeAiOauth": {"accessToken": "at", "refreshToken": "rt", "expiresAt": 1}}))
    assert main(["import", "--name", "me"]) == 0
    assert "live Claude Code login" in capsys.readouterr().err
    assert main(["import", "--name", "copy", "--copy-only"]) == 0
    out = capsys.readouterr()
    assert "never refresh" in out.out and "live Claude Code login" not in out.err
    paths = Paths(os.environ["SHUNT_HOME"])
    assert CredentialStore(paths.credentials).load()["copy"].copy_only


def test_logout_revokes_and_keeps_the_account_as_reauth_required(make_proxy, upstream, events, capsys):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], oauth_revoke_url=upstream.url + "/v1/oauth/revoke")
    start_background(p.srv, refresh=False, recovery=False, usage=False)
    assert main(["logout", "a"]) == 0
    assert upstream.revoke_calls == [{"token": "ref-a", "token_type_hint": "refresh_token",
                                      "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e"}]
    assert "a" not in CredentialStore(p.srv.paths.credentials).load()
    assert [a.name for a in load_config(p.srv.paths).accounts] == ["a", "b"]
    assert events.wait_for("reauth_required")
    assert p.srv.status()["accounts"][0]["status"] == "reauth_required"


def test_a_running_proxy_picks_up_an_added_account_and_routes_to_it(make_proxy, upstream, events, tmp_path):
    from tests.fakes.upstream import sse_events

    p = make_proxy([("a", "oauth")])
    start_background(p.srv, refresh=False, recovery=False, usage=False)
    # A stream in flight on a must not be disturbed by the reload.
    evs = sse_events()
    gate = threading.Event()
    upstream.script("tok-a", Reply(events=evs, gates=[None, gate]))
    conn, resp = open_stream(p.port)
    read_until(resp, b"message_start")
    src = tmp_path / "b.json"
    src.write_text(json.dumps({"claudeAiOauth": {"accessToken": "tok-b", "refreshToken": "ref-b", "expiresAt": 4102444800000}}))
    assert main(["import", "--name", "b", "--from", str(src)]) == 0
    assert events.wait_for("reload", timeout=10)
    assert [a["name"] for a in p.srv.status()["accounts"]] == ["a", "b"]
    assert p.request(method="POST", path="/use", body={"account": "b"})[0] == 200
    status, h, _ = p.request(body=MSG)
    assert status == 200 and h["x-shunt-account"] == "b" and upstream.requests_for()[-1].credential == "tok-b"
    gate.set()
    assert resp.read().endswith(evs[-1])  # the stream on a finished normally
    conn.close()
    # Removal is picked up too.
    p.request(method="POST", path="/use", body={"account": "auto"})
    assert main(["remove", "b"]) == 0
    assert events.wait_for("reload", timeout=2, count=2)
    assert [a["name"] for a in p.srv.status()["accounts"]] == ["a"]


def test_add_account_paste_runs_pkce_against_the_configured_endpoints(upstream, capsys):
    import urllib.parse

    seen = {}

    def token(req):
        seen.update(req)
        return 200, {"access_token": "tok-p", "refresh_token": "ref-p", "expires_in": 28800,
                     "account": {"email_address": "p@example.com"}}

    upstream.token_handler = token
    upstream.profile["tok-p"] = {"account": {"email": "p@example.com", "has_claude_pro": True}}
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, [], {"oauth_authorize_url": "https://auth.example/authorize"})

    def paste(prompt):
        url = [line for line in capsys.readouterr().out.splitlines() if line.startswith("https://auth.example/")][0]
        state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["state"]
        return f"the-code#{state}"

    assert main(["add-account", "p", "--paste"], read_secret=paste) == 0
    assert seen["grant_type"] == "authorization_code" and seen["code"] == "the-code" and seen["code_verifier"]
    cred = CredentialStore(paths.credentials).load()["p"]
    assert (cred.access_token, cred.email, cred.plan) == ("tok-p", "p@example.com", "pro")
    assert main(["add-account", "q", "--paste"], read_secret=lambda prompt: "the-code#forged-state") == 2
    assert "state does not match" in capsys.readouterr().err
    assert "q" not in CredentialStore(paths.credentials).load()


def test_status_table_shows_plan_expiry_and_the_fix():
    from shunt_lib.status_view import render_status

    doc = {"version": "x", "strategy": "least-utilization", "pinned_account": None, "accounts": [
        {"name": "a", "kind": "oauth", "email": "a@x.com", "plan": "max", "status": "available", "utilization_5h": 0.5,
         "reset_5h_at_s": 1000 + 3600, "utilization_7d": 0.1, "reset_7d_at_s": 1000 + 86400 * 2,
         "token_expires_at_s": 1000 + 7200, "requests": 3, "action": None},
        {"name": "b", "kind": "oauth", "email": None, "plan": None, "status": "reauth_required", "token_expires_at_s": 10,
         "action": "Its login expired or was revoked: run `shunt add-account b` to log in again."},
        {"name": "c", "kind": "oauth", "status": "cooling", "cooldown_until_s": 1030,
         "cooldown_reason": "token refresh failed: token endpoint answered 503", "action": None}]}
    out = render_status(doc, now_s=1000)
    assert "~ c: cooling (token refresh failed: token endpoint answered 503)" in out
    assert "a (a@x.com)" in out and "max" in out and "50%" in out and "1h00m" in out and "2h00m" in out
    assert "expired" in out and "! b: Its login expired or was revoked: run `shunt add-account b`" in out


def test_a_bad_edit_is_reported_and_changes_nothing(make_proxy, upstream, caplog):
    from shunt_lib.background import Reloader

    p = make_proxy([("a", "oauth")])
    reloader = Reloader(p.srv.reload, p.srv.mtimes)
    with open(p.srv.paths.config, "a") as f:
        f.write("\n[[accounts]]\nname = \"bad name\"\n")
    reloader.tick()
    assert "not reloaded (nothing changed)" in caplog.text and "accounts[1].name" in caplog.text
    assert "Traceback" not in caplog.text
    assert p.pool.names() == ["a"] and p.request(body=MSG)[0] == 200


def test_the_usage_poll_clears_an_exhaustion_its_fresh_data_contradicts(make_proxy, upstream):
    from shunt_lib.background import UsagePoller

    p = make_proxy([("a", "oauth"), ("b", "oauth")])
    p.pool.mark_exhausted("a", time.time() + 3 * 3600)
    poller = UsagePoller(p.pool, p.srv.tokens, upstream.url, p.srv.http, interval_s=3600)
    upstream.usage["tok-a"] = {"five_hour": {"utilization": 100.0}, "seven_day": {"utilization": 10.0}}
    poller.tick()
    assert p.srv.status()["accounts"][0]["status"] == "exhausted"
    upstream.usage["tok-a"] = {"five_hour": {"utilization": 2.0}, "seven_day": {"utilization": 10.0}}
    poller.tick()
    assert p.srv.status()["accounts"][0]["status"] == "available"
