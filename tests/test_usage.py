import gzip
import json
import zlib

from shunt_lib.relay import narrow_accept_encoding, upstream_headers
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
        assert tap.usage == {"input_tokens": 11, "output_tokens": 42, "cache_read_tokens": 900, "cache_creation_tokens": 7}


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


def test_accept_encoding_is_narrowed_to_what_zlib_decodes():
    assert narrow_accept_encoding("gzip, deflate, br, zstd") == "gzip, deflate"
    assert narrow_accept_encoding("br, zstd") is None
    assert narrow_accept_encoding("gzip;q=1.0, identity") == "gzip;q=1.0, identity"


def test_upstream_headers_replace_credentials_and_keep_the_rest():
    client = [("Authorization", "Bearer client"), ("x-api-key", "client-key"), ("Host", "127.0.0.1:8082"),
              ("Connection", "keep-alive, x-hop"), ("x-hop", "1"), ("Keep-Alive", "5"), ("anthropic-beta", "a-1,b-2"),
              ("x-claude-code-session-id", "s"), ("user-agent", "claude-cli/2"), ("accept-encoding", "gzip, br"),
              ("content-length", "10"), ("x-custom", "v")]
    h = upstream_headers(client, "oauth", "acct-token")
    assert h["authorization"] == "Bearer acct-token"
    assert "x-api-key" not in h and "host" not in h and "connection" not in h and "x-hop" not in h
    assert "keep-alive" not in h and "content-length" not in h
    assert h["anthropic-beta"] == "a-1,b-2,oauth-2025-04-20"
    assert h["user-agent"] == "claude-cli/2" and h["x-custom"] == "v" and h["accept-encoding"] == "gzip"
    h = upstream_headers([("anthropic-beta", "oauth-2025-04-20,x")], "oauth", "t")
    assert h["anthropic-beta"] == "oauth-2025-04-20,x"
    h = upstream_headers([], "oauth", "t")
    assert h["anthropic-beta"] == "oauth-2025-04-20" and "accept-encoding" not in h
    h = upstream_headers(client, "api_key", "sk-key")
    assert h["x-api-key"] == "sk-key" and "authorization" not in h and h["anthropic-beta"] == "a-1,b-2"
    assert json.dumps(dict(h))  # serialisable, no surprises
