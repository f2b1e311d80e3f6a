"""``shunt monitor`` in a real terminal: tmux runs it against a running proxy with a fake upstream, keys
are sent with ``send-keys`` and the screen is read back with ``capture-pane``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.fakes.upstream import Reply, message_json, unified_headers
from tests.support import MSG, ROOT, client_token, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (Debian: apt-get install tmux); "
                                       "the terminal test of `shunt monitor` needs it")


class Tmux:
    """A private tmux server (its own socket, no user config) with one 100x30 session."""

    def __init__(self, command: str, env: dict):
        self.socket = f"shunt-test-{uuid.uuid4().hex[:12]}"
        self.env = env
        self.run("new-session", "-d", "-s", "mon", "-x", "100", "-y", "30", command)

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-u", "-L", self.socket, "-f", "/dev/null", *args], env=self.env,
                              capture_output=True, text=True, timeout=20).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "mon")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "mon", *keys)

    def wait_for(self, predicate, what: str, timeout: float = 15) -> str:
        """Wait until ``predicate(screen)`` holds; fail with the last screen otherwise."""
        seen = [""]

        def check():
            seen[0] = self.screen()
            return predicate(seen[0])
        assert wait_until(check, timeout=timeout, interval=0.05), f"{what}; the screen was:\n{seen[0]}"
        return seen[0]

    def kill(self) -> None:
        self.run("kill-server")


def _status(proxy) -> dict:
    status, _, body = proxy.request("GET", "/status")
    assert status == 200
    return json.loads(body)


def test_monitor_in_tmux_shows_the_pool_and_its_keys_drive_the_control_api(make_proxy, upstream, tmp_path):
    proxy = make_proxy()  # accounts a and b, strategy least-utilization
    upstream.script("tok-a", *[Reply(body=message_json(input_tokens=1200, output_tokens=300),
                                     headers=unified_headers(util_5h=0.42, util_7d=0.17)) for _ in range(2)])
    proxy.pool.set_pin("a")  # both requests on a, so its utilization is known
    for _ in range(2):
        assert proxy.request(body=MSG)[0] == 200
    proxy.pool.set_pin(None)
    rc_file = tmp_path / "monitor.rc"
    command = (f"{sys.executable} {os.path.join(ROOT, 'shunt.py')} monitor --url {proxy.url} -i 0.2; "
               f"echo $? > {rc_file}")
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    tmux = Tmux(command, env)
    try:
        screen = tmux.wait_for(lambda s: "a " in s and "b " in s and s.count("claude-test") >= 2,
                               "the account rows and both requests in the feed")
        row_a = re.search(r"^a\s+available\s+([█░]+)\s+42%", screen, re.M)
        assert row_a, screen  # 5h bar and percent
        assert "█" in row_a.group(1) and "░" in row_a.group(1)
        assert re.search(r"^b\s+available\s+[█░]+\s+-", screen, re.M), screen  # no utilization known yet
        assert "routing automatically" in screen and "strategy least-utilization" in screen
        assert "tokens per account" in screen
        feed = [line for line in screen.splitlines() if "claude-test" in line]
        assert all(re.search(r"\d\d:\d\d:\d\d a\s+claude-test\s+200\s+1500", line) for line in feed), feed

        tmux.keys("p")
        tmux.wait_for(lambda s: "pin all traffic to which account?" in s, "the picker")
        tmux.keys("2")
        tmux.wait_for(lambda s: "pinned to b" in s, "the pin in the header")
        assert _status(proxy)["pinned_account"] == "b"

        tmux.keys("a")
        tmux.wait_for(lambda s: "routing automatically" in s, "automatic routing in the header")
        assert _status(proxy)["pinned_account"] is None

        tmux.keys("s")
        tmux.wait_for(lambda s: "strategy round-robin" in s, "the next strategy in the header")
        assert _status(proxy)["strategy"] == "round-robin"

        tmux.keys("m")
        tmux.wait_for(lambda s: "alerts muted" in s, "the mute in the header")
        assert _status(proxy)["alerts"]["muted"] is True

        tmux.keys("1")
        tmux.wait_for(lambda s: "last 1h" in s and re.search(r"^ +3000 .*█", s, re.M), "the 1 h chart with both requests")

        tmux.keys("q")
        assert wait_until(lambda: rc_file.exists() and rc_file.read_text().strip() != "", timeout=10), tmux.screen()
        assert rc_file.read_text().strip() == "0"
    finally:
        tmux.kill()


def test_monitor_on_a_terminal_curses_cannot_drive_prints_the_status_once(make_proxy, tmp_path):
    """TERM names a terminal curses does not know: curses cannot start, so the status table is printed and it exits 0."""
    proxy = make_proxy()
    rc_file = tmp_path / "monitor.rc"
    command = (f"TERM=no-such-terminal {sys.executable} {os.path.join(ROOT, 'shunt.py')} monitor --url {proxy.url}; "
               f"echo $? > {rc_file}; sleep 30")
    tmux = Tmux(command, dict(os.environ, LANG="C.UTF-8"))
    try:
        assert wait_until(lambda: rc_file.exists() and rc_file.read_text().strip() != "", timeout=10), tmux.screen()
        assert rc_file.read_text().strip() == "0"
        screen = tmux.screen()
        assert "Traceback" not in screen
        assert re.search(r"^ACCOUNT\s+PLAN\s+STATUS", screen, re.M) and re.search(r"^a\s", screen, re.M), screen
    finally:
        tmux.kill()


def test_monitor_in_tmux_shows_a_clients_block_once_more_than_local_sent_requests(make_proxy, upstream):
    proxy = make_proxy()
    ci_token, _ = client_token(proxy, "ci-bot")
    for headers in ({"x-api-key": ci_token}, {"x-api-key": ci_token}, None):
        assert proxy.request(body=MSG, headers=headers)[0] == 200
    command = f"{sys.executable} {os.path.join(ROOT, 'shunt.py')} monitor --url {proxy.url} -i 0.2"
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm-256color")
    tmux = Tmux(command, env)
    try:
        screen = tmux.wait_for(lambda s: re.search(r"^ci-bot\s+2\s+0\s", s, re.M) and re.search(r"^local\s+1\s", s, re.M),
                               "the clients block")
        assert re.search(r"^CLIENT\s+REQS", screen, re.M) and "by ci-bot" in screen, screen
    finally:
        tmux.kill()
