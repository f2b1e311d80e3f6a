"""Alerts: the pure rules, the watcher over a real pool, delivery to a fake ``notify-send`` and a local
webhook receiver, and the whole path through a running proxy (rate limit, mute, ``shunt alerts test``)."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses

from shunt_lib import cli
from shunt_lib.alert_mute import MuteFlag
from shunt_lib.alert_rules import Alert, due, refresh_alerts, transitions
from shunt_lib.alert_send import Channels, desktop_command, webhook_payload
from shunt_lib.alert_watch import AlertWatcher
from shunt_lib.config import AccountConfig, ServerConfig, parse_config
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.errors import ConfigError
from shunt_lib.oauth import RefreshResult, RefreshStatus, TokenManager
from shunt_lib.ratelimit import Window
from shunt_lib.router import AccountView
from shunt_lib.server import start_background
from shunt_lib.state import Pool
from tests.fakes.upstream import Reply, error_json, unified_headers
from tests.support import MSG, wait_until

NOW = 1_800_000_000.0
QUOTA_MSG = "This request would exceed your account's rate limit. Please try again later."


# -- the rules (pure) -------------------------------------------------------------------------------
def v(name="a", kind="oauth", **kw) -> AccountView:
    return AccountView(name, kind=kind, **kw)


def kinds(alerts):
    return [(a.kind, a.account) for a in alerts]


def step(before_views, after_views, now_s=NOW):
    _, seen = transitions(None, before_views, now_s - 1)
    return transitions(seen, after_views, now_s)[0]


def test_the_first_look_only_sets_the_baseline():
    alerts, seen = transitions(None, [v(exhausted_until_s=NOW + 60), v("b", reauth_required=True)], NOW)
    assert alerts == [] and set(seen) == {"a", "b"}


def test_an_account_that_runs_out_of_quota_raises_exhausted_with_its_reset():
    [alert] = step([v(), v("b")], [v(exhausted_until_s=NOW + 3600), v("b")])
    assert (alert.kind, alert.account, alert.reset_at_s) == ("exhausted", "a", NOW + 3600)
    assert "a" in alert.title and "out of quota" in alert.body


def test_a_login_needed_names_the_command_to_run():
    [alert] = step([v(), v("b")], [v(reauth_required=True), v("b")])
    assert alert.kind == "reauth_required" and "`shunt add-account a`" in alert.body
    [alert] = step([v(kind="api_key"), v("b")], [v(kind="api_key", disabled=True), v("b")])
    assert alert.kind == "disabled" and "`shunt add-account a --api-key`" in alert.body


def test_recovered_follows_exhausted_or_a_new_login_but_not_a_short_cooldown():
    assert kinds(step([v(exhausted_until_s=NOW + 10), v("b")], [v(), v("b")])) == [("recovered", "a")]
    assert kinds(step([v(reauth_required=True), v("b")], [v(), v("b")])) == [("recovered", "a")]
    assert step([v(cooldown_until_s=NOW + 10), v("b")], [v(), v("b")]) == []


def test_every_account_busy_is_raised_once_when_the_last_usable_one_goes():
    before = [v(exhausted_until_s=NOW + 600), v("b")]
    after = [v(exhausted_until_s=NOW + 600), v("b", cooldown_until_s=NOW + 30)]
    alerts = step(before, after)
    assert kinds(alerts) == [("all_busy", "")] and alerts[0].reset_at_s == NOW + 30
    assert step(after, after) == []  # still busy: not news
    [alert] = step([v()], [v(reauth_required=True)])[1:]
    assert alert.kind == "all_busy" and alert.reset_at_s is None and "login" in alert.body


def test_a_weekly_window_past_90_percent_is_raised_when_it_crosses():
    def weekly(util, reset=NOW + 86400, name="7d"):
        return v(windows={name: Window(util, reset, "allowed")})

    [alert] = step([weekly(0.85)], [weekly(0.93)])
    assert (alert.kind, alert.account, alert.reset_at_s) == ("weekly_high", "a", NOW + 86400) and "93%" in alert.body
    assert step([weekly(0.93)], [weekly(0.95)]) == []  # already past
    assert kinds(step([weekly(0.5, name="7d_opus")], [weekly(0.91, name="7d_opus")])) == [("weekly_high", "a")]
    assert step([v(windows={"5h": Window(0.5, NOW + 60)})], [v(windows={"5h": Window(0.99, NOW + 60)})]) == []
    assert step([weekly(0.5)], [weekly(0.95, reset=NOW - 1)]) == []  # that window has reset: its figure is stale


def test_refresh_failing_needs_three_failures_in_a_row():
    assert refresh_alerts({"a": (2, "token endpoint answered 503")}) == []
    [alert] = refresh_alerts({"a": (3, "token endpoint answered 503"), "b": (1, "x")})
    assert (alert.kind, alert.account) == ("refresh_failing", "a") and "503" in alert.body


def test_each_alert_goes_at_most_once_per_interval_per_account():
    a1, b1 = Alert("exhausted", "a", "t", "b"), Alert("exhausted", "b", "t", "b")
    send, held, last = due([a1, b1, a1], {}, NOW, 1800)
    assert send == [a1, b1] and held == [a1]
    send, held, last = due([a1, Alert("recovered", "a", "t", "b")], last, NOW + 1799, 1800)
    assert kinds(send) == [("recovered", "a")] and held == [a1]
    send, _, last = due([a1], last, NOW + 1800, 1800)
    assert send == [a1] and set(last) == {("exhausted", "a"), ("recovered", "a")}  # b's is over: dropped


def test_alert_keys_are_checked_and_the_webhook_url_is_never_quoted():
    cfg = parse_config({"server": {"alert_interval_s": 60, "alert_desktop": False,
                                   "alert_webhook_url": "https://hooks.example/T/secret-part"}}).server
    assert (cfg.alert_interval_s, cfg.alert_desktop) == (60, False) and "secret-part" not in repr(cfg)
    assert parse_config({}).server.alert_webhook_url == ""
    for bad in ({"alert_desktop": "yes"}, {"alert_interval_s": 0}, {"alert_webhook_url": "ftp://secret-part"}):
        with pytest.raises(ConfigError) as e:
            parse_config({"server": bad})
        assert next(iter(bad)) in str(e.value) and "secret-part" not in str(e.value)


# -- the watcher over a real pool (no sockets) ---------------------------------------------------------
class Collect:
    def __init__(self):
        self.sent = []

    def send(self, alert):
        self.sent.append(alert)
        return True


def test_the_watcher_counts_refresh_failures_in_a_row_and_respects_the_mute(tmp_path):
    pool = Pool([AccountConfig("a")], strategy="fill-first", session_ttl_s=60)
    clock = [NOW]
    out, mute = Collect(), MuteFlag(str(tmp_path / "alerts.json"))
    w = AlertWatcher(pool, mute, out, interval_s=lambda: 1800, clock=lambda: clock[0])
    err = RefreshResult(RefreshStatus.ERROR, message="token endpoint answered 503")
    w.tick()
    for _ in range(2):
        w.refresh_result("a", err)
    w.refresh_result("a", RefreshResult(RefreshStatus.OK))  # a success ends the run
    w.refresh_result("a", err)
    w.refresh_result("a", err)
    w.tick()
    assert out.sent == []
    w.refresh_result("a", err)
    w.tick()
    assert kinds(out.sent) == [("refresh_failing", "a")]
    w.refresh_result("a", err)
    w.tick()
    assert len(out.sent) == 1  # within the interval
    mute.set(True, NOW)
    pool.mark_exhausted("a", NOW + 600)
    w.tick()
    assert len(out.sent) == 1  # muted: decided and logged, not delivered


@responses.activate
def test_token_manager_tells_its_listeners_each_refresh_that_reached_the_endpoint(tmp_path):
    url = "https://token.example/v1/oauth/token"
    store = CredentialStore(str(tmp_path / "credentials.json"))
    cred = Credential(kind="oauth", access_token="old-at", refresh_token="old-rt", expires_at_ms=int(NOW * 1000))
    store.put("a", cred)
    tm = TokenManager(store, {"a": cred}, token_url=url, clock=lambda: NOW)
    seen = []
    tm.listeners.append(lambda name, result: seen.append((name, result.status)))
    responses.post(url, status=503, body="busy")
    tm.refresh("a", force=True)
    tm.refresh("a")  # backing off: no call, nothing to tell
    assert seen == [("a", RefreshStatus.ERROR)]


# -- delivery -------------------------------------------------------------------------------------------
ALERT = Alert("exhausted", "a", 'shunt: "a" is out; $(rm -rf ~)', "body `x` 'y' \\ z", NOW + 60)


def test_desktop_command_needs_a_session_bus_on_linux_and_never_quotes_text_into_a_script():
    found = {"notify-send": "/usr/bin/notify-send", "osascript": "/usr/bin/osascript"}.get
    assert desktop_command(ALERT, system="Linux", env={}, which=found)[0] is None
    cmd, _ = desktop_command(ALERT, system="Linux", env={"DBUS_SESSION_BUS_ADDRESS": "unix:path=/x"}, which=found)
    assert cmd[0] == "/usr/bin/notify-send" and cmd[-2:] == [ALERT.title, ALERT.body]
    assert desktop_command(ALERT, system="Linux", env={"DBUS_SESSION_BUS_ADDRESS": "x"}, which=lambda n: None)[0] is None
    cmd, _ = desktop_command(ALERT, system="Darwin", env={}, which=found)
    assert cmd[-2:] == [ALERT.title, ALERT.body]  # read by the script as argv, never spliced into it
    assert not any(ALERT.title in part for part in cmd[:-2])
    assert desktop_command(ALERT, system="Windows", env={}, which=found)[0] is None


def test_the_webhook_payload_suits_slack_and_ntfy_templates():
    p = webhook_payload(ALERT)
    assert p["text"].startswith(ALERT.title) and (p["title"], p["message"]) == (ALERT.title, ALERT.body)
    assert (p["event"], p["account"], p["reset_at_s"]) == ("exhausted", "a", NOW + 60)


class Receiver:
    """A webhook receiver on 127.0.0.1:0 that keeps each JSON body it is posted."""

    def __init__(self, status=200):
        self.bodies: list[dict] = []
        self.cond = threading.Condition()
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with rec.cond:  # kept before the answer, so a sender that got its answer finds it here
                    rec.bodies.append(data)
                    rec.cond.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def wait_for(self, count, timeout=10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.bodies) >= count, timeout)

    def events(self):
        with self.cond:
            return [(b["event"], b["account"]) for b in self.bodies]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def notify_send(tmp_path, monkeypatch):
    """A fake ``notify-send`` first on PATH, with a session bus set: each call appends its argv (JSON)
    to the returned file."""
    bindir, out = tmp_path / "bin", tmp_path / "notify-send.calls"
    bindir.mkdir()
    script = bindir / "notify-send"
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"open({str(out)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    return out


def calls(path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.skipif(sys.platform != "linux", reason="the desktop channel tested here is notify-send (Linux)")
def test_channels_deliver_to_notify_send_and_the_webhook(notify_send, receiver):
    with requests.Session() as http:
        ch = Channels(lambda: ServerConfig(alert_webhook_url=receiver.url), http)
        results = ch.deliver(ALERT)
    assert [(r["channel"], r["result"]) for r in results] == [("desktop", "sent"), ("webhook", "sent")]
    assert calls(notify_send) == [["--app-name=shunt", ALERT.title, ALERT.body]]
    assert receiver.bodies == [webhook_payload(ALERT)]


def test_a_failing_webhook_is_logged_once_without_its_url_and_never_raises(caplog):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook?token=secret-in-url"
    with requests.Session() as http:
        ch = Channels(lambda: ServerConfig(alert_desktop=False, alert_webhook_url=url), http)
        with caplog.at_level(logging.DEBUG, logger="shunt.alerts"):
            first, second = ch.deliver(ALERT)[1], ch.deliver(ALERT)[1]
    assert first["result"] == second["result"] == "failed" and "127.0.0.1" in first["detail"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG]
    assert "secret-in-url" not in caplog.text and "secret-in-url" not in json.dumps([first, second])


# -- through a running proxy ------------------------------------------------------------------------------
def quota_429(upstream, cred, reset):
    upstream.script(cred, Reply(status=429, body=error_json("rate_limit_error", QUOTA_MSG),
                                headers=unified_headers(status_5h="rejected", util_5h=1.0, reset_5h=reset)))


@pytest.mark.skipif(sys.platform != "linux", reason="the desktop channel tested here is notify-send (Linux)")
def test_alerts_reach_the_desktop_and_the_webhook_once_per_interval_and_not_when_muted(
        make_proxy, upstream, receiver, notify_send, events, capsys):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], strategy="fill-first", alert_webhook_url=receiver.url)
    [watcher] = [t for t in start_background(p.srv, refresh=False, recovery=False, usage=False, reload=False,
                                             alert_poll_s=0.02) if isinstance(t, AlertWatcher)]
    assert watcher.looked.wait(10)  # the baseline is taken before anything happens
    reset = int(p.srv.clock.time()) + 3600
    quota_429(upstream, "tok-a", reset)
    assert p.request(body=MSG, headers={"x-claude-code-session-id": "s1"})[0] == 200  # answered by b
    assert receiver.wait_for(1)
    assert receiver.bodies[0]["event"] == "exhausted" and receiver.bodies[0]["account"] == "a"
    assert receiver.bodies[0]["reset_at_s"] == reset
    assert wait_until(lambda: len(calls(notify_send)) == 1)
    assert "a" in calls(notify_send)[0][1] and "out of quota" in calls(notify_send)[0][1]

    # a comes back, then runs out again within the interval: "recovered" goes, the second "exhausted" does not
    p.pool.reset("a")
    assert receiver.wait_for(2) and receiver.events()[1] == ("recovered", "a")
    quota_429(upstream, "tok-a", reset)
    assert p.request(body=MSG, headers={"x-claude-code-session-id": "s2"})[0] == 200  # a new session tries a first
    assert events.wait_for("alert_held")
    assert [r.kind for r in events.records if getattr(r, "event", None) == "alert_held"] == ["exhausted"]

    # muted: b runs out too (and with it the whole pool): decided, logged, not delivered
    assert p.request("POST", "/alerts", {"muted": True})[0] == 200
    quota_429(upstream, "tok-b", reset)
    assert p.request(body=MSG, headers={"x-claude-code-session-id": "s3"})[0] == 429
    assert events.wait_for("alert", count=4)
    muted = [(r.kind, r.account) for r in events.records if getattr(r, "event", None) == "alert" and r.muted]
    assert muted == [("exhausted", "b"), ("all_busy", "")]
    assert len(receiver.bodies) == 2 and len(calls(notify_send)) == 2

    # unmuted: alerts flow again, and `shunt alerts test` reaches every channel
    assert p.request("POST", "/alerts", {"muted": False})[0] == 200
    p.pool.reset("b")
    assert receiver.wait_for(3) and receiver.events()[2] == ("recovered", "b")
    assert cli.main(["alerts", "test", "--url", p.url]) == 0
    assert receiver.wait_for(4) and receiver.events()[3] == ("test", "")
    out = capsys.readouterr().out
    assert "desktop: sent" in out and "webhook: sent (127.0.0.1)" in out
    assert wait_until(lambda: len(calls(notify_send)) == 4)


def test_alerts_mute_and_unmute_commands_go_through_the_control_api(make_proxy, capsys):
    p = make_proxy([("a", "oauth")], alert_desktop=False)
    assert cli.main(["alerts", "mute", "--url", p.url]) == 0
    assert p.srv.status()["alerts"] == {"muted": True}
    assert cli.main(["alerts", "unmute", "--url", p.url]) == 0
    assert p.srv.status()["alerts"] == {"muted": False}
    assert cli.main(["alerts", "test", "--url", p.url]) == 1  # no channel here: said, exit 1
    out = capsys.readouterr().out
    assert "alerts muted" in out and "desktop: off (alert_desktop = false)" in out and "webhook: off (alert_webhook_url is not set)" in out
