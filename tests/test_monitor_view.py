"""``shunt monitor`` without a terminal: the frame (pure), the keys, the polling against a stand-in
control API, and the fallback to ``shunt status`` when there is no terminal."""

from __future__ import annotations

import io
import os

import pytest

from shunt_lib.config import STRATEGIES, Paths
from shunt_lib.control_client import Unreachable
from shunt_lib.errors import ConfigError
from shunt_lib.monitor import Monitor, curses_possible, key_action, run_monitor
from shunt_lib.monitor_view import (MonitorData, bar, chart_lines, chart_query, feed_lines, line_text, render)
from tests.support import MSG

NOW = 1_700_000_000


def _doc(pin=None, muted=False):
    return {
        "version": "9.9.9", "strategy": "least-utilization", "pinned_account": pin, "alerts": {"muted": muted},
        "savings": {k: {"usd": 1.5, "unpriced_requests": 0} for k in ("today", "7d", "30d", "all_time")},
        "accounts": [
            {"name": "alpha", "status": "available", "utilization_5h": 0.42, "utilization_7d": 0.95,
             "reset_5h_at_s": NOW + 3600, "reset_7d_at_s": NOW + 2 * 86400, "cooldown_until_s": None,
             "active_sessions": 3, "requests": 120, "input_tokens": 1000, "output_tokens": 500,
             "cache_read_tokens": 20000, "cache_creation_tokens": 0, "action": None},
            {"name": "beta", "status": "reauth_required", "utilization_5h": None, "utilization_7d": None,
             "cooldown_until_s": None, "active_sessions": 0, "requests": 0,
             "action": "log in again: shunt add-account beta"},
            {"name": "gamma", "status": "cooling", "utilization_5h": 1.0, "utilization_7d": 0.5,
             "reset_5h_at_s": NOW + 90, "cooldown_until_s": NOW + 42, "cooldown_reason": "429 rate limited",
             "active_sessions": 0, "requests": 7},
        ],
    }


def _feed(n):
    return [{"seq": i, "ts_s": NOW - n + i, "account": "alpha", "model": "claude-sonnet-4-5", "status": 200,
             "input_tokens": 10, "output_tokens": 5, "duration_ms": 1200, "held": False, "moved": False,
             "attempts": 1, "held_ms": 0} for i in range(1, n + 1)]


def _history(range_name="24h", cols=73):
    q = chart_query(range_name, cols, NOW)
    return dict(q, by="account", buckets=[
        {"start_s": q["until_s"] - q["step_s"], "key": "alpha", "input_tokens": 3000, "output_tokens": 0},
        {"start_s": q["until_s"] - q["step_s"], "key": "gamma", "input_tokens": 1000, "output_tokens": 0},
        {"start_s": q["since_s"], "key": "alpha", "input_tokens": 400, "output_tokens": 0}])


def _frame(width, height, **kw):
    data = MonitorData(url="http://127.0.0.1:8082", status=_doc(), feed=_feed(60), history=_history(cols=width - 7))
    return [line_text(x) for x in render(data, width, height, NOW, **kw)]


def test_the_frame_fits_80x24_and_keeps_what_matters():
    lines = _frame(80, 24)
    assert len(lines) == 24 and all(len(x) <= 80 for x in lines)
    text = "\n".join(lines)
    assert lines[0].startswith("shunt 9.9.9 · strategy least-utilization · routing automatically · alerts on")
    assert lines[1].startswith("saved (API list prices) today $1.50")
    alpha = next(x for x in lines if x.startswith("alpha "))
    assert "available" in alpha and " 42% " in alpha and " 95% " in alpha and "1h00m" in alpha and "2d0h" in alpha
    assert alpha.split()[-3:] == ["3", "120", "22k"]  # sessions, requests, every token
    gamma = next(x for x in lines if x.startswith("gamma "))
    assert "cooling" in gamma and "100%" in gamma and "42s" in gamma
    assert next(x for x in lines if x.startswith("beta ")).split()[1] == "reauth"
    assert "! beta: log in again: shunt add-account beta" in text and "~ gamma: cooling (429 rate limited)" in text
    assert "tokens per account, last 24h" in text
    assert sum("claude-sonnet-4-5" in x for x in lines) >= 3
    assert lines[-1].startswith("q quit · ? help")


def test_a_bigger_terminal_shows_more_requests_and_a_taller_chart():
    small, big = _frame(80, 24), _frame(120, 45)
    assert len(big) == 45 and all(len(x) <= 120 for x in big)
    assert sum("claude-sonnet-4-5" in x for x in big) > sum("claude-sonnet-4-5" in x for x in small)
    assert sum("█" in x and x.startswith(" " * 7) or x.lstrip().startswith(("4000 ", "0 ")) for x in big) > \
        sum("█" in x and x.startswith(" " * 7) or x.lstrip().startswith(("4000 ", "0 ")) for x in small)
    alpha_small = next(x for x in small if x.startswith("alpha "))
    alpha_big = next(x for x in big if x.startswith("alpha "))
    assert alpha_big.count("█") + alpha_big.count("░") > alpha_small.count("█") + alpha_small.count("░")


def test_tiny_terminals_never_get_lines_too_long_or_too_many():
    for width, height in ((1, 1), (20, 5), (40, 10), (79, 23)):
        lines = _frame(width, height)
        assert len(lines) == height and all(len(x) <= width for x in lines), (width, height)


def test_colour_roles_only_with_colour_and_letters_in_the_chart_without_it():
    data = MonitorData(status=_doc(), feed=_feed(3), history=_history())
    coloured = render(data, 80, 24, NOW, colour=True)
    plain = render(data, 80, 24, NOW, colour=False)
    assert any(role.startswith("acct") for line in coloured for _, role in line)
    assert not any(role.startswith("acct") for line in plain for _, role in line)
    text = "\n".join(map(line_text, plain))
    assert "A=alpha" in text and "B=beta" in text and "G=gamma" in text
    peak = next(line_text(x) for x in plain if line_text(x).lstrip().startswith("4000 "))
    assert peak.rstrip().endswith("G")  # the last column: alpha's 3000 tokens at the bottom, gamma's 1000 on top
    bottom = next(line_text(x) for x in plain if line_text(x).lstrip().startswith("0 "))
    assert bottom.rstrip().endswith("A") and bottom[7] == "A"  # and alpha's 400 in the first column


def test_stacked_column_heights_follow_the_tokens():
    lines = chart_lines(_history(cols=20), ["alpha", "gamma"], "24h", 27, 8, colour=False, unicode=True)
    last = "".join(line_text(x)[-1] for x in lines[1:9])
    assert last == "GGAAAAAA"  # the peak (4000 tokens): every row, alpha's 3000 at the bottom, gamma's 1000 on top
    first = "".join(line_text(x)[7] for x in lines[1:9])
    assert first == "       A"  # 400 tokens: a tenth of the peak, one cell of 8


def test_bars():
    assert bar(0.42, 10, True) == "████░░░░░░"
    assert bar(None, 4, True) == "░░░░" and bar(1.7, 4, False) == "####" and bar(-1, 4, False) == "----"


def test_feed_markers_and_error_line():
    rows = _feed(1) + [dict(_feed(1)[0], seq=2, status=429, held=True, held_ms=3500, moved=True, attempts=3, broke=True,
                            account=None)]
    lines = feed_lines(rows, ["alpha"], 100, 5)
    newest = lines[1]
    assert line_text(newest).split()[1] == "-"  # no account answered
    assert ("429", "bad") in newest and (" held 3.5s", "warn") in newest and (" moved (3 tries)", "warn") in newest
    assert (" broken", "bad") in newest
    assert " held" not in line_text(lines[2]) and "moved" not in line_text(lines[2])
    data = MonitorData(url="http://x:1", status=_doc(), error="cannot reach shunt at http://x:1: refused (retrying)")
    assert render(data, 80, 24, NOW)[1] == [("cannot reach shunt at http://x:1: refused (retrying)", "bad")]


def test_chart_query_picks_the_smallest_step_that_fits():
    assert chart_query("1h", 73, 1000) == {"since_s": 1020 - 3600, "until_s": 1020, "step_s": 60}
    q = chart_query("24h", 73, NOW)
    assert q["step_s"] == 1200 and (q["until_s"] - q["since_s"]) // q["step_s"] == 72 and q["until_s"] > NOW
    assert chart_query("7d", 73, NOW)["step_s"] == 10800 and chart_query("7d", 2, NOW)["step_s"] == 86400


def test_help_and_picker_overlays():
    data = MonitorData(status=_doc())
    helped = "\n".join(map(line_text, render(data, 80, 24, NOW, help=True)))
    assert "p     pin all traffic" in helped and "1 2 3 " in helped and "chart range" in helped
    picked = render(data, 80, 24, NOW, picker=1)
    assert [line_text(x).split()[:2] for x in picked if any(r == "select" for _, r in x)] == [["2", "beta"]]


def test_keys():
    kw = dict(picker=None, help_shown=False, accounts=["a", "b"], strategy="least-utilization", muted=False)
    assert key_action("q", **kw) == ("quit",)
    assert key_action("?", **kw) == ("help", True)
    assert key_action("x", **dict(kw, help_shown=True)) == ("help", False)
    assert key_action("p", **kw) == ("picker", 0)
    assert key_action("p", **dict(kw, accounts=[])) is None
    assert key_action("2", **dict(kw, picker=0)) == ("use", "b")
    assert key_action("3", **dict(kw, picker=0)) is None
    assert key_action("down", **dict(kw, picker=0)) == ("picker", 1)
    assert key_action("down", **dict(kw, picker=1)) == ("picker", 1)
    assert key_action("enter", **dict(kw, picker=1)) == ("use", "b")
    assert key_action("esc", **dict(kw, picker=1)) == ("picker", None)
    assert key_action("a", **kw) == ("use", "auto")
    assert key_action("s", **kw) == ("strategy", STRATEGIES[1])
    assert key_action("s", **dict(kw, strategy=STRATEGIES[-1])) == ("strategy", STRATEGIES[0])
    assert key_action("m", **kw) == ("mute", True) and key_action("m", **dict(kw, muted=True)) == ("mute", False)
    assert key_action("m", **dict(kw, muted=None)) is None  # no /status yet
    assert [key_action(k, **kw) for k in "123"] == [("range", "1h"), ("range", "24h"), ("range", "7d")]


class FakeApi:
    """A stand-in control API: answers from :attr:`answers`, records calls, or raises :attr:`fail`."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.fail: Exception | None = None
        self.last_seq = 2
        self.status = _doc()

    def __call__(self, method, path, body):
        self.calls.append((method, path, body))
        if self.fail:
            raise self.fail
        if path == "/status":
            return self.status
        if path.startswith("/recent"):
            after = int(path.split("after=")[1].split("&")[0])
            return {"last_seq": self.last_seq, "requests": [r for r in _feed(self.last_seq) if r["seq"] > after]}
        if path.startswith("/history"):
            return _history()
        if path == "/use":
            if body["account"] not in ("auto", "alpha", "beta", "gamma"):
                raise ConfigError(f"unknown account {body['account']!r}")
            return {"pinned_account": None if body["account"] == "auto" else body["account"]}
        if path == "/strategy":
            return {"strategy": body["strategy"]}
        if path == "/alerts":
            return {"muted": body["muted"]}
        raise AssertionError(path)


def test_polling_follows_the_feed_survives_an_outage_and_a_restart():
    api, now = FakeApi(), [float(NOW)]
    m = Monitor("http://h:1", api, clock=lambda: now[0])
    m.poll(73)
    assert [r["seq"] for r in m.data.feed] == [1, 2] and m.data.history["step_s"] == 1200
    api.last_seq = 4
    m.poll(73)
    assert ("GET", "/recent?after=2&limit=200", None) in api.calls and [r["seq"] for r in m.data.feed] == [1, 2, 3, 4]
    assert sum(c[1].startswith("/history") for c in api.calls) == 1  # not due again yet
    api.fail = Unreachable("http://h:1/status", "[Errno 111] Connection refused")
    m.poll(73)
    assert m.data.error == "cannot reach shunt at http://h:1: [Errno 111] Connection refused (retrying)"
    assert m.data.status is not None and len(m.data.feed) == 4  # the last good data stays
    api.fail, api.last_seq = None, 1  # shunt came back, restarted: numbering starts again
    m.poll(73)
    assert m.data.error is None and m.data.feed == []
    m.poll(73)
    assert [r["seq"] for r in m.data.feed] == [1]
    m.key("2")
    m.poll(73)
    assert api.calls[-1][1].startswith("/history?since_s=") and "step_s=1200" in api.calls[-1][1]


def test_keys_go_through_the_control_api():
    api = FakeApi()
    m = Monitor("http://h:1", api, clock=lambda: NOW)
    m.poll(73)
    for key in ("p", "down", "down", "enter", "a", "s", "m"):
        assert m.key(key)
    posts = [c for c in api.calls if c[0] == "POST"]
    assert posts == [("POST", "/use", {"account": "gamma"}), ("POST", "/use", {"account": "auto"}),
                     ("POST", "/strategy", {"strategy": STRATEGIES[1]}), ("POST", "/alerts", {"muted": True})]
    assert m.data.message == "alerts muted" and m.picker is None
    api.fail = ConfigError("strategy refused")
    m.key("s")
    assert (m.data.message, m.data.message_role) == ("strategy refused", "bad")
    assert m.key("q") is False


def test_curses_only_on_a_real_terminal():
    assert curses_possible(True, {"TERM": "xterm"})
    assert not curses_possible(False, {"TERM": "xterm"})
    assert not curses_possible(True, {"TERM": "dumb"}) and not curses_possible(True, {})


def test_without_a_terminal_it_prints_the_status_once(make_proxy):
    proxy = make_proxy()
    assert proxy.request(body=MSG)[0] == 200
    out = io.StringIO()
    assert run_monitor(Paths(os.environ["SHUNT_HOME"]), proxy.url, 1.0, out=out) == 0
    text = out.getvalue()
    assert text.startswith("shunt ") and "ACCOUNT" in text and "\na " in text and "\nb " in text


def test_a_remote_shunt_is_reached_with_SHUNT_REMOTE_KEY(make_proxy, tmp_path, monkeypatch):
    """From a machine whose home has no key (another home here), the key comes from $SHUNT_REMOTE_KEY."""
    key = "k" * 32
    proxy = make_proxy(remote_key=key)
    elsewhere = Paths(str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="(?i)key"):
        run_monitor(elsewhere, proxy.url, 1.0, out=io.StringIO())
    monkeypatch.setenv("SHUNT_REMOTE_KEY", key)
    out = io.StringIO()
    assert run_monitor(elsewhere, proxy.url, 1.0, out=out) == 0
    assert "\na " in out.getvalue()


def test_a_narrow_header_drops_wording_and_the_url_before_any_fact():
    doc = _doc(pin="gamma", muted=True)
    doc["savings"]["all_time"]["unpriced_requests"] = 20
    data = MonitorData(url="http://127.0.0.1:8082", status=doc, feed=[], history=_history())
    wide = [line_text(x) for x in render(data, 160, 24, NOW)]
    assert wide[0].endswith("alerts muted · http://127.0.0.1:8082") and wide[1].startswith("saved (API list prices)")
    narrow = [line_text(x) for x in render(data, 80, 24, NOW)]
    assert narrow[0] == "shunt 9.9.9 · strategy least-utilization · pinned to gamma · alerts muted"
    assert narrow[1] == "saved today $1.50 · 7d $1.50 · 30d $1.50 · all $1.50 · 20 unpriced"
    assert "pinned to gamma" in line_text(render(data, 60, 24, NOW)[0])  # version and URL gone first
