"""One lock per account for token refreshes, across threads and processes.

A refresh holds its account's lock for the whole network call (refresh tokens are single-use, so two
holders must never send the same one), and only that account's: refreshes of different accounts
run side by side. The lock is a ``threading.Lock`` per account name plus an exclusive ``flock`` on
``refresh-<name>.lock`` in shunt's home, so a second shunt process (a CLI command, a second
``serve``) waits for the same account and not for the others. The lock file is opened with
``O_NOFOLLOW`` (a symlink planted in its place is refused, never followed) and mode 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import threading
from typing import Iterator

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def lock_file_name(name: str) -> str:
    """``refresh-<name>.lock``; a name that is not a plain file name is replaced by its SHA-256 (hex)."""
    safe = name if _SAFE_NAME.match(name) else hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return f"refresh-{safe}.lock"


def open_lock_file(path: str) -> int:
    """Open (creating, 0600) a lock file without following a symlink. :returns: the descriptor.

    :raises OSError: if ``path`` is a symlink (``ELOOP``), not a regular file, or cannot be opened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return fd
    except BaseException:
        os.close(fd)
        raise


class AccountLocks:
    """Per-account exclusive locks (thread + ``flock``); any thread may use one instance.

    :param directory: where the ``refresh-<name>.lock`` files live (shunt's home).
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def path(self, name: str) -> str:
        """The lock file of account ``name``."""
        return os.path.join(self.directory, lock_file_name(name))

    def thread_lock(self, name: str) -> threading.Lock:
        """The in-process lock of account ``name`` (held inside :meth:`hold` too)."""
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Hold ``name``'s lock: first against this process's threads, then against other processes.

        :raises OSError: if the lock file cannot be opened safely (nothing is held then).
        """
        with self.thread_lock(name):
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = open_lock_file(self.path(name))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
