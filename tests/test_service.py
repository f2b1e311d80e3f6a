"""``shunt service``: install / uninstall / restart / status against a fake systemctl and launchctl that record
their calls, with HOME and XDG_CONFIG_HOME in a temporary directory (never the real user's files)."""

from __future__ import annotations

import os

import pytest

from shunt_lib import service
from shunt_lib.cli import main

ARGV = ["/usr/bin/python3", "/usr/local/lib/shunt/shunt.pyz"]


class FakeManager:
    """systemctl / launchctl / loginctl as a callable: records each command and keeps enabled/active state."""

    def __init__(self, fail: set[str] = frozenset(), linger: bool = False):
        self.calls: list[list[str]] = []
        self.enabled = self.active = self.loaded = False
        self.fail = set(fail)
        self.linger = linger

    def __call__(self, argv: list[str], timeout_s: float) -> tuple[int, str]:
        assert timeout_s > 0
        self.calls.append(argv)
        words = [w for w in argv if w != "--user"]
        verb = words[1]
        if verb in self.fail:
            return 1, f"{verb} failed: Unit shunt.service has a bad setting"
        if words[0] == "loginctl":
            return 0, f"Linger={'yes' if self.linger else 'no'}"
        if words[0] == "launchctl":
            if verb == "print":
                return (0, "state = running") if self.loaded else (113, "Could not find service")
            self.loaded = verb == "bootstrap"
            return 0, ""
        if verb == "is-enabled":
            return (0, "enabled") if self.enabled else (1, "disabled")
        if verb == "is-active":
            return (0, "active") if self.active else (3, "inactive")
        if verb == "enable":
            self.enabled = self.active = True
        if verb == "disable":
            self.enabled = self.active = False
        return 0, ""

    def verbs(self) -> list[str]:
        return [" ".join(c[1:]) for c in self.calls]


@pytest.fixture
def env(tmp_path):
    return {"HOME": str(tmp_path / "u"), "XDG_CONFIG_HOME": str(tmp_path / "u" / "cfg"), "USER": "u",
            "SHUNT_HOME": str(tmp_path / "u" / "shunt home")}


def _lines(results) -> list[str]:
    return [r.line() for r in results]


def test_install_writes_the_user_unit_starts_it_and_a_second_run_changes_nothing(tmp_path, env):
    fake = FakeManager()
    results = service.install(run=fake, env=env, argv=ARGV)
    unit = os.path.join(env["XDG_CONFIG_HOME"], "systemd", "user", "shunt.service")
    assert os.path.isdir(env["SHUNT_HOME"]) and os.stat(env["SHUNT_HOME"]).st_mode & 0o777 == 0o700
    with open(unit) as f:
        text = f.read()
    assert 'ExecStart=/usr/bin/python3 /usr/local/lib/shunt/shunt.pyz serve' in text
    assert f'ReadWritePaths="{env["SHUNT_HOME"]}"' in text
    assert ["systemctl", "--user", "daemon-reload"] in fake.calls
    assert ["systemctl", "--user", "enable", "--now", "shunt.service"] in fake.calls
    assert [r.outcome for r in results] == ["done", "done", "done", "done", "skipped"]
    assert "loginctl enable-linger u" in results[-1].detail
    fake.calls.clear()
    again = service.install(run=fake, env=env, argv=ARGV)
    assert [r.outcome for r in again[:-1]] == ["already done", "already done", "skipped", "already done"]
    assert not any(c[2:3] in (["daemon-reload"], ["enable"]) for c in fake.calls)


def test_a_changed_unit_is_reloaded_and_the_running_service_restarted(env):
    fake = FakeManager()
    service.install(run=fake, env=env, argv=ARGV)
    fake.calls.clear()
    results = service.install(run=fake, env=env, argv=["/usr/bin/python3", "/opt/shunt/shunt.pyz"])
    assert "write" in results[1].step and results[1].detail == "updated"
    assert "daemon-reload" in fake.verbs()[0] and "restart shunt.service" in fake.verbs()[-2]


def test_an_install_failing_part_way_says_what_is_left_and_running_it_again_finishes(env):
    fake = FakeManager(fail={"enable"})
    results = service.install(run=fake, env=env, argv=ARGV)
    assert results[-1].failed and "bad setting" in results[-1].detail
    assert "write" in results[1].step and results[1].outcome == "done"
    fake.fail.clear()
    again = service.install(run=fake, env=env, argv=ARGV)
    assert not any(r.failed for r in again)
    assert ("enable and start shunt", "done") in [(r.step, r.outcome) for r in again]


def test_the_system_unit_needs_root_and_a_location_its_user_can_read(tmp_path, env):
    fake = FakeManager()
    results = service.install(True, run=fake, env=env, argv=ARGV, system_dir=str(tmp_path / "etc"), is_root=False)
    assert results[0].failed and "sudo" in results[0].detail and not fake.calls
    assert not os.path.exists(tmp_path / "etc")
    results = service.install(True, run=fake, env=env, argv=["/usr/bin/python3", "/home/u/shunt.pyz"],
                              system_dir=str(tmp_path / "etc"), is_root=True)
    assert results[0].failed and "home directory" in results[0].detail
    pyz = tmp_path / "shunt.pyz"
    pyz.write_bytes(b"PK")
    pyz.chmod(0o644)
    results = service.install(True, run=fake, env=env, argv=["/usr/bin/python3", str(pyz)],
                              system_dir=str(tmp_path / "etc"), is_root=True)
    assert not any(r.failed for r in results), _lines(results)
    with open(tmp_path / "etc" / "shunt.service") as f:
        assert "DynamicUser=yes" in f.read()
    assert ["systemctl", "enable", "--now", "shunt.service"] in fake.calls  # no --user
    assert not any(c[0] == "loginctl" for c in fake.calls)


def test_uninstall_stops_removes_and_calls_the_setup_hook_and_is_idempotent(env):
    fake = FakeManager()
    service.install(run=fake, env=env, argv=ARGV)
    hook_calls = []

    def hook():
        hook_calls.append(1)
        return [service.StepResult("Claude Code settings", "done")]

    results = service.uninstall(run=fake, env=env, on_uninstalled=hook)
    assert [r.outcome for r in results] == ["done", "done", "done", "done"]
    assert ["systemctl", "--user", "disable", "--now", "shunt.service"] in fake.calls
    assert service.installed(env) == [] and hook_calls == [1]
    assert os.path.isdir(env["SHUNT_HOME"])  # accounts and credentials stay
    again = service.uninstall(run=fake, env=env)
    assert [r.outcome for r in again] == ["already done", "already done"]


def test_launchd_install_bootstraps_the_agent_once(env):
    fake = FakeManager()
    results = service.install(launchd=True, run=fake, env=env, argv=ARGV)
    plist = os.path.join(env["HOME"], "Library", "LaunchAgents", "sh.shunt.proxy.plist")
    assert os.path.isfile(plist) and os.path.isdir(os.path.join(env["HOME"], "Library", "Logs", "shunt"))
    assert ["launchctl", "bootstrap", f"gui/{os.getuid()}", plist] in fake.calls
    assert not any(r.failed for r in results)
    again = service.install(launchd=True, run=fake, env=env, argv=ARGV)
    assert again[-1].line() == "launchctl bootstrap: already done"
    assert [t.kind for t in service.installed(env)] == ["launchd"]
    out = service.uninstall(launchd=True, run=fake, env=env)
    assert ["launchctl", "bootout", f"gui/{os.getuid()}/sh.shunt.proxy"] in fake.calls and not os.path.exists(plist)
    assert not any(r.failed for r in out)


def test_a_hanging_command_is_cut_by_its_timeout():
    rc, out = service.run_command(["sleep", "5"], 0.2)
    assert rc == 124 and "timed out" in out
    assert service.run_command(["no-such-program-shunt"], 1)[0] == 127


def test_status_shows_is_active_and_shunts_own_health(make_proxy, monkeypatch, env):
    proxy = make_proxy()
    fake = FakeManager()
    fake.active = True
    monkeypatch.setenv("SHUNT_URL", proxy.url)
    doc = service.status(run=fake, env=env)
    assert (doc["active"], doc["health"], doc["url"]) == ("active", "ok", proxy.url)
    monkeypatch.setenv("SHUNT_URL", "http://127.0.0.1:9")
    assert service.status(run=fake, env=env)["health"].startswith("not answering")


def test_render_prints_what_install_writes_and_changes_nothing(capsys, tmp_path):
    home = os.environ["HOME"]
    assert main(["service", "render"]) == 0
    out = capsys.readouterr().out
    assert "Type=notify" in out and f"SHUNT_HOME={os.environ['SHUNT_HOME']}" in out
    assert main(["service", "render", "--launchd"]) == 0
    assert "<key>ProgramArguments</key>" in capsys.readouterr().out
    assert main(["service", "render", "--system"]) == 0
    assert "DynamicUser=yes" in capsys.readouterr().out
    assert not os.path.exists(home) and not os.path.exists(os.environ["SHUNT_HOME"])


def test_a_log_file_outside_the_home_is_made_writable_in_the_unit(env, tmp_path):
    from shunt_lib.config_edit import set_server_value
    from shunt_lib.config import Paths

    tgt = service.target("user", env)
    inside = service.render(tgt, ARGV).decode()
    assert inside.count("ReadWritePaths=") == 1  # the home only
    set_server_value(Paths(tgt.home), "log_file", str(tmp_path / "logs" / "shunt.log"))
    unit = service.render(tgt, ARGV).decode()
    assert f"ReadWritePaths={tmp_path / 'logs'}" in unit
    set_server_value(Paths(tgt.home), "log_file", "shunt.log")  # relative: in the home, nothing more
    assert service.render(tgt, ARGV).decode().count("ReadWritePaths=") == 1


def test_uninstall_without_a_user_manager_still_removes_the_unit_and_its_link(env):
    fake = FakeManager()
    service.install(run=fake, env=env, argv=ARGV)
    unit = service.target("user", env).path
    wants = os.path.join(os.path.dirname(unit), "default.target.wants")
    os.makedirs(wants)
    os.symlink(unit, os.path.join(wants, "shunt.service"))  # what `enable` made

    def no_bus(argv, timeout_s):
        return (1, "Failed to connect to bus: No medium found") if argv[0] == "systemctl" else fake(argv, timeout_s)

    results = service.uninstall(run=no_bus, env=env)
    assert not any(r.failed for r in results), _lines(results)
    assert results[0].outcome == "skipped" and "no user service manager" in results[0].detail
    assert service.installed(env) == [] and os.listdir(wants) == []


def test_status_says_so_when_no_user_manager_runs(env):
    doc = service.status(run=lambda argv, t: (1, "Failed to connect to bus: No medium found"), env=env)
    assert doc["active"].startswith("unknown (no user service manager")
    assert doc["installed"] is False and doc["health"]
