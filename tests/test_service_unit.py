"""The service files: how the running shunt is found (venv, pip --user, shunt.py, a zipapp), the systemd
units (checked by systemd-analyze itself) and the launchd plist, and the examples kept in the repository."""

from __future__ import annotations

import ctypes
import json
import os
import plistlib
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipapp

import pytest

from shunt_lib.errors import ConfigError
from shunt_lib.service_unit import (entry_argv, example_files, render_launchd, render_systemd, system_unit_problem,
                                    systemd_quote)
from tests.support import MSG, ROOT, ServeProcess, write_home

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian package "
                                   "`systemd`; .ci/run installs it): the units cannot be verified or scored here")
REAL_ARGV = [sys.executable, os.path.join(ROOT, "shunt.py")]  # systemd-analyze verify wants ExecStart to exist


def _touch(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/usr/bin/env python3\n")
    return path


# -- finding the running shunt ------------------------------------------------------------------
def test_a_virtualenv_console_script_runs_under_the_virtualenv_python_unresolved(tmp_path):
    script = _touch(str(tmp_path / "venv" / "bin" / "shunt"))
    python = str(tmp_path / "venv" / "bin" / "python")  # a symlink in a real venv: kept as is
    assert entry_argv(script, python, str(tmp_path / "venv/lib/site-packages/shunt_lib/__init__.py")) == [python, script]


def test_a_pip_user_install_runs_the_local_bin_script(tmp_path):
    script = _touch(str(tmp_path / "home" / ".local" / "bin" / "shunt"))
    assert entry_argv(script, "/usr/bin/python3", "/usr/lib/x/shunt_lib/__init__.py") == ["/usr/bin/python3", script]


def test_python_shunt_py_from_the_checkout_gets_absolute_paths(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert entry_argv("shunt.py", "python3", os.path.join(ROOT, "shunt_lib", "__init__.py")) == [
        os.path.abspath("python3"), os.path.join(ROOT, "shunt.py")]


def test_a_package_inside_a_zipapp_names_the_zipapp(tmp_path):
    pyz = _touch(str(tmp_path / "dist" / "shunt.pyz"))
    assert entry_argv("-c", "/usr/bin/python3", pyz + "/shunt_lib/__init__.py") == ["/usr/bin/python3", pyz]


def test_a_real_zipapp_finds_itself(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "shunt_lib"), src / "shunt_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (src / "__main__.py").write_text("import json\nfrom shunt_lib.service_unit import entry_argv\n"
                                     "print(json.dumps(entry_argv()))\n")
    zipapp.create_archive(str(src), str(tmp_path / "shunt.pyz"))
    out = subprocess.run([sys.executable, "shunt.pyz"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [sys.executable, str(tmp_path / "shunt.pyz")]


def test_under_another_program_it_falls_back_to_the_script_beside_python_then_shunt_py(tmp_path):
    script = _touch(str(tmp_path / "venv" / "bin" / "shunt"))
    python = str(tmp_path / "venv" / "bin" / "python")
    pkg = os.path.join(ROOT, "shunt_lib", "__init__.py")
    assert entry_argv("/usr/bin/pytest", python, pkg) == [python, script]
    assert entry_argv("/usr/bin/pytest", str(tmp_path / "python"), pkg) == [str(tmp_path / "python"),
                                                                            os.path.join(ROOT, "shunt.py")]
    with pytest.raises(ConfigError, match="cannot tell how this shunt was started"):
        entry_argv("/usr/bin/pytest", str(tmp_path / "python"), str(tmp_path / "site" / "shunt_lib" / "__init__.py"))


# -- the units ------------------------------------------------------------------------------------
def _settings(unit: str) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in unit.splitlines() if "=" in line and not line.startswith("#")]


def test_the_user_unit_runs_the_entry_with_its_home_writable_and_a_watchdog():
    unit = render_systemd(["/usr/bin/python3", "/home/u/.local/bin/shunt"], system=False, home="/home/u/.config/shunt",
                          drain_timeout_s=100)
    s = dict(_settings(unit))
    assert s["ExecStart"] == "/usr/bin/python3 /home/u/.local/bin/shunt serve"
    assert ("Environment", "SHUNT_HOME=/home/u/.config/shunt") in _settings(unit)
    assert s["ProtectHome"] == "read-only" and s["ReadWritePaths"] == "/home/u/.config/shunt"
    assert (s["Type"], s["WatchdogSec"], s["NotifyAccess"], s["KillSignal"], s["Restart"]) == (
        "notify", "30", "main", "SIGTERM", "on-failure")
    assert int(s["TimeoutStopSec"]) > 100 + 15
    assert s["WantedBy"] == "default.target" and "DynamicUser" not in s


def test_the_system_unit_has_its_own_user_and_state_directory():
    unit = render_systemd(["/usr/bin/python3", "/usr/local/lib/shunt/shunt.pyz"], system=True, drain_timeout_s=30)
    s = dict(_settings(unit))
    assert (s["DynamicUser"], s["StateDirectory"], s["ProtectHome"]) == ("yes", "shunt", "yes")
    assert ("Environment", "SHUNT_HOME=/var/lib/shunt") in _settings(unit)
    assert int(s["TimeoutStopSec"]) > 30 + 15
    assert s["WantedBy"] == "multi-user.target"
    assert s["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX" and s["CapabilityBoundingSet"] == ""


def test_paths_with_spaces_and_specials_are_quoted_for_systemd():
    assert systemd_quote("/opt/my shunt/bin/python") == '"/opt/my shunt/bin/python"'
    assert systemd_quote("/a/100%/x") == "/a/100%%/x"
    assert systemd_quote("/a/$HOME", command=True) == '"/a/$$HOME"'
    assert systemd_quote('/a/"q"\\') == '"/a/\\"q\\"\\\\"'
    with pytest.raises(ConfigError):
        systemd_quote("/a\nb")
    with pytest.raises(ConfigError, match="absolute"):
        render_systemd(["python3", "shunt.py"], system=True)


def test_the_system_unit_refuses_paths_its_user_cannot_see(tmp_path):
    assert "home directory" in system_unit_problem(["/usr/bin/python3", "/home/u/shunt.pyz"], "/home/u/shunt.pyz")
    assert "home directory" in system_unit_problem(["/root/.venv/bin/python", "/usr/local/bin/shunt"], "/usr/lib")
    private = _touch(str(tmp_path / "shunt.pyz"))
    os.chmod(private, 0o600)
    if not private.startswith(("/home/", "/root/")):
        assert "chmod a+r" in system_unit_problem(["/usr/bin/python3", private], "/usr/lib")
        os.chmod(private, 0o644)
        assert system_unit_problem(["/usr/bin/python3", private], "/usr/lib") is None


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120)


@needs_analyze
@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_systemd_accepts_the_unit_and_scores_its_exposure_at_most_2(tmp_path, system):
    odd = tmp_path / "with space"
    odd.mkdir()
    os.symlink(sys.executable, odd / "python 3")
    for argv in (REAL_ARGV, [str(odd / "python 3"), REAL_ARGV[1]]):
        unit = tmp_path / "shunt.service"
        unit.write_text(render_systemd(argv, system=system, home=str(tmp_path / "shunt home")))
        verify = _analyze("verify", str(unit))
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = _analyze("security", "--offline=true", "--threshold=20", str(unit))  # tenths: 2.0
    exposure = re.search(r"Overall exposure level for shunt\.service: ([\d.]+)", security.stdout)
    assert exposure, security.stdout + security.stderr
    assert float(exposure.group(1)) <= 2.0 and security.returncode == 0, security.stdout


def test_serve_runs_with_writable_executable_memory_refused(tmp_path, upstream):
    """MemoryDenyWriteExecute=yes: the kernel's own switch for it (PR_SET_MDWE, Linux 6.3, inherited
    across exec) is set in the child before it runs ``serve``, which then forwards a request."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = str(tmp_path / "h")
    write_home(home, upstream.url, [("a", "oauth")], {"usage_poll_s": 0})

    def deny_write_execute():
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            os._exit(97)

    probe = subprocess.run([sys.executable, "-c", "import ssl, requests; print(ssl.create_default_context())"],
                           preexec_fn=deny_write_execute, capture_output=True, timeout=60)
    if probe.returncode == 97:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3): MemoryDenyWriteExecute cannot be tried here")
    assert probe.returncode == 0, probe.stderr
    env = dict(os.environ, PYTHONPATH=ROOT, SHUNT_HOME=home)
    serve = ServeProcess(env, preexec_fn=deny_write_execute)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{serve.port}/v1/messages", data=json.dumps(MSG).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            assert resp.status == 200
    finally:
        assert serve.stop(signal.SIGTERM) == 0


# -- launchd ----------------------------------------------------------------------------------------
def test_the_launchd_plist_parses_and_has_the_keys_launchd_needs():
    data = render_launchd(["/usr/bin/python3", "/Users/u/shunt.pyz"], home="/Users/u/.config/shunt",
                          log_dir="/Users/u/Library/Logs/shunt", drain_timeout_s=30)
    doc = plistlib.loads(data)
    assert doc["Label"] == "sh.shunt.proxy"
    assert doc["ProgramArguments"] == ["/usr/bin/python3", "/Users/u/shunt.pyz", "serve"]
    assert doc["RunAtLoad"] is True and doc["KeepAlive"] == {"SuccessfulExit": False}
    assert doc["ExitTimeOut"] > 30 + 15
    assert doc["EnvironmentVariables"]["SHUNT_HOME"] == "/Users/u/.config/shunt"
    assert doc["StandardErrorPath"] == "/Users/u/Library/Logs/shunt/shunt.log"
    assert not doc["StandardOutPath"].startswith("/tmp")


# -- the examples in the repository -------------------------------------------------------------------
@pytest.mark.parametrize("rel", sorted(example_files()))
def test_the_example_files_are_the_renderer_output(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        assert f.read() == example_files()[rel], f"{rel} is stale: run `python -m shunt_lib.service_unit`"


@needs_analyze
def test_the_example_units_score_at_most_2():
    for rel in ("systemd/shunt.service", "systemd/shunt.system.service"):
        security = _analyze("security", "--offline=true", "--threshold=20", os.path.join(ROOT, rel))
        assert security.returncode == 0, security.stdout
