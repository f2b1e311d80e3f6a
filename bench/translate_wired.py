#!/usr/bin/env python3
"""What translation adds to a request through a running shunt, wall clock (issue 10).

One ``shunt serve`` (started as ``bench/bench.py`` starts it) with an Anthropic ``api_key`` account
and an ``openai`` account serving ``gpt-bench``, both on ``bench/fake_upstream.py`` (which answers
Messages and Chat Completions with canned bytes). On one keep-alive connection, at concurrency 1,
the requests of each pair are sent in turn, so both meet the same state of the machine:

* Anthropic door: the ~90 KB Claude Code request (``tests/fixtures/claude-code-2.1.328-turn1.json``,
  its path and headers) with its own ``claude-*`` model, passed through to the ``api_key`` account,
  vs the same with model ``gpt-bench``, translated to Chat Completions for the ``openai`` account;
* OpenAI door: that request translated to Chat Completions once, before the clock starts
  (:func:`shunt_lib.to_openai.chat_request`), sent to ``/v1/chat/completions`` with the ``claude-*``
  model (translated to Messages for the ``api_key`` account) vs with ``gpt-bench`` (passed through
  to the ``openai`` account);

each non-streaming and streaming. The order of the requests is reversed every other round. The
figure is each pair's p50 difference (translated minus pass-through), with p50/p99 of each side
and the per-round differences to judge the noise.

Run ``python bench/translate_wired.py`` (``--quick``: fewer rounds and samples). The in-process
cost of the same work is ``bench/translate.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import loadgen
import report
from bench import FIXTURE, HOST, REPO, Bench

from shunt_lib.capabilities import Capabilities  # bench puts the repository root on sys.path
from shunt_lib.config import AccountConfig
from shunt_lib.to_openai import chat_request

TRANSLATED_MODEL = "gpt-bench"
CHAT_PATH = "/v1/chat/completions"
CHAT_HEADERS = [("content-type", "application/json"), ("authorization", "Bearer bench-client-key"),
                ("user-agent", "OpenAI/Python 1.99.0"), ("accept", "application/json")]
#: (door, stream?) -> (pass-through name, translated name), in table order.
PAIRS = {("anthropic", False): ("cc-pass", "cc-translated"),
         ("anthropic", True): ("cc-pass-stream", "cc-translated-stream"),
         ("openai", False): ("chat-pass", "chat-translated"),
         ("openai", True): ("chat-pass-stream", "chat-translated-stream")}


def requests(port: int) -> dict[str, bytes]:
    """Every request of :data:`PAIRS` by name, as bytes."""
    with open(FIXTURE, encoding="utf-8") as f:
        fx = json.load(f)
    headers = [(k, v) for k, v in fx["headers"].items() if k.lower() not in loadgen.FIXTURE_DROP]
    claude = fx["body"]["model"]
    out = {}
    for stream in (False, True):
        names = PAIRS[("anthropic", stream)]
        for name, model in zip(names, (claude, TRANSLATED_MODEL)):
            body = json.dumps(dict(fx["body"], model=model, stream=stream)).encode()
            out[name] = loadgen.build_request(port, fx["path"], headers, body)
        chat = chat_request(dict(fx["body"], stream=stream), claude, Capabilities(), stream=stream).body
        for name, model in zip(PAIRS[("openai", stream)], (TRANSLATED_MODEL, claude)):
            body = json.dumps(dict(chat, model=model)).encode()
            out[name] = loadgen.build_request(port, CHAT_PATH, CHAT_HEADERS, body)
    return out


def rows(runs: list[dict[str, dict]]) -> list[str]:
    """The markdown table of the pairs from ``runs`` (one :func:`loadgen.measure` result per round)."""
    out = ["| door | answer | pass-through p50/p99 ms | translated p50/p99 ms | added p50 ms"
           " | added p50 per round ms |", "|---|---|---|---|---|---|"]
    for (door, stream), (a, b) in PAIRS.items():
        pa = report.Percentiles.of_us([x for r in runs for x in r[a]["lat_us"]])
        pb = report.Percentiles.of_us([x for r in runs for x in r[b]["lat_us"]])
        per_round = [(statistics.median(r[b]["lat_us"]) - statistics.median(r[a]["lat_us"])) / 1000 for r in runs]
        label = "Messages (Claude Code request)" if door == "anthropic" else "Chat Completions (same, translated)"
        kind = "stream" if stream else "JSON"
        out.append(f"| {label} | {kind} | {pa.p50:.3f}/{pa.p99:.3f} | {pb.p50:.3f}/{pb.p99:.3f}"
                   f" | {pb.p50 - pa.p50:+.3f} | " + ", ".join(f"{x:+.3f}" for x in per_round) + " |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (shunt's log, home) for inspection")
    args = p.parse_args(argv)
    rounds, samples, warmup = (2, 100, 20) if args.quick else (4, 500, 50)
    b = Bench(argparse.Namespace(shunt_dir=REPO, against=None, py_spy=None, keep_tmp=args.keep_tmp))
    t0 = time.monotonic()
    try:
        fake = b.start_fake()
        openai = AccountConfig("oa", "openai", base_url=f"http://{HOST}:{fake.port}/v1", models=(TRANSLATED_MODEL,))
        shunt = b.start_shunt("shunt", REPO, None, accounts=[("ak", "api_key"), openai])
        b.targets.append(shunt)
        reqs = requests(shunt.port)
        names = [n for pair in PAIRS.values() for n in pair]
        print(f"shunt on :{shunt.port} (pid {shunt.pid}), fake upstream on :{fake.port}; {rounds} rounds of "
              f"{samples} samples of each of {len(names)} requests, c=1 ...", flush=True)
        runs = []
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            runs.append(loadgen.measure(shunt.port, order, [[reqs[n] for n in order]], samples, 120.0, warmup))
    finally:
        b.stop()
    sizes = {n: runs[0][n]["request_bytes"] for n in names}
    print("\nrequest bytes: " + ", ".join(f"{n} {s}" for n, s in sizes.items()))
    print("\n".join(rows(runs)))
    print(f"\n(run took {time.monotonic() - t0:.0f} s; errors: {sum(r[n]['errors'] for r in runs for n in names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
