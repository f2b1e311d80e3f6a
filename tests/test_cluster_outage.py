"""Redis stopped under load: no client sees an error for it, both instances say ``degraded``, and
when Redis is back (empty: it keeps nothing on disk) what happened meanwhile is merged."""

from __future__ import annotations

import itertools
import json
import threading
import time

from shunt_lib.config import load_config
from shunt_lib.server import make_server
from tests.fakes.upstream import Reply, error_json, unified_headers
from shunt_lib.client_limits import day_key
from tests.support import MSG, Proxy, client_token, wait_until, write_home

QUOTA_MSG = "This request would exceed your account's rate limit. Please try again later."
_n = itertools.count()


class Load:
    """Threads sending new conversations round-robin over ``proxies`` until stopped; :attr:`statuses`
    holds every answer's status. :meth:`pause` / :meth:`resume` hold them between requests."""

    def __init__(self, proxies: list[Proxy], threads: int = 3, headers: dict | None = None):
        self.proxies = proxies
        self.headers = headers
        self.statuses: list[int] = []
        self.errors: list[bytes] = []
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._lock = threading.Lock()
        self._idle = threading.Semaphore(0)
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        for n in itertools.count(i):
            if not self._go.is_set():
                self._idle.release()
                self._go.wait()
            if self._stop.is_set():
                return
            body = dict(MSG, messages=[{"role": "user", "content": f"load {next(_n)}"}])
            status, _, out = self.proxies[n % len(self.proxies)].request(body=body, headers=self.headers)
            with self._lock:
                self.statuses.append(status)
                if status != 200:
                    self.errors.append(out)

    def count(self) -> int:
        with self._lock:
            return len(self.statuses)

    def more(self, n: int, timeout: float = 20) -> bool:
        """Wait until ``n`` more answers have come in."""
        target = self.count() + n
        return wait_until(lambda: self.count() >= target, timeout)

    def pause(self) -> None:
        self._go.clear()
        for _ in self._threads:
            assert self._idle.acquire(timeout=20)

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        for t in self._threads:
            t.join(30)


def _status(proxy: Proxy) -> dict:
    return json.loads(proxy.request("GET", "/status")[2])


def _account_state(proxy: Proxy, name: str) -> str:
    return next(a["status"] for a in _status(proxy)["accounts"] if a["name"] == name)


def _cluster_state(proxy: Proxy) -> str:
    return _status(proxy)["cluster"]["state"]


def test_redis_stopped_mid_load_costs_no_client_error_and_is_merged_when_back(redis_server, upstream, tmp_path):
    cluster = {"redis_url": redis_server.url, "cluster_name": "outage", "timeout_s": 0.2}
    proxies = []
    for i in range(2):
        paths = write_home(str(tmp_path / f"h{i}"), upstream.url, [("a", "oauth"), ("b", "oauth")],
                           server_extra={"strategy": "round-robin", "usage_poll_s": 0}, cluster=cluster)
        proxies.append(Proxy(make_server(load_config(paths), paths, port=0)))
    load = None
    try:
        assert [_cluster_state(p) for p in proxies] == ["ok", "ok"]
        # The load's client token has a daily budget: its counter is one field per instance, summed.
        token, token_id = client_token(proxies[0], "load", daily_tokens=10_000_000)
        assert wait_until(lambda: proxies[1].request(body=MSG, headers={"x-api-key": token})[0] == 200, 5)
        load = Load(proxies, headers={"x-api-key": token})
        assert load.more(20)

        redis_server.stop()  # SIGKILL, mid-load: nothing of it survives
        assert load.more(30)
        assert wait_until(lambda: all(_cluster_state(p) == "degraded" for p in proxies), 10)
        assert all('shunt_cluster_up{cluster="outage"} 0' in p.request("GET", "/metrics")[2].decode()
                   for p in proxies)

        # Meanwhile instance 0 finds account a out of quota and binds a conversation; instance 1 cannot know.
        load.pause()
        sent = threading.Event()
        upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", QUOTA_MSG), arrived=sent,
                                       headers=unified_headers(status_5h="rejected", util_5h=1.0,
                                                               reset_5h=time.time() + 3600)))
        for _ in range(4):
            assert proxies[0].request(body=dict(MSG, messages=[{"role": "user", "content": f"x {next(_n)}"}]))[0] == 200
            if sent.is_set():
                break
        assert sent.is_set()
        status, headers, _ = proxies[0].request(body=MSG, headers={"x-claude-code-session-id": "during-outage"})
        assert status == 200 and headers["x-shunt-account"] == "b"  # bound there while Redis is away
        assert _account_state(proxies[0], "a") == "exhausted"
        assert _account_state(proxies[1], "a") != "exhausted"
        load.resume()
        assert load.more(20)

        redis_server.start()  # back, empty
        assert wait_until(lambda: all(_cluster_state(p) == "ok" for p in proxies), 10)
        assert wait_until(lambda: _account_state(proxies[1], "a") == "exhausted", 5)  # merged from instance 0
        load.pause()
        # instance 1's own round-robin would now pick b anyway (a is out): so check the binding in Redis
        with redis_server.client() as r:
            keys = r.keys("outage:session:*")
            assert b"b" in [r.get(k) for k in keys]
        load.resume()
        assert load.more(20)
        load.pause()

        # The budget's counter, rebuilt in the emptied Redis from both instances, is their sum: nothing
        # spent before, during or after the outage is lost or counted twice.
        def spent() -> tuple[int, int]:
            local = sum(p.srv.meter.used(token_id)["daily_tokens"] for p in proxies)
            with redis_server.client() as r:
                fields = r.hvals(f"outage:{{token:{token_id}}}:day:{day_key(time.time())}")
            return local, sum(int(v) for v in fields)
        assert wait_until(lambda: spent()[0] == spent()[1], 5), spent()
        assert spent()[0] > 0 and all(p.srv.meter.used(token_id)["daily_tokens"] > 0 for p in proxies)
        load.resume()
    finally:
        if load is not None:
            load.stop()
        for p in proxies:
            p.close()
    assert load.count() >= 90  # the four waits for answers: 20 before, 30 and 20 during, 20 after
    assert load.errors == [] and set(load.statuses) == {200}
