"""What ``shunt service install`` writes: the systemd unit (user or system) and the launchd plist.

Pure: every function takes the paths it renders (the interpreter and entry path, shunt's home, the
log directory) and returns text or bytes; :func:`entry_argv` finds them for the shunt that is running.
The unit is ``Type=notify`` with a watchdog (``serve`` speaks the protocol: :mod:`shunt_lib.sdnotify`)
and carries a hardening set that ``systemd-analyze security --offline=true`` scores at most 2.0
("OK") for both variants. Directive meanings: https://www.freedesktop.org/software/systemd/man/systemd.exec.html,
https://www.freedesktop.org/software/systemd/man/systemd.service.html; plist keys:
https://keith.github.io/xcode-man-pages/launchd.plist.5.html (``man launchd.plist``).
"""

from __future__ import annotations

import math
import os
import plistlib
import re
import sys

from .errors import ConfigError

UNIT_NAME = "shunt.service"
LAUNCHD_LABEL = "sh.shunt.proxy"
SYSTEM_HOME = "/var/lib/shunt"  # StateDirectory=shunt under DynamicUser=yes
WATCHDOG_S = 30
STOP_MARGIN_S = 20  # TimeoutStopSec - drain_timeout_s: serve's close() also waits up to 5 s for interrupted
#                     requests to record their usage and up to 5 s for connection threads, then saves state.json
RESTART_S = 5

_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_HIDDEN_FROM_SYSTEM = ("/home/", "/root/", "/run/user/")  # ProtectHome=yes hides them from the system unit


def systemd_quote(word: str, *, command: bool = False) -> str:
    """One word for a systemd setting that splits words (``ExecStart=``, ``Environment=``, ``ReadWritePaths=``).

    Double-quoted with C escapes when it holds anything but safe characters (a space); ``%`` is
    doubled (specifiers, systemd.unit(5) "Specifiers"), and for a ``command`` argument (those of
    ``ExecStart=`` after the executable, which are variable-expanded: systemd.service(5) "Command
    lines") ``$`` too.

    :raises ConfigError: for a word with a control character (a newline cannot be written).
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in word):
        raise ConfigError(f"cannot write {word!r} into a systemd unit: it has a control character")
    word = word.replace("%", "%%")
    if command:
        word = word.replace("$", "$$")
    if _SAFE.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_zip_member(path: str) -> str | None:
    """The ``.pyz`` (or other zip file) ``path`` lives inside, e.g. ``/srv/shunt.pyz/shunt_lib/cli.py``
    gives ``/srv/shunt.pyz``; None if ``path`` is not inside an archive file."""
    parent = os.path.abspath(path)
    while True:
        if os.path.isfile(parent):
            return parent if parent != os.path.abspath(path) else None
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up


def entry_argv(argv0: str | None = None, executable: str | None = None, package_file: str | None = None) -> list[str]:
    """``[interpreter, entry]``: how to start the shunt that is running now (the unit appends ``serve``).

    Both absolute, the interpreter as given (a virtualenv's ``bin/python`` is not resolved: it is what
    makes the virtualenv's packages visible). The entry is, in order: the zipapp the package was
    imported from (``python3 shunt.pyz``); ``argv0`` when it is shunt's own file (a console script
    ``shunt`` -- a virtualenv's ``bin/shunt``, ``pip --user``'s ``~/.local/bin/shunt`` -- ``shunt.py``
    or a ``.pyz``); else the ``shunt`` console script beside the interpreter; else ``shunt.py`` beside
    the package. The console script and ``shunt.py`` are Python files, so the interpreter runs them.

    :param argv0: / :param executable: / :param package_file: default ``sys.argv[0]``,
        ``sys.executable`` and ``shunt_lib.__file__`` (test seams).
    :raises ConfigError: if no entry can be found (the message says how to run shunt instead).
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    if package_file is None:
        from . import __file__ as package_file  # noqa: N811 -- the package's own location
    if not executable:
        raise ConfigError("cannot tell which Python runs shunt (sys.executable is empty)")
    python = os.path.abspath(executable)
    archive = _is_zip_member(package_file)
    if archive:
        return [python, archive]
    name = os.path.basename(argv0)
    if argv0 and os.path.isfile(argv0) and (name in ("shunt", "shunt.py") or name.endswith(".pyz")):
        return [python, os.path.abspath(argv0)]
    script = os.path.join(os.path.dirname(python), "shunt")
    if os.path.isfile(script):
        return [python, script]
    beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(package_file))), "shunt.py")
    if os.path.isfile(beside):
        return [python, beside]
    raise ConfigError("cannot tell how this shunt was started: run the command as `shunt`, `python3 shunt.py` "
                      "or `python3 shunt.pyz`")


def system_unit_problem(argv: list[str], package_dir: str) -> str | None:
    """Why the system unit could not start this shunt, or None: its dynamic user sees no home
    directory (``ProtectHome=yes``) and reads only what every user may read.

    :param argv: ``[interpreter, entry]``; :param package_dir: the directory ``shunt_lib`` is
        imported from (a virtualenv's site-packages, or inside the ``.pyz``).
    """
    for what, path in (("the Python", argv[0]), ("shunt", argv[1]), ("the shunt package", package_dir)):
        real = os.path.realpath(path)
        if (real + "/").startswith(_HIDDEN_FROM_SYSTEM):
            return (f"{what} at {real} is under a home directory, which the system service cannot see: put shunt "
                    "where every user can read it (e.g. `install -m 644 shunt.pyz /usr/local/lib/shunt/shunt.pyz`, "
                    "or a virtualenv in /opt/shunt) and run `service install --system` from there")
    real = os.path.realpath(argv[1])
    try:
        readable = os.path.isdir(real) or os.stat(real).st_mode & 0o004
    except OSError as exc:
        return f"cannot read {real}: {exc.strerror}"
    if not readable:
        return f"{real} is not readable by other users, and the system service runs as its own user: chmod a+r {real}"
    return None


def stop_timeout_s(drain_timeout_s: float) -> int:
    """``TimeoutStopSec`` / ``ExitTimeOut``, seconds: the drain plus :data:`STOP_MARGIN_S`."""
    return int(math.ceil(drain_timeout_s)) + STOP_MARGIN_S


# Each line is here because `systemd-analyze security` lists it, except the four that let shunt work:
# it binds 127.0.0.1, reaches the upstream over HTTPS (AF_INET/AF_INET6), talks to $NOTIFY_SOCKET
# (AF_UNIX), and writes only its home.
HARDENING = """\
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
UMask=0077
ProtectSystem=strict
{protect_home}
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateUsers=yes
PrivateIPC=yes
PrivateMounts=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
KeyringMode=private
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# CPython needs no writable-and-executable memory (no JIT; shunt loads no ctypes callbacks).
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
"""


def render_systemd(argv: list[str], *, system: bool, home: str | None = None, drain_timeout_s: float = 30.0,
                   header: str = "", writable: tuple[str, ...] = ()) -> str:
    """The ``shunt.service`` unit text.

    :param argv: ``[interpreter, entry]`` (:func:`entry_argv`), absolute; ``serve`` is appended.
    :param system: the system unit (``/etc/systemd/system``: its own dynamic user, home
        :data:`SYSTEM_HOME`) rather than the user unit (``~/.config/systemd/user``).
    :param home: shunt's home for the user unit (absolute; written as ``SHUNT_HOME`` and made the one
        writable path); ignored for the system unit.
    :param drain_timeout_s: the ``drain_timeout_s`` key, seconds (sets ``TimeoutStopSec``).
    :param header: comment lines put first (each line without its ``#``); default: how to manage it.
    :param writable: more directories the service may write (absolute), e.g. a ``log_file``'s outside
        the home: everything else is read-only under it.
    :raises ConfigError: a relative path, or one a unit cannot hold (a control character).
    """
    for p in argv + list(writable) + ([] if system or home is None else [home]):
        if not os.path.isabs(p):
            raise ConfigError(f"the service needs absolute paths, got {p!r}")
    if not system and home is None:
        raise ConfigError("the user unit needs shunt's home")
    # The executable's own path is not variable-expanded; its arguments are.
    exec_start = " ".join([systemd_quote(argv[0])] + [systemd_quote(w, command=True) for w in [*argv[1:], "serve"]])
    if system:
        who = ("DynamicUser=yes\nStateDirectory=shunt\nStateDirectoryMode=0700\n"
               f"Environment=SHUNT_HOME={SYSTEM_HOME}\n")
        protect_home = "ProtectHome=yes"
        target = "multi-user.target"
        scope = ""
    else:
        who = f"Environment={systemd_quote('SHUNT_HOME=' + home)}\n"
        protect_home = f"ProtectHome=read-only\nReadWritePaths={systemd_quote(home)}"
        target = "default.target"
        scope = " --user"
    protect_home += "".join(f"\nReadWritePaths={systemd_quote(p)}" for p in writable)
    if not header:
        header = _default_header(system)
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return (
        f"{comments}"
        "[Unit]\n"
        "Description=shunt: one Anthropic endpoint over several Claude accounts\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "# serve says READY=1 once it listens and pings the watchdog while its accept loop turns.\n"
        "Type=notify\n"
        "NotifyAccess=main\n"
        f"WatchdogSec={WATCHDOG_S}\n"
        f"ExecStart={exec_start}\n"
        "# SIGTERM stops it cleanly: new connections are refused, requests in progress may finish for\n"
        "# drain_timeout_s, the rest end with an error event, and state.json is saved.\n"
        "KillSignal=SIGTERM\n"
        f"TimeoutStopSec={stop_timeout_s(drain_timeout_s)}\n"
        "Restart=on-failure\n"
        f"RestartSec={RESTART_S}\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        f"{who}"
        "# Hardening: shunt may bind its port, reach the upstream over the network and write its home;\n"
        "# nothing else (`systemd-analyze security" + scope + " shunt.service` explains each line).\n"
        + HARDENING.format(protect_home=protect_home) +
        "\n"
        "[Install]\n"
        f"WantedBy={target}\n"
    )


def _default_header(system: bool) -> str:
    if system:
        return ("shunt as a system service (written by `shunt service install --system`; preview: "
                "`shunt service render --system`).\n"
                "It runs as its own dynamic user with its home in /var/lib/shunt.\n"
                "By hand: cp shunt.service /etc/systemd/system/ && systemctl daemon-reload && "
                "systemctl enable --now shunt\n"
                "Logs: journalctl -u shunt -f")
    return ("shunt as a systemd user service (written by `shunt service install`; preview: "
            "`shunt service render`).\n"
            "By hand: cp shunt.service ~/.config/systemd/user/ && systemctl --user daemon-reload && "
            "systemctl --user enable --now shunt\n"
            "On a server, keep it running after you log out: loginctl enable-linger $USER\n"
            "Logs: journalctl --user -u shunt -f")


def render_launchd(argv: list[str], *, home: str, log_dir: str, drain_timeout_s: float = 30.0,
                   comment: str = "") -> bytes:
    """The LaunchAgent ``sh.shunt.proxy.plist`` (XML, :mod:`plistlib`) with an explaining comment.

    :param argv: ``[interpreter, entry]`` (:func:`entry_argv`), absolute; ``serve`` is appended.
    :param home: shunt's home (``SHUNT_HOME``). :param log_dir: where stdout/stderr go
        (``~/Library/Logs/shunt``; launchd does not create it: install does).
    :param drain_timeout_s: the ``drain_timeout_s`` key, seconds (sets ``ExitTimeOut``).
    :param comment: the XML comment's text; default: how to load and stop it by hand.
    """
    doc = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [*argv, "serve"],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a crash, not after a clean stop
        "ExitTimeOut": stop_timeout_s(drain_timeout_s),  # SIGTERM to SIGKILL, seconds
        "ThrottleInterval": RESTART_S,
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1", "SHUNT_HOME": home},
        "StandardOutPath": os.path.join(log_dir, "shunt.out.log"),
        "StandardErrorPath": os.path.join(log_dir, "shunt.log"),
    }
    text = plistlib.dumps(doc, sort_keys=False)
    comment = comment or (
        "shunt as a launchd agent (written by `shunt service install` on macOS; `shunt service render`\n"
        "  with the launchd option prints it on any system).\n"
        f"  By hand: mkdir -p {log_dir} && cp {LAUNCHD_LABEL}.plist ~/Library/LaunchAgents/\n"
        f"           launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist\n"
        f"  Stop:    launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}   (SIGTERM: state.json is saved)\n"
        f"  Logs:    {os.path.join(log_dir, 'shunt.log')}")
    if "--" in comment:
        raise ConfigError("an XML comment cannot hold '--'")
    marker = b"<plist "
    at = text.index(marker)
    return text[:at] + f"<!--\n  {comment}\n-->\n".encode() + text[at:]


# The documented examples in the repository (systemd/, launchd/): the renderer's output for a
# `pip install --user` of shunt by a user called USER. A test keeps the files equal to this.
EXAMPLE_ARGV = ["/usr/bin/python3", "/home/USER/.local/bin/shunt"]
EXAMPLE_MAC_ARGV = ["/usr/bin/python3", "/Users/USER/Library/Python/3.11/bin/shunt"]
_BY_HAND = ("Example for `pip install --user shunt` by the user USER; `shunt service install{opt}` writes\n"
            "this file with your own paths (`shunt service render{opt}` shows it). By hand: replace\n"
            "{what}, then\n")


def example_files() -> dict[str, bytes]:
    """The example unit files kept in the repository, by path relative to its root."""
    user = render_systemd(EXAMPLE_ARGV, system=False, home="/home/USER/.config/shunt", header=(
        _BY_HAND.format(opt="", what="/home/USER and the interpreter and shunt paths in ExecStart")
        + "  mkdir -p -m 700 ~/.config/shunt ~/.config/systemd/user\n"
          "  cp systemd/shunt.service ~/.config/systemd/user/\n"
          "  systemctl --user daemon-reload && systemctl --user enable --now shunt\n"
          "On a server, keep it running after you log out: loginctl enable-linger $USER\n"
          "Logs: journalctl --user -u shunt -f"))
    system = render_systemd(["/usr/bin/python3", "/usr/local/lib/shunt/shunt.pyz"], system=True, header=(
        "Example system service for shunt.pyz copied to /usr/local/lib/shunt/ (mode 644); run as root\n"
        "`python3 shunt.pyz service install --system` to write it with your paths, or by hand:\n"
        "  cp systemd/shunt.system.service /etc/systemd/system/shunt.service\n"
        "  systemctl daemon-reload && systemctl enable --now shunt\n"
        "It runs as its own dynamic user; its home is /var/lib/shunt. Once it has started, add accounts\n"
        "with `sudo SHUNT_HOME=/var/lib/shunt python3 shunt.pyz add-account NAME --paste` (or --api-key):\n"
        "the files it writes there stay the service user's, and the service picks them up within a second.\n"
        "Logs: journalctl -u shunt -f"))
    mac_logs = "/Users/USER/Library/Logs/shunt"
    plist = render_launchd(EXAMPLE_MAC_ARGV, home="/Users/USER/.config/shunt", log_dir=mac_logs, comment=(
        "Example launchd agent for shunt installed by pip into the user site of the user USER (macOS).\n"
        "  `shunt service install` writes it with your own paths; `shunt service render` with the\n"
        "  launchd option shows it on any system. By hand: replace USER and the interpreter and shunt\n"
        "  paths (`which python3 shunt`), then\n"
        f"    mkdir -p {mac_logs} && cp launchd/{LAUNCHD_LABEL}.plist ~/Library/LaunchAgents/\n"
        f"    launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist\n"
        f"  Stop:  launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}   (SIGTERM: state.json is saved)\n"
        f"  Logs:  {mac_logs}/shunt.log"))
    return {"systemd/shunt.service": user.encode(), "systemd/shunt.system.service": system.encode(),
            f"launchd/{LAUNCHD_LABEL}.plist": plist}


def write_examples(root: str) -> None:
    """Rewrite the example files under the repository ``root`` (``python -m shunt_lib.service_unit``)."""
    for rel, data in example_files().items():
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write_examples(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
