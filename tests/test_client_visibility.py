"""Per-client visibility (issue 11): who sent each request shows in the usage history (``/history?by=client``,
``shunt usage --by client``, an older usage.db migrated), the access line and the events, ``/status``'s
clients (with a client token's limits and how much of each it uses), ``/metrics``' ``client`` label (capped),
``/recent``, ``shunt status`` and the monitor. The running proxy's clients send real client tokens.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shunt_lib import history
from shunt_lib.client_usage import ClientUsage
from shunt_lib.client_view import clients_lines, limits_text, shows_clients
from shunt_lib.clients import Client
from shunt_lib.history import open_db, write_batch
from shunt_lib.history_query import buckets, totals
from shunt_lib.logfmt import JsonFormatter, LogFormatter
from shunt_lib.metrics import MAX_CLIENTS, Metrics
from shunt_lib.monitor_view import MonitorData, line_text, render
from shunt_lib.status_view import render_status
from tests.fakes.upstream import Reply, error_json, message_json
from tests.support import MSG, client_token, wait_until

T0 = 1_700_000_040  # a minute boundary


def rec(ts_s, client="local", model="claude-sonnet-4-5", account="a", status=200, i=1000, o=100, cr=5000, cw=0,
        token_id=None):
    return {"ts_s": ts_s, "account": account, "method": "POST", "path": "/v1/messages", "model": model,
            "status": status, "input_tokens": i, "output_tokens": o, "cache_read_tokens": cr,
            "cache_creation_tokens": cw, "cache_write_5m_tokens": cw, "cache_write_1h_tokens": 0,
            "duration_ms": 100, "attempts": 1, "held_ms": 0, "broke": False, "request_id": None,
            "upstream_request_id": None, "client": client, "token_id": token_id}


# -- the usage history ------------------------------------------------------------------------------

def test_rollups_are_kept_per_client_and_read_by_client(tmp_path):
    path = str(tmp_path / "usage.db")
    conn = open_db(path, T0)
    write_batch(conn, [rec(T0 + 1), rec(T0 + 2, "ci-bot"), rec(T0 + 3, "ci-bot", o=7), rec(T0 + 70, "alice"),
                       rec(T0 + 4, None)])  # a record with no client counts as local
    assert conn.execute("SELECT client, requests FROM rollup_minute ORDER BY minute_s, client").fetchall() == \
        [("ci-bot", 2), ("local", 2), ("alice", 1)]
    conn.close()
    got = [(b["start_s"], b["key"], b["requests"]) for b in buckets(path, T0, T0 + 120, 60, "client")]
    assert got == [(T0, "ci-bot", 2), (T0, "local", 2), (T0 + 60, "alice", 1)]
    assert {(r["key"], r["output_tokens"]) for r in totals(path, T0, "client")} == \
        {("ci-bot", 107), ("local", 200), ("alice", 100)}
    assert [b["requests"] for b in buckets(path, T0, T0 + 120, 120, "account")] == [5]  # other keys still sum


OLD_SCHEMA = """
    CREATE TABLE requests (ts_s INTEGER NOT NULL, account TEXT, model TEXT NOT NULL, status INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL, cache_write_1h_tokens INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
        held_ms INTEGER NOT NULL, attempts INTEGER NOT NULL, client TEXT);
    CREATE TABLE rollup_minute (minute_s INTEGER NOT NULL, account TEXT NOT NULL, model TEXT NOT NULL,
        requests INTEGER NOT NULL, errors INTEGER NOT NULL, held INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,
        cache_write_1h_tokens INTEGER NOT NULL, duration_ms INTEGER NOT NULL, held_ms INTEGER NOT NULL,
        PRIMARY KEY (minute_s, account, model)) WITHOUT ROWID;
    INSERT INTO rollup_minute VALUES (1700000040, 'a', 'm', 3, 1, 0, 30, 20, 10, 0, 0, 900, 0);
    INSERT INTO rollup_minute VALUES (1700000100, 'b', 'm', 1, 0, 0, 5, 5, 5, 0, 0, 100, 0);
"""


def test_an_older_usage_db_is_read_by_client_as_local_and_migrated_when_shunt_writes(tmp_path, caplog):
    caplog.set_level("INFO", "shunt.history")
    path = str(tmp_path / "usage.db")
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.close()
    # Read before any newer shunt wrote it (`shunt usage --by client` with serve stopped): all local.
    assert [(r["key"], r["requests"]) for r in totals(path, 0, "client")] == [("local", 4)]
    assert [(b["key"], b["requests"]) for b in buckets(path, T0, T0 + 120, 120, "client")] == [("local", 4)]
    conn = open_db(path, T0)  # the writer opens it: rollups rebuilt with their client, nothing lost
    write_batch(conn, [rec(T0 + 1, "ci-bot", model="m"), rec(T0 + 2, "local", model="m")])
    rows = conn.execute("SELECT minute_s, account, client, requests, errors, input_tokens FROM rollup_minute "
                        "ORDER BY minute_s, client").fetchall()
    assert rows == [(T0, "a", "ci-bot", 1, 0, 1000), (T0, "a", "local", 4, 1, 1030), (T0 + 60, "b", "local", 1, 0, 5)]
    assert "rollup_minute_old" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    open_db(path, T0).close()  # a second open migrates nothing again
    assert "kept per client" in caplog.text


def test_shunt_usage_by_client_with_shunt_stopped(tmp_path, monkeypatch, capsys):
    from shunt_lib.cli import main

    monkeypatch.setenv("SHUNT_HOME", str(tmp_path))
    now = int(time.time())
    conn = open_db(history.db_path(str(tmp_path)), now)
    write_batch(conn, [rec(now - 60, "ci-bot", i=1_000_000, o=100_000, cr=2_000_000),
                       rec(now - 50, "ci-bot", status=429, i=0, o=0, cr=0), rec(now - 40)])
    conn.close()
    assert main(["usage", "--by", "client"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["client", "requests", "errors"] and "cache read" in lines[0]
    sonnet = 3 + 0.1 * 15 + 2 * 0.30  # Sonnet 4.5 list prices: input 3, output 15, cache reads 0.30 USD per MTok
    assert lines[1].split() == ["ci-bot", "2", "1", "1,000,000", "100,000", "2,000,000", "0", f"{sonnet:.2f}"]
    assert lines[2].split()[:2] == ["local", "1"] and lines[3].split()[:3] == ["total", "3", "1"]
    assert main(["usage", "--by", "client", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["by"] == "client" and [r["key"] for r in doc["rows"]] == ["ci-bot", "local"]
    assert doc["rows"][0]["cost_usd"] == pytest.approx(sonnet)


# -- a running proxy ------------------------------------------------------------------------------

def test_a_running_proxy_shows_each_client_everywhere(make_proxy, upstream, events, capsys):
    from shunt_lib.cli import main

    p = make_proxy(strategy="fill-first")
    ci_token, ci_id = client_token(p, "ci-bot", rpm=60, monthly_usd=50)
    alice_token, _ = client_token(p, "alice")
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "slow down"),
                                   headers={"retry-after": "7"}))
    upstream.script("tok-b", Reply(body=message_json(model="claude-sonnet-4-5", input_tokens=1000, output_tokens=100)))
    assert p.request(body=MSG, headers={"x-api-key": ci_token})[0] == 200  # a: 429, moved to b
    assert p.request(body=MSG, headers={"authorization": "Bearer " + ci_token})[0] == 200
    assert p.request(body=MSG, headers={"x-api-key": alice_token})[0] == 200
    assert p.request(body=MSG)[0] == 200
    assert events.wait_for("request", count=4)

    # The access line, the JSON line and the events the request caused (cooling, failover).
    access = [r for r in events.records if getattr(r, "event", None) == "request"]
    assert [r.request_record["client"] for r in access] == ["ci-bot", "ci-bot", "alice", "local"]
    assert " client=ci-bot" in access[0].getMessage() and " client=local" in access[3].getMessage()
    as_json = json.loads(JsonFormatter().format(access[0]))
    assert as_json["client"] == "ci-bot" and as_json["token_id"] == ci_id
    moved = [r for r in events.records if getattr(r, "event", None) in ("cooling", "failover")]
    assert moved and all(r.client == "ci-bot" for r in moved)
    assert LogFormatter().format(moved[0]).endswith(f"[id={moved[0].request_id} client=ci-bot]")

    # /status: clients today, most active first, with the token's limits and how much of each it uses.
    doc = json.loads(p.request("GET", "/status")[2])
    clients = {c["name"]: c for c in doc["clients"]}
    names = [c["name"] for c in doc["clients"]]  # alice and local tie on requests: the later one first
    assert names[0] == "ci-bot" and sorted(names[1:]) == ["alice", "local"]
    ci = clients["ci-bot"]
    assert (ci["token_id"], ci["requests"], ci["in_flight"], ci["errors"]) == (ci_id, 2, 0, 0)
    assert (ci["input_tokens"], ci["output_tokens"], ci["unpriced_requests"]) == (1010, 105, 1)  # claude-test: unpriced
    assert ci["cost_usd"] == pytest.approx((1000 * 3 + 100 * 15) / 1e6)  # Sonnet 4.5 at list prices
    assert ci["limits"] == {"rpm": {"limit": 60, "used": 2},
                            "monthly_usd": {"limit": 50.0, "used": pytest.approx(ci["cost_usd"])}}
    assert clients["local"]["token_id"] is None and "limits" not in clients["local"]
    assert "limits" not in clients["alice"]  # a token without limits

    # /recent
    recent = json.loads(p.request("GET", "/recent")[2])["requests"]
    assert [r["client"] for r in recent] == ["ci-bot", "ci-bot", "alice", "local"]

    # /metrics: the client label, read back by prometheus_client's parser.
    fams = {f.name: f for f in text_string_to_metric_families(p.request("GET", "/metrics")[2].decode())}
    per_client = {}
    for s in fams["shunt_requests"].samples:
        per_client[s.labels["client"]] = per_client.get(s.labels["client"], 0) + s.value
    assert per_client == {"ci-bot": 2, "alice": 1, "local": 1}
    assert {s.labels["client"] for s in fams["shunt_tokens"].samples} == {"ci-bot", "alice", "local"}

    # /history?by=client and `shunt usage --by client` while serve runs.
    def history_by_client():
        doc = json.loads(p.request("GET", "/history?step_s=60&by=client")[2])
        out: dict[str, int] = {}
        for b in doc["buckets"]:
            out[b["key"]] = out.get(b["key"], 0) + b["requests"]
        return out
    assert wait_until(lambda: history_by_client() == {"ci-bot": 2, "alice": 1, "local": 1})
    assert main(["usage", "--by", "client", "--json"]) == 0
    rows = {r["key"]: r["requests"] for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows == {"ci-bot": 2, "alice": 1, "local": 1}

    # `shunt status` prints the clients.
    text = render_status(doc)
    assert "clients today (UTC)" in text
    ci_line = next(line for line in text.splitlines() if line.startswith("ci-bot"))
    assert ci_line.split()[:3] == ["ci-bot", "2", "0"] and "rpm 2/60" in ci_line and "monthly_usd 0.00/50" in ci_line


def test_requests_in_flight_are_counted_per_client(make_proxy, upstream):
    import threading

    p = make_proxy()
    alice_token, _ = client_token(p, "alice")
    gate = threading.Event()
    upstream.script("tok-a", Reply(body=message_json(), release=gate))
    seen = []
    original = p.srv.relay.handle

    def spy(conn, request, *rest):
        seen.append(request.client)
        return original(conn, request, *rest)
    p.srv.relay.handle = spy
    t = threading.Thread(target=p.request, kwargs={"body": MSG, "headers": {"x-api-key": alice_token}})
    t.start()
    try:
        assert wait_until(lambda: any(c["name"] == "alice" and c["in_flight"] == 1
                                      for c in json.loads(p.request("GET", "/status")[2])["clients"]))
    finally:
        gate.set()
        t.join()
    assert [(c.name, c.token.label) for c in seen] == [("alice", "alice")]
    alice = next(c for c in json.loads(p.request("GET", "/status")[2])["clients"] if c["name"] == "alice")
    assert (alice["in_flight"], alice["requests"]) == (0, 1)


# -- the pure parts ---------------------------------------------------------------------------------

def test_client_usage_is_per_utc_day_bounded_and_most_active_first():
    now = [T0 + 10.0]
    u = ClientUsage(clock=lambda: now[0], max_clients=3)
    for name, n in (("a", 1), ("b", 3), ("c", 2), ("d", 1), ("e", 1)):
        for _ in range(n):
            u.add(rec(int(now[0]), name))
    rows = u.snapshot()
    assert [(r["name"], r["requests"]) for r in rows] == [("b", 3), ("c", 2), ("other", 2), ("a", 1)]
    assert rows[0]["cost_usd"] == pytest.approx(3 * (1000 * 3 + 100 * 15 + 5000 * 0.3) / 1e6)
    assert [r["name"] for r in u.snapshot(limit=2)] == ["b", "c"]
    with u.in_flight(Client("a")):
        assert u.snapshot()[0]["name"] == "a"  # one in flight comes first
        now[0] += 86400  # a new UTC day: counts start again, the one in flight carries over
        assert [(r["name"], r["requests"], r["in_flight"]) for r in u.snapshot()] == [("a", 0, 1)]
    assert u.snapshot()[0]["in_flight"] == 0
    u.limits = lambda token_id: 1 / 0  # a broken hook never breaks /status
    u.add(rec(int(now[0]), "x", token_id="tk_x"))
    assert u.snapshot()[0]["name"] == "x"


def test_the_client_label_of_metrics_is_capped():
    m = Metrics()
    for i in range(MAX_CLIENTS + 7):
        m.add_request(rec(T0, f"client-{i}"))
    clients = {c for _, _, _, c in m.counts().requests}
    assert len(clients) == MAX_CLIENTS + 1 and "other" in clients
    assert m.counts().requests[("a", "claude-sonnet-4-5", "200", "other")] == 7


def test_status_and_monitor_show_clients_only_when_more_than_local():
    only_local = [{"name": "local", "token_id": None, "requests": 3, "in_flight": 0}]
    assert not shows_clients(only_local) and clients_lines(only_local) == []
    doc = {"version": "x", "strategy": "fill-first", "accounts": [], "clients": only_local}
    assert "clients" not in render_status(doc, T0)
    clients = [{"name": "ci-bot", "token_id": "tk_ci", "requests": 12, "in_flight": 1, "input_tokens": 12000,
                "output_tokens": 3400, "cache_read_tokens": 2_500_000, "cost_usd": 1.234, "unpriced_requests": 0,
                "limits": {"rpm": {"limit": 60, "used": 4}, "daily_tokens": {"limit": 1_000_000, "used": None}}},
               *only_local]
    assert limits_text(clients[0]["limits"]) == "rpm 4/60 · daily_tokens 1.0M"
    text = render_status({**doc, "clients": clients}, T0)
    assert "CLIENT" in text and "$1.23" in text and "2.5M" in text
    frame = [line_text(line) for line in render(MonitorData(status={**doc, "clients": clients},
                                                            feed=[{**rec(T0, "ci-bot"), "seq": 1}]), 100, 30, T0)]
    screen = "\n".join(frame)
    assert "CLIENT" in screen and any(line.startswith("ci-bot") and "rpm 4/60" in line for line in frame), screen
    assert "by ci-bot" in screen  # the feed names a request's client other than local
    plain = "\n".join(line_text(line) for line in render(MonitorData(status=doc), 100, 30, T0))
    assert "CLIENT" not in plain
