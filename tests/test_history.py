"""Usage history: rows and minute rollups (time as an argument), pruning, the background writer
(batched, the only thread touching SQLite), a corrupt database moved aside, and the [history] table."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading

import pytest

from shunt_lib import history
from shunt_lib.config import parse_config
from shunt_lib.errors import ConfigError
from shunt_lib.history import HistoryWriter, open_db, prune, write_batch
from shunt_lib.history_rollup import cutoffs, parse_duration_s, raw_row, rollup
from tests.fakes.upstream import Reply, error_json, message_json
from tests.support import MSG, wait_until

T0 = 1_700_000_040  # a minute boundary


def rec(ts_s, account="a", model="claude-x", status=200, i=10, o=5, cr=100, cw=20, dur=300, held=0, attempts=1,
        cw1h=0):
    return {"ts_s": ts_s, "account": account, "method": "POST", "path": "/v1/messages", "model": model,
            "status": status, "input_tokens": i, "output_tokens": o, "cache_read_tokens": cr,
            "cache_creation_tokens": cw, "cache_write_5m_tokens": cw - cw1h, "cache_write_1h_tokens": cw1h,
            "duration_ms": dur, "attempts": attempts, "held_ms": held, "broke": False,
            "request_id": None, "upstream_request_id": None}


def test_requests_roll_up_per_minute_account_and_model():
    rows = [raw_row(rec(T0 + 1)), raw_row(rec(T0 + 59, status=499, held=250)), raw_row(rec(T0 + 60)),
            raw_row(rec(T0 + 2, account=None, model="", status=529))]
    got = rollup(rows)
    assert got[(T0, "a", "claude-x", "local")] == [2, 1, 1, 20, 10, 200, 40, 0, 600, 250]
    assert got[(T0 + 60, "a", "claude-x", "local")] == [1, 0, 0, 10, 5, 100, 20, 0, 300, 0]
    assert got[(T0, "", "", "local")][:2] == [1, 1]  # answered by no account: an error under ""


def test_rows_and_rollups_are_written_and_added_to(tmp_path):
    conn = open_db(str(tmp_path / "usage.db"), T0)
    write_batch(conn, [rec(T0 + 1), rec(T0 + 2, status=500)])
    write_batch(conn, [rec(T0 + 3, o=7)])  # the same minute: added, not replaced
    assert conn.execute("SELECT count(*) FROM requests").fetchone() == (3,)
    assert conn.execute("SELECT requests, errors, output_tokens, cache_write_tokens FROM rollup_minute").fetchall() \
        == [(3, 1, 17, 60)]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    assert stat.S_IMODE(os.stat(tmp_path / "usage.db").st_mode) == 0o600


def test_pruning_keeps_raw_rows_for_raw_days_and_rollups_for_rollup_days(tmp_path):
    day = 86400
    now = T0 + 100 * day
    conn = open_db(str(tmp_path / "usage.db"), now)
    write_batch(conn, [rec(now - 91 * day), rec(now - 89 * day), rec(now - 8 * day), rec(now - 6 * day), rec(now)])
    assert prune(conn, now, raw_days=7, rollup_days=90) == (3, 1)
    assert [r[0] for r in conn.execute("SELECT ts_s FROM requests ORDER BY ts_s")] == [now - 6 * day, now]
    assert conn.execute("SELECT count(*) FROM rollup_minute").fetchone() == (4,)
    conn.close()
    assert cutoffs(now, 7, 90) == (now - 7 * day, now - 90 * day)


def test_durations_for_since():
    assert [parse_duration_s(t) for t in ("24h", "7d", "30d", "90m")] == [86400, 7 * 86400, 30 * 86400, 5400]
    for bad in ("", "0d", "7", "7y", "-1d"):
        with pytest.raises(ValueError):
            parse_duration_s(bad)


def test_a_corrupt_database_is_moved_aside_and_a_new_one_started(tmp_path, caplog):
    path = tmp_path / "usage.db"
    path.write_bytes(b"this is not an SQLite database" * 200)
    conn = open_db(str(path), T0)
    write_batch(conn, [rec(T0)])
    conn.close()
    assert (tmp_path / f"usage.db.corrupt-{T0}").read_bytes().startswith(b"this is not")
    assert "moved aside" in caplog.text


def test_the_writer_batches_and_is_the_only_thread_touching_sqlite(tmp_path, monkeypatch):
    threads = []
    real_connect = sqlite3.connect

    def connect(*a, **kw):
        threads.append(threading.current_thread().name)
        return real_connect(*a, **kw)  # check_same_thread: any use from another thread would raise

    monkeypatch.setattr(history.sqlite3, "connect", connect)
    w = HistoryWriter(str(tmp_path / "usage.db"), interval_s=0.05, clock=lambda: T0)
    w.start()
    try:
        for k in range(50):
            w.add(rec(T0 + k))
        assert w.written.wait(10)
        assert wait_until(lambda: w.batches >= 1)
        w.add(rec(T0 + 99))
    finally:
        w.stop()
    assert not w.is_alive() and threads == [history.THREAD_NAME]
    conn = real_connect(tmp_path / "usage.db")
    assert conn.execute("SELECT count(*) FROM requests").fetchone() == (51,)  # the last one flushed by stop()
    assert w.batches < 51  # batched, not one transaction per request
    conn.close()


def test_the_proxy_records_every_finished_request_off_the_request_thread(make_proxy, upstream, monkeypatch):
    threads = []
    real_connect = sqlite3.connect

    def connect(*a, **kw):
        threads.append(threading.current_thread().name)
        return real_connect(*a, **kw)

    monkeypatch.setattr(history.sqlite3, "connect", connect)
    upstream.script("tok-a", Reply(body=message_json(input_tokens=3, output_tokens=4, cache_read=5)),
                    Reply(status=400, body=error_json("invalid_request_error", "no")))
    proxy = make_proxy()
    assert proxy.request(body=MSG)[0] == 200
    assert proxy.request(body=MSG)[0] == 400
    path = history.db_path(proxy.srv.paths.home)
    proxy.close()
    assert set(threads) == {history.THREAD_NAME}
    conn = real_connect(path)
    rows = conn.execute("SELECT account, model, status, input_tokens, output_tokens, cache_read_tokens, "
                        "cache_write_tokens, client FROM requests ORDER BY rowid").fetchall()
    conn.close()
    assert rows == [("a", "claude-test", 200, 3, 4, 5, 0, "local"), ("a", "claude-test", 400, 0, 0, 0, 0, "local")]  # tokenless loopback: "local"


def test_the_history_table_of_config():
    cfg = parse_config({"history": {"raw_days": 3, "rollup_days": 30}})
    assert (cfg.history.raw_days, cfg.history.rollup_days) == (3, 30)
    assert parse_config({}).history.rollup_days == 90
    for bad in ({"raw_dayz": 3}, {"raw_days": 0}, {"rollup_days": "90"}, {"raw_days": True}):
        with pytest.raises(ConfigError, match="history."):
            parse_config({"history": bad})


def test_history_buckets_by_account_and_model(tmp_path):
    from shunt_lib.history_query import buckets

    path = str(tmp_path / "usage.db")
    conn = open_db(path, T0)
    write_batch(conn, [rec(T0), rec(T0 + 70, account="b"), rec(T0 + 130, model="claude-y"), rec(T0 + 400)])
    conn.close()
    by_account = buckets(path, T0, T0 + 240, 120, "account")
    assert [(b["start_s"], b["key"], b["requests"]) for b in by_account] == [(T0, "a", 1), (T0, "b", 1), (T0 + 120, "a", 1)]
    by_model = buckets(path, T0, T0 + 600, 600, "model")
    assert [(b["key"], b["requests"], b["output_tokens"]) for b in by_model] == [("claude-x", 3, 15), ("claude-y", 1, 5)]
    assert buckets(str(tmp_path / "none.db"), T0, T0 + 60, 60, "account") == []
    for args in ((T0, T0 + 60, 30, "account"), (T0, T0, 60, "account"), (T0, T0 + 60, 60, "day")):
        with pytest.raises(ValueError):
            buckets(path, *args)


def test_get_history_answers_buckets_from_the_running_proxy(make_proxy):
    import json

    proxy = make_proxy()
    assert proxy.request(body=MSG)[0] == 200
    assert proxy.request(body=MSG)[0] == 200
    assert wait_until(lambda: sum(b["requests"] for b in json.loads(
        proxy.request("GET", "/history?step_s=60&by=model")[2])["buckets"]) == 2)
    doc = json.loads(proxy.request("GET", "/history?step_s=60&by=model")[2])
    assert doc["by"] == "model" and doc["step_s"] == 60 and doc["until_s"] - doc["since_s"] >= 86400 - 60
    assert sum(b["requests"] for b in doc["buckets"]) == 2 and {b["key"] for b in doc["buckets"]} == {"claude-test"}
    status, _, body = proxy.request("GET", "/history?by=planet")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    assert proxy.request("GET", "/history?step_s=x")[0] == 400
    assert proxy.request("POST", "/history", body={})[0] == 405
    proxy.close()


def _cli(capsys, *argv):
    from shunt_lib.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_shunt_usage_reads_the_database_with_shunt_stopped(tmp_path, monkeypatch, capsys):
    import json
    import time

    monkeypatch.setenv("SHUNT_HOME", str(tmp_path))
    now = int(time.time())
    assert _cli(capsys, "usage")[1].strip() == "no usage recorded in this period"  # no database yet
    conn = open_db(history.db_path(str(tmp_path)), now)
    sonnet = dict(model="claude-sonnet-4-5", i=1_000_000, o=100_000, cr=2_000_000, cw=300_000, cw1h=100_000)
    write_batch(conn, [rec(now - 60, **sonnet), rec(now - 30, account="b", status=429),
                       rec(now - 3 * 86400, model="claude-y")])
    conn.close()
    # Sonnet 4.5 list prices: input 3, output 15, 5m writes 3.75, 1h writes 6, reads 0.30 USD per MTok.
    sonnet_usd = 3 + 0.1 * 15 + 0.2 * 3.75 + 0.1 * 6 + 2 * 0.30
    code, out, _ = _cli(capsys, "usage")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["account", "requests", "errors"] and "cost (USD)" in lines[0]
    assert lines[1].split() == ["a", "1", "0", "1,000,000", "100,000", "2,000,000", "300,000", f"{sonnet_usd:.2f}"]
    assert lines[2].split() == ["b", "1", "1", "10", "5", "100", "20", "0.00", "+1", "unpriced"]
    assert lines[3].split() == ["total", "2", "1", "1,000,010", "100,005", "2,000,100", "300,020",
                                f"{sonnet_usd:.2f}", "+1", "unpriced"]
    code, out, _ = _cli(capsys, "usage", "--since", "7d", "--by", "model", "--json")
    doc = json.loads(out)
    assert doc["by"] == "model" and [(r["key"], r["requests"], r["unpriced_requests"]) for r in doc["rows"]] == \
        [("claude-sonnet-4-5", 1, 0), ("claude-x", 1, 1), ("claude-y", 1, 1)]
    assert doc["rows"][0]["cost_usd"] == pytest.approx(sonnet_usd)
    # A [pricing] override of config.toml is used (and an unknown model gets a price only this way).
    with open(os.path.join(str(tmp_path), "config.toml"), "a") as f:
        f.write('\n[pricing."claude-y"]\ninput = 1000000\noutput = 0\ncache_write_5m = 0\n'
                'cache_write_1h = 0\ncache_read = 0\n')
    doc = json.loads(_cli(capsys, "usage", "--since", "7d", "--by", "model", "--json")[1])
    assert [(r["cost_usd"], r["unpriced_requests"]) for r in doc["rows"]][2] == (10.0, 0)
    code, out, _ = _cli(capsys, "usage", "--since", "30d", "--by", "day", "--json")
    assert sum(r["requests"] for r in json.loads(out)["rows"]) == 3 and len(json.loads(out)["rows"]) >= 2
    code, _, err = _cli(capsys, "usage", "--since", "yesterday")
    assert code == 2 and "--since" in err


def test_usage_rows_price_per_model_through_the_hook():
    from shunt_lib.usage_view import usage_rows

    per_model = [{"key": "a", "model": "m1", "requests": 1, "errors": 0, "input_tokens": 10, "output_tokens": 0,
                  "cache_read_tokens": 0, "cache_write_tokens": 0},
                 {"key": "a", "model": "m2", "requests": 1, "errors": 0, "input_tokens": 10, "output_tokens": 0,
                  "cache_read_tokens": 0, "cache_write_tokens": 0}]
    assert usage_rows(per_model, lambda m, c: 0.5)[0]["cost_usd"] == 1.0
    row = usage_rows(per_model, lambda m, c: 0.5 if m == "m1" else None)[0]
    assert (row["cost_usd"], row["unpriced_requests"]) == (0.5, 1)  # never guessed: counted as unpriced


def _count(path: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    except sqlite3.OperationalError:  # no table yet
        return 0
    finally:
        conn.close()


def test_kill_9_under_load_loses_at_most_the_last_batch_and_never_corrupts(tmp_path, upstream):
    import http.client
    import json
    import signal

    from tests.support import ROOT, ServeProcess, write_home

    home = str(tmp_path / "h")
    write_home(home, upstream.url, [("a", "oauth")], {"usage_poll_s": 0})
    env = dict(os.environ, PYTHONPATH=ROOT, SHUNT_HOME=home)
    path = history.db_path(home)

    def send(port, n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(n):
            conn.request("POST", "/v1/messages", json.dumps(MSG), {"content-type": "application/json"})
            assert conn.getresponse().read() and True
        conn.close()

    serve = ServeProcess(env)
    send(serve.port, 20)
    assert wait_until(lambda: os.path.exists(path) and _count(path) == 20)  # committed
    send(serve.port, 10)  # some of these are still queued when it dies
    assert serve.stop(signal.SIGKILL) == -signal.SIGKILL
    serve = ServeProcess(env)  # opens the database it left
    send(serve.port, 1)
    assert serve.stop(signal.SIGTERM) == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    n = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    rolled = conn.execute("SELECT SUM(requests) FROM rollup_minute").fetchone()[0]
    conn.close()
    assert 21 <= n <= 31 and rolled == n  # nothing committed was lost; rows and rollups agree
    assert not [f for f in os.listdir(home) if ".corrupt-" in f]


def test_a_database_from_an_older_shunt_gains_the_new_token_columns(tmp_path):
    path = str(tmp_path / "usage.db")
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE requests (ts_s INTEGER NOT NULL, account TEXT, model TEXT NOT NULL, status INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL, duration_ms INTEGER NOT NULL, held_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL, client TEXT);
        CREATE TABLE rollup_minute (minute_s INTEGER NOT NULL, account TEXT NOT NULL, model TEXT NOT NULL,
            requests INTEGER NOT NULL, errors INTEGER NOT NULL, held INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL, held_ms INTEGER NOT NULL, PRIMARY KEY (minute_s, account, model)) WITHOUT ROWID;
        INSERT INTO rollup_minute VALUES (1700000040, 'a', 'm', 1, 0, 0, 1, 1, 1, 1, 1, 0);
    """)
    old.close()
    conn = open_db(path, T0)
    write_batch(conn, [rec(T0 + 1, model="m", cw=30, cw1h=10)])
    assert conn.execute("SELECT requests, cache_write_tokens, cache_write_1h_tokens FROM rollup_minute").fetchall() \
        == [(2, 31, 10)]
    conn.close()
