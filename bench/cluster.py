#!/usr/bin/env python3
"""What a shared pool costs: a shunt on Redis against one alone, three on one Redis, and Redis's work per request.

Three measurements, each on a real ``redis-server`` started here on a free port (no persistence),
real ``shunt serve`` processes (as ``bench/bench.py`` starts them) and a fake upstream:

* ``latency`` — the p50 a ``[cluster]`` adds: one shunt with a ``[cluster]`` table and one without,
  both in front of ``bench/fake_upstream.py``; the small request (``bench/loadgen.py``'s ``small``,
  a fixed session) sent at concurrency 1 on one keep-alive connection to each, one request to each
  in turn (so both see the machine as it is at that moment), the order swapped at every pair; the
  figure is the median of the rounds' p50 differences (wall clock).
  Target: at most 0.1 ms.
* ``spread`` — aggregate throughput of three shunts on one Redis, the load generator's connections
  spread round-robin over them (a balancer), against one shunt with the same connections, and three
  shunts without Redis (what three processes give by themselves on this machine).
* ``ops`` — Redis commands per proxied request, read with ``MONITOR`` around each request (the
  instance's heartbeat — its reads and writes of the instances hash — and the subscription's ``PING``
  are left out; they cost per instance per few seconds, not per request). A request of a known
  session, of a new session, of a client token with limits, a 429 that exhausts an account (the
  request is failed over and answered by another one), and a 401 that makes shunt refresh the
  account's token. The upstream here is the scriptable fake of ``tests/fakes/upstream.py``. Commands
  run inside a script (``EVALSHA``) are counted apart. ``PUBLISH`` counts once here; Redis delivers
  each to every other instance.

* ``ceiling`` — what one Redis core answers for the commands shunt uses: ``redis-benchmark`` (it
  ships with redis-server) against the same Redis, 50 clients, no pipelining, and one ``EVAL``.

Run ``python bench/cluster.py`` (``--quick``: fewer rounds and samples; ``--only latency,spread,ops,ceiling``).
It reports what it measures: parts of the pool that are not shared yet cost nothing here.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time

import loadgen
from bench import REPO, Bench

from tests.redis_support import REDIS_SERVER, RedisServer  # bench puts the repository root on sys.path

CLUSTER = "bench"
SPREAD_INSTANCES = 3
SETTLE_S = 0.3  # after a request, long enough for the instance's queued writes to reach Redis
BACKGROUND = ("ping", "info", "monitor", "client", "hello", "select", "subscribe")


def _bench() -> Bench:
    return Bench(argparse.Namespace(shunt_dir=REPO, against=None, py_spy=None, keep_tmp=False))


def _cluster(redis: RedisServer) -> dict:
    return {"redis_url": redis.url, "cluster_name": CLUSTER}


def _cluster_state(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/status")
        return (json.loads(conn.getresponse().read()).get("cluster") or {}).get("state", "?")
    finally:
        conn.close()


def _small(port: int, client: int = 0) -> bytes:
    return loadgen.request_for("small", port, client)


class _Keepalive:
    """One keep-alive connection sending the small request; :meth:`once` times one request (seconds)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = dict(loadgen.SMALL_HEADERS, **{"x-claude-code-session-id": f"bench-latency-{port}"})
        self.headers.pop("content-length", None)

    def once(self) -> float:
        started = time.perf_counter()
        self.conn.request("POST", "/v1/messages", body=loadgen.SMALL_BODY, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        took = time.perf_counter() - started
        if resp.status != 200:
            raise SystemExit(f"latency: status {resp.status} from port {self.conn.port}")
        return took

    def close(self) -> None:
        self.conn.close()


def latency(redis: RedisServer, rounds: int, samples: int, warmup: int) -> None:
    """(a) the p50 a ``[cluster]`` adds at c=1, wall clock."""
    b = _bench()
    try:
        b.start_fake()
        alone = b.start_shunt("alone", REPO, None)
        shared = b.start_shunt("cluster", REPO, None, cluster=_cluster(redis))
        print(f"latency: shunt alone on :{alone.port}, shunt on Redis on :{shared.port} (cluster "
              f"{_cluster_state(shared.port)}); {rounds} rounds of {samples} small requests each, c=1 ...", flush=True)
        p50 = {"alone": [], "cluster": []}
        conns = {t.label: _Keepalive(t.port) for t in (alone, shared)}
        try:
            for c in conns.values():
                for _ in range(warmup):
                    c.once()
            for r in range(rounds):
                lat: dict[str, list[float]] = {"alone": [], "cluster": []}
                order = ["alone", "cluster"] if r % 2 == 0 else ["cluster", "alone"]
                for i in range(samples):  # one request to each in turn: both see the machine as it is
                    for label in (order if i % 2 == 0 else order[::-1]):
                        lat[label].append(conns[label].once())
                for label, got in lat.items():
                    p50[label].append(statistics.median(got) * 1000)
        finally:
            for c in conns.values():
                c.close()
        added = [c - a for a, c in zip(p50["alone"], p50["cluster"])]
        print(f"latency: alone p50 {statistics.median(p50['alone']):.3f} ms, on Redis "
              f"{statistics.median(p50['cluster']):.3f} ms: added {statistics.median(added):+.3f} ms (rounds: "
              + ", ".join(f"{x:+.3f}" for x in added) + "; target <= 0.1 ms)", flush=True)
    finally:
        b.stop()


def spread(redis: RedisServer, conc: int, samples: int, warmup: int, rounds: int) -> None:
    """(b) aggregate throughput of three instances on one Redis, connections spread round-robin."""
    b = _bench()
    try:
        b.start_fake()
        shared = [b.start_shunt(f"shared{i}", REPO, None, cluster=_cluster(redis)) for i in range(SPREAD_INSTANCES)]
        alone = [b.start_shunt(f"alone{i}", REPO, None) for i in range(SPREAD_INSTANCES)]
        states = [_cluster_state(t.port) for t in shared]
        print(f"spread: {SPREAD_INSTANCES} shunts on Redis (cluster {', '.join(states)}), {SPREAD_INSTANCES} alone; "
              f"c={conc}, {rounds} rounds ...", flush=True)
        setups = {"one on Redis": [shared[0].port], f"{SPREAD_INSTANCES} on Redis": [t.port for t in shared],
                  f"{SPREAD_INSTANCES} alone": [t.port for t in alone]}
        rps: dict[str, list[float]] = {k: [] for k in setups}
        for r in range(rounds):
            names = list(setups)
            names = names[r % len(names):] + names[:r % len(names)]
            for name in names:
                ports = setups[name]
                reqs = [[_small(ports[i % len(ports)], i)] for i in range(conc)]
                run = loadgen.measure(ports, ["small"], reqs, samples, 60.0, warmup)["small"]
                if run["errors"]:
                    raise SystemExit(f"{run['errors']} errors from {name}")
                rps[name].append(run["rps"])
        one = statistics.median(rps["one on Redis"])
        for name, got in rps.items():
            print(f"spread: {name}: {statistics.median(got):,.0f} req/s ({statistics.median(got) / one:.2f}x one; "
                  "rounds: " + ", ".join(f"{x:,.0f}" for x in got) + ")", flush=True)
        print(f"spread: this machine has {os.cpu_count()} CPU(s); the load generator and the fake upstream share them",
              flush=True)
    finally:
        b.stop()


class Monitor(threading.Thread):
    """The commands Redis executes, from ``MONITOR``: ``(client type, command, first argument)``."""

    def __init__(self, redis: RedisServer):
        super().__init__(name="bench-monitor", daemon=True)
        self.redis = redis
        self.seen: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.stopping = False

    def run(self) -> None:
        client = self.redis.client()
        with client.monitor() as m:
            self.ready.set()
            for cmd in m.listen():
                if self.stopping:
                    break
                words = cmd.get("command", "").split()
                if not words:
                    continue
                with self.lock:
                    self.seen.append((cmd.get("client_type", ""), words[0].lower(), words[1] if len(words) > 1 else ""))
        client.close()

    def mark(self) -> int:
        with self.lock:
            return len(self.seen)

    def since(self, mark: int) -> list[tuple[str, str, str]]:
        with self.lock:
            return self.seen[mark:]

    def stop(self) -> None:
        self.stopping = True
        c = self.redis.client()
        c.ping()  # wakes the listener so it sees ``stopping``
        c.close()
        self.join(5)


def _counts(commands: list[tuple[str, str, str]]) -> collections.Counter:
    """Per-request commands by name (``lua:NAME`` inside a script), heartbeats and pings left out."""
    out: collections.Counter = collections.Counter()
    for client_type, name, first in commands:
        if name in BACKGROUND or first.endswith(":instances"):
            continue
        out[f"lua:{name}" if client_type == "lua" else name] += 1
    return out


def _post(port: int, headers: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/messages", body=loadgen.SMALL_BODY,
                     headers={"content-type": "application/json", "anthropic-version": "2023-06-01", **headers})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ops(redis: RedisServer, n: int) -> None:
    """(c) Redis commands per request, by request kind."""
    from shunt_lib.config import Paths
    from shunt_lib.token_input import spec_from_fields
    from shunt_lib.token_store import TokenStore
    from tests.fakes.upstream import FakeUpstream, Reply, error_json, unified_headers

    accounts = [(f"acct{i}", "oauth") for i in range(max(4, n + 2))]
    issued = collections.Counter()

    def token_endpoint(body: dict) -> tuple[int, dict]:
        old = body.get("refresh_token", "")
        issued[old] += 1
        name = old.removeprefix("ref-").split("~")[0]
        n_new = sum(issued.values())
        return 200, {"access_token": f"tok-{name}~{n_new}", "refresh_token": f"ref-{name}~{n_new}", "expires_in": 28800}

    fake = FakeUpstream().start()
    fake.token_handler = token_endpoint
    b = _bench()
    monitor = Monitor(redis)
    try:
        t = b.start_shunt("ops", REPO, None, accounts=accounts, cluster=_cluster(redis), upstream_url=fake.url)
        with TokenStore(Paths(os.path.join(b.tmp, "home-ops")).tokens_db) as store:
            _, token = store.create(spec_from_fields(dict(label="bench", rpm=10 ** 6, tpm=10 ** 9, daily_tokens=10 ** 12,
                                                          monthly_usd=10 ** 6, max_concurrent=1000)), time.time())
        deadline = time.monotonic() + 5  # the server notices a new token within a quarter of a second
        while _post(t.port, {"x-api-key": token})[0] != 200:
            if time.monotonic() > deadline:
                raise SystemExit("shunt did not accept the bench's client token")
            time.sleep(0.1)
        print(f"ops: one shunt on Redis on :{t.port} (cluster {_cluster_state(t.port)}), {len(accounts)} accounts, "
              f"{n} requests of each kind ...", flush=True)
        monitor.start()
        monitor.ready.wait(5)

        def measured(kind: str, send, prime=None) -> None:
            total: collections.Counter = collections.Counter()
            statuses = collections.Counter()
            for i in range(n):
                if prime:
                    prime(i)
                time.sleep(SETTLE_S)
                mark = monitor.mark()
                statuses[send(i)] += 1
                time.sleep(SETTLE_S)
                total += _counts(monitor.since(mark))
            per = {k: v / n for k, v in sorted(total.items())}
            top = sum(v for k, v in per.items() if not k.startswith("lua:"))
            print(f"ops: {kind}: {top:.1f} commands per request ("
                  + (", ".join(f"{k} {v:.2g}" for k, v in per.items()) or "none") + f"); answers {dict(statuses)}",
                  flush=True)

        session = {"x-claude-code-session-id": "bench-known"}
        _post(t.port, session)
        measured("a request of a known session", lambda i: _post(t.port, session)[0])
        measured("a request of a new session", lambda i: _post(t.port, {"x-claude-code-session-id": f"bench-new-{i}"})[0])
        measured("a request with a client token with limits",
                 lambda i: _post(t.port, {"x-api-key": token, **session})[0])

        def prime_429(i: int) -> None:
            sid = {"x-claude-code-session-id": f"bench-429-{i}"}
            _post(t.port, sid)  # binds the session to an account: the next request of it goes there first
            cred = fake.requests_for()[-1].credential
            headers = unified_headers(status_5h="rejected", util_5h=1.0)
            fake.script(cred, Reply(status=429, headers=headers, body=error_json("rate_limit_error", "limit")))

        measured("a 429 that exhausts an account (failed over)",
                 lambda i: _post(t.port, {"x-claude-code-session-id": f"bench-429-{i}"})[0], prime_429)

        def prime_401(i: int) -> None:
            sid = {"x-claude-code-session-id": f"bench-401-{i}"}
            _post(t.port, sid)
            cred = fake.requests_for()[-1].credential
            fake.script(cred, Reply(status=401, body=error_json("authentication_error", "expired")))

        before = sum(issued.values())
        measured("a 401 that refreshes the account's token",
                 lambda i: _post(t.port, {"x-claude-code-session-id": f"bench-401-{i}"})[0], prime_401)
        print(f"ops: token endpoint calls for those {n} requests: {sum(issued.values()) - before}; "
              f"MONITOR saw {monitor.mark()} commands in all "
              "(heartbeats and pings included)", flush=True)
    finally:
        if monitor.is_alive():
            monitor.stop()
        b.stop()
        fake.close()


CEILING_COMMANDS = ("set", "get", "incr", "hset")
NOTICE = '{"k":"account","from":"host-0a1b2c","name":"acct1","until_s":1790000000}'  # a notice's size


def _redis_benchmark(base: list[str], args: list[str], name: str = "") -> None:
    """Run redis-benchmark with ``args``; print each result line (its command shown as ``name`` if given)."""
    import subprocess

    out = subprocess.run(base + args, capture_output=True, text=True, timeout=300)
    for line in out.stdout.replace("\r", "\n").splitlines():
        if "requests per second" in line:
            what, _, figures = line.strip().rpartition(": ")
            print(f"ceiling: {name or what}: {figures}", flush=True)


def ceiling(redis: RedisServer, n: int) -> None:
    """(d) what one Redis core answers: ``redis-benchmark`` (it ships with redis-server) against this
    Redis, 50 clients, no pipelining: the plain commands shunt uses, a small script (``EVAL``), and
    ``PUBLISH`` of a notice-sized message without and with :data:`SPREAD_INSTANCES` subscribers."""
    import shutil
    import subprocess

    tool, cli = shutil.which("redis-benchmark"), shutil.which("redis-cli")
    if tool is None or cli is None:
        print("ceiling: redis-benchmark is not installed (it comes with redis-server)")
        return
    base = [tool, "-h", "127.0.0.1", "-p", str(redis.port), "-q", "-n", str(n), "-c", "50"]
    _redis_benchmark(base, ["-t", ",".join(CEILING_COMMANDS)])
    _redis_benchmark(base, ["eval", "return redis.call('incr', KEYS[1])", "1", "bench:{token:x}:rpm"], "EVAL (one INCR)")
    _redis_benchmark(base, ["publish", "bench:events", NOTICE], "PUBLISH (no subscriber)")
    listeners = [subprocess.Popen([cli, "-p", str(redis.port), "subscribe", "bench:events"], stdout=subprocess.DEVNULL)
                 for _ in range(SPREAD_INSTANCES)]
    try:
        probe = redis.client()
        deadline = time.monotonic() + 5
        while probe.pubsub_numsub("bench:events")[0][1] < SPREAD_INSTANCES and time.monotonic() < deadline:
            time.sleep(0.05)
        probe.close()
        _redis_benchmark(base, ["publish", "bench:events", NOTICE], f"PUBLISH ({SPREAD_INSTANCES} subscribers)")
    finally:
        for proc in listeners:
            proc.terminate()
            proc.wait(5)
    print(f"ceiling: one Redis core (redis-server runs commands on one thread); {os.cpu_count()} CPU(s) here, "
          "shared with redis-benchmark", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    p.add_argument("--only", default="latency,spread,ops,ceiling", help="comma-separated: latency, spread, ops, ceiling")
    args = p.parse_args(argv)
    if REDIS_SERVER is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(tmp)
        try:
            if "latency" in only:
                rounds, samples, warmup = (2, 300, 20) if args.quick else (6, 2000, 50)
                latency(redis, rounds, samples, warmup)
            if "spread" in only:
                samples, rounds = (300, 1) if args.quick else (3000, 3)
                spread(redis, 12, samples, 5, rounds)
            if "ops" in only:
                ops(redis, 2 if args.quick else 5)
            if "ceiling" in only:
                ceiling(redis, 20000 if args.quick else 200000)
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
