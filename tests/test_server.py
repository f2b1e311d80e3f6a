"""The server's lifecycle and the /status document: close() leaves nothing behind, whatever is open."""

import http.client
import json
import os
import socket
import threading

from shunt_lib.config import load_config
from shunt_lib.credentials import Credential
from shunt_lib.router import AccountView
from shunt_lib.server import make_server, serve_in_thread, start_background
from shunt_lib.state import AccountSnapshot, PoolSnapshot
from shunt_lib.status import status_document
from tests.support import MSG, write_home


def test_close_ends_idle_and_held_connections_and_every_thread(tmp_path, upstream, events):
    paths = write_home(str(tmp_path / "h"), upstream.url, [("a", "oauth")], {"max_wait_s": 600})
    srv = make_server(load_config(paths), paths, port=0)
    start_background(srv)
    thread = serve_in_thread(srv)
    before = {t.name for t in threading.enumerate()}
    assert {"shunt-cooldowns", "shunt-refresh", "shunt-recovery", "shunt-usage-poll", "shunt-reload",
            "shunt-state-writer", "shunt-client-watch", "shunt-serve"} <= before
    idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    idle.request("GET", "/health")
    assert idle.getresponse().read() == b'{"status":"ok"}'  # the connection stays open (keep-alive)
    srv.pool.cool("a", srv.clock.time() + 500, "test")
    held = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    body = json.dumps(MSG).encode()
    held.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    assert events.wait_for("hold")
    srv.close(drain_timeout_s=0)  # no time to drain: both connections are shut down, their threads joined
    thread.join()
    out = b""
    while piece := held.recv(65536):
        out += piece
    # The held request is ended with a 529 overloaded_error (clients retry it) and counted.
    assert out.startswith(b"HTTP/1.1 529 ") and b'"overloaded_error"' in out
    assert not idle.sock.recv(100)  # the idle keep-alive was closed by the server
    assert not srv.is_serving.is_set()
    assert events.wait_for("request") and srv.pool.snapshot(0).recent[-1]["status"] == 529
    left = {t.name for t in threading.enumerate()} & before - {threading.current_thread().name}
    assert not any(name.startswith("shunt-") for name in left), left
    held.close()
    idle.close()
    srv.close()  # idempotent


def test_status_document_from_a_snapshot_and_the_credentials():
    now = 1_000_000.0
    snap = PoolSnapshot(pinned="b", recent=[{"status": 200}], accounts=[
        AccountSnapshot(AccountView("a", 0, "oauth", exhausted_until_s=now + 60, active_sessions=2), "", 3, 10, 20, 30, 40),
        AccountSnapshot(AccountView("b", 1, "api_key", disabled=True), "", 0, 0, 0, 0, 0),
        AccountSnapshot(AccountView("c", 2, "oauth", cooldown_until_s=now + 5), "throttled (429)", 0, 0, 0, 0, 0),
    ])
    creds = {"a": Credential(kind="oauth", access_token="x", expires_at_ms=int(now * 1000) + 7200_000, email="a@x", plan="max"),
             "b": Credential(kind="api_key", api_key="k")}
    doc = status_document(snap, creds, now, version="9", started_at_s=now - 10.5, strategy="fill-first")
    assert (doc["version"], doc["started_at_s"], doc["strategy"], doc["pinned_account"]) == ("9", now - 11, "fill-first", "b")
    a, b, c = doc["accounts"]
    assert (a["status"], a["cooldown_until_s"], a["email"], a["plan"], a["token_expires_at_s"]) == (
        "exhausted", now + 60, "a@x", "max", now + 7200)
    assert (a["requests"], a["cache_creation_tokens"], a["active_sessions"], a["action"]) == (3, 40, 2, None)
    assert b["status"] == "disabled" and "--api-key" in b["action"] and b["token_expires_at_s"] is None and b["email"] is None
    assert (c["status"], c["cooldown_reason"], c["cooldown_until_s"]) == ("cooling", "throttled (429)", now + 5)
    assert doc["recent_requests"] == [{"status": 200}]
    json.dumps(doc)  # plain JSON types throughout (statuses are str)
    assert type(a["status"]) is str


def test_a_reload_that_adds_or_drops_a_models_table_changes_the_next_requests_route(make_proxy, upstream):
    # the relay parses bodies for routing only while [models] or an openai account exists: a reload
    # must switch that on and off again
    p = make_proxy(accounts=[("a", "oauth"), ("b", "oauth")])
    body = dict(MSG, model="claude-x")
    status, headers, _ = p.request(body=body)
    assert status == 200 and "x-shunt-model" not in headers
    assert json.loads(upstream.received[-1].body)["model"] == "claude-x"
    home = os.environ["SHUNT_HOME"]
    write_home(home, upstream.url, [("a", "oauth"), ("b", "oauth")], models={"claude-x": "b:claude-y"})
    p.srv.reload()
    status, headers, _ = p.request(body=body)
    assert status == 200 and headers["x-shunt-model"] == "claude-y" and headers["x-shunt-account"] == "b"
    assert json.loads(upstream.received[-1].body)["model"] == "claude-y"
    write_home(home, upstream.url, [("a", "oauth"), ("b", "oauth")])
    p.srv.reload()
    status, headers, _ = p.request(body=body)
    assert status == 200 and "x-shunt-model" not in headers
    assert json.loads(upstream.received[-1].body)["model"] == "claude-x"
