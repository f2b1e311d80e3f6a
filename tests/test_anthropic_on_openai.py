"""Anthropic clients served by ``openai`` accounts, end to end: the official ``anthropic`` SDK through
the real proxy to a fake OpenAI-compatible provider on 127.0.0.1:0 (streaming, a tool loop, an image,
degraded fields, usage), routing by model with ``[models]`` rewrites and fallbacks, and the provider's
429s (exhausted, throttled)."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from shunt_lib.anthropic_on_openai import ChatExchange
from shunt_lib.capabilities import Capabilities
from shunt_lib.config import AccountConfig
from tests.fakes.openai_upstream import ChatReply, FakeOpenAI, RawReply, quota_429, rate_limit_429
from tests.fakes.upstream import Reply, error_json
from tests.support import MSG, STREAM_MSG, wait_until

anthropic = pytest.importorskip("anthropic")

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
TOOL = {"name": "get_weather", "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def provider():
    fake = FakeOpenAI().start()
    yield fake
    fake.close()


def oa(name: str, fake: FakeOpenAI, models=("gpt-*",)) -> AccountConfig:
    return AccountConfig(name, "openai", base_url=fake.base_url, models=tuple(models), capabilities=Capabilities())


@pytest.fixture
def sdk():
    """``sdk(proxy)``: an SDK client of the proxy, closed after the test."""
    clients = []

    def make(proxy):
        clients.append(anthropic.Anthropic(base_url=proxy.url, api_key="unused-by-shunt", max_retries=0))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def test_the_sdk_streams_a_text_answer_from_an_openai_account(make_proxy, provider, sdk):
    proxy = make_proxy([oa("or", provider)])
    with sdk(proxy).messages.stream(model="gpt-test", max_tokens=50, system="Be brief.",
                                     messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake provider"
    assert final.stop_reason == "end_turn" and final.model == "gpt-test"
    # cached prompt tokens counted once: input = prompt - cached
    assert final.usage.input_tokens == 17 and final.usage.cache_read_input_tokens == 4 and final.usage.output_tokens == 5
    (got,) = provider.received
    assert got.path == "/v1/chat/completions" and got.headers["authorization"] == "Bearer tok-or"
    assert got.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert got.body["stream"] is True and got.body["stream_options"] == {"include_usage": True}
    # nothing of the client's Anthropic identity reaches the provider
    assert not any(k.startswith(("anthropic-", "x-api-key", "x-stainless")) for k in got.headers)
    # the request is counted just after its answer is relayed
    assert wait_until(lambda: json.loads(proxy.request("GET", "/status")[2])["accounts"][0]["requests"] >= 1)
    status = json.loads(proxy.request("GET", "/status")[2])
    (acct,) = status["accounts"]
    assert acct["name"] == "or" and acct["requests"] >= 1 and acct["input_tokens"] == 17 and acct["output_tokens"] == 5


def test_a_two_step_tool_loop_through_an_openai_account(make_proxy, provider, sdk):
    proxy = make_proxy([oa("or", provider)])
    provider.script(ChatReply(text="", tool_calls=[("call_1", "get_weather", '{"city": "Paris"}')]),
                    ChatReply(text="It is sunny in Paris"))
    client = sdk(proxy)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(model="gpt-test", max_tokens=100, tools=[TOOL], messages=messages)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.id == "call_1" and use.name == "get_weather" and use.input == {"city": "Paris"}
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]}]
    with client.messages.stream(model="gpt-test", max_tokens=100, tools=[TOOL], messages=messages) as stream:
        second = stream.get_final_message()
    assert second.content[0].text == "It is sunny in Paris" and second.stop_reason == "end_turn"
    sent = provider.received[1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_an_image_block_reaches_the_provider_as_a_data_url_part(make_proxy, provider, sdk):
    proxy = make_proxy([oa("or", provider)])
    msg = sdk(proxy).messages.create(model="gpt-test", max_tokens=20, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is this?"}]}])
    assert msg.content[0].text == "Hello from the fake provider"
    parts = provider.received[0].body["messages"][0]["content"]
    assert {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}} in parts


def test_dropped_fields_are_named_in_x_shunt_degraded(make_proxy, provider):
    proxy = make_proxy([oa("or", provider)])
    body = dict(MSG, model="gpt-test", system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}])
    status, headers, raw = proxy.request(body=body)
    assert status == 200 and json.loads(raw)["content"][0]["text"] == "Hello from the fake provider"
    assert "cache_control" in headers["x-shunt-degraded"] and headers["x-shunt-account"] == "or"
    status, headers, _ = proxy.request(body=dict(MSG, model="gpt-test"))
    assert status == 200 and "x-shunt-degraded" not in headers


def test_a_models_rewrite_is_logged_and_shown(make_proxy, upstream, provider, events):
    proxy = make_proxy([("a", "oauth"), oa("or", provider, models=())],
                       models={"claude-haiku-*": "or:qwen3-coder"})
    status, headers, raw = proxy.request(body=dict(STREAM_MSG, model="claude-haiku-4-5"))
    assert status == 200 and headers["x-shunt-account"] == "or" and headers["x-shunt-model"] == "qwen3-coder"
    assert b"Hello from the fake provider".split()[0] in raw and b"message_stop" in raw
    assert provider.received[0].body["model"] == "qwen3-coder" and not upstream.received
    assert events.wait_for("model_rewrite")
    # a claude model without an entry still goes to the Anthropic account, unchanged
    status, headers, _ = proxy.request(body=MSG)
    assert status == 200 and headers["x-shunt-account"] == "a" and "x-shunt-model" not in headers


def test_count_tokens_on_an_openai_account_is_a_local_estimate(make_proxy, provider):
    proxy = make_proxy([oa("or", provider)])
    status, headers, raw = proxy.request(path="/v1/messages/count_tokens",
                                         body={"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 400}]})
    assert status == 200 and headers["x-shunt-estimate"] == "true" and json.loads(raw)["input_tokens"] > 100
    assert provider.received == []


def test_a_model_no_account_serves_is_a_clear_404(make_proxy, provider):
    proxy = make_proxy([oa("or", provider)])
    status, _, raw = proxy.request(body=dict(MSG, model="claude-x"))
    err = json.loads(raw)["error"]
    assert status == 404 and err["type"] == "not_found_error" and "claude-x" in err["message"]


def test_an_anthropic_request_without_a_model_never_reaches_an_openai_account(make_proxy, upstream, provider):
    proxy = make_proxy([("a", "api_key"), oa("or", provider, models=("*",))])
    # (GET /v1/models is answered by shunt itself once an openai account exists: see test_openai_front.)
    status, headers, _ = proxy.request("GET", "/v1/messages/batches", body=None)
    assert headers["x-shunt-account"] == "a" and provider.received == []


def test_provider_errors_come_back_in_anthropic_shape(make_proxy, provider):
    proxy = make_proxy([oa("or", provider)], max_wait_s=0)
    provider.script(RawReply(400, b'{"error": {"message": "model gpt-test does not exist", "type": "invalid_request_error"}}'))
    status, headers, raw = proxy.request(body=dict(MSG, model="gpt-test"))
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(raw) == {"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": "model gpt-test does not exist"}}


def test_rate_limit_exceeded_cools_an_openai_account_until_the_reset(make_proxy, provider):
    proxy = make_proxy([oa("or", provider)], max_wait_s=0)
    provider.script(rate_limit_429("30s"))
    status, headers, raw = proxy.request(body=dict(MSG, model="gpt-test"))
    assert status == 429 and json.loads(raw)["type"] == "error" and 25 <= int(headers["retry-after"]) <= 31
    (acct,) = json.loads(proxy.request("GET", "/status")[2])["accounts"]
    assert acct["status"] == "cooling"


def test_insufficient_quota_marks_an_openai_account_exhausted_and_moves_on(make_proxy, provider, events):
    other = FakeOpenAI().start()
    try:
        proxy = make_proxy([oa("one", provider), oa("two", other)], strategy="round-robin")
        provider.script(quota_429())
        other.script(ChatReply(text="from two"), ChatReply(text="from two again"))
        answers = [json.loads(proxy.request(body=dict(MSG, model="gpt-test"))[2]) for _ in range(2)]
        assert [a["content"][0]["text"] for a in answers] == ["from two", "from two again"]
        assert len(provider.received) == 1  # exhausted: not asked again
        accounts = {a["name"]: a for a in json.loads(proxy.request("GET", "/status")[2])["accounts"]}
        assert accounts["one"]["status"] == "exhausted" and accounts["two"]["status"] == "available"
        # /status shows what to do (waiting does not help), as the account's action; the other has none
        assert "add credit" in accounts["one"]["action"] and "insufficient_quota" in accounts["one"]["action"]
        assert accounts["two"]["action"] is None
        assert events.wait_for("advice")
        (advice,) = [r for r in events.records if getattr(r, "event", None) == "advice"]
        assert "insufficient_quota" in advice.getMessage() and advice.account == "one"
    finally:
        other.close()


def test_a_claude_code_session_fails_over_to_the_configured_openai_fallback(make_proxy, upstream, provider, events):
    proxy = make_proxy([("a", "oauth"), oa("or", provider, models=())],
                       models={"claude-sonnet-*": {"fallback": ["or:gpt-fallback"]}})
    session = {"x-claude-code-session-id": "sess-1"}
    upstream.script("tok-a", Reply(429, {"anthropic-ratelimit-unified-status": "rejected",
                                         "anthropic-ratelimit-unified-reset": "4102444800"},
                                   error_json("rate_limit_error", "quota")))
    body = dict(STREAM_MSG, model="claude-sonnet-4-5")
    status, headers, raw = proxy.request(body=body, headers=session)
    assert status == 200 and headers["x-shunt-account"] == "or" and headers["x-shunt-fallback"] == "gpt-fallback"
    events_raw = [line for line in raw.split(b"\n") if line.startswith(b"event:")]
    assert events_raw[0] == b"event: message_start" and events_raw[-1] == b"event: message_stop"
    assert provider.received[0].body["model"] == "gpt-fallback"
    assert events.wait_for("fallback") and events.wait_for("failover")
    # the access line and the history name the model that answered, not the one asked for
    assert events.wait_for("request")  # counted just after the answer is relayed
    (rec,) = proxy.srv.status()["recent_requests"]
    assert (rec["account"], rec["model"]) == ("or", "gpt-fallback")
    (access,) = [r for r in events.records if getattr(r, "event", None) == "request"]
    assert "model=gpt-fallback" in access.getMessage()
    # the session's next turn goes straight to the fallback while the Claude account is out
    status, headers, _ = proxy.request(body=body, headers=session)
    assert status == 200 and headers["x-shunt-account"] == "or" and len(upstream.requests_for("tok-a")) == 1


def test_a_provider_stream_that_breaks_ends_with_an_error_event(make_proxy, provider):
    proxy = make_proxy([oa("or", provider)])
    provider.script(ChatReply(text="one two three four", break_after=3))
    status, _, raw = proxy.request(body=dict(STREAM_MSG, model="gpt-test"))
    assert status == 200 and b"event: error" in raw and b"message_stop" not in raw


def test_a_silent_provider_gets_the_client_pings_until_it_goes_on(make_proxy, provider, monkeypatch):
    monkeypatch.setattr(ChatExchange, "ping_after_s", 0.05)
    proxy = make_proxy([oa("or", provider)])
    resume = threading.Event()
    provider.script(ChatReply(text="one two three", pause_after=2, resume=resume))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        conn.request("POST", "/v1/messages", body=json.dumps(dict(STREAM_MSG, model="gpt-test")),
                     headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
        resp = conn.getresponse()
        before = []
        while (line := resp.readline()) and line != b"event: ping\n":  # the provider waits for it
            before.append(line)
        assert line == b"event: ping\n"
        resume.set()
        rest = resp.read()
    finally:
        resume.set()
        conn.close()
    assert b"content_block_delta" in b"".join(before)  # the stream had begun: the ping is mid-stream
    assert rest.count(b"event: message_stop") == 1 and b"event: error" not in rest
    text = "".join(json.loads(l[6:])["delta"]["text"] for l in (b"".join(before) + rest).split(b"\n")
                   if l.startswith(b"data: ") and b'"text_delta"' in l)
    assert text == "one two three"
