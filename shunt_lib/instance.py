"""One ``shunt serve`` per home: an exclusive lock on the home, and ``serve.json`` saying where it listens.

``serve.lock`` (in the home) is held with ``fcntl.flock(LOCK_EX)`` for as long as ``serve`` runs and
holds its pid; the kernel releases it when the process ends, however it ends. ``serve.json`` (written
atomically, mode 0600, once the port is bound) is::

    {"pid": 1234, "host": "127.0.0.1", "port": 8082, "url": "http://127.0.0.1:8082", "started_at_s": 1790000000}

``url`` is where a client on this machine reaches the proxy (a wildcard bind is reached on loopback).
The file is trusted only while its lock is held, so one left behind by a killed process is ignored.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from .config import Paths, load_config
from .errors import ConfigError
from .fsutil import atomic_write_json, read_json

LOCK_NAME = "serve.lock"
INFO_NAME = "serve.json"
PROBE_TIMEOUT_S = 2.0


class HomeBusy(ConfigError):
    """Another ``serve`` holds this home's lock (the message says which pid and where it listens)."""


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to ``host``:``port`` (a wildcard
    address is reached on loopback; an IPv6 address is bracketed, RFC 3986 §3.2.2)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServeLock:
    """The home's ``serve`` lock. :meth:`acquire` it before touching state, :meth:`announce` once the
    port is bound, :meth:`release` (or the process's end) gives it up. Not thread-safe: one per ``serve``."""

    def __init__(self, paths: Paths):
        self.lock_path = os.path.join(paths.home, LOCK_NAME)
        self.info_path = os.path.join(paths.home, INFO_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting and write this pid into it.

        :raises HomeBusy: if another process holds it (naming its pid and URL when known).
        :raises OSError: if the lock file cannot be opened (it is never followed if it is a symbolic link).
        """
        os.makedirs(os.path.dirname(self.lock_path), mode=0o700, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_text(fd)
            os.close(fd)
            info = self.info() or {}
            pid = info.get("pid") or (int(holder) if holder.isdigit() else None)
            where = f" on {info['url']}" if isinstance(info.get("url"), str) else ""
            raise HomeBusy(f"another shunt (pid {pid or 'unknown'}) is serving this home{where} "
                           f"({os.path.dirname(self.lock_path)}); stop it first, or use another SHUNT_HOME") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def announce(self, host: str, port: int, now_s: float | None = None) -> dict:
        """Write ``serve.json`` for the bound address. :returns: the document written."""
        doc = {"pid": os.getpid(), "host": host, "port": port, "url": local_url(host, port),
               "started_at_s": int(time.time() if now_s is None else now_s)}
        atomic_write_json(self.info_path, doc)
        return doc

    def info(self) -> dict | None:
        """The ``serve.json`` document as written, or None if missing or unreadable."""
        try:
            doc = read_json(self.info_path)
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def release(self) -> None:
        """Remove ``serve.json`` and give the lock up (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.info_path)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def running_url(paths: Paths) -> str | None:
    """The URL a running ``serve`` of this home recorded, or None if none runs (its lock is free) or
    it recorded nothing usable. Never creates a file."""
    try:
        fd = os.open(os.path.join(paths.home, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        else:
            held = False
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if not held:
        return None
    info = ServeLock(paths).info() or {}
    url = info.get("url")
    return url if isinstance(url, str) and url.startswith("http://") else None


def proxy_url(paths: Paths, given: str | None = None) -> str:
    """Where the running proxy is: ``given`` (``--url``), else ``$SHUNT_URL``, else what the running
    ``serve`` of this home recorded (:func:`running_url`), else ``[server]`` host and port.

    :raises ConfigError: if ``given`` or ``$SHUNT_URL`` is not an ``http://host:port`` URL.
    """
    for source, url in (("--url", given), ("SHUNT_URL", os.environ.get("SHUNT_URL"))):
        if url:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or parts.path.strip("/") or parts.query:
                raise ConfigError(f"{source} must be shunt's address, like http://127.0.0.1:8082 (got {url!r})")
            return url.rstrip("/")
    recorded = running_url(paths)
    if recorded:
        return recorded
    server = load_config(paths, create=False).server
    return local_url(server.host, server.port)


def port_in_use_message(host: str, port: int) -> str:
    """What to say when ``host``:``port`` cannot be bound because it is taken: which port, and whether
    what listens there is a shunt. A shunt answers ``GET /health`` with ``{"status":"ok"}`` and
    ``GET /status`` with its status document (``version``, ``accounts``), or, behind a ``remote_key``,
    with a 401 ``authentication_error`` in Anthropic's error shape."""
    url = local_url(host, port)
    health = _probe(url + "/health")
    if health is None:
        return f"port {port} on {host} is in use by a program that does not answer HTTP (not a shunt)"
    status = _probe(url + "/status")
    doc = status[1] if status is not None else None
    healthy = health[0] == 200 and isinstance(health[1], dict) and health[1].get("status") == "ok"
    error = doc.get("error") if isinstance(doc, dict) and doc.get("type") == "error" else None
    shunt = healthy and status is not None and (
        (status[0] == 200 and isinstance(doc, dict) and "accounts" in doc and "version" in doc)
        or (status[0] == 401 and isinstance(error, dict) and error.get("type") == "authentication_error"))
    if shunt:
        version = f" {doc['version']}" if status[0] == 200 and isinstance(doc.get("version"), str) else ""
        return (f"port {port} on {host} is in use by another shunt{version} (`shunt status --url {url}` shows it); "
                "choose another with --port")
    return f"port {port} on {host} is in use by another program (not a shunt); choose another with --port"


def wait_healthy(url: str, max_wait_s: float, interval_s: float = 0.2) -> bool:
    """Whether ``GET url/health`` answers 200 within ``max_wait_s`` (asked every ``interval_s``): a
    service just started, coming up."""
    deadline = time.monotonic() + max_wait_s
    while True:
        got = _probe(url.rstrip("/") + "/health")
        if got is not None and got[0] == 200:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def _probe(url: str) -> tuple[int, object] | None:
    """``(status, parsed JSON body or None)`` of ``GET url``, or None if nothing answered HTTP."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=PROBE_TIMEOUT_S) as resp:
            status, body = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1 << 20)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _read_text(fd: int) -> str:
    """The (short) text in the lock file: the holder's pid."""
    try:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


def is_addr_in_use(exc: OSError) -> bool:
    """Whether a bind failed because the address is taken."""
    return exc.errno == errno.EADDRINUSE
