"""Fixtures: an isolated environment, a leak check, a fake upstream, and a real proxy on 127.0.0.1:0."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from shunt_lib.config import load_config
from shunt_lib.server import make_server
from tests.fakes.upstream import FakeUpstream
from tests.support import EventCatcher, Proxy, write_home

LEAK_WAIT_S = 10.0  # how long threads a test started may take to end after its teardown


def _open_sockets() -> set[str]:
    """The inodes of this process's open sockets (Linux: /proc/self/fd)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


@pytest.fixture(autouse=True)
def _no_leaks():
    """Fail a test that leaves a thread running or a socket open once its fixtures are torn down."""
    threads_before = set(threading.enumerate())
    sockets_before = _open_sockets()
    yield
    deadline = time.monotonic() + LEAK_WAIT_S
    for t in set(threading.enumerate()) - threads_before:
        t.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert not left, f"threads left running: {left}"
    leaked = _open_sockets() - sockets_before
    assert not leaked, f"sockets left open: {len(leaked)}"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.setenv("SHUNT_HOME", str(tmp_path / "shunt"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)  # no test pops up a real desktop notification
    # Commands run in-process (serve's logging set-up, the demo) configure shunt's loggers; a test
    # that asserts on caplog must not depend on which of them ran before it.
    loggers = [logging.getLogger("shunt")] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                                              if name.startswith("shunt.")]
    saved = [(log, list(log.handlers), log.propagate, log.level) for log in loggers]
    yield
    for log, handlers, propagate, level in saved:
        log.handlers[:], log.propagate, log.level = handlers, propagate, level


@pytest.fixture
def upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.close()


@pytest.fixture
def make_proxy(upstream):
    """``make_proxy(accounts=[("a","oauth")], clock=..., models={...}, **server_extra)`` → a running
    :class:`Proxy` (``accounts`` may hold AccountConfig values, e.g. an openai account)."""
    proxies = []

    def factory(accounts=(("a", "oauth"), ("b", "oauth")), *, hold_first_ping_s=5.0, hold_ping_interval_s=15.0,
                overload_backoff_s=0.01, expires_at_ms=None, idle_timeout_s=120.0, clock=None, models=None,
                **server_extra):
        paths = write_home(os.environ["SHUNT_HOME"], upstream.url, list(accounts), server_extra, expires_at_ms, models)
        kw = {"clock": clock} if clock is not None else {}
        srv = make_server(load_config(paths), paths, port=0, hold_first_ping_s=hold_first_ping_s,
                          hold_ping_interval_s=hold_ping_interval_s, overload_backoff_s=overload_backoff_s,
                          idle_timeout_s=idle_timeout_s, **kw)
        p = Proxy(srv)
        proxies.append(p)
        return p

    yield factory
    for p in proxies:
        p.close()


@pytest.fixture
def events():
    c = EventCatcher()
    logs = [logging.getLogger("shunt.events"), logging.getLogger("shunt.access")]
    old = [log.level for log in logs]
    for log in logs:
        log.addHandler(c.handler)
        log.setLevel(logging.DEBUG)
    yield c
    for log, level in zip(logs, old):
        log.removeHandler(c.handler)
        log.setLevel(level)


@pytest.fixture
def redis_server(tmp_path):
    """A real ``redis-server`` on a free port (:class:`tests.redis_support.RedisServer`); the test is
    skipped, saying why, where redis-server or the ``redis`` package cannot be had."""
    from tests.redis_support import WHY_MISSING, RedisServer
    if WHY_MISSING:
        pytest.skip(WHY_MISSING)
    pytest.importorskip("redis", reason="the redis package is not installed (pip install -e '.[test]')")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(str(directory))
    yield server
    server.stop()
