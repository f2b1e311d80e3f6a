"""``shunt doctor``: the pure decisions over hand-made facts, and the command against crafted broken homes."""

from __future__ import annotations

import email.utils
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shunt_lib.cli import main
from shunt_lib.config import Paths, parse_config
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.doctor import Check, can_encode, check_clock, decide, exit_status, points_here, render
from shunt_lib.doctor_facts import Answer, Facts, FileFacts, UpstreamFacts
from shunt_lib.doctor_probe import Probe
from shunt_lib.fsutil import atomic_write_json
from tests.support import ROOT, write_home

NOW_S = 1_790_000_000.0
HOUR_MS = 3_600_000


# -- the pure part -------------------------------------------------------------------------------
def facts(accounts=(("a", "oauth"),), creds=None, **kw) -> Facts:
    config = parse_config({"server": {"port": 8082}, "accounts": [{"name": n, "kind": k} for n, k in accounts]})
    base = dict(home=FileFacts("/h", 0o700, 1000), config_path="/h/config.toml", config_exists=True, config=config,
                config_error="", uid=1000, credentials=FileFacts("/h/credentials.json", 0o600, 1000),
                state=FileFacts("/h/state.json", 0o600, 1000),
                creds=creds if creds is not None else {
                    "a": Credential("oauth", "tok-a", "ref-a", int(NOW_S * 1000) + HOUR_MS)},
                upstream=UpstreamFacts("api.example", 443, "https", address="192.0.2.1", tls_version="TLSv1.3",
                                       date_s=NOW_S, local_s=NOW_S))
    base.update(kw)
    return Facts(**base)


def by_id(checks: list[Check]) -> dict[str, Check]:
    return {c.check: c for c in checks}


def test_each_upstream_stage_that_fails_is_named():
    for stage, words in (("dns", "cannot resolve api.example"), ("tcp", "cannot connect to api.example:443"),
                         ("tls", "TLS handshake"), ("http", "did not answer HTTP")):
        up = UpstreamFacts("api.example", 443, "https", failed_stage=stage, error="boom")
        c = by_id(decide(facts(upstream=up), NOW_S))
        assert c["upstream"].level == "fail" and f"{stage.upper()} stage" in c["upstream"].detail
        assert words in c["upstream"].detail and "boom" in c["upstream"].detail
        assert c["clock"].level == "skip" and c["account.a.identity"].level == "skip"


def test_identity_rejected_fails_and_names_the_login_command():
    c = by_id(decide(facts(identity={"a": Answer(401, {})}), NOW_S))["account.a.identity"]
    assert c.level == "fail" and c.fix == "shunt add-account a"
    c = by_id(decide(facts(identity={"a": Answer(200, {"account": {"email": "a@x.org", "has_claude_max": True}})}),
                     NOW_S))["account.a.identity"]
    assert c.level == "ok" and "a@x.org" in c.detail and "plan max" in c.detail
    key = {"k": Credential("api_key", api_key="sk-test")}
    c = by_id(decide(facts((("k", "api_key"),), key, identity={"k": Answer(403, None)}), NOW_S))["account.k.identity"]
    assert c.level == "fail" and c.fix == "shunt add-account k --api-key"


def test_clock_skew_over_30_s_warns_either_way():
    assert check_clock(29.0, "h").level == "ok"
    ahead, behind = check_clock(95.0, "h"), check_clock(-95.0, "h")
    assert ahead.level == behind.level == "warn" and ahead.ok
    assert "95 s ahead" in ahead.detail and "95 s behind" in behind.detail


def test_settings_url_matching():
    config = facts().config
    for url in ("http://127.0.0.1:8082", "http://localhost:8082/", "http://[::1]:8082"):
        assert points_here(url, config), url
    for url in ("http://127.0.0.1:8083", "https://127.0.0.1:8082", "http://gateway.example:8082", None, 5,
                "http://127.0.0.1:8082/v1", "http://127.0.0.1:99999"):
        assert not points_here(url, config), url


def test_output_marks_ascii_fallback_exit_status_and_json_shape():
    checks = [Check("a", "ok", "fine"), Check("b", "warn", "hm", "do x"), Check("c", "fail", "bad", "chmod 600 f"),
              Check("d", "skip", "n/a")]
    assert render(checks, unicode=True).splitlines() == ["✓ fine", "! hm — fix: do x", "✗ bad — fix: chmod 600 f",
                                                         "- n/a"]
    assert render(checks, unicode=False).splitlines() == ["ok fine", "warn hm - fix: do x", "FAIL bad - fix: chmod 600 f",
                                                          "skip n/a"]
    assert not can_encode("ascii") and not can_encode("latin-1") and can_encode("utf-8")
    assert exit_status(checks) == 1 and exit_status(checks[:2] + checks[3:]) == 0
    assert checks[2].to_json() == {"check": "c", "ok": False, "level": "fail", "detail": "bad", "fix": "chmod 600 f"}
    assert checks[0].to_json()["fix"] is None


# -- crafted homes -------------------------------------------------------------------------------
@pytest.fixture
def env(tmp_path, monkeypatch):
    """PATH with only a fresh bin directory, Claude Code's config in a temp dir; returns the bin directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude"))
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    return bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def home(upstream_url: str, accounts=(("a", "oauth"),), port: int | None = None, **kw) -> Paths:
    return write_home(os.environ["SHUNT_HOME"], upstream_url, list(accounts),
                      {"port": port if port is not None else free_port()}, **kw)


def doctor(capsys) -> tuple[int, dict[str, dict]]:
    rc = main(["doctor", "--json"])
    out = capsys.readouterr().out
    assert "tok-" not in out and "ref-" not in out  # never a secret
    return rc, {c["check"]: c for c in json.loads(out)}


def script(path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


def settings(tmp_path, doc) -> str:
    path = tmp_path / "claude" / "settings.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


class TinyUpstream:
    """An HTTP server on 127.0.0.1:0 whose every answer is 404, with a ``Date`` ``skew_s`` seconds off."""

    def __init__(self, skew_s: float = 0.0):
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def date_time_string(self, timestamp=None):
                return email.utils.formatdate(time.time() + skew_s, usegmt=True)

            def do_GET(self):
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def tiny():
    made = []

    def factory(**kw):
        made.append(TinyUpstream(**kw))
        return made[-1]

    yield factory
    for t in made:
        t.close()


def test_bad_config_is_named_and_left_alone(env, capsys):
    paths = Paths(os.environ["SHUNT_HOME"])
    paths.ensure()
    with open(paths.config, "w") as f:
        f.write("[server]\nport = 'eighty'\n")
    rc, c = doctor(capsys)
    assert rc == 1 and c["config"]["level"] == "fail" and "server.port" in c["config"]["detail"]
    assert "upstream" not in c and "port" not in c  # nothing is probed on a config that does not load
    assert c["claude_settings"]["level"] == "skip"  # no port to compare with
    assert open(paths.config).read() == "[server]\nport = 'eighty'\n"


def test_credentials_readable_by_others_and_home_writable_by_others(env, upstream, capsys):
    paths = home(upstream.url)
    os.chmod(paths.credentials, 0o644)
    os.chmod(paths.home, 0o777)
    rc, c = doctor(capsys)
    assert rc == 1
    assert c["files.credentials"]["level"] == "fail" and c["files.credentials"]["fix"] == f"chmod 600 {paths.credentials}"
    assert c["home"]["level"] == "fail" and c["home"]["fix"] == f"chmod go-w {paths.home}"
    os.chmod(paths.credentials, 0o600)
    os.chmod(paths.home, 0o700)
    _, c = doctor(capsys)
    assert c["files.credentials"]["level"] == c["home"]["level"] == "ok"


def test_expired_token_warns_when_refreshable_and_fails_when_not(env, upstream, capsys):
    past_ms = int((time.time() - 7200) * 1000)
    paths = home(upstream.url, [("a", "oauth"), ("b", "oauth")], expires_at_ms=past_ms)
    CredentialStore(paths.credentials).put("b", Credential("oauth", "tok-b", "", past_ms))
    rc, c = doctor(capsys)
    assert rc == 1
    assert c["account.a.expiry"]["level"] == "warn" and "expired 2h00m ago" in c["account.a.expiry"]["detail"]
    assert c["account.b.expiry"]["level"] == "fail" and c["account.b.expiry"]["fix"] == "shunt add-account b"
    assert c["account.b.refresh"]["level"] == "fail" and "no refresh token" in c["account.b.refresh"]["detail"]
    assert c["account.a.identity"]["level"] == "skip"  # an expired token is not sent
    assert upstream.requests_for(path_prefix="/api/oauth/profile") == []


def test_reauth_required_in_state_fails_and_copy_only_warns(env, upstream, capsys):
    paths = home(upstream.url, [("a", "oauth"), ("c", "oauth")])
    CredentialStore(paths.credentials).put("c", Credential("oauth", "tok-c", "ref-c", int(time.time() * 1000) + HOUR_MS,
                                                            copy_only=True))
    atomic_write_json(paths.state, {"accounts": {"a": {"reauth_required": True}}})
    rc, c = doctor(capsys)
    assert rc == 1
    assert c["account.a.refresh"]["level"] == "fail" and "reauth_required" in c["account.a.refresh"]["detail"]
    assert c["account.c.refresh"]["level"] == "warn" and "copy-only" in c["account.c.refresh"]["detail"]


def test_identity_from_the_profile_and_an_api_key_from_models(env, upstream, capsys):
    home(upstream.url, [("a", "oauth"), ("k", "api_key")])
    upstream.profile["tok-a"] = {"account": {"email": "a@example.com", "has_claude_pro": True}}
    _, c = doctor(capsys)
    assert c["account.a.identity"]["level"] == "ok" and "a@example.com, plan pro" in c["account.a.identity"]["detail"]
    assert c["account.k.identity"]["level"] == "ok"
    assert [r.path for r in upstream.requests_for(path_prefix="/v1/models")] == ["/v1/models?limit=1"]
    assert upstream.requests_for(path_prefix="/v1/messages") == []  # no quota spent


def test_port_free_taken_by_another_program_or_shunt_answering(env, upstream, make_proxy, tiny, capsys):
    home(upstream.url)
    rc, c = doctor(capsys)
    assert rc == 1 and c["port"]["level"] == "fail" and "nothing listens" in c["port"]["detail"]
    other = tiny()
    home(upstream.url, port=other.port)
    _, c = doctor(capsys)
    assert c["port"]["level"] == "fail" and "another program" in c["port"]["detail"] and "404" in c["port"]["detail"]
    proxy = make_proxy(accounts=[("a", "oauth")])
    home(upstream.url, port=proxy.port)
    _, c = doctor(capsys)
    assert c["port"]["level"] == "ok" and "shunt answers" in c["port"]["detail"]


def test_upstream_closed_port_fails_at_tcp_and_https_on_plain_http_fails_at_tls(env, tiny, capsys):
    home(f"http://127.0.0.1:{free_port()}")
    rc, c = doctor(capsys)
    assert rc == 1 and c["upstream"]["level"] == "fail" and "TCP stage" in c["upstream"]["detail"]
    assert "refused" in c["upstream"]["detail"] and c["clock"]["level"] == "skip"
    plain = tiny()
    home(f"https://127.0.0.1:{plain.port}")
    _, c = doctor(capsys)
    assert c["upstream"]["level"] == "fail" and "TLS stage" in c["upstream"]["detail"]


def test_skewed_upstream_date_warns_and_plain_http_says_no_tls(env, tiny, capsys):
    up = tiny(skew_s=-120)
    home(up.url)
    _, c = doctor(capsys)
    assert c["upstream"]["level"] == "ok" and "no TLS (http)" in c["upstream"]["detail"]
    assert c["clock"]["level"] == "warn" and c["clock"]["ok"] and "ahead of" in c["clock"]["detail"]
    assert int(c["clock"]["detail"].split("clock is ")[1].split(" s")[0]) in range(118, 123)


def test_proxy_environment_is_named_without_its_password(env, upstream, monkeypatch, capsys):
    home(upstream.url)
    _, c = doctor(capsys)
    assert c["proxy"]["level"] == "ok"
    monkeypatch.setenv("HTTPS_PROXY", "http://user:s3cret@proxy.example:3128")
    _, c = doctor(capsys)
    assert c["proxy"]["level"] == "warn" and "does not use it" in c["proxy"]["detail"]
    assert "proxy.example:3128" in c["proxy"]["detail"] and "s3cret" not in c["proxy"]["detail"]
    assert c["upstream"]["level"] == "ok"  # shunt went direct


def test_claude_settings_elsewhere_corrupt_or_pointing_here(env, upstream, tmp_path, monkeypatch, capsys):
    paths = home(upstream.url, port=18082)
    _, c = doctor(capsys)
    assert c["claude_settings"]["level"] == "fail" and "does not exist" in c["claude_settings"]["detail"]
    settings(tmp_path, {"env": {"ANTHROPIC_BASE_URL": "https://gateway.example"}})
    _, c = doctor(capsys)
    assert c["claude_settings"]["level"] == "fail" and "https://gateway.example" in c["claude_settings"]["detail"]
    assert c["claude_settings"]["fix"] == "shunt setup"
    path = settings(tmp_path, '{"env": {,}')
    _, c = doctor(capsys)
    assert c["claude_settings"]["level"] == "fail" and "line 1 column 10" in c["claude_settings"]["detail"]
    assert open(path).read() == '{"env": {,}'  # reported, never changed
    settings(tmp_path, {"model": "x", "env": {"ANTHROPIC_BASE_URL": "http://localhost:18082"}})
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999")
    _, c = doctor(capsys)
    assert c["claude_settings"]["level"] == "ok"
    assert c["claude_env"]["level"] == "warn" and "http://127.0.0.1:9999" in c["claude_env"]["detail"]
    assert paths


def test_claude_on_path_and_its_version(env, upstream, capsys):
    home(upstream.url)
    _, c = doctor(capsys)
    assert c["claude"]["level"] == "warn" and "not on PATH" in c["claude"]["detail"]
    script(env / "claude", 'echo "2.1.400 (Claude Code)"\n')
    _, c = doctor(capsys)
    assert c["claude"]["level"] == "ok" and "claude 2.1.400 (Claude Code)" in c["claude"]["detail"]


def test_service_not_installed_inactive_or_active(env, upstream, tmp_path, capsys):
    home(upstream.url)
    _, c = doctor(capsys)
    assert c["service"]["level"] == "warn" and c["service"]["fix"] == "shunt service install"
    unit = tmp_path / "userhome" / ".config" / "systemd" / "user" / "shunt.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    script(env / "systemctl", '[ "$*" = "--user is-active shunt" ] || exit 9\necho inactive\nexit 3\n')
    _, c = doctor(capsys)
    assert c["service"]["level"] == "fail" and "inactive" in c["service"]["detail"]
    assert c["service"]["fix"] == "shunt service restart"
    script(env / "systemctl", 'echo active\n')
    _, c = doctor(capsys)
    assert c["service"]["level"] == "ok"


def test_launchd_agent_and_system_unit(tmp_path, env):
    agents = tmp_path / "userhome" / "Library" / "LaunchAgents"
    agents.mkdir(parents=True)
    (agents / "sh.shunt.proxy.plist").write_text("<plist/>")
    script(env / "launchctl", 'echo "gui/501/sh.shunt.proxy = {"\necho "	state = running"\n')
    s = Probe(platform="darwin").service()
    assert (s.manager, s.active) == ("launchd", "active")
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "shunt.service").write_text("[Service]\n")
    script(env / "systemctl", '[ "$*" = "is-active shunt" ] || exit 9\necho failed\nexit 3\n')
    s = Probe(platform="linux", system_dir=str(tmp_path / "system")).service()
    assert (s.manager, s.active, s.restart) == ("systemd", "failed", "shunt service restart --system")


def test_a_healthy_home_exits_0(env, upstream, make_proxy, tmp_path, capsys):
    proxy = make_proxy(accounts=[("a", "oauth")])
    home(upstream.url, port=proxy.port)
    upstream.profile["tok-a"] = {"account": {"email": "a@example.com"}}
    settings(tmp_path, {"env": {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{proxy.port}"}})
    script(env / "claude", "echo 2.1.400\n")
    unit = tmp_path / "userhome" / ".config" / "systemd" / "user" / "shunt.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    script(env / "systemctl", "echo active\n")
    rc, c = doctor(capsys)
    assert rc == 0, [x for x in c.values() if not x["ok"]]
    assert {x["level"] for x in c.values()} == {"ok"}, [x for x in c.values() if x["level"] != "ok"]


def test_plain_output_in_ascii_and_exit_status_from_a_subprocess(tmp_path):
    home_dir = tmp_path / "h"
    home_dir.mkdir(mode=0o700)
    (home_dir / "config.toml").write_text("nonsense = [\n")
    env = dict(os.environ, SHUNT_HOME=str(home_dir), HOME=str(tmp_path), PATH=str(tmp_path / "nobin"),
               PYTHONIOENCODING="ascii", CLAUDE_CONFIG_DIR=str(tmp_path / "c"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "shunt.py"), "doctor"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("FAIL config.toml is invalid") and f"- fix: edit {home_dir}/config.toml" in lines[0]
    assert all(line.split(" ", 1)[0] in ("ok", "warn", "skip", "FAIL") for line in lines)
    assert stat.S_IMODE(os.stat(home_dir).st_mode) == 0o700


def test_a_file_owned_by_someone_else_fails_with_chown():
    c = by_id(decide(facts(state=FileFacts("/h/state.json", 0o600, 0)), NOW_S))["files.state"]
    assert c.level == "fail" and "uid 0" in c.detail and c.fix == "sudo chown 1000 /h/state.json"


def test_missing_or_unusable_credentials_fail_without_echoing_them(env, upstream, capsys):
    paths = home(upstream.url, [("a", "oauth"), ("b", "oauth"), ("k", "api_key")])
    CredentialStore(paths.credentials).remove("b")
    doc = json.load(open(paths.credentials))
    doc["accounts"]["k"]["api_key"] = "tok-bad key"
    atomic_write_json(paths.credentials, doc)
    rc, c = doctor(capsys)
    assert rc == 1
    assert c["account.b.token"]["level"] == "fail" and c["account.b.token"]["fix"] == "shunt add-account b"
    assert c["account.k.token"]["level"] == "fail" and "whitespace" in c["account.k.token"]["detail"]
    assert c["account.k.token"]["fix"] == "shunt add-account k --api-key"
    assert capsys.readouterr().err == ""  # reported once, as a check, without the value


def test_a_home_reached_through_a_symbolic_link_is_judged_by_its_target(tmp_path, env, upstream, monkeypatch, capsys):
    real = tmp_path / "real-home"
    write_home(str(real), upstream.url, [("a", "oauth")], {"port": free_port()})
    os.chmod(real, 0o700)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv("SHUNT_HOME", str(tmp_path / "link"))
    _, c = doctor(capsys)
    assert c["home"]["level"] == "ok"
