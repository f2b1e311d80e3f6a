"""`shunt setup`: Claude Code's settings edited exactly and reversibly, the steps idempotent, bad input untouched."""

from __future__ import annotations

import json
import os
import stat

import pytest

from shunt_lib.claude_settings import BACKUP_SUFFIX, RemoteBaseUrl, plan_set, settings_path
from shunt_lib.config import Paths, load_config
from shunt_lib.config import add_account_to_config
from shunt_lib.setup_steps import SetupActions, read_record, run_setup, run_undo
from shunt_lib.steps import ALREADY, DONE, FAILED, SKIPPED, StepResult as Step

ORIGINAL = ('{\n  "model": "opus",\n  "env": {\n    "DISABLE_TELEMETRY": "1"\n  },\n'
            '  "permissions": {\n    "allow": ["Bash(ls)"]\n  },\n  "zzz": [1, 2]\n}\n')


class Fake:
    """Actions that record what they were asked to do."""

    def __init__(self, paths: Paths, *, tty=False, answers=(), healthy=True, service_outcome=DONE, install=None):
        self.paths, self.calls, self.lines, self.answers = paths, [], [], list(answers)
        self.healthy, self.service_outcome, self.install_results = healthy, service_outcome, install

    def actions(self, tty=False) -> SetupActions:
        return SetupActions(add_account=self.add, import_login=self.imp, claude_on_path=lambda: True,
                            ask=self.ask, install_service=self.install, uninstall_service=self.uninstall,
                            restart_service=self.restart,
                            wait_healthy=self.wait, show_status=lambda url: self.calls.append(("status", url)),
                            is_tty=tty, out=self.lines.append)

    def add(self, name):
        self.calls.append(("add", name))
        add_account_to_config(self.paths, name, "oauth")
        return 0

    def imp(self):
        self.calls.append(("import",))
        add_account_to_config(self.paths, "main", "oauth")
        return 0

    def ask(self, prompt):
        self.calls.append(("ask", prompt))
        return self.answers.pop(0)

    def install(self, port):
        self.calls.append(("install", port))
        return self.install_results or [Step("write /u/shunt.service", self.service_outcome)]

    def restart(self):
        self.calls.append(("restart",))
        return [Step("restart shunt", DONE)]

    def uninstall(self):
        self.calls.append(("uninstall",))
        return [Step("service", DONE, "removed")]

    def wait(self, url, max_wait_s):
        self.calls.append(("wait", url, max_wait_s))
        return self.healthy


@pytest.fixture
def paths(tmp_path):
    return Paths(str(tmp_path / "shunt"))


@pytest.fixture
def settings(tmp_path, monkeypatch):
    cfg = tmp_path / "claude-cfg"
    cfg.mkdir()
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(cfg))
    path = cfg / "settings.json"
    path.write_text(ORIGINAL)
    os.chmod(path, 0o640)
    return path


def test_settings_path_follows_claude_config_dir(tmp_path):
    assert settings_path({"CLAUDE_CONFIG_DIR": "/x/y"}) == "/x/y/settings.json"
    assert settings_path({}) == os.path.join(os.path.expanduser("~"), ".claude", "settings.json")


def test_setup_writes_the_key_keeps_everything_else_and_runs_twice_without_change(paths, settings):
    fake = Fake(paths)
    assert run_setup(paths, fake.actions(), port=8093, add="work") == 0
    doc = json.loads(settings.read_text())
    assert list(doc) == ["model", "env", "permissions", "zzz"]  # order kept
    assert doc["env"] == {"DISABLE_TELEMETRY": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:8093"}
    assert doc["permissions"] == {"allow": ["Bash(ls)"]} and doc["zzz"] == [1, 2] and doc["model"] == "opus"
    assert stat.S_IMODE(settings.stat().st_mode) == 0o640  # the file's own mode
    assert (settings.parent / ("settings.json" + BACKUP_SUFFIX)).read_text() == ORIGINAL
    assert load_config(paths).server.port == 8093 and [a.name for a in load_config(paths).accounts] == ["work"]
    assert ("install", 8093) in fake.calls and ("wait", "http://127.0.0.1:8093", 10.0) in fake.calls
    assert ("status", "http://127.0.0.1:8093") in fake.calls
    assert fake.lines[-1].startswith("Now run `claude`") and "shunt setup --undo" in fake.lines[-1]
    first = fake.lines[:]
    assert [l.split(":")[0] for l in first[:3]] == ["home and config", "accounts", "Claude Code settings"]

    again = Fake(paths, service_outcome=ALREADY)
    assert run_setup(paths, again.actions(), port=8093) == 0
    steps = [l for l in again.lines if not l.startswith("Now")]
    assert all(": already done" in l for l in steps), steps
    assert json.loads(settings.read_text()) == doc and not any(c[0] in ("add", "import") for c in again.calls)


def test_undo_removes_exactly_what_setup_added(paths, settings):
    fake = Fake(paths)
    assert run_setup(paths, fake.actions(), port=8093, add="work") == 0
    assert run_undo(paths, fake.actions()) == 0
    assert json.loads(settings.read_text()) == json.loads(ORIGINAL)
    assert ("uninstall",) in fake.calls
    assert read_record(paths) == {}
    assert [a.name for a in load_config(paths).accounts] == ["work"]  # accounts stay
    again = Fake(paths)
    assert run_undo(paths, again.actions()) == 0 and ("uninstall",) not in again.calls
    assert any(": skipped" in l for l in again.lines)


def test_a_new_port_restarts_a_service_that_is_already_installed(paths, settings):
    assert run_setup(paths, Fake(paths).actions(), port=8093, add="w") == 0
    same = Fake(paths, service_outcome=ALREADY)
    assert run_setup(paths, same.actions(), port=8093) == 0 and ("restart",) not in same.calls
    moved = Fake(paths, service_outcome=ALREADY)
    assert run_setup(paths, moved.actions(), port=8094) == 0
    assert ("restart",) in moved.calls and ("wait", "http://127.0.0.1:8094", 10.0) in moved.calls


def test_a_service_install_failing_part_way_says_what_was_done_and_undo_takes_it_out(paths, settings):
    fake = Fake(paths, install=[Step("write /u/shunt.service", DONE), Step("systemctl daemon-reload", FAILED, "no bus"),
                                Step("not done", SKIPPED, "enable and start shunt")])
    assert run_setup(paths, fake.actions(), port=8093, add="w") == 1
    line = next(l for l in fake.lines if l.startswith("service: failed"))
    assert "write /u/shunt.service" in line and "no bus" in line and "enable and start shunt" in line
    assert any("shunt setup --undo" in l for l in fake.lines if l.startswith("Claude Code's settings already"))
    assert read_record(paths)["service"] is True
    undo = Fake(paths)
    assert run_undo(paths, undo.actions()) == 0 and ("uninstall",) in undo.calls


def test_undo_leaves_a_value_the_user_changed_since(paths, settings):
    run_setup(paths, Fake(paths).actions(), port=8093, add="work", no_service=True)
    doc = json.loads(settings.read_text())
    doc["env"]["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9999"
    settings.write_text(json.dumps(doc))
    fake = Fake(paths)
    assert run_undo(paths, fake.actions()) == 0
    assert json.loads(settings.read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9999"
    assert any("left as it is" in l and ": skipped" in l for l in fake.lines)


def test_a_new_settings_file_and_env_go_away_on_undo(paths, tmp_path, monkeypatch):
    cfg = tmp_path / "fresh"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(cfg))
    assert run_setup(paths, Fake(paths).actions(), port=8094, add="w", no_service=True) == 0
    assert json.loads((cfg / "settings.json").read_text()) == {"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8094"}}
    assert stat.S_IMODE((cfg / "settings.json").stat().st_mode) == 0o600
    assert run_undo(paths, Fake(paths).actions()) == 0
    assert not (cfg / "settings.json").exists()


def test_a_port_change_replaces_setups_own_value_and_undo_still_restores_the_original(paths, settings):
    doc = json.loads(ORIGINAL)
    doc["env"]["ANTHROPIC_BASE_URL"] = "http://localhost:7000"  # the user's own earlier local proxy
    settings.write_text(json.dumps(doc, indent=2))
    run_setup(paths, Fake(paths).actions(), port=8093, add="w", no_service=True)
    run_setup(paths, Fake(paths).actions(), port=8095, no_service=True)
    assert json.loads(settings.read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8095"
    run_undo(paths, Fake(paths).actions())
    assert json.loads(settings.read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://localhost:7000"


def test_a_remote_gateway_is_refused_without_yes(paths, settings):
    doc = json.loads(ORIGINAL)
    doc["env"]["ANTHROPIC_BASE_URL"] = "https://gateway.example.com"
    settings.write_text(json.dumps(doc))
    before = settings.read_bytes()
    fake = Fake(paths)
    assert run_setup(paths, fake.actions(), port=8093, add="w") == 1
    assert settings.read_bytes() == before
    failed = [l for l in fake.lines if ": failed" in l]
    assert failed and "https://gateway.example.com" in failed[0] and "--yes" in failed[0]
    assert any(l.startswith("not done: service") for l in fake.lines)
    assert ("install", 8093) not in fake.calls
    with pytest.raises(RemoteBaseUrl):
        plan_set(doc, "http://127.0.0.1:1")
    assert run_setup(paths, Fake(paths).actions(), port=8093, force=True) == 0
    assert json.loads(settings.read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8093"
    run_undo(paths, Fake(paths).actions())
    assert json.loads(settings.read_text())["env"]["ANTHROPIC_BASE_URL"] == "https://gateway.example.com"


@pytest.mark.parametrize("bad", ['{"env": {', "[1, 2]", '{"env": "x"}'])
def test_a_corrupt_settings_file_is_never_overwritten(paths, settings, bad):
    settings.write_text(bad)
    fake = Fake(paths)
    assert run_setup(paths, fake.actions(), port=8093, add="w") == 1
    assert settings.read_text() == bad
    assert not (settings.parent / ("settings.json" + BACKUP_SUFFIX)).exists()
    line = next(l for l in fake.lines if ": failed" in l)
    assert "settings" in line and ("settings.json" in line or "env" in line)


def test_without_a_terminal_and_no_choice_the_accounts_step_is_skipped_with_the_command(paths, settings):
    fake = Fake(paths)
    assert run_setup(paths, fake.actions(tty=False), port=8093, no_service=True) == 0
    line = next(l for l in fake.lines if l.startswith("accounts:"))
    assert SKIPPED in line and "shunt setup --import" in line and "--add NAME" in line
    assert fake.lines[-1].startswith("Add an account first")
    assert not any(c[0] == "ask" for c in fake.calls)


def test_on_a_terminal_it_asks_which_way_in(paths, settings):
    fake = Fake(paths, answers=["2"])
    assert run_setup(paths, fake.actions(tty=True), port=8093, no_service=True) == 0
    assert ("import",) in fake.calls
    fake = Fake(Paths(paths.home + "2"), answers=["1", "laptop"])
    assert run_setup(fake.paths, fake.actions(tty=True), port=8093, no_service=True) == 0
    assert ("add", "laptop") in fake.calls


def test_a_service_that_does_not_come_up_fails_the_run_and_says_what(paths, settings):
    fake = Fake(paths, healthy=False)
    assert run_setup(paths, fake.actions(), port=8093, add="w") == 1
    assert any(l.startswith("service: failed") and "shunt logs" in l for l in fake.lines)
    assert read_record(paths).get("service") is True  # installed: undo will take it out


def test_the_command_line_end_to_end_without_a_terminal(tmp_path, monkeypatch, capsys):
    from shunt_lib.cli import main

    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cc"))
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert main(["setup", "--port", "8097", "--no-service"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [l.split(":")[0] for l in out[:4]] == ["home and config", "accounts", "Claude Code settings", "service"]
    assert json.loads((tmp_path / "cc" / "settings.json").read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8097"
    assert main(["setup", "--undo"]) == 0
    assert not (tmp_path / "cc" / "settings.json").exists()


def test_setting_the_port_keeps_the_users_comments(paths):
    from shunt_lib.config_edit import set_server_value

    load_config(paths)  # the template, all comments
    before = open(paths.config).read()
    assert set_server_value(paths, "port", 8082) is False  # the default already
    assert set_server_value(paths, "port", 9001) is True
    text = open(paths.config).read()
    assert load_config(paths).server.port == 9001 and text.count("port = 9001") == 1
    assert text.replace("port = 9001\n", "", 1) == before  # one line added, nothing else touched
    assert set_server_value(paths, "port", 9002) is True and open(paths.config).read().count("port = ") == 2  # the comment, and ours
    with pytest.raises(Exception):
        set_server_value(paths, "port", 70000)
    assert load_config(paths).server.port == 9002


def test_setup_installs_the_real_service_unit_and_service_uninstall_takes_the_settings_key_out(tmp_path, monkeypatch, settings):
    """setup → service.install (a fake systemctl) → undo through `service uninstall`'s hook."""
    from shunt_lib import service
    from shunt_lib.setup_steps import after_service_uninstall
    from tests.test_service import FakeManager

    env = {"HOME": str(tmp_path / "u"), "XDG_CONFIG_HOME": str(tmp_path / "u" / "cfg"), "USER": "u",
           "SHUNT_HOME": str(tmp_path / "shunt")}
    paths = Paths(env["SHUNT_HOME"])
    fake = FakeManager(linger=True)
    f = Fake(paths)
    actions = f.actions()
    actions.install_service = lambda port: service.install(run=fake, env=env, argv=["/usr/bin/python3", "/opt/shunt.pyz"])
    assert run_setup(paths, actions, port=8093, add="w") == 0, f.lines
    unit = service.installed(env)
    assert [t.kind for t in unit] == ["user"] and ["systemctl", "--user", "enable", "--now", "shunt.service"] in fake.calls
    assert read_record(paths)["service"] is True
    # a second setup: the identical unit is already installed and running
    f2 = Fake(paths)
    actions2 = f2.actions()
    actions2.install_service = actions.install_service
    assert run_setup(paths, actions2, port=8093) == 0
    assert not any(": done" in l for l in f2.lines), f2.lines
    assert any(l.startswith("service: already done") and "shunt.service" in l for l in f2.lines)

    answers = []
    results = service.uninstall(run=fake, env=env, on_uninstalled=lambda: after_service_uninstall(
        paths, lambda q: answers.append(q) or "", is_tty=False))
    assert not any(r.failed for r in results) and service.installed(env) == []
    assert results[-1].step == "Claude Code settings" and results[-1].outcome == DONE
    assert json.loads(settings.read_text()) == json.loads(ORIGINAL) and answers == []  # no terminal: no question
    assert read_record(paths) == {}


def test_service_uninstall_on_a_terminal_asks_before_taking_the_settings_key_out(paths, settings):
    from shunt_lib.setup_steps import after_service_uninstall

    run_setup(paths, Fake(paths).actions(), port=8093, add="w", no_service=True)
    kept = after_service_uninstall(paths, lambda q: "n", is_tty=True)
    assert kept[0].outcome == SKIPPED and "shunt setup --undo" in kept[0].detail
    assert json.loads(settings.read_text())["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8093"
    done = after_service_uninstall(paths, lambda q: "", is_tty=True)  # Enter: yes
    assert done[0].outcome == DONE and json.loads(settings.read_text()) == json.loads(ORIGINAL)
    assert after_service_uninstall(paths, lambda q: "", is_tty=True) == []  # nothing left to take out


def test_a_failing_login_is_a_failed_step_with_what_was_not_done(paths, settings):
    from shunt_lib.errors import ConfigError

    fake = Fake(paths)
    actions = fake.actions()

    def refuse(name):
        raise ConfigError("nothing that looks like CODE#STATE")

    actions.add_account = refuse
    assert run_setup(paths, actions, port=8093, add="w") == 1
    assert any(l.startswith("accounts: failed") and "CODE#STATE" in l for l in fake.lines)
    assert any(l.startswith("not done: Claude Code settings, service") for l in fake.lines)
    assert json.loads(settings.read_text()) == json.loads(ORIGINAL)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_root_writing_into_another_users_directory_gives_the_file_to_that_user(tmp_path):
    from shunt_lib.fsutil import atomic_write_bytes

    home = tmp_path / "service-home"
    home.mkdir()
    os.chown(home, 4242, 4343)  # the system service's own user, say
    atomic_write_bytes(str(home / "credentials.json"), b"{}")
    st = (home / "credentials.json").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o600)
    atomic_write_bytes(str(tmp_path / "mine.json"), b"{}")  # a directory of root's own: stays root's
    assert (tmp_path / "mine.json").stat().st_uid == os.stat(tmp_path).st_uid


def test_an_unreadable_file_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    from shunt_lib.cli import main

    home = tmp_path / "shunt"
    home.mkdir()
    (home / "config.toml").mkdir()  # unreadable as a file, for root too
    assert main(["accounts"]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "config.toml" in err and "Traceback" not in err
    assert main(["doctor"]) == 1
    out = capsys.readouterr()
    assert "config.toml" in out.out and "Traceback" not in out.err
