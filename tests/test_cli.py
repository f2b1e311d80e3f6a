"""The CLI commands, in-process (main(argv) -> exit code)."""

import io
import json
import os
import time

import pytest
import responses

from shunt_lib.cli import main
from shunt_lib.config import Paths, load_config
from shunt_lib.credentials import CredentialStore
from shunt_lib.server import make_server
from tests.support import MSG, Proxy, write_home


def claude_file(tmp_path, token="sk-test-access"):
    path = tmp_path / "cc" / ".credentials.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"claudeAiOauth": {"accessToken": token, "refreshToken": "sk-test-refresh",
                                                  "expiresAt": 1790000000000, "subscriptionType": "max"}}))
    return str(path)


def test_import_accounts_remove(tmp_path, capsys):
    src = claude_file(tmp_path)
    assert main(["import", "--name", "work", "--from", src]) == 0
    paths = Paths(os.environ["SHUNT_HOME"])
    assert [(a.name, a.kind) for a in load_config(paths).accounts] == [("work", "oauth")]
    cred = CredentialStore(paths.credentials).load()["work"]
    assert cred.access_token == "sk-test-access" and cred.plan == "max" and cred.expires_at_ms == 1790000000000
    assert oct(os.stat(paths.credentials).st_mode & 0o777) == "0o600"
    assert main(["accounts"]) == 0
    out = capsys.readouterr().out
    assert "work" in out and "oauth" in out and "sk-test" not in out
    assert main(["remove", "work"]) == 0
    assert load_config(paths).accounts == () and CredentialStore(paths.credentials).load() == {}
    assert main(["remove", "work"]) == 1


def test_import_of_a_bad_file_changes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"nothing": 1}')
    assert main(["import", "--from", str(bad)]) == 2
    assert "claudeAiOauth" in capsys.readouterr().err
    assert main(["import", "--from", str(tmp_path / "missing.json")]) == 2
    paths = Paths(os.environ["SHUNT_HOME"])
    assert load_config(paths).accounts == ()


@responses.activate
def test_add_account_api_key_reads_stdin_checks_it_and_never_argv(monkeypatch, capsys):
    models = responses.get("https://api.anthropic.com/v1/models", json={"data": []})
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-ant-api03-testkey\n"))
    assert main(["add-account", "ci", "--api-key"]) == 0
    assert models.calls[0].request.headers["x-api-key"] == "sk-ant-api03-testkey"
    paths = Paths(os.environ["SHUNT_HOME"])
    assert CredentialStore(paths.credentials).load()["ci"].api_key == "sk-ant-api03-testkey"
    assert load_config(paths).accounts[0].kind == "api_key"
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["add-account", "ci2", "--api-key"]) == 2
    responses.replace(responses.GET, "https://api.anthropic.com/v1/models", status=401, json={})
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-ant-bad\n"))
    assert main(["add-account", "bad", "--api-key"]) == 2
    assert "rejected" in capsys.readouterr().err
    assert [a.name for a in load_config(paths).accounts] == ["ci"]
    assert list(CredentialStore(paths.credentials).load()) == ["ci"]
    with pytest.raises(SystemExit):
        main(["add-account", "x", "--api-key", "sk-in-argv"])


def test_status_and_use_talk_to_the_running_proxy(upstream, capsys):
    accounts = [("a", "oauth"), ("b", "api_key")]
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, accounts)
    p = Proxy(make_server(load_config(paths), paths, port=0))
    write_home(paths.home, upstream.url, accounts, {"port": p.port})  # where the commands look for it
    try:
        p.request(body=MSG)
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert "ACCOUNT" in out and "available" in out and "routing automatically" in out
        assert main(["use", "b"]) == 0
        assert "pinned all traffic to b" in capsys.readouterr().out
        assert p.pool.pinned == "b"
        assert main(["use", "nobody"]) == 2
        assert "unknown account" in capsys.readouterr().err
        assert main(["status", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["pinned_account"] == "b" and [a["name"] for a in doc["accounts"]] == ["a", "b"]
        assert main(["use", "auto"]) == 0 and p.pool.pinned is None
    finally:
        p.close()
    assert main(["status"]) == 2
    assert "not running" in capsys.readouterr().err


def test_serve_refuses_a_public_bind_without_remote_key(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "remote_key" in capsys.readouterr().err


def test_demo_takes_seconds_and_verbose(monkeypatch):
    import shunt_lib.demo as demo

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.update(kw) or 0)
    assert main(["demo", "--seconds", "3", "--verbose"]) == 0
    assert seen == {"duration_s": 3.0, "verbose": True}
    assert main(["demo"]) == 0 and seen == {"duration_s": demo.DURATION_S, "verbose": False}


def test_import_over_an_existing_account_asks_or_needs_force(tmp_path, monkeypatch, capsys):
    assert main(["import", "--name", "work", "--from", claude_file(tmp_path, "sk-first")]) == 0
    second = claude_file(tmp_path / "2", "sk-second")
    paths = Paths(os.environ["SHUNT_HOME"])
    capsys.readouterr()
    assert main(["import", "--name", "work", "--from", second]) == 2  # no terminal to ask on
    assert "--force" in capsys.readouterr().err
    assert CredentialStore(paths.credentials).load()["work"].access_token == "sk-first"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert main(["import", "--name", "work", "--from", second]) == 1
    assert CredentialStore(paths.credentials).load()["work"].access_token == "sk-first"
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert main(["import", "--name", "work", "--from", second]) == 0
    assert CredentialStore(paths.credentials).load()["work"].access_token == "sk-second"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["import", "--name", "work", "--force", "--from", claude_file(tmp_path / "3", "sk-third")]) == 0
    assert CredentialStore(paths.credentials).load()["work"].access_token == "sk-third"


def test_import_over_a_logged_out_account_needs_no_force(tmp_path, capsys):
    assert main(["import", "--name", "work", "--from", claude_file(tmp_path, "sk-first")]) == 0
    CredentialStore(Paths(os.environ["SHUNT_HOME"]).credentials).remove("work")  # as logout leaves it
    assert main(["import", "--name", "work", "--from", claude_file(tmp_path / "2", "sk-second")]) == 0


def test_reset_clears_exhaustion_in_the_running_proxy_and_in_the_saved_state(upstream, capsys):
    accounts = [("a", "oauth"), ("b", "oauth")]
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, accounts)
    p = Proxy(make_server(load_config(paths), paths, port=0))
    write_home(paths.home, upstream.url, accounts, {"port": p.port})
    far = time.time() + 3600
    try:
        p.pool.mark_exhausted("a", far)
        p.pool.cool("b", far, "throttled (429)")
        assert main(["reset", "a"]) == 0
        assert "in the running proxy: cleared a" in capsys.readouterr().out
        assert [v.status(time.time()) for v in p.pool.views(time.time())] == ["available", "cooling"]
        assert main(["reset", "nobody"]) == 2 and "unknown account" in capsys.readouterr().err
        assert main(["reset", "--all"]) == 0
        assert all(v.usable(time.time()) for v in p.pool.views(time.time()))
        status, _, body = p.request("POST", "/reset", body={"account": "a", "all": True})
        assert status == 400 and b"body must be" in body
        status, _, body = p.request("POST", "/reset", body=b'{"all": true}', headers={"content-type": "text/plain"})
        assert status == 415 and b"application/json" in body
        p.pool.mark_exhausted("a", far)
    finally:
        p.close()  # the final flush saves a's exhaustion
    assert json.load(open(paths.state))["accounts"]["a"]["exhausted_until_s"] == far
    assert main(["reset", "--all"]) == 0
    assert "in the saved state" in capsys.readouterr().out
    saved = json.load(open(paths.state))["accounts"]["a"]
    assert saved["exhausted_until_s"] == 0 and saved["cooldown_until_s"] == 0
