import gzip
import zlib

from shunt_lib.usage import UsageTap, decode_body
from tests.fakes.upstream import message_json, sse_events


def test_sse_usage_across_arbitrary_chunk_boundaries():
    stream = b"".join(sse_events(model="claude-x", input_tokens=11, output_tokens=42, cache_read=900, cache_creation=7))
    for size in (1, 7, 64, len(stream)):
        tap = UsageTap("text/event-stream")
        for i in range(0, len(stream), size):
            tap.feed(stream[i:i + size])
        tap.finish()
        assert tap.model == "claude-x"
        assert tap.usage == {"input_tokens": 11, "output_tokens": 42, "cache_read_tokens": 900, "cache_creation_tokens": 7,
                             "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0}


def test_gzip_sse_and_json_are_decoded_on_a_copy():
    stream = b"".join(sse_events(output_tokens=9))
    z = gzip.compress(stream)
    tap = UsageTap("text/event-stream", "gzip")
    for i in range(0, len(z), 10):
        tap.feed(z[i:i + 10])
    assert tap.usage["output_tokens"] == 9
    body = message_json(input_tokens=3, output_tokens=4)
    d = zlib.compressobj(wbits=zlib.MAX_WBITS)
    deflated = d.compress(body) + d.flush()
    tap = UsageTap("application/json", "deflate")
    tap.feed(deflated)
    tap.finish()
    assert tap.usage["input_tokens"] == 3 and tap.usage["output_tokens"] == 4
    assert decode_body(gzip.compress(b"abc"), "gzip") == b"abc"
    assert decode_body(b"abc", "br") == b"abc"


def test_absurd_token_counts_in_an_answer_are_ignored():
    tap = UsageTap("application/json")
    tap.feed(b'{"model": "m", "usage": {"input_tokens": -5, "output_tokens": 1e308, "cache_read_input_tokens": '
             + str(10 ** 30).encode() + b', "cache_creation_input_tokens": 3}}')
    tap.finish()
    assert tap.usage == {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_creation_tokens": 3,
                         "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0}


def test_cache_writes_split_by_ttl_when_the_answer_splits_them():
    tap = UsageTap("application/json")
    tap.feed(b'{"model": "m", "usage": {"input_tokens": 1, "output_tokens": 2, "cache_creation_input_tokens": 30, '
             b'"cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}}}')
    tap.finish()
    assert tap.usage["cache_creation_tokens"] == 30
    assert (tap.usage["cache_write_5m_tokens"], tap.usage["cache_write_1h_tokens"]) == (10, 20)
    sse = UsageTap("text/event-stream")
    sse.feed(b'data: {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 1, '
             b'"cache_creation_input_tokens": 5, "cache_creation": {"ephemeral_5m_input_tokens": 0, '
             b'"ephemeral_1h_input_tokens": 5}}}}\n\n')
    assert (sse.usage["cache_creation_tokens"], sse.usage["cache_write_1h_tokens"]) == (5, 5)
