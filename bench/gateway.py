#!/usr/bin/env python3
"""What a client token costs a request: its check and its limits' accounting (issue 11).

Two figures, each as the p50 difference between a request with a client token (all five limits set)
and the same request without one (the user's own machine over loopback):

* in-process, the gateway's work alone, with the real functions on a real ``tokens.db``: who sent
  the request (:func:`shunt_lib.auth.decide` over :class:`shunt_lib.token_index.ClientTokens`), the
  model binding's check (:func:`shunt_lib.client_gate.check_model`), admission under the limits
  (:meth:`shunt_lib.client_meter.ClientMeter.admit`) and the charge when it ends
  (:meth:`~shunt_lib.client_meter.Ticket.finish` with the cost the pool worked out for every request,
  queued for the usage writer); and the same for a token that is also bound to model patterns, whose
  check parses the request body to read its model;
* wall clock through a running ``shunt serve`` (as ``bench/bench.py`` starts it) in front of
  ``bench/fake_upstream.py``: the small request with and without the token, sent in turn on one
  keep-alive connection at concurrency 1, the order reversed every other round.

Run ``python bench/gateway.py`` (``--quick``: fewer rounds and samples). The target (docs/benchmarks.md)
is at most 0.05 ms added at p50.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time

import loadgen
from bench import REPO, Bench

from shunt_lib import auth, client_gate  # bench puts the repository root on sys.path
from shunt_lib.client_meter import ClientMeter
from shunt_lib.clients import LOCAL
from shunt_lib.config import Paths
from shunt_lib.record import request_record
from shunt_lib.token_index import ClientTokens
from shunt_lib.token_input import spec_from_fields
from shunt_lib.token_store import TokenStore
from shunt_lib.token_usage import UsageWriter

LIMITS = {"rpm": 10 ** 6, "tpm": 10 ** 9, "daily_tokens": 10 ** 12, "monthly_usd": 10 ** 6, "max_concurrent": 1000}
MODELS = {"models": ["claude-*"]}  # a binding, measured apart: its check parses the body


class _Tap:
    """What a finished request's usage tap holds (the charge reads it through the record)."""

    usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 0, "cache_creation_tokens": 0}
    model = "claude-sonnet-4-5"


def in_process_us(samples: int, rounds: int, fields: dict) -> tuple[list[float], list[float]]:
    """Per round, the p50 microseconds of the gateway's work for a tokenless request and the request of
    a token made with ``fields`` (limits, binding)."""
    with tempfile.TemporaryDirectory() as home:
        path = Paths(home).tokens_db
        with TokenStore(path) as store:
            _, token = store.create(spec_from_fields(dict(label="bench", **fields)), time.time())
        index = ClientTokens(path)
        index.poll()
        writer = UsageWriter(path)  # not started: a charge is only queued, as on the request path
        meter = ClientMeter(sink=writer.add)
        body = loadgen.SMALL_BODY
        record = request_record("POST", "/v1/messages", body, "a", 200, _Tap(), ts_s=time.time(), duration_s=0.01,
                                held_s=0.0, attempts=1)
        cost = meter.prices().cost_usd(record)  # the pool prices every record, token or not

        def one(headers: dict) -> float:
            t0 = time.perf_counter()
            who = auth.decide(auth.credential(headers), auth.is_loopback_peer("127.0.0.1"), "remote", "", index.check,
                              time.time())
            client = who.client
            client_gate.check_model(client, body)
            if client.token is not None:
                ticket = meter.admit(client)
                ticket.finish(record, cost)
                ticket.release()
            return (time.perf_counter() - t0) * 1e6

        tokenless, with_token = {"content-type": "application/json"}, {"x-api-key": token}
        for _ in range(1000):  # warm-up
            one(tokenless), one(with_token)
        out_plain, out_token = [], []
        for _ in range(rounds):
            plain, tok = [], []
            for _ in range(samples):
                plain.append(one(tokenless))
                tok.append(one(with_token))
            out_plain.append(statistics.median(plain))
            out_token.append(statistics.median(tok))
        index.close()
        assert LOCAL.token is None
    return out_plain, out_token


def _status(port: int, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/messages", body=loadgen.SMALL_BODY,
                     headers={"content-type": "application/json", "x-api-key": token})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wall_clock(rounds: int, samples: int, warmup: int) -> list[dict]:
    """Per round, :func:`loadgen.measure`'s result for ``plain`` and ``token`` (small requests, c=1)."""
    b = Bench(argparse.Namespace(shunt_dir=REPO, against=None, py_spy=None, keep_tmp=False))
    try:
        fake = b.start_fake()
        shunt = b.start_shunt("shunt", REPO, None)
        b.targets.append(shunt)
        with TokenStore(Paths(os.path.join(b.tmp, "home-shunt")).tokens_db) as store:
            _, token = store.create(spec_from_fields(dict(label="bench", **LIMITS)), time.time())
        headers = [(k, v) for k, v in loadgen.SMALL_HEADERS if k != "x-api-key"]
        plain = loadgen.build_request(shunt.port, "/v1/messages", headers, loadgen.SMALL_BODY)
        with_token = loadgen.build_request(shunt.port, "/v1/messages", headers + [("x-api-key", token)],
                                           loadgen.SMALL_BODY)
        deadline = time.monotonic() + 5  # the server notices the new token within a quarter of a second
        while _status(shunt.port, token) != 200:
            if time.monotonic() > deadline:
                raise SystemExit("shunt did not accept the bench's client token")
            time.sleep(0.1)
        print(f"shunt on :{shunt.port}, fake upstream on :{fake.port}; {rounds} rounds of {samples} samples of "
              "each, c=1 ...", flush=True)
        runs = []
        for r in range(rounds):
            names, reqs = (["plain", "token"], [plain, with_token]) if r % 2 == 0 else (["token", "plain"],
                                                                                       [with_token, plain])
            runs.append(loadgen.measure(shunt.port, names, [reqs], samples, 120.0, warmup))
        return runs
    finally:
        b.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    args = p.parse_args(argv)
    rounds, samples, warmup = (3, 2000, 20) if args.quick else (5, 20000, 50)
    for what, fields in (("a token with five limits", LIMITS), ("with a model binding too", dict(LIMITS, **MODELS))):
        plain, tok = in_process_us(samples, rounds, fields)
        added = [t - q for q, t in zip(plain, tok)]
        print(f"in-process, {what}: tokenless p50 {statistics.median(plain):.1f} us, with the token "
              f"{statistics.median(tok):.1f} us: added {statistics.median(added):.1f} us (rounds: "
              + ", ".join(f"{a:.1f}" for a in added) + ")")
    rounds, samples, warmup = (2, 300, 20) if args.quick else (4, 1500, 50)
    runs = wall_clock(rounds, samples, warmup)
    p50 = {k: statistics.median(x for r in runs for x in r[k]["lat_us"]) / 1000 for k in ("plain", "token")}
    per_round = [(statistics.median(r["token"]["lat_us"]) - statistics.median(r["plain"]["lat_us"])) / 1000
                 for r in runs]
    errors = sum(r[k]["errors"] for r in runs for k in ("plain", "token"))
    print(f"wall clock: tokenless p50 {p50['plain']:.3f} ms, with a token {p50['token']:.3f} ms: added "
          f"{p50['token'] - p50['plain']:+.3f} ms (rounds: " + ", ".join(f"{x:+.3f}" for x in per_round)
          + f"; target <= 0.05 ms); errors {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
