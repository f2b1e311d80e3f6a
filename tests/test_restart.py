"""Integration: the real `shunt serve` process, killed with SIGKILL and restarted, keeps its state."""

import json
import os
import signal
import time
import urllib.request

from shunt_lib.sessions import id_key
from tests.fakes.upstream import Reply, error_json, unified_headers
from tests.support import ROOT, ServeProcess, wait_until, write_home

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(port, method, path, body=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json", **(headers or {})})
    with OPENER.open(req, timeout=10) as r:
        return r.status, r.headers.get("x-shunt-account"), json.loads(r.read())


def ask(port, session):
    msg = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": session}]}
    return call(port, "POST", "/v1/messages", msg, {"x-claude-code-session-id": session})[:2]


def test_kill_9_and_restart_keeps_cooldowns_sessions_and_pin(tmp_path, upstream):
    home = str(tmp_path / "home")
    paths = write_home(home, upstream.url, [("a", "oauth"), ("b", "oauth"), ("c", "oauth")], {"strategy": "fill-first"})
    env = dict(os.environ, SHUNT_HOME=home, PYTHONPATH=ROOT)
    serve = ServeProcess(env)
    try:
        port = serve.port
        reset = int(time.time()) + 3600
        upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "quota"),
                                       headers=unified_headers(status_5h="rejected", util_5h=1.0, reset_5h=reset)))
        assert ask(port, "sess-1") == (200, "b")  # a is exhausted; sess-1 moves to b
        assert call(port, "POST", "/use", {"account": "c"})[0] == 200
        assert ask(port, "sess-2") == (200, "c")  # pinned: sess-2 is bound to c, which fill-first would not pick

        def persisted():
            try:
                with open(paths.state) as f:
                    state = json.load(f)
            except (OSError, ValueError):
                return False
            return (state["accounts"]["a"]["exhausted_until_s"] == reset and state["pinned_account"] == "c"
                    and {id_key("sess-1"), id_key("sess-2")} <= set(state["sessions"]) and state["accounts"]["c"]["requests"] == 1)

        assert wait_until(persisted), "state.json never showed the exhaustion, the pin and both sessions"
    finally:
        serve.stop(signal.SIGKILL)
    with open(paths.state) as f:
        json.load(f)  # always valid JSON
    assert oct(os.stat(paths.state).st_mode & 0o777) == "0o600"
    serve = ServeProcess(env)
    try:
        port = serve.port
        doc = call(port, "GET", "/status")[2]
        a = doc["accounts"][0]
        assert a["status"] == "exhausted" and a["cooldown_until_s"] == reset
        assert doc["pinned_account"] == "c"
        assert [x["active_sessions"] for x in doc["accounts"]] == [0, 1, 1]
        assert [x["requests"] for x in doc["accounts"]] == [0, 1, 1] and len(doc["recent_requests"]) == 2
        assert ask(port, "sess-3") == (200, "c")  # the pin survived
        assert call(port, "POST", "/use", {"account": "auto"})[0] == 200
        assert ask(port, "sess-2") == (200, "c")  # the session binding survived: fill-first alone would pick b
        assert ask(port, "sess-1") == (200, "b")
        assert ask(port, "sess-4") == (200, "b")  # a new session: fill-first, a still exhausted
    finally:
        assert serve.stop(signal.SIGTERM) == 0  # clean stop on SIGTERM
    with open(paths.state) as f:
        assert json.load(f)["accounts"]["c"]["requests"] == 3  # flushed on SIGTERM
