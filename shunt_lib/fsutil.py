"""Atomic, private file writes: temp file in the same directory, fsync, rename, mode 0600.

A reader (or a process restarted after ``kill -9``) therefore sees either the old file or the
new one, never a torn or empty file.

A file written by root into a directory that belongs to another user (``sudo shunt add-account``
into the system service's home, owned by its own user; or ``sudo`` with the user's ``HOME``) is given
to the directory's owner, so that the service or the user can still read it.

A path that is a symbolic link is written through: the link's target is replaced, in its own
directory, and the link is kept. Replacing the link itself by a regular file would leave the target
(where the user keeps the file on purpose: a secrets volume, a dotfiles checkout) holding stale
content, such as a refresh token that was spent by the rotation just saved.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from typing import Callable, TypeVar

T = TypeVar("T")


def atomic_write_bytes(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode`` (through a symbolic link: to its target).

    :raises OSError: if the directory is not writable or the disk is full (the old file is kept).
    """
    path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        if os.geteuid() == 0:
            owner = os.stat(directory)
            if owner.st_uid != 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_json(path: str, obj: object, mode: int = 0o600) -> None:
    """Serialise ``obj`` as indented JSON and write it with :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def read_json(path: str, default: object = None) -> object:
    """Return the parsed JSON in ``path``, or ``default`` if the file does not exist.

    :raises ValueError: if the file exists but is not valid JSON.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return default
    return json.loads(data)


def mtime_ns(path: str) -> int:
    """Modification time of ``path`` in nanoseconds, 0 if it is missing: cheap change detection."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def create_private(path: str) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist yet, so that an SQLite database made
    there (and its ``-wal`` and ``-shm`` files, which SQLite gives the database's mode) is private.

    An existing file is left unopened: closing any descriptor of a file drops every POSIX lock the
    process holds on it, those of its open SQLite connections included, which corrupts the database
    (https://www.sqlite.org/howtocorrupt.html, section 2.2).

    :raises OSError: if the directory is not writable.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
    finally:
        os.close(fd)


def query_read_only(path: str, query: Callable[[sqlite3.Connection], T], missing: T) -> T:
    """``query(conn)`` on the SQLite database at ``path`` opened read-only (never created); ``missing``
    if the file does not exist, cannot be opened, or lacks the table queried.

    :raises sqlite3.Error: any other error of the query (a corrupt file, a locked one past 5 s).
    """
    if not os.path.exists(path):
        return missing
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return missing
    try:
        return query(conn)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return missing
        raise
    finally:
        conn.close()
