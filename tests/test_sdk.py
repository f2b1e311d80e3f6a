"""The official ``anthropic`` SDK as a real client of the proxy (skipped when it is not installed).

What it does with shunt's answers is the point: the pool's 429 must not make it retry for nothing
(``x-should-retry: false``), and quota-free calls must still work when every account is out of quota.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.fakes.upstream import Reply

anthropic = pytest.importorskip("anthropic")


def sdk(port: int, **kw):
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="unused-by-shunt", **kw)


def test_the_sdk_gives_up_at_once_on_a_pool_429_hours_away(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], max_wait_s=0)
    now = time.time()
    p.pool.mark_exhausted("a", now + 3600)
    p.pool.mark_exhausted("b", now + 7200)
    client = sdk(p.port, max_retries=2)
    try:
        with pytest.raises(anthropic.RateLimitError) as caught:
            client.messages.create(model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert 3590 <= int(caught.value.response.headers["retry-after"]) <= 3601  # truthful, for whoever reads it
    assert [r["status"] for r in p.srv.status()["recent_requests"]] == [429]  # one request: no retries
    assert upstream.received == []


def test_quota_free_calls_work_through_the_sdk_while_every_account_is_out(make_proxy, upstream):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], max_wait_s=0)
    now = time.time()
    p.pool.mark_exhausted("a", now + 3600)
    p.pool.mark_exhausted("b", now + 7200)
    upstream.script("tok-a", Reply(body=json.dumps({"input_tokens": 12}).encode(),
                                   headers={"content-type": "application/json"}))
    client = sdk(p.port, max_retries=0)
    try:
        counted = client.messages.count_tokens(model="claude-test", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    assert counted.input_tokens == 12
    assert [r.path for r in upstream.received] == ["/v1/messages/count_tokens"]
