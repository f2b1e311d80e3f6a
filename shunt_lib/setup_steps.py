"""``shunt setup``: from nothing to Claude Code running through shunt, one line per step, and its undo.

Steps: (1) home and ``config.toml``, (2) accounts, (3) Claude Code's settings
(:mod:`shunt_lib.claude_settings`), (4) the service, (5) what to run now. Each prints one line: done,
already done, skipped (and why) or failed (and what to do); the first failure stops the run and the
steps not run are named, so running setup again finishes the job. Running it twice changes nothing
the second time.

What setup changed outside shunt's home (the settings key, the service it installed) is recorded in
``setup.json`` in the home, written before the change, so that ``shunt setup --undo`` (and ``shunt
service uninstall``) reverse exactly that and nothing the user did since. Accounts and credentials
are never touched by undo.

The commands that add accounts, install the service and show the status live elsewhere: they come in
as :class:`SetupActions`, so the flow is tested without a terminal, a login or systemd.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable

from .claude_settings import (RemoteBaseUrl, SettingsEdit, SettingsError, plan_set, plan_unset, proxy_base_url,
                              read_settings, settings_path, write_settings)
from .config import Paths, load_config
from .config_edit import set_server_value
from .errors import ConfigError
from .fsutil import atomic_write_json, read_json
from .steps import ALREADY, DONE, FAILED, SKIPPED, StepResult

RECORD_NAME = "setup.json"

class StepFailed(ConfigError):
    """A step could not be done; ``result`` says which and why."""

    def __init__(self, result: StepResult):
        super().__init__(result.line())
        self.result = result


@dataclasses.dataclass
class SetupActions:
    """What setup calls outside its own module.

    ``add_account(name)`` and ``import_login()``: add an account (exit code, 0 on success);
    ``claude_on_path()``: whether ``claude`` can be run; ``ask(prompt) -> str``: a line from the user
    (only called on a terminal); ``install_service(port) -> list[StepResult]`` and ``uninstall_service() ->
    list[StepResult]``; ``wait_healthy(url, max_wait_s) -> bool``; ``show_status(url)``: print ``shunt status``;
    ``out``: where lines go.
    """

    add_account: Callable[[str], int]
    import_login: Callable[[], int]
    claude_on_path: Callable[[], bool]
    ask: Callable[[str], str]
    install_service: Callable[[int], list[StepResult]]
    uninstall_service: Callable[[], list[StepResult]]
    restart_service: Callable[[], list[StepResult]]
    wait_healthy: Callable[[str, float], bool]
    show_status: Callable[[str], None]
    is_tty: bool = False
    out: Callable[[str], None] = print


# -- the record ---------------------------------------------------------------------------------------
def record_path(paths: Paths) -> str:
    """``setup.json`` in shunt's home."""
    return os.path.join(paths.home, RECORD_NAME)


def read_record(paths: Paths) -> dict:
    """What setup recorded (an empty dict if nothing, or if the file is unreadable)."""
    try:
        data = read_json(record_path(paths), {})
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(paths: Paths, record: dict) -> None:
    if record:
        atomic_write_json(record_path(paths), record)
    else:
        try:
            os.unlink(record_path(paths))
        except FileNotFoundError:
            pass


# -- steps --------------------------------------------------------------------------------------------
def step_home(paths: Paths, port: int | None) -> StepResult:
    """(1) The home and ``config.toml`` (created from the template if missing; ``port`` set if given)."""
    existed = os.path.exists(paths.config)
    config = load_config(paths)  # creates it from the template if missing; raises ConfigError if invalid
    changed = port is not None and set_server_value(paths, "port", port)
    port = load_config(paths).server.port
    if not existed:
        return StepResult("home and config", DONE, f"created {paths.config}, port {port}")
    if changed:
        return StepResult("home and config", DONE, f"{paths.config}: port set to {port}")
    return StepResult("home and config", ALREADY, f"{paths.config}, port {port}, {len(config.accounts)} account(s)")


def step_accounts(paths: Paths, actions: SetupActions, *, import_login: bool, add: str | None) -> StepResult:
    """(2) Accounts: none yet → the way in the user chose (``--import``, ``--add NAME``, or on a terminal
    a question); never blocks without a terminal."""
    accounts = load_config(paths).accounts
    if accounts:
        return StepResult("accounts", ALREADY, ", ".join(a.name for a in accounts))
    if not import_login and add is None:
        if not actions.is_tty:
            return StepResult("accounts", SKIPPED, "no terminal to ask on: run `shunt setup --import` to use your Claude "
                                             "Code login, or `shunt setup --add NAME` (or `shunt add-account NAME`) "
                                             "for a login of shunt's own")
        how = "`claude auth login`" if actions.claude_on_path() else "a URL to open and a code to paste"
        answer = actions.ask("No accounts yet. [1] log in a new account of shunt's own (" + how + "), "
                             "[2] import your Claude Code login, [s] skip: ").strip().lower()
        if answer in ("1", "add"):
            add = actions.ask("Name for the account [main]: ").strip() or "main"
        elif answer in ("2", "import"):
            import_login = True
        else:
            return StepResult("accounts", SKIPPED, "add one later with `shunt add-account NAME` or `shunt import`")
    try:
        code = actions.import_login() if import_login else actions.add_account(add or "main")
    except ConfigError as exc:
        raise StepFailed(StepResult("accounts", FAILED, f"{exc}; then run `shunt setup` again")) from None
    accounts = load_config(paths).accounts
    if code != 0 or not accounts:
        raise StepFailed(StepResult("accounts", FAILED, "no account was added; see above, then run `shunt setup` again"))
    return StepResult("accounts", DONE, ", ".join(a.name for a in accounts))


def step_settings(paths: Paths, port: int, *, force: bool, env: dict[str, str] | None = None) -> StepResult:
    """(3) ``env.ANTHROPIC_BASE_URL`` in Claude Code's user settings, recorded first in ``setup.json``."""
    path = settings_path(env)
    url = proxy_base_url(port)
    try:
        doc = read_settings(path)
        new, changed, previous, created_env = plan_set(doc, url, force=force)
    except (SettingsError, RemoteBaseUrl) as exc:
        raise StepFailed(StepResult("Claude Code settings", FAILED, str(exc))) from None
    record = read_record(paths)
    if not changed:
        mine = SettingsEdit.from_json(record.get("settings"))
        note = "" if mine is not None and mine.value == url else "; set before setup, so undo leaves it"
        return StepResult("Claude Code settings", ALREADY, f"{path}: ANTHROPIC_BASE_URL = {url}{note}")
    old = SettingsEdit.from_json(record.get("settings"))
    if old is not None and old.path == path and old.value == previous:  # setup's own value, for another port
        edit = dataclasses.replace(old, value=url)
    else:
        edit = SettingsEdit(path, url, previous, created_env, doc is None)
    _write_record(paths, {**record, "settings": edit.to_json()})
    try:
        backup = write_settings(path, new)
    except OSError as exc:
        raise StepFailed(StepResult("Claude Code settings", FAILED, f"cannot write {path}: {exc.strerror or exc}")) from None
    was = f" (was {previous})" if previous else ""
    return StepResult("Claude Code settings", DONE, f"{path}: ANTHROPIC_BASE_URL = {url}{was}"
                + (f"; the original is kept as {backup}" if backup else ""))


def undo_settings(paths: Paths, *, env: dict[str, str] | None = None) -> StepResult:
    """Take out the settings key setup wrote, if it still holds what setup wrote (else leave it)."""
    record = read_record(paths)
    edit = SettingsEdit.from_json(record.get("settings"))
    if edit is None:
        return StepResult("Claude Code settings", SKIPPED, "setup did not change them")
    try:
        doc = read_settings(edit.path)
    except SettingsError as exc:
        raise StepFailed(StepResult("Claude Code settings", FAILED, str(exc))) from None
    new, changed = plan_unset(doc, edit)
    if changed:
        try:
            if new == {} and edit.created_file:
                os.unlink(edit.path)
            else:
                write_settings(edit.path, new)
        except OSError as exc:
            raise StepFailed(StepResult("Claude Code settings", FAILED, f"cannot write {edit.path}: {exc.strerror or exc}")) from None
    record.pop("settings", None)
    _write_record(paths, record)
    if not changed:
        return StepResult("Claude Code settings", SKIPPED, f"{edit.path} no longer holds {edit.value}: left as it is")
    back = f"back to {edit.previous}" if edit.previous else "removed"
    return StepResult("Claude Code settings", DONE, f"{edit.path}: ANTHROPIC_BASE_URL {back}")


def step_service(paths: Paths, port: int, actions: SetupActions, *, no_service: bool,
                 port_changed: bool = False) -> StepResult:
    """(4) Install and start the service (restarted if only the port changed) and wait for ``/health``
    (10 s at most): one line for the service command's steps (the unit, its start, a hint such as
    ``loginctl enable-linger``). A service setup installed, even part way, is recorded for undo."""
    if no_service:
        return StepResult("service", SKIPPED, "--no-service: start shunt yourself with `shunt serve`")
    record = read_record(paths)
    results = actions.install_service(port)
    if port_changed and not any(r.failed or r.outcome == DONE for r in results):
        results += actions.restart_service()  # the unit is the same; the running shunt has the old port
    if any(r.outcome == DONE for r in results) and not record.get("service"):
        _write_record(paths, {**read_record(paths), "service": True})
    if any(r.failed for r in results):
        done = [r.step for r in results if r.outcome == DONE]
        raise StepFailed(StepResult("service", FAILED, (f"done: {', '.join(done)}; " if done else "")
                                    + "; ".join(f"{r.step}: {r.detail}" for r in results
                                                if r.failed or r.step == "not done")))
    url = f"http://127.0.0.1:{port}"
    if not actions.wait_healthy(url, 10.0):
        raise StepFailed(StepResult("service", FAILED, f"installed, but nothing answered {url}/health within 10 s: "
                                                       "see `shunt service status` and `shunt logs`"))
    unit = next((r.step[len("write "):] for r in results if r.step.startswith("write ")), "the service")
    notes = [r.detail for r in results if r.outcome == SKIPPED and r.step != "systemctl daemon-reload" and r.detail]
    outcome = DONE if any(r.outcome == DONE for r in results) else ALREADY
    return StepResult("service", outcome, f"{unit}, running; {url}/health answers" + "".join(f"; {n}" for n in notes))


def after_service_uninstall(paths: Paths, ask: Callable[[str], str], is_tty: bool,
                            env: dict[str, str] | None = None) -> list[StepResult]:
    """For ``shunt service uninstall``: take out the settings key setup wrote too (asked on a terminal),
    so that Claude Code is not left pointing at a port nobody listens on; forget that setup installed
    the service."""
    record = read_record(paths)
    if record.pop("service", None) is not None:
        _write_record(paths, record)
    edit = SettingsEdit.from_json(record.get("settings"))
    if edit is None:
        return []
    if is_tty and ask(f"Claude Code's settings send it to {edit.value} ({edit.path}); take that out so that it "
                      "talks to Anthropic directly? [Y/n] ").strip().lower() in ("n", "no"):
        return [StepResult("Claude Code settings", SKIPPED, f"kept: Claude Code still goes to {edit.value}; "
                                                            "`shunt setup --undo` takes it out")]
    try:
        return [undo_settings(paths, env=env)]
    except StepFailed as exc:
        return [exc.result]


STEP_NAMES = ("home and config", "accounts", "Claude Code settings", "service")


def run_setup(paths: Paths, actions: SetupActions, *, port: int | None = None, import_login: bool = False,
              add: str | None = None, no_service: bool = False, force: bool = False,
              env: dict[str, str] | None = None) -> int:
    """Run the steps in order, printing one line each. :returns: 0, or 1 after a failed step (the steps
    not run are named)."""
    done: list[str] = []
    port_before = load_config(paths).server.port if os.path.exists(paths.config) else None
    has_accounts = True
    try:
        actions.out(step_home(paths, port).line())
        done.append(STEP_NAMES[0])
        port = load_config(paths).server.port
        accounts = step_accounts(paths, actions, import_login=import_login, add=add)
        has_accounts = accounts.outcome != SKIPPED
        actions.out(accounts.line())
        done.append(STEP_NAMES[1])
        actions.out(step_settings(paths, port, force=force, env=env).line())
        done.append(STEP_NAMES[2])
        actions.out(step_service(paths, port, actions, no_service=no_service,
                                 port_changed=port_before is not None and port_before != port).line())
        done.append(STEP_NAMES[3])
    except StepFailed as exc:
        actions.out(exc.result.line())
        rest = [n for n in STEP_NAMES if n not in done and n != exc.result.step]
        if rest:
            actions.out("not done: " + ", ".join(rest) + ". Fix the above and run `shunt setup` again to finish.")
        if STEP_NAMES[2] in done:
            actions.out("Claude Code's settings already send it to shunt: until shunt runs, start it with `shunt serve`, "
                        "or take the setting out with `shunt setup --undo`.")
        return 1
    except ConfigError as exc:
        actions.out(f"failed: {exc}")
        return 1
    if not no_service:
        actions.show_status(f"http://127.0.0.1:{port}")
    first = "" if has_accounts else "Add an account first (`shunt add-account NAME` or `shunt import`), then run "
    serve = "" if not no_service else " (start it first: `shunt serve`)"
    actions.out((f"{first}`claude`" if first else "Now run `claude`") + f": it goes through shunt at "
                f"http://127.0.0.1:{port}{serve}. Undo with `shunt setup --undo`.")
    return 0


def run_undo(paths: Paths, actions: SetupActions, *, env: dict[str, str] | None = None) -> int:
    """Reverse what setup recorded: the settings key, then the service it installed. Accounts and
    credentials stay. :returns: 0, or 1 after a failed step."""
    try:
        actions.out(undo_settings(paths, env=env).line())
        record = read_record(paths)
        if record.get("service"):
            steps = actions.uninstall_service()
            for s in steps:
                actions.out(s.line())
            if any(s.failed for s in steps):
                return 1
            record.pop("service", None)
            _write_record(paths, record)
        else:
            actions.out(StepResult("service", SKIPPED, "setup did not install it").line())
    except StepFailed as exc:
        actions.out(exc.result.line())
        return 1
    actions.out("accounts and credentials are kept (`shunt remove NAME` deletes one)")
    return 0


def stdin_is_tty() -> bool:
    """Whether setup may ask questions."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False
