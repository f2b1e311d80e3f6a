"""OpenAIUsageTap: usage of Chat Completions answers passed through unchanged (JSON, gzip, a stream split anywhere)."""

from __future__ import annotations

import gzip
import json

from shunt_lib.openai_usage import OpenAIUsageTap

USAGE = {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37, "prompt_tokens_details": {"cached_tokens": 10}}
COUNTED = {"input_tokens": 20, "output_tokens": 7, "cache_read_tokens": 10}


def counted(tap):
    return {k: tap.usage[k] for k in COUNTED}


def test_a_json_answer_even_gzipped():
    body = json.dumps({"object": "chat.completion", "model": "gpt-5", "choices": [], "usage": USAGE}).encode()
    for raw, enc in ((body, ""), (gzip.compress(body), "gzip")):
        tap = OpenAIUsageTap("application/json", enc)
        for i in range(0, len(raw), 7):
            tap.feed(raw[i:i + 7])
        tap.finish()
        assert counted(tap) == COUNTED and tap.model == "gpt-5"


def test_the_usage_chunk_of_a_stream_split_at_every_byte():
    chunk = {"object": "chat.completion.chunk", "model": "gpt-5", "choices": []}
    stream = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in (
        dict(chunk, choices=[{"index": 0, "delta": {"content": "hi"}}], usage=None),
        dict(chunk, usage=USAGE))) + b"data: [DONE]\n\n"
    tap = OpenAIUsageTap("text/event-stream")
    for i in range(len(stream)):
        tap.feed(stream[i:i + 1])
    tap.finish()
    assert counted(tap) == COUNTED and tap.model == "gpt-5"


def test_deepseek_cache_hits_and_a_stream_without_usage():
    tap = OpenAIUsageTap("application/json")
    tap.feed(json.dumps({"usage": {"prompt_tokens": 9, "completion_tokens": 1, "prompt_cache_hit_tokens": 4}}).encode())
    tap.finish()
    assert counted(tap) == {"input_tokens": 5, "output_tokens": 1, "cache_read_tokens": 4}
    tap = OpenAIUsageTap("text/event-stream")
    tap.feed(b'data: {"choices": [{"delta": {"content": "x"}}]}\n\ndata: [DONE]\n\n')
    # no usage chunk: the output is estimated from what streamed (1 character -> 1 token), never 0
    assert counted(tap) == {"input_tokens": 0, "output_tokens": 1, "cache_read_tokens": 0}
