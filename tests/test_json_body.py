"""Bodies shunt writes as JSON: compact, ASCII-escaped, and read back as the same value."""

import json

from shunt_lib.json_body import body_bytes


def test_a_body_is_compact_ascii_json_that_reads_back_unchanged():
    value = {"model": "m", "messages": [{"role": "user", "content": "héllo → 世界 \U0001f600\n\"q\""}], "n": 1.5}
    raw = body_bytes(value)
    assert raw.isascii() and b", " not in raw and b": " not in raw
    assert json.loads(raw) == value
