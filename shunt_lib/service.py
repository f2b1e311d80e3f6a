"""``shunt service install|uninstall|status|restart``: the unit files of :mod:`shunt_lib.service_unit`
put in place and run by the service manager (systemd user or system units, launchd on macOS).

Every step is idempotent and reported as one :class:`StepResult` (done / already done / skipped,
with why / failed); a failure stops the run, and the results say what was done and what was not, so
running the command again finishes the job. Each external command (``systemctl``, ``launchctl``,
``loginctl``) runs under a timeout through a ``run`` callable, which tests replace.

API for ``shunt setup``: :func:`install`, :func:`uninstall` (with its ``on_uninstalled`` hook),
:func:`status`, :func:`restart`, :func:`installed`, :func:`default_kind`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Callable, Mapping

from . import __file__ as _package_init
from .config import Paths, load_config
from .errors import ConfigError
from .fsutil import atomic_write_bytes
from .instance import proxy_url
from .logsetup import log_file_path
from .steps import StepResult
from .service_unit import (LAUNCHD_LABEL, SYSTEM_HOME, UNIT_NAME, entry_argv, render_launchd, render_systemd,
                           system_unit_problem)

COMMAND_TIMEOUT_S = 30.0  # launchctl can hang over SSH; systemctl waits for a start (Type=notify: READY=1)
HEALTH_TIMEOUT_S = 3.0
SYSTEM_UNIT_DIR = "/etc/systemd/system"

Runner = Callable[[list[str], float], tuple[int, str]]


def run_command(argv: list[str], timeout_s: float) -> tuple[int, str]:
    """Run ``argv`` without a shell. :returns: ``(exit status, stdout and stderr text)``; 124 with
    "timed out" after ``timeout_s`` seconds, 127 if the program is missing."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, f"`{' '.join(argv)}` timed out after {timeout_s:g} s"
    except FileNotFoundError:
        return 127, f"{argv[0]} not found"
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclasses.dataclass(frozen=True)
class Target:
    """Where and how a service is installed. ``kind`` is ``"user"``, ``"system"`` or ``"launchd"``;
    ``path`` the unit file; ``home`` shunt's home the service uses."""

    kind: str
    path: str
    home: str
    log_dir: str = ""

    def manager(self, *args: str) -> list[str]:
        """A ``systemctl`` command line for this unit's manager (systemd kinds)."""
        return ["systemctl", *(["--user"] if self.kind == "user" else []), *args]


def default_kind(system: bool = False, launchd: bool | None = None, platform: str = sys.platform) -> str:
    """``"system"`` with ``system``, else ``"launchd"`` on macOS (or with ``launchd``), else ``"user"``."""
    if system:
        return "system"
    if launchd or (launchd is None and platform == "darwin"):
        return "launchd"
    return "user"


def target(kind: str, env: Mapping[str, str] | None = None, system_dir: str = SYSTEM_UNIT_DIR) -> Target:
    """The :class:`Target` for ``kind`` in this environment (``$HOME``, ``$XDG_CONFIG_HOME``, ``$SHUNT_HOME``).

    :param system_dir: where system units go (a test seam).
    """
    env = os.environ if env is None else env
    user_home = env.get("HOME") or os.path.expanduser("~")
    if kind == "system":
        return Target("system", os.path.join(system_dir, UNIT_NAME), SYSTEM_HOME)
    home = os.path.abspath(env.get("SHUNT_HOME") or os.path.join(user_home, ".config", "shunt"))
    if kind == "launchd":
        return Target("launchd", os.path.join(user_home, "Library", "LaunchAgents", f"{LAUNCHD_LABEL}.plist"), home,
                      log_dir=os.path.join(user_home, "Library", "Logs", "shunt"))
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(user_home, ".config")
    return Target("user", os.path.join(config_home, "systemd", "user", UNIT_NAME), home)


def render(tgt: Target, argv: list[str] | None = None) -> bytes:
    """The file :func:`install` writes for ``tgt``, for the shunt that runs now (or ``argv``).

    :raises ConfigError: if the running shunt cannot be found or its config is invalid.
    """
    argv = entry_argv() if argv is None else argv
    server = load_config(Paths(tgt.home), create=False).server
    drain_s = server.drain_timeout_s
    if tgt.kind == "launchd":
        return render_launchd(argv, home=tgt.home, log_dir=tgt.log_dir, drain_timeout_s=drain_s)
    log_file = log_file_path(server, tgt.home)
    home = os.path.join(os.path.realpath(tgt.home), "")
    writable = (os.path.dirname(log_file),) if log_file and not os.path.realpath(log_file).startswith(home) else ()
    return render_systemd(argv, system=tgt.kind == "system", home=tgt.home, drain_timeout_s=drain_s,
                          writable=writable).encode()


def installed(env: Mapping[str, str] | None = None, system_dir: str = SYSTEM_UNIT_DIR) -> list[Target]:
    """The shunt unit files present (user, system, launchd), as :class:`Target` s."""
    return [t for t in (target(k, env, system_dir) for k in ("user", "system", "launchd")) if os.path.isfile(t.path)]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class _Steps:
    """Collects results; :meth:`fail` records a failure and what was not done."""

    def __init__(self):
        self.results: list[StepResult] = []

    def add(self, step: str, outcome: str, detail: str = "") -> None:
        self.results.append(StepResult(step, outcome, detail))

    def fail(self, step: str, detail: str, left: list[str]) -> list[StepResult]:
        self.add(step, "failed", detail)
        if left:
            self.add("not done", "skipped", "; ".join(left) + " (run the command again once fixed)")
        return self.results


def _launchd_domain() -> str:
    return f"gui/{os.getuid()}"


def install(system: bool = False, *, launchd: bool | None = None, run: Runner = run_command,
            env: Mapping[str, str] | None = None, argv: list[str] | None = None,
            system_dir: str = SYSTEM_UNIT_DIR, timeout_s: float = COMMAND_TIMEOUT_S,
            is_root: bool | None = None) -> list[StepResult]:
    """Install and start shunt as a service; idempotent (an identical, running install is "already done").

    :param system: the systemd system unit (root); else the user unit, or launchd on macOS (or with
        ``launchd``).
    :param run: runs one external command (see :func:`run_command`; a test seam).
    :param env: the environment the paths come from (default ``os.environ``).
    :param argv: ``[interpreter, entry]`` to run (default: the running shunt, :func:`~shunt_lib.service_unit.entry_argv`).
    :returns: one :class:`StepResult` per step; the last ones say what failed and what was not done.
    :raises ConfigError: if the running shunt cannot be found, or the config is invalid (nothing changed then).
    """
    tgt = target(default_kind(system, launchd), env, system_dir)
    argv = entry_argv() if argv is None else argv
    content = render(tgt, argv)
    steps = _Steps()
    if tgt.kind == "system":
        if not (os.geteuid() == 0 if is_root is None else is_root):
            return steps.fail("check permissions", "the system service needs root: run it with sudo", [
                f"write {tgt.path}", "enable and start shunt"])
        problem = system_unit_problem(argv, os.path.dirname(os.path.dirname(_package_init)))
        if problem:
            return steps.fail("check shunt's location", problem, [f"write {tgt.path}", "enable and start shunt"])
    else:
        for d, what in ((tgt.home, "shunt's home"), (tgt.log_dir, "log directory")):
            if d:
                existed = os.path.isdir(d)
                os.makedirs(d, mode=0o700, exist_ok=True)
                steps.add(f"{what} {d}", "already done" if existed else "done")
    old = _read(tgt.path)
    step = f"write {tgt.path}"
    if old == content:
        steps.add(step, "already done")
    else:
        try:
            os.makedirs(os.path.dirname(tgt.path), exist_ok=True)
            atomic_write_bytes(tgt.path, content, mode=0o644)
        except OSError as exc:
            return steps.fail(step, exc.strerror or str(exc), ["enable and start shunt"])
        steps.add(step, "done", "updated" if old is not None else "")
    changed = old != content
    if tgt.kind == "launchd":
        return _launchd_start(tgt, changed, run, timeout_s, steps)
    return _systemd_start(tgt, changed, run, timeout_s, steps, env)


def _systemd_start(tgt: Target, changed: bool, run: Runner, timeout_s: float, steps: _Steps,
                   env: Mapping[str, str] | None) -> list[StepResult]:
    left = ["enable and start shunt"]
    if changed:
        rc, out = run(tgt.manager("daemon-reload"), timeout_s)
        if rc != 0:
            return steps.fail("systemctl daemon-reload", out, left)
        steps.add("systemctl daemon-reload", "done")
    else:
        steps.add("systemctl daemon-reload", "skipped", "the unit is unchanged")
    enabled = run(tgt.manager("is-enabled", UNIT_NAME), timeout_s)[0] == 0
    active = run(tgt.manager("is-active", UNIT_NAME), timeout_s)[0] == 0
    if enabled and active and not changed:
        steps.add("enable and start shunt", "already done")
    else:
        rc, out = run(tgt.manager("enable", "--now", UNIT_NAME), timeout_s)
        if rc != 0:
            return steps.fail("enable and start shunt", out or f"exit status {rc}", [])
        steps.add("enable and start shunt", "done")
        if active and changed:
            rc, out = run(tgt.manager("restart", UNIT_NAME), timeout_s)
            if rc != 0:
                return steps.fail("restart shunt with the new unit", out or f"exit status {rc}", [])
            steps.add("restart shunt with the new unit", "done")
    if tgt.kind == "user":
        steps.results.append(_linger(run, timeout_s, env))
    return steps.results


def _linger(run: Runner, timeout_s: float, env: Mapping[str, str] | None) -> StepResult:
    """A user unit stops when its user's last session ends, unless the user "lingers" (servers)."""
    env = os.environ if env is None else env
    user = env.get("USER") or env.get("LOGNAME") or str(os.getuid())
    step = "keep running after logout"
    rc, out = run(["loginctl", "show-user", user, "--property=Linger"], timeout_s)
    if rc == 0 and out.strip() == "Linger=yes":
        return StepResult(step, "already done", "lingering is on")
    if rc == 0 or "no session" in out.lower() or "not logged in" in out.lower():
        return StepResult(step, "skipped", f"on a server, run `loginctl enable-linger {user}` so shunt keeps "
                          "running when you log out and starts at boot")
    return StepResult(step, "skipped", f"could not ask loginctl ({out or rc}); on a server run "
                      f"`loginctl enable-linger {user}`")


def _launchd_start(tgt: Target, changed: bool, run: Runner, timeout_s: float, steps: _Steps) -> list[StepResult]:
    service = f"{_launchd_domain()}/{LAUNCHD_LABEL}"
    loaded = run(["launchctl", "print", service], timeout_s)[0] == 0
    if loaded and not changed:
        steps.add("launchctl bootstrap", "already done")
        return steps.results
    if loaded:
        rc, out = run(["launchctl", "bootout", service], timeout_s)
        if rc != 0:
            return steps.fail("launchctl bootout (old agent)", out, ["launchctl bootstrap"])
        steps.add("launchctl bootout (old agent)", "done")
    rc, out = run(["launchctl", "bootstrap", _launchd_domain(), tgt.path], timeout_s)
    if rc != 0:
        return steps.fail("launchctl bootstrap", out or f"exit status {rc}", [])
    steps.add("launchctl bootstrap", "done")
    return steps.results


def uninstall(system: bool = False, *, launchd: bool | None = None, run: Runner = run_command,
              env: Mapping[str, str] | None = None, system_dir: str = SYSTEM_UNIT_DIR,
              timeout_s: float = COMMAND_TIMEOUT_S,
              on_uninstalled: Callable[[], list[StepResult]] | None = None) -> list[StepResult]:
    """Stop and remove the service; idempotent. Keeps shunt's home (accounts, credentials, state).

    :param on_uninstalled: called once the service is gone, e.g. by ``shunt setup`` to take out the
        Claude Code settings key it wrote; its results are appended. Not called if a step failed.
    :returns: one :class:`StepResult` per step.
    """
    tgt = target(default_kind(system, launchd), env, system_dir)
    steps = _Steps()
    present = os.path.isfile(tgt.path)
    if tgt.kind == "launchd":
        service = f"{_launchd_domain()}/{LAUNCHD_LABEL}"
        if run(["launchctl", "print", service], timeout_s)[0] == 0:
            rc, out = run(["launchctl", "bootout", service], timeout_s)
            if rc != 0:
                return steps.fail("launchctl bootout", out, [f"remove {tgt.path}"])
            steps.add("launchctl bootout", "done")
        else:
            steps.add("launchctl bootout", "already done", "not loaded")
    elif present:
        rc, out = run(tgt.manager("disable", "--now", UNIT_NAME), timeout_s)
        if rc != 0 and _no_user_manager(tgt, out):
            # No user manager runs (an SSH session without one, say): nothing to stop; take the
            # enablement link out by hand, as `disable` would.
            link = os.path.join(os.path.dirname(tgt.path), "default.target.wants", UNIT_NAME)
            if os.path.islink(link):
                os.unlink(link)
            steps.add("stop and disable shunt", "skipped", "no user service manager is running, so nothing runs; "
                      "its start-at-login link is removed")
        elif rc != 0:
            return steps.fail("stop and disable shunt", out or f"exit status {rc}", [f"remove {tgt.path}"])
        else:
            steps.add("stop and disable shunt", "done")
    else:
        steps.add("stop and disable shunt", "already done", "no unit installed")
    if present:
        try:
            os.unlink(tgt.path)
        except OSError as exc:
            return steps.fail(f"remove {tgt.path}", exc.strerror or str(exc), [])
        steps.add(f"remove {tgt.path}", "done")
        if tgt.kind != "launchd":
            rc, out = run(tgt.manager("daemon-reload"), timeout_s)
            if rc != 0 and _no_user_manager(tgt, out):
                steps.add("systemctl daemon-reload", "skipped", "no user service manager is running")
            else:
                steps.add("systemctl daemon-reload", "done" if rc == 0 else "failed", "" if rc == 0 else out)
    else:
        steps.add(f"remove {tgt.path}", "already done")
    if on_uninstalled is not None and not any(r.failed for r in steps.results):
        steps.results.extend(on_uninstalled())
    return steps.results


def _no_user_manager(tgt: Target, systemctl_output: str) -> bool:
    """Whether ``systemctl --user`` failed because no user manager runs for this user (no bus)."""
    return tgt.kind == "user" and "failed to connect to bus" in systemctl_output.lower()


def restart(system: bool = False, *, launchd: bool | None = None, run: Runner = run_command,
            env: Mapping[str, str] | None = None, system_dir: str = SYSTEM_UNIT_DIR,
            timeout_s: float = COMMAND_TIMEOUT_S) -> list[StepResult]:
    """Restart the installed service (SIGTERM: requests in progress drain first)."""
    tgt = target(default_kind(system, launchd), env, system_dir)
    if not os.path.isfile(tgt.path):
        return [StepResult("restart shunt", "failed", f"no service installed ({tgt.path}): run `shunt service install`")]
    if tgt.kind == "launchd":
        argv = ["launchctl", "kickstart", "-k", f"{_launchd_domain()}/{LAUNCHD_LABEL}"]
    else:
        argv = tgt.manager("restart", UNIT_NAME)
    rc, out = run(argv, timeout_s)
    return [StepResult("restart shunt", "done" if rc == 0 else "failed", "" if rc == 0 else out or f"exit status {rc}")]


def status(system: bool = False, *, launchd: bool | None = None, run: Runner = run_command,
           env: Mapping[str, str] | None = None, system_dir: str = SYSTEM_UNIT_DIR,
           timeout_s: float = COMMAND_TIMEOUT_S) -> dict:
    """The service's state: ``{"unit": path, "installed": bool, "active": "active"|"inactive"|...,
    "url": shunt's URL, "health": "ok" or why not}``. ``active`` is ``systemctl is-active`` (launchd:
    ``loaded``/``not loaded``); ``health`` is shunt's own ``GET /health``."""
    tgt = target(default_kind(system, launchd), env, system_dir)
    if tgt.kind == "launchd":
        rc, _ = run(["launchctl", "print", f"{_launchd_domain()}/{LAUNCHD_LABEL}"], timeout_s)
        active = "loaded" if rc == 0 else "not loaded"
    else:
        rc, out = run(tgt.manager("is-active", UNIT_NAME), timeout_s)
        if rc != 0 and _no_user_manager(tgt, out):
            active = "unknown (no user service manager is running for this session)"
        else:
            active = out.splitlines()[-1] if out else ("active" if rc == 0 else "unknown")
    try:
        url = proxy_url(Paths(tgt.home))
    except ConfigError as exc:
        return {"unit": tgt.path, "installed": os.path.isfile(tgt.path), "active": active, "url": None,
                "health": str(exc)}
    return {"unit": tgt.path, "installed": os.path.isfile(tgt.path), "active": active, "url": url,
            "health": _health(url)}


def _health(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/health", timeout=HEALTH_TIMEOUT_S) as resp:
            doc = json.loads(resp.read(1 << 16))
    except urllib.error.HTTPError as exc:
        return f"answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"not answering ({getattr(exc, 'reason', exc)})"
    return "ok" if isinstance(doc, dict) and doc.get("status") == "ok" else "answered, but not as shunt does"
