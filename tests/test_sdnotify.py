"""``serve`` under a ``Type=notify`` unit: READY=1 once the port answers, WATCHDOG=1 while the accept loop
turns, STOPPING=1 at the stop; against a real datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import signal
import socket
import threading
import urllib.request

import pytest

from shunt_lib.sdnotify import Watchdog, loop_alive, notify, notify_address, watchdog_interval_s
from tests.support import ROOT, ServeProcess, wait_until, write_home


class NotifySocket:
    """A bound AF_UNIX datagram socket, like the one systemd passes in ``$NOTIFY_SOCKET``."""

    def __init__(self, tmp_path, abstract: bool):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"shunt-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = str(tmp_path / "notify.sock")
            self.sock.bind(path)
            self.env_value = path
        self.sock.settimeout(10)

    def next(self) -> str:
        return self.sock.recv(4096).decode()

    def until(self, prefix: str) -> tuple[str, list[str]]:
        """Read messages until one starts with ``prefix``. :returns: it, and the ones before it."""
        before = []
        while True:
            msg = self.next()
            if msg.startswith(prefix):
                return msg, before
            before.append(msg)

    def close(self):
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path):
    s = NotifySocket(tmp_path, abstract=request.param == "abstract")
    yield s
    s.close()


def _health(port: int) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
        return resp.status


def test_serve_says_ready_once_the_port_answers_pings_the_watchdog_and_says_stopping(tmp_path, upstream,
                                                                                     notify_socket):
    home = str(tmp_path / "h")
    write_home(home, upstream.url, [("a", "oauth")], {"usage_poll_s": 0})
    env = dict(os.environ, PYTHONPATH=ROOT, SHUNT_HOME=home, NOTIFY_SOCKET=notify_socket.env_value,
               WATCHDOG_USEC="200000")  # a ping every 0.1 s
    serve = ServeProcess(env)
    try:
        ready, before = notify_socket.until("READY=1")
        assert before == []  # nothing before READY
        assert f"STATUS=listening on http://127.0.0.1:{serve.port}" in ready.splitlines()
        assert _health(serve.port) == 200  # READY means it answers
        pings = [notify_socket.next() for _ in range(3)]
        assert pings == ["WATCHDOG=1"] * 3
    finally:
        rc = serve.stop(signal.SIGTERM)
    stopping, _ = notify_socket.until("STOPPING=1")
    assert stopping == "STOPPING=1"
    assert rc == 0


def test_the_watchdog_is_not_started_for_another_pid_and_nothing_is_sent_without_a_socket(tmp_path):
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, pid=7) is None
    assert watchdog_interval_s({}, pid=7) is None
    assert notify("READY=1", {}) is False
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert notify_address({"NOTIFY_SOCKET": "@name"}) == b"\0name"
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False  # never raises


def test_the_watchdog_pings_only_while_the_accept_loop_turns():
    now = [100.0]
    last_turn = [100.0]
    alive = loop_alive(lambda: last_turn[0], max_age_s=15.0, now=lambda: now[0])
    sent = []
    dog = Watchdog(15.0, alive, send=lambda m: sent.append(m) or True)
    assert dog.tick() is True
    now[0] = 114.0  # the loop turned 14 s ago: still alive
    assert dog.tick() is True
    now[0] = 116.0  # stuck for 16 s: no ping, so systemd's WatchdogSec ends it
    assert dog.tick() is False
    last_turn[0] = 116.0
    assert dog.tick() is True
    assert sent == ["WATCHDOG=1"] * 3


def test_the_accept_loop_stamps_each_turn(make_proxy):
    proxy = make_proxy()
    first = proxy.srv.last_turn_s
    assert wait_until(lambda: proxy.srv.last_turn_s > first)  # it turns every poll interval, with no traffic


def test_a_stopped_watchdog_thread_ends_at_once():
    sent = threading.Event()
    dog = Watchdog(60.0, lambda: True, send=lambda m: sent.set() or True)
    dog.start()
    assert sent.wait(10)
    dog.stop()
    assert not dog.is_alive()
