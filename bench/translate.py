"""What translating between the Messages API and Chat Completions costs, in-process.

Two figures of issue 10 (targets in docs/benchmarks.md):

- the cost translation ADDS to the ~90 KB Claude Code request over the pass-through path of the same
  shunt. Translation happens only when an ``openai`` account or a ``[models]`` table is configured,
  and then every ``/v1/messages`` request's body is parsed once to route it by model
  (:func:`shunt_lib.model_routing.plan_request`), pass-through or not. So, with the real functions
  and a real ``api_key`` and ``openai`` account: pass-through path = ``plan_request`` + the
  pass-through exchange (:meth:`shunt_lib.dialect.AnthropicPassthrough.exchange` on the ``api_key``
  account: credential headers, body bytes unchanged); translated path = ``plan_request`` + the same
  call on the ``openai`` account (:func:`shunt_lib.anthropic_on_openai.exchange`: translate, write
  the new body, the provider's headers). The two are timed in turn, sample by sample; the figure is
  p50(translated) - p50(pass-through). The split of the translated request's work (parse /
  translate / serialise) is shown as detail;
- the cost per Anthropic event of translating a provider's stream
  (:class:`shunt_lib.openai_stream.AnthropicFromChatStream`), fed in 1400-byte pieces as a socket
  would deliver them.

Run ``python bench/translate.py`` (``--quick`` for fewer samples). Times are CPU-bound and in one
process; other load on the machine moves them, so the script reports the median of several rounds.
The wall-clock cost through a running shunt is ``bench/translate_wired.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from shunt_lib.capabilities import Capabilities  # noqa: E402  (the repository root is now importable)
from shunt_lib.config import AccountConfig  # noqa: E402
from shunt_lib.dialect import ANTHROPIC  # noqa: E402
from shunt_lib.json_body import body_bytes  # noqa: E402
from shunt_lib.model_map import ModelMap  # noqa: E402
from shunt_lib.model_routing import plan_request  # noqa: E402
from shunt_lib.openai_stream import AnthropicFromChatStream  # noqa: E402
from shunt_lib.requests_shape import ProxyRequest  # noqa: E402
from shunt_lib.to_openai import chat_request  # noqa: E402
from shunt_lib.wire import Headers  # noqa: E402

FIXTURE = os.path.join(REPO, "tests", "fixtures", "claude-code-2.1.328-turn1.json")
PIECE = 1400  # bytes per socket read
TRANSLATED_MODEL = "gpt-bench"  # served by the openai account below
#: The configuration in which translation can happen: an Anthropic api_key account and an openai one.
ACCOUNTS = (AccountConfig("ak", "api_key"),
            AccountConfig("oa", "openai", base_url="http://127.0.0.1:9/v1", models=(TRANSLATED_MODEL,),
                          capabilities=Capabilities()))
SECRET = "bench-secret"


def fixture_request(model: str | None = None) -> ProxyRequest:
    """The recorded Claude Code request (its path, headers and body as ``json.dumps`` writes it),
    with ``model`` in place of its own when given."""
    with open(FIXTURE, encoding="utf-8") as f:
        fx = json.load(f)
    body = dict(fx["body"], model=model) if model else fx["body"]
    headers = [(k, v) for k, v in fx["headers"].items() if k.lower() != "content-length"]
    data = json.dumps(body).encode()
    return ProxyRequest(fx["method"], fx["path"], Headers(headers + [("content-length", str(len(data)))]), data)


def path_us(request: ProxyRequest) -> float:
    """Microseconds for one request from its bytes to its upstream exchange: the route by model
    (parsing the body), then the exchange of the account the route picks."""
    by_name = {a.name: a for a in ACCOUNTS}
    t0 = time.perf_counter()
    plan = plan_request(request.method, request.target, request.body, ACCOUNTS, ModelMap())
    (name,) = plan.primary
    ANTHROPIC.exchange(request, by_name[name], SECRET, plan.routes[name])
    return (time.perf_counter() - t0) * 1e6


def paths_us(passthrough: ProxyRequest, translated: ProxyRequest, samples: int) -> tuple[list[float], list[float]]:
    """``samples`` timings of each path, taken in turn (so both meet the same state of the machine)."""
    a, b = [], []
    for _ in range(samples):
        a.append(path_us(passthrough))
        b.append(path_us(translated))
    return a, b


def split_us(body: bytes, samples: int) -> list[tuple[float, float, float]]:
    """Microseconds per request ``body`` spent (parsing the JSON, translating, serialising the new body)."""
    caps = Capabilities()
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        parsed = json.loads(body)
        t1 = time.perf_counter()
        translated = chat_request(parsed, TRANSLATED_MODEL, caps, stream=True)
        t2 = time.perf_counter()
        body_bytes(translated.body)
        t3 = time.perf_counter()
        out.append(((t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6))
    return out


def chat_stream(chunks: int) -> bytes:
    """A provider's stream of ``chunks`` text deltas, a finish chunk and a usage chunk (OpenAI's shape)."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5"}
    lines = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f"word{i} "}
        lines.append({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    lines.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    lines.append({**head, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": chunks,
                                                   "total_tokens": 10 + chunks}})
    return b"".join(b"data: " + json.dumps(x).encode() + b"\n\n" for x in lines) + b"data: [DONE]\n\n"


def stream_us_per_event(data: bytes) -> tuple[float, int]:
    """(microseconds per Anthropic event, events) for one pass of ``data`` through the translator."""
    machine = AnthropicFromChatStream("claude-sonnet-4-6", "msg_1")
    events = 0
    t0 = time.perf_counter()
    for i in range(0, len(data), PIECE):
        events += len(machine.feed(data[i:i + PIECE]))
    events += len(machine.finish())
    return (time.perf_counter() - t0) * 1e6 / events, events


def _ms(xs) -> str:
    return ", ".join(f"{x / 1000:.3f}" for x in xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    args = ap.parse_args(argv)
    rounds, samples = (3, 100) if args.quick else (5, 400)
    passthrough, translated = fixture_request(), fixture_request(TRANSLATED_MODEL)
    paths_us(passthrough, translated, 20)  # warm-up: first-use imports, caches
    runs = [paths_us(passthrough, translated, samples) for _ in range(rounds)]
    pt = statistics.median(x for a, _ in runs for x in a)
    tr = statistics.median(x for _, b in runs for x in b)
    added_rounds = [statistics.median(b) - statistics.median(a) for a, b in runs]
    parts = [split_us(translated.body, samples) for _ in range(rounds)]
    split = [statistics.median(x[k] for r in parts for x in r) / 1000 for k in range(3)]
    data = chat_stream(5000)
    stream_rounds = [stream_us_per_event(data) for _ in range(rounds)]
    print(f"request: {len(translated.body)} bytes of Claude Code request, route by model + exchange, p50: "
          f"pass-through {pt / 1000:.3f} ms, translated {tr / 1000:.3f} ms, added {(tr - pt) / 1000:.3f} ms "
          f"(per round: {_ms(added_rounds)}; target <= 1 ms added)")
    print(f"  translated request's work: parse {split[0]:.3f} ms (done on both paths), translate "
          f"{split[1]:.3f} ms, serialise {split[2]:.3f} ms")
    print(f"stream: {stream_rounds[0][1]} Anthropic events from {len(data)} bytes in {PIECE}-byte reads: "
          f"{statistics.median(r[0] for r in stream_rounds):.1f} us per event (rounds: "
          + ", ".join(f"{r[0]:.1f}" for r in stream_rounds) + "; target <= 20 us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
