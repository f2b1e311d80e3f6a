"""``shunt logs``: the service's log from wherever it goes, as readable text or as the raw lines.

Where (:func:`find_source`, first match): ``server.log_file`` if set; else the journal of the systemd
user unit (``~/.config/systemd/user/shunt.service``) or of the system unit
(``/etc/systemd/system/shunt.service``), read with ``journalctl``; else the macOS LaunchAgent's log
file ``~/Library/Logs/shunt/shunt.log`` if the agent (``~/Library/LaunchAgents/sh.shunt.proxy.plist``)
is installed. Otherwise shunt logs to the stderr of whoever runs ``shunt serve``, and there is
nothing to show.

Lines read the same wherever they come from: a JSON line (``log_format = "json"``) is shown as the
text line it stands for, and a journal entry's text gets the journal's timestamp back. ``--json``
prints the lines as they were written instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import threading
import time
from typing import Callable, Iterator

from .logfmt import LogFormatter

USER_UNIT = "~/.config/systemd/user/shunt.service"
SYSTEM_UNIT = "/etc/systemd/system/shunt.service"
LAUNCHD_PLIST = "~/Library/LaunchAgents/sh.shunt.proxy.plist"
#: Where the LaunchAgent sends shunt's stdout and stderr (its ``StandardErrorPath``).
LAUNCHD_LOG = "~/Library/Logs/shunt/shunt.log"
FOLLOW_POLL_S = 0.25  # how often a followed file is checked for new lines, and for rotation
_TAIL_BLOCK = 65536


@dataclasses.dataclass(frozen=True)
class LogSource:
    """Where the log is: a ``path`` to read, or ``journal_args`` selecting the unit for ``journalctl``
    (``("--user", "-u", "shunt")``); ``what`` says which, for messages."""

    what: str
    path: str | None = None
    journal_args: tuple[str, ...] = ()


def find_source(log_file: str | None, exists: Callable[[str], bool] = os.path.exists) -> LogSource | None:
    """Where the service's log is (see the module docstring), or None if shunt only logs to stderr.

    :param log_file: ``server.log_file`` as an absolute path, or None; :param exists: the file test
        (``~`` is expanded before it is called).
    """
    if log_file is not None:
        return LogSource(f"log_file {log_file}", path=log_file)
    if exists(os.path.expanduser(USER_UNIT)):
        return LogSource("the journal of the systemd user unit shunt", journal_args=("--user", "-u", "shunt"))
    if exists(SYSTEM_UNIT):
        return LogSource("the journal of the systemd unit shunt", journal_args=("-u", "shunt"))
    if exists(os.path.expanduser(LAUNCHD_PLIST)):
        path = os.path.expanduser(LAUNCHD_LOG)
        return LogSource(f"the LaunchAgent's log {path}", path=path)
    return None


NO_SOURCE = ("shunt logs to the stderr of `shunt serve` here (no server.log_file in config.toml and no service "
             "installed), so there is no log to show: set server.log_file, or install the service with "
             "`shunt service install` (its log then goes to the journal, or on macOS to " + LAUNCHD_LOG + ")")


# -- rendering ------------------------------------------------------------------------------------------
_TEXT = LogFormatter()


def render(line: str) -> str:
    """``line`` as a text log line: a JSON line of shunt's is rewritten as :class:`LogFormatter` would
    have written it (its traceback after it); any other line is returned unchanged."""
    if not line.startswith("{"):
        return line
    try:
        d = json.loads(line)
    except ValueError:
        return line
    if not isinstance(d, dict) or not isinstance(d.get("ts"), (int, float)) or "message" not in d:
        return line
    level = str(d.get("level", "INFO"))
    record = logging.makeLogRecord({"created": d["ts"], "levelname": level, "levelno": logging.getLevelName(level),
                                    "name": str(d.get("logger", "shunt")), "msg": str(d["message"]),
                                    "event": d.get("event"), "request_id": d.get("request_id"),
                                    "upstream_request_id": d.get("upstream_request_id")})
    text = _TEXT.format(record)
    return text + "\n" + d["exc"] if isinstance(d.get("exc"), str) else text


def render_journal_entry(entry: str, *, raw: bool) -> str | None:
    """One line of ``journalctl -o json`` as the log line it holds (None if it holds none).

    The message as written if ``raw``; else :func:`render`'s text, with the entry's timestamp put
    back in front of a text line (shunt leaves it out on the journal's stream). Field names:
    https://www.freedesktop.org/software/systemd/man/latest/systemd.journal-fields.html
    """
    try:
        d = json.loads(entry)
    except ValueError:
        return None
    message = d.get("MESSAGE") if isinstance(d, dict) else None
    if isinstance(message, list):  # not valid UTF-8: the journal gives the bytes
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(errors="replace")
    if not isinstance(message, str):
        return None
    if raw:
        return message
    shown = render(message)
    if shown is not message:
        return shown
    try:
        at_s = int(d["__REALTIME_TIMESTAMP"]) / 1e6
    except (KeyError, TypeError, ValueError):
        return message
    return time.strftime("%Y-%m-%d %H:%M:%S ", time.localtime(at_s)) + message


# -- a log file -------------------------------------------------------------------------------------------
def last_lines(path: str, n: int) -> tuple[list[str], int]:
    """The last ``n`` complete lines of ``path`` (read backwards in blocks, so a large log costs what
    the lines do) and the offset where they end.

    :raises OSError: if the file cannot be read.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        start = end
        while start > 0 and data.count(b"\n") <= n:
            step = min(_TAIL_BLOCK, start)
            start -= step
            f.seek(start)
            data = f.read(step) + data
    complete = data[:data.rfind(b"\n") + 1]  # a line being written is shown when it is complete
    lines = complete.decode("utf-8", errors="replace").splitlines()
    return (lines[-n:] if n > 0 else []), start + len(complete)


def follow(path: str, offset: int, emit: Callable[[str], None], stop: threading.Event,
           poll_s: float = FOLLOW_POLL_S) -> None:
    """Call ``emit`` with each complete line written to ``path`` after ``offset`` until ``stop`` is set,
    like ``tail -F``: when the file is moved away (rotated) the rest of it is read, then the new file
    at ``path`` from its start; when it shrinks (truncated in place), it is read again from its start.

    :raises OSError: if ``path`` cannot be opened at first.
    """
    f = open(path, "rb")
    f.seek(offset)
    pending = b""
    try:
        while True:
            data = f.read(_TAIL_BLOCK)
            if data:
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    emit(line.decode("utf-8", errors="replace"))
                continue
            moved, shrunk = _moved_or_shrunk(path, f)
            if moved:
                try:
                    new = open(path, "rb")
                except OSError:  # between the move and the new file's creation
                    new = None
                if new is not None:
                    if pending:
                        emit(pending.decode("utf-8", errors="replace"))
                        pending = b""
                    f.close()
                    f = new
                    continue
            elif shrunk:
                f.seek(0)
                pending = b""
                continue
            if stop.wait(poll_s):
                return
    finally:
        f.close()


def _moved_or_shrunk(path: str, f) -> tuple[bool, bool]:
    """Whether ``path`` now names another file than ``f`` (or none), and whether ``f`` is shorter than
    what was read of it."""
    mine = os.fstat(f.fileno())
    try:
        now = os.stat(path)
    except OSError:
        return True, False
    if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
        return True, False
    return False, mine.st_size < f.tell()


def show_file(path: str, n: int, *, follow_it: bool, raw: bool, out: Callable[[str], None],
              stop: threading.Event | None = None) -> None:
    """Print the last ``n`` lines of ``path`` through ``out`` (rendered unless ``raw``), then, if
    ``follow_it``, every new line until ``stop`` is set (never, if None: Ctrl-C ends it).

    :raises OSError: if the file cannot be read.
    """
    show = (lambda line: out(line)) if raw else (lambda line: out(render(line)))
    lines, end = last_lines(path, n)
    for line in lines:
        show(line)
    if follow_it:
        follow(path, end, show, stop if stop is not None else threading.Event())


# -- the journal -----------------------------------------------------------------------------------------
def journal_command(source: LogSource, n: int, *, follow_it: bool) -> list[str]:
    """The ``journalctl`` command line printing ``source``'s last ``n`` entries as JSON, one per line
    (``-o json``: the message and its timestamp), and with ``follow_it`` the new ones as they come.
    Options: https://www.freedesktop.org/software/systemd/man/latest/journalctl.html"""
    cmd = ["journalctl", *source.journal_args, "-o", "json", "--output-fields=MESSAGE", "-n", str(n), "--no-pager"]
    return cmd + ["-f"] if follow_it else cmd


def journal_lines(cmd: list[str]) -> Iterator[str]:
    """The lines ``cmd`` prints, as they come; when they end, :class:`JournalFailed` if it failed.

    :raises FileNotFoundError: if ``journalctl`` is not installed.
    """
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, encoding="utf-8", errors="replace") as proc:
        try:
            yield from proc.stdout
        finally:
            if proc.poll() is None:
                proc.terminate()
        if proc.wait() != 0:
            raise JournalFailed(proc.returncode)


class JournalFailed(Exception):
    """``journalctl`` exited with a non-zero status (it said why on stderr)."""

    def __init__(self, status: int):
        super().__init__(f"journalctl exited with status {status}")
        self.status = status


def show_journal(source: LogSource, n: int, *, follow_it: bool, raw: bool, out: Callable[[str], None]) -> None:
    """Print ``source``'s journal entries through ``out`` (see :func:`render_journal_entry`).

    :raises FileNotFoundError: without ``journalctl``; :raises JournalFailed: if it fails.
    """
    for entry in journal_lines(journal_command(source, n, follow_it=follow_it)):
        line = render_journal_entry(entry, raw=raw)
        if line is not None:
            out(line)


# -- the command ------------------------------------------------------------------------------------------
def show_logs(log_file: str | None, log_format: str, n: int, *, follow_it: bool, raw: bool,
              out: Callable[[str], None], err: Callable[[str], None], stop: threading.Event | None = None) -> int:
    """``shunt logs``: find the log (:func:`find_source`) and show it.

    :param log_file: ``server.log_file`` as an absolute path, or None; :param log_format: ``server.log_format``;
        :param out: prints one line of the log; :param err: prints one message for the user.
    :returns: the exit status: 0, 1 if there is no log to show or it cannot be read, or ``journalctl``'s.
    """
    source = find_source(log_file)
    if source is None:
        err(NO_SOURCE)
        return 1
    if raw and log_format != "json":
        err('server.log_format is "text": the lines are shown as written; set it to "json" for JSON lines')
    if source.path is None:
        try:
            show_journal(source, n, follow_it=follow_it, raw=raw, out=out)
        except FileNotFoundError:
            err(f"shunt logs to {source.what}, but journalctl is not installed to read it")
            return 1
        except JournalFailed as exc:
            return exc.status
        return 0
    try:
        show_file(source.path, n, follow_it=follow_it, raw=raw, out=out, stop=stop)
    except FileNotFoundError:
        err(f"no log yet: shunt logs to {source.what}, which does not exist yet (it is created when `shunt serve` starts)")
        return 1
    except OSError as exc:
        err(f"cannot read {source.path}: {exc.strerror or exc}")
        return 1
    return 0
