"""Helpers shared by the test modules: a running proxy, raw sockets, a subprocess ``shunt serve``,
event catching, and a fake clock. Imported as ``tests.support``; test modules never import each other."""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Callable

from shunt_lib.clock import Clock
from shunt_lib.homes import write_home as _write_home
from shunt_lib.server import ShuntServer, serve_in_thread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MSG = {"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
STREAM_MSG = dict(MSG, stream=True)


def write_home(home: str, upstream_url: str, accounts, server_extra: dict | None = None,
               expires_at_ms: int | None = None, models: dict | None = None, cluster: dict | None = None):
    """A home with ``accounts`` ((name, kind) pairs or AccountConfig values) whose secrets are
    ``tok-<name>`` / ``ref-<name>``, and optional ``[models]`` and ``[cluster]`` tables."""
    return _write_home(home, upstream_url, accounts, server=server_extra, expires_at_ms=expires_at_ms, models=models,
                       cluster=cluster)


class FakeClock(Clock):
    """Virtual time: starts at the real time, and :meth:`wait` advances it instead of sleeping.

    Waiting for an event that is not set moves time forward by the whole timeout at once, so a held
    request is pinged and released in the order real time would, in microseconds. Use it for one
    request at a time: concurrent waiters would each move the shared time.
    """

    def __init__(self, start_s: float | None = None):
        self._now = time.time() if start_s is None else start_s
        self._lock = threading.Lock()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        if event.is_set():
            return True
        self.advance(timeout_s)
        return event.is_set()


class Proxy:
    """A :class:`ShuntServer` serving on a thread, with a one-shot request helper."""

    def __init__(self, srv: ShuntServer):
        self.srv = srv
        self.port = srv.port
        self.url = f"http://127.0.0.1:{srv.port}"
        self.thread = serve_in_thread(srv, poll_interval_s=0.02)

    @property
    def pool(self):
        return self.srv.pool

    def close(self) -> None:
        self.srv.close()
        self.thread.join()

    def request(self, method="POST", path="/v1/messages", body=None, headers=None, timeout=30):
        """Send one request with ``http.client``. :returns: (status, headers with lower-case names, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
            hdrs.update(headers or {})
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            out = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, out
        finally:
            conn.close()


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it.

    :raises socket.timeout: if the server does not close the connection within ``timeout``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                return out
            out += piece


def send_raw(port: int, body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> socket.socket:
    """Send a POST /v1/messages with ``body`` on a new connection; the caller reads and closes it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/messages " + version + b"\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n" + extra
              + b"content-length: %d\r\n\r\n" % len(body) + body)
    return s


def open_stream(port: int, body=STREAM_MSG, headers=None, timeout=20):
    """POST a streaming request; returns the open (connection, response) with the body unread."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdrs = {"content-type": "application/json"}
    hdrs.update(headers or {})
    conn.request("POST", "/v1/messages?beta=true", body=json.dumps(body).encode(), headers=hdrs)
    return conn, conn.getresponse()


def read_until(resp, marker: bytes, limit=1 << 20) -> bytes:
    """Read ``resp`` until ``marker`` has arrived (or the body ended)."""
    got = b""
    while marker not in got:
        piece = resp.read1(65536)
        if not piece:
            break
        got += piece
        assert len(got) < limit
    return got


class ServeProcess:
    """``python shunt.py serve --port 0`` in a subprocess; :attr:`port` is read from its log line.
    :param shunt: the command that runs shunt (default: this Python and the repository's ``shunt.py``)."""

    def __init__(self, env: dict, shunt: list[str] | None = None, cwd: str | None = None,
                 preexec_fn: Callable[[], None] | None = None):
        shunt = shunt or [sys.executable, os.path.join(ROOT, "shunt.py")]
        self.proc = subprocess.Popen([*shunt, "serve", "--port", "0"], env=env, cwd=cwd, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=preexec_fn)
        self.early: list[str] = []  # lines before it (a cluster logs its connection first)
        line = self.first_line = self.proc.stderr.readline()  # "listening on http://127.0.0.1:PORT ..." once bound
        while line and "listening on http://" not in line:
            self.early.append(line)
            line = self.first_line = self.proc.stderr.readline()
        assert "listening on http://" in line, "".join(self.early) + line
        self.port = int(line.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
        # Keep draining its log so it never blocks on a full pipe.
        self._drain = threading.Thread(target=self._read_log, daemon=True)
        self.log: list[str] = list(self.early)  # its whole log, the lines before "listening on" first
        self._drain.start()

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self, sig) -> int:
        """Send ``sig``; :returns: the exit status."""
        self.proc.send_signal(sig)
        rc = self.proc.wait(10)
        self._drain.join()
        self.proc.stderr.close()
        return rc


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds. Only for conditions no event announces (another process's files)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class EventCatcher:
    """Collects ``shunt.events`` and ``shunt.access`` records; :meth:`wait_for` blocks until enough arrive."""

    def __init__(self):
        self.records: list[logging.LogRecord] = []
        self.cond = threading.Condition()
        catcher = self

        class Handler(logging.Handler):
            def emit(self, record):
                with catcher.cond:
                    catcher.records.append(record)
                    catcher.cond.notify_all()

        self.handler = Handler(logging.DEBUG)

    def kinds(self) -> list:
        return [getattr(r, "event", None) for r in self.records]

    def wait_for(self, kind: str, timeout: float = 10.0, count: int = 1) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.kinds().count(kind) >= count, timeout)


#: The browser and driver the browser tests use (Debian: ``apt-get install chromium chromium-driver``), or None.
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")


def headless_chromium(tmp_dir: str, *args: str, options=None):
    """A selenium ``webdriver.Chrome`` on a headless :data:`CHROMIUM` with ``args`` added; its profile and
    the directories Chromium leaves behind go to ``tmp_dir``. :param options: ``ChromeOptions`` to start from."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = options or webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *args):
        options.add_argument(arg)
    # Chromium's profile holds a Unix socket, whose path may not exceed 107 bytes: pytest's tmp_path
    # (/tmp/pytest-of-USER/pytest-NNNN/test_name0/...) outgrows that once the run counter has 4 digits.
    if len(tmp_dir) > 40:
        short = tempfile.mkdtemp(prefix="chr-", dir="/tmp")
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, env=dict(os.environ, TMPDIR=short)))
        weakref.finalize(driver, shutil.rmtree, short, True)
        return driver
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, env=dict(os.environ, TMPDIR=tmp_dir)))


def client_token(proxy, label: str, **fields) -> tuple[str, str]:
    """A new client token ``label`` (with ``fields``: limits, binding, ttl) made through the running
    proxy's ``POST /admin/tokens`` from loopback. :returns: (the token, its id)."""
    status, _, body = proxy.request("POST", "/admin/tokens", body={"label": label, **fields})
    assert status == 200, body
    doc = json.loads(body)
    return doc["token"], doc["id"]
