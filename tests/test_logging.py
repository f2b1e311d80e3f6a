"""The log: dated times, request ids on events and access lines, one line per fact, refused keys."""

import logging
import re
import threading
import time

from shunt_lib.logfmt import LogFormatter, clock_text
from shunt_lib.state import Pool
from shunt_lib.config import AccountConfig
from tests.fakes.upstream import Reply, error_json
from tests.support import MSG


def test_clock_text_has_a_date_unless_today():
    now = time.mktime((2026, 12, 3, 12, 0, 0, 0, 0, -1))
    assert clock_text(now + 3600, now) == "13:00:00"
    assert clock_text(now + 3 * 86400, now) == "2026-12-06 12:00:00"
    assert clock_text(now - 86400, now) == "2026-12-02 12:00:00"


def test_the_formatter_dates_lines_and_appends_ids_to_events_only():
    fmt = LogFormatter()
    event = logging.makeLogRecord({"name": "shunt.events", "levelno": logging.INFO, "levelname": "INFO",
                                   "msg": "account a cooling", "event": "cooling", "request_id": "ab12cd34",
                                   "upstream_request_id": "req_1", "created": time.time()})
    line = fmt.format(event)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO", line)
    assert line.endswith("account a cooling [id=ab12cd34 upstream_id=req_1]")
    access = logging.makeLogRecord({"name": "shunt.access", "msg": "POST /v1/messages id=ab12cd34", "event": "request",
                                    "request_id": "ab12cd34", "levelname": "INFO"})
    assert fmt.format(access).endswith("POST /v1/messages id=ab12cd34")


def test_events_and_access_lines_carry_the_request_ids(make_proxy, upstream, events):
    p = make_proxy(strategy="fill-first")
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "slow down"),
                                   headers={"retry-after": "7", "request-id": "req_upstream_a"}))
    assert p.request(body=MSG)[0] == 200
    assert events.wait_for("request")
    cooling = [r for r in events.records if getattr(r, "event", None) == "cooling"]
    access = [r for r in events.records if getattr(r, "event", None) == "request"]
    assert len(cooling) == 1 and len(access) == 1
    rid = access[0].request_id
    assert re.fullmatch(r"[0-9a-f]{8}", rid)
    assert cooling[0].request_id == rid and cooling[0].upstream_request_id == "req_upstream_a"
    failover = [r for r in events.records if getattr(r, "event", None) == "failover"]
    assert failover and failover[0].request_id == rid and failover[0].upstream_request_id == "req_upstream_a"  # why it moved
    assert access[0].getMessage().endswith(f"attempts=2 id={rid}")  # b answered without a request-id
    assert p.srv.status()["recent_requests"][-1]["request_id"] == rid
    assert p.request(body=MSG)[0] == 200
    assert events.wait_for("request", count=2)
    second = [r for r in events.records if getattr(r, "event", None) == "request"][1]
    assert second.request_id != rid


def test_a_failover_says_which_account_the_request_left_and_why(make_proxy, upstream, events):
    p = make_proxy(strategy="fill-first")
    upstream.script("tok-a", Reply(status=529, body=error_json("overloaded_error", "Overloaded")))
    assert p.request(body=MSG)[0] == 200
    assert events.wait_for("request")
    (failover,) = [r for r in events.records if getattr(r, "event", None) == "failover"]
    assert (failover.from_account, failover.account, failover.status) == ("a", "b", 529)
    assert failover.cause == "overloaded"  # what a did, as shunt_failovers_total{reason} counts it
    assert failover.getMessage() == "request moved from a to b (529)"


def test_racing_requests_log_a_cooldown_once(make_proxy, upstream, events):
    p = make_proxy(strategy="fill-first")
    releases = [threading.Event(), threading.Event()]
    upstream.script("tok-a", *[Reply(status=429, body=error_json("rate_limit_error", "slow down"),
                                     headers={"retry-after": "30"}, release=r) for r in releases])
    results = []
    threads = [threading.Thread(target=lambda: results.append(p.request(body=MSG)[0])) for _ in range(2)]
    for t in threads:
        t.start()
    assert upstream.wait_for_requests(2, "tok-a")  # both are at the upstream on account a
    for r in releases:
        r.set()
    for t in threads:
        t.join(30)
    assert results == [200, 200]
    assert events.wait_for("request", count=2)
    assert events.kinds().count("cooling") == 1
    assert events.kinds().count("failover") == 2  # per request: each one moved


def test_a_cooldown_or_exhaustion_is_logged_when_it_starts_or_moves_later(events):
    pool = Pool([AccountConfig("a")], strategy="fill-first", session_ttl_s=60)
    now = time.time()
    pool.cool("a", now + 30, "throttled")
    pool.cool("a", now + 30.4, "throttled")  # the same fact, reported by a second request
    pool.cool("a", now + 10, "throttled")  # never shortened
    assert events.kinds().count("cooling") == 1
    pool.cool("a", now + 90, "throttled")
    assert events.kinds().count("cooling") == 2
    pool.mark_exhausted("a", now + 3600)
    pool.mark_exhausted("a", now + 3600)
    assert events.kinds().count("exhausted") == 1


def test_a_wrong_key_is_logged_without_the_key(make_proxy, caplog):
    p = make_proxy(remote_key="the-right-key-0123456789")
    caplog.set_level(logging.INFO, logger="shunt")
    assert p.request(body=MSG, headers={"x-api-key": "a-wrong-key-ABCDEFGH"})[0] == 401
    assert p.request(method="GET", path="/status?x=1")[0] == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "shunt.server" and r.levelno == logging.WARNING]
    assert lines == ["refused POST /v1/messages from 127.0.0.1: a wrong shunt key",
                     "refused GET /status from 127.0.0.1: no shunt key"]
    assert "ABCDEFGH" not in caplog.text and "the-right-key" not in caplog.text
