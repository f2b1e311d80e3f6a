"""What translating between the Messages API and Chat Completions costs, in-process.

Two figures of issue 10 (targets in docs/benchmarks.md):
- the added cost of sending the ~90 KB Claude Code request to an OpenAI-compatible provider: reading
  the JSON body, translating it (:func:`shunt_lib.to_openai.chat_request`) and writing the new body,
  p50 over many runs (the pass-through path does none of this: it forwards the bytes);
- the cost per Anthropic event of translating a provider's stream
  (:class:`shunt_lib.openai_stream.AnthropicFromChatStream`), fed in 1400-byte pieces as a socket
  would deliver them.

Run ``python bench/translate.py`` (``--quick`` for fewer samples). Times are CPU-bound and in one
process; other load on the machine moves them, so the script reports the median of several rounds.
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
from shunt_lib.json_body import body_bytes  # noqa: E402
from shunt_lib.openai_stream import AnthropicFromChatStream  # noqa: E402
from shunt_lib.to_openai import chat_request  # noqa: E402

FIXTURE = os.path.join(REPO, "tests", "fixtures", "claude-code-2.1.328-turn1.json")
PIECE = 1400  # bytes per socket read


def request_us(body: bytes, samples: int) -> list[tuple[float, float, float]]:
    """Microseconds per request ``body`` spent (parsing the JSON, translating, serialising the new body)."""
    caps = Capabilities()
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        parsed = json.loads(body)
        t1 = time.perf_counter()
        translated = chat_request(parsed, "gpt-5", caps, stream=True)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    args = ap.parse_args(argv)
    with open(FIXTURE, encoding="utf-8") as f:
        body = json.dumps(json.load(f)["body"]).encode()
    rounds, samples = (3, 100) if args.quick else (5, 400)
    parts = [request_us(body, samples) for _ in range(rounds)]
    request_rounds = [statistics.median(sum(x) for x in r) for r in parts]
    split = [statistics.median(x[k] for r in parts for x in r) / 1000 for k in range(3)]
    data = chat_stream(5000)
    stream_rounds = [stream_us_per_event(data) for _ in range(rounds)]
    print(f"request: {len(body)} bytes of Claude Code request -> Chat Completions: "
          f"p50 {statistics.median(request_rounds) / 1000:.3f} ms per request (rounds: "
          + ", ".join(f"{r / 1000:.3f}" for r in request_rounds) + "; target <= 1 ms added); of it: parse "
          f"{split[0]:.3f} ms, translate {split[1]:.3f} ms, serialise {split[2]:.3f} ms")
    print(f"stream: {stream_rounds[0][1]} Anthropic events from {len(data)} bytes in {PIECE}-byte reads: "
          f"{statistics.median(r[0] for r in stream_rounds):.1f} us per event (rounds: "
          + ", ".join(f"{r[0]:.1f}" for r in stream_rounds) + "; target <= 20 us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
