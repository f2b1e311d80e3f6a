"""Where ``shunt serve`` logs: stderr (the journal, under systemd) or ``server.log_file``, as text or JSON.

With ``log_file`` set, shunt logs only to that file (created mode 0600, its directory 0700), rotated
by size (``log_rotate = "size"``: ``logging.handlers.RotatingFileHandler``) or reopened when an
outside tool such as logrotate moves it (``"external"``: ``logging.handlers.WatchedFileHandler``).
Otherwise it logs to stderr; when stderr is the systemd journal's stream, text lines leave the date
out (the journal stamps each entry) and carry their priority instead. The log settings apply when
``serve`` starts (a change needs a restart).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import IO, Mapping

from .config import ServerConfig
from .errors import ConfigError
from .logfmt import JsonFormatter, LogFormatter

LOG_FILE_MODE = 0o600


def stderr_is_journal(journal_stream: str | None, stderr_dev_ino: tuple[int, int] | None) -> bool:
    """Whether stderr is connected to the systemd journal.

    systemd sets ``$JOURNAL_STREAM`` to ``DEVICE:INODE`` of the stream it connects to the journal, so
    that a process can tell whether its stderr is still that stream (a child whose stderr was
    redirected inherits the variable too): https://www.freedesktop.org/software/systemd/man/latest/systemd.exec.html
    (``$JOURNAL_STREAM``).

    :param journal_stream: the variable's value, or None if unset.
    :param stderr_dev_ino: ``(st_dev, st_ino)`` of stderr, or None if it has no file descriptor.
    """
    if not journal_stream or stderr_dev_ino is None:
        return False
    dev, _, ino = journal_stream.partition(":")
    try:
        return (int(dev), int(ino)) == stderr_dev_ino
    except ValueError:
        return False


def log_file_path(server: ServerConfig, home: str) -> str | None:
    """``server.log_file`` as an absolute path (``~`` expanded, relative to ``home``), or None if unset."""
    if not server.log_file:
        return None
    path = os.path.expanduser(server.log_file)
    return os.path.normpath(os.path.join(home, path))  # an absolute ``path`` is kept as it is


class _PrivateFile:
    """A file handler whose file, when it creates one (at start and at each rotation), is mode 0600."""

    def _open(self):  # the one place ``logging.FileHandler`` opens its file
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


class PrivateRotatingFileHandler(_PrivateFile, logging.handlers.RotatingFileHandler):
    """``RotatingFileHandler`` creating its files mode 0600."""


class PrivateWatchedFileHandler(_PrivateFile, logging.handlers.WatchedFileHandler):
    """``WatchedFileHandler`` (reopens its file when it is moved or deleted) creating it mode 0600."""


def file_handler(server: ServerConfig, path: str) -> logging.Handler:
    """The handler writing ``path`` as ``server.log_rotate`` says (directory created mode 0700).

    :raises ConfigError: if the file cannot be opened, naming it and why.
    """
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if server.log_rotate == "external":
            return PrivateWatchedFileHandler(path, encoding="utf-8")
        return PrivateRotatingFileHandler(path, maxBytes=server.log_max_bytes, backupCount=server.log_backups,
                                          encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config.toml: server.log_file: cannot open {path}: {exc.strerror or exc}") from None


def _dev_ino(stream: IO) -> tuple[int, int] | None:
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's StringIO) or closed
        return None
    return st.st_dev, st.st_ino


def setup_logging(verbose: bool = False, server: ServerConfig | None = None, home: str = "", *,
                  env: Mapping[str, str] | None = None, stream: IO | None = None) -> str | None:
    """Send the ``shunt`` loggers' records where ``server`` says, replacing any handler set before
    (a file handler set before is closed). Tokens are never logged.

    Records skip the caller lookup and process/thread bookkeeping that shunt's formats never show
    (the logging HOWTO's "Optimization" section): one access line per request is on the hot path.

    :param server: the ``[server]`` table (None: defaults, text on stderr); :param home: shunt's home,
        which a relative ``log_file`` is in; :param env: the environment (default ``os.environ``);
        :param stream: stderr (default ``sys.stderr``).
    :returns: the log file's path, or None when logging to ``stream``.
    :raises ConfigError: if ``log_file`` cannot be opened (the loggers are left as they were).
    """
    server = server if server is not None else ServerConfig()
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    logging._srcfile = None  # documented switch: no sys._getframe() walk per record
    logging.logProcesses = logging.logMultiprocessing = False
    path = log_file_path(server, home)
    if path is not None:
        handler = file_handler(server, path)
        journal = False
    else:
        handler = logging.StreamHandler(stream)
        journal = stderr_is_journal(env.get("JOURNAL_STREAM"), _dev_ino(stream))
    handler.setFormatter(JsonFormatter(journal=journal) if server.log_format == "json" else LogFormatter(journal=journal))
    root = logging.getLogger("shunt")
    for old in root.handlers:
        if isinstance(old, logging.FileHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return path
