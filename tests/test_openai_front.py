"""The OpenAI front door end to end: the official ``openai`` SDK through the real proxy, to an Anthropic
``api_key`` account on the fake Anthropic upstream (translated) and to an ``openai`` account on a tiny
fake OpenAI-compatible upstream (passed through). No OpenAI-dialect request may reach an ``oauth``
account: every test has one, first in the config, and checks that it got nothing."""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shunt_lib import sse
from shunt_lib.capabilities import Capabilities
from shunt_lib.config import AccountConfig, Paths, load_config, write_config
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.model_map import ModelMap, Route, Target
from shunt_lib.dialect import ProxyRequest
from shunt_lib.openai_front import FrontError, prepare, select
from shunt_lib.relay import head_comes_late
from shunt_lib.pool_models import claude_models, display_name
from shunt_lib.server import make_server
from shunt_lib.wire import Headers
from tests.fakes.openai_upstream import FakeOpenAI as ScriptedOpenAI
from tests.fakes.upstream import Reply, error_json
from tests.support import Proxy, wait_until

openai = pytest.importorskip("openai")

OAUTH_AND_KEY = [("o", "oauth"), ("k", "api_key")]
HI = [{"role": "user", "content": "hi"}]


def sdk(p, suffix="/v1", **kw):
    return openai.OpenAI(base_url=p.url + suffix, api_key="unused-by-shunt", max_retries=0, **kw)


def no_oauth_traffic(upstream):
    assert [r for r in upstream.received if r.credential == "tok-o"] == []


def tool_events(calls):
    """An Anthropic stream whose content is one tool_use block per ``(id, name, input)``, arguments in two fragments."""
    evs = [("message_start", {"type": "message_start", "message": {
        "id": "msg_t", "type": "message", "role": "assistant", "content": [], "model": "claude-test",
        "stop_reason": None, "usage": {"input_tokens": 20, "output_tokens": 1}}})]
    for i, (cid, name, args) in enumerate(calls):
        text = json.dumps(args)
        evs += [("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": cid, "name": name, "input": {}}}),
                ("content_block_delta", {"type": "content_block_delta", "index": i,
                                         "delta": {"type": "input_json_delta", "partial_json": text[:5]}}),
                ("content_block_delta", {"type": "content_block_delta", "index": i,
                                         "delta": {"type": "input_json_delta", "partial_json": text[5:]}}),
                ("content_block_stop", {"type": "content_block_stop", "index": i})]
    evs += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                               "usage": {"output_tokens": 30}}),
            ("message_stop", {"type": "message_stop"})]
    return [sse.json_event(name, data) for name, data in evs]


# -- Chat Completions on an Anthropic api_key account ------------------------------------------------------
def test_a_chat_completion_is_translated_for_an_api_key_account_and_counted(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    with sdk(p) as client:
        answer = client.chat.completions.create(
            model="claude-test", messages=[{"role": "system", "content": "be brief"}] + HI, max_tokens=50)
    assert answer.choices[0].message.content == "Hello" and answer.choices[0].finish_reason == "stop"
    assert answer.model == "claude-test" and answer.usage.prompt_tokens == 10 and answer.usage.completion_tokens == 5
    (sent,) = upstream.received
    assert sent.path == "/v1/messages" and sent.credential == "tok-k"
    assert sent.header("anthropic-version") == "2023-06-01" and sent.header("authorization") is None
    assert json.loads(sent.body) == {"model": "claude-test", "system": "be brief", "messages": HI, "max_tokens": 50}
    assert wait_until(lambda: len(p.srv.status()["recent_requests"]) == 1)  # counted just after the answer is relayed
    (rec,) = p.srv.status()["recent_requests"]  # the usage tap read the Anthropic answer
    assert (rec["account"], rec["path"], rec["input_tokens"], rec["output_tokens"]) == ("k", "/v1/chat/completions", 10, 5)
    no_oauth_traffic(upstream)


def test_a_stream_with_include_usage_ends_with_the_usage_chunk_and_done(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    with sdk(p) as client:
        chunks = list(client.chat.completions.create(model="claude-test", messages=HI, stream=True,
                                                     stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 10 and chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)  # the raw stream: OpenAI's framing
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(
            {"model": "claude-test", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}),
            headers={"content-type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.getheader("content-type").startswith("text/event-stream")
    assert body.endswith(b"data: [DONE]\n\n") and b'"usage":{"prompt_tokens":10' in body
    assert wait_until(lambda: len(p.srv.status()["recent_requests"]) == 2)  # counted just after the answer is relayed
    assert [r["input_tokens"] for r in p.srv.status()["recent_requests"]] == [10, 10]
    no_oauth_traffic(upstream)


def test_dropped_fields_are_named_in_x_shunt_degraded(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    with sdk(p) as client:
        raw = client.chat.completions.with_raw_response.create(model="claude-test", messages=HI, seed=7,
                                                               logit_bias={"50256": -100})
        plain = client.chat.completions.with_raw_response.create(model="claude-test", messages=HI)
    assert raw.headers["x-shunt-degraded"] == "seed, logit_bias" and raw.parse().choices[0].message.content == "Hello"
    assert "x-shunt-degraded" not in plain.headers
    assert "seed" not in json.loads(upstream.received[0].body)


def test_a_stream_that_breaks_off_ends_with_an_error_the_sdk_raises(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    upstream.script("tok-k", Reply(events=tool_events([("toolu_1", "f", {"a": 1})]),
                                   break_after=3))
    got = []
    with sdk(p) as client:
        with pytest.raises(openai.APIError) as caught:
            for chunk in client.chat.completions.create(model="claude-test", messages=HI, stream=True):
                got.append(chunk)
    assert got and "upstream stream broke" in caught.value.message
    assert wait_until(lambda: len(p.srv.status()["recent_requests"]) == 1)  # counted just after the answer is relayed
    (rec,) = p.srv.status()["recent_requests"]
    assert rec["broke"] is True and rec["input_tokens"] == 20


def test_parallel_tool_calls_stream_as_two_indexed_calls(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    upstream.script("tok-k", Reply(events=tool_events([("toolu_1", "weather", {"city": "Paris"}),
                                                       ("toolu_2", "weather", {"city": "Oslo"})])))
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    with sdk(p) as client:
        chunks = list(client.chat.completions.create(model="claude-test", messages=HI, tools=tools, stream=True))
    calls: dict[int, dict] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            slot["id"] = tc.id or slot["id"]
            slot["name"] = (tc.function.name if tc.function else None) or slot["name"]
            slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
    assert sorted(calls) == [0, 1]
    assert [(calls[i]["id"], calls[i]["name"], json.loads(calls[i]["arguments"])) for i in (0, 1)] == [
        ("toolu_1", "weather", {"city": "Paris"}), ("toolu_2", "weather", {"city": "Oslo"})]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    sent = json.loads(upstream.received[0].body)
    assert sent["tools"][0]["name"] == "weather" and "input_schema" in sent["tools"][0]


def test_an_image_data_url_reaches_the_account_as_a_base64_image_block(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
    with sdk(p) as client:
        client.chat.completions.create(model="claude-test", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}])
    (block_text, block_image), = [m["content"] for m in json.loads(upstream.received[0].body)["messages"]]
    assert block_text == {"type": "text", "text": "what is this?"}
    assert block_image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}


def test_upstream_errors_reach_the_sdk_with_their_status_and_message(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY, max_wait_s=0)
    upstream.script("tok-k", Reply(status=400, body=error_json("invalid_request_error", "max_tokens: too large")),
                    Reply(status=429, headers={"retry-after": "3600"},
                          body=error_json("rate_limit_error", "Number of request tokens has exceeded your limit")))
    with sdk(p) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="claude-test", messages=HI)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="claude-test", messages=HI)
    assert bad.value.status_code == 400 and bad.value.message.endswith("max_tokens: too large")
    assert bad.value.body == {"message": "max_tokens: too large", "type": "invalid_request_error", "param": None,
                              "code": None}
    # The account is cooling now and max_wait_s is 0: the pool's own 429, in OpenAI's shape.
    assert limited.value.status_code == 429 and "rate-limited" in limited.value.message
    assert limited.value.body["type"] == "rate_limit_error" and limited.value.body["code"] == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) > 0
    no_oauth_traffic(upstream)


def test_a_base_url_without_v1_works(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    with sdk(p, suffix="") as client:
        assert client.chat.completions.create(model="claude-test", messages=HI).choices[0].message.content == "Hello"
        assert client.responses.create(model="claude-test", input="hi").output_text == "Hello"
        assert "claude-opus-4-5" in [m.id for m in client.models.list()]
    assert [r.path for r in upstream.received] == ["/v1/messages", "/v1/messages"]


def test_bad_input_is_an_openai_400_naming_the_field_and_nothing_goes_up(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    with sdk(p) as client:
        with pytest.raises(openai.BadRequestError) as two:
            client.chat.completions.create(model="claude-test", messages=HI, n=2)
        with pytest.raises(openai.BadRequestError) as args:
            client.chat.completions.create(model="claude-test", messages=[
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                      "function": {"name": "f", "arguments": "{not json"}}]}])
    assert two.value.body["param"] == "n" and args.value.body["param"] == "messages[0].tool_calls[0].function.arguments"
    for body in (b"{not json", b"[1]", b'{"messages": []}'):
        status, _, out = p.request("POST", "/v1/chat/completions", body=body)
        assert status == 400 and set(json.loads(out)["error"]) == {"message", "type", "param", "code"}
    assert upstream.received == []


def test_only_subscription_accounts_means_a_clear_400(make_proxy, upstream):
    p = make_proxy([("o", "oauth")])
    with sdk(p) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="claude-test", messages=HI)
    assert "API-key accounts" in caught.value.message and "never to subscription (OAuth) accounts" in caught.value.message
    assert upstream.received == []


def test_the_shunt_key_is_taken_from_the_sdks_bearer_header(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY, remote_key="s3cret-key-for-shunt")
    with openai.OpenAI(base_url=p.url + "/v1", api_key="s3cret-key-for-shunt", max_retries=0) as client:
        assert client.chat.completions.create(model="claude-test", messages=HI).choices[0].message.content == "Hello"
    with openai.OpenAI(base_url=p.url + "/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="claude-test", messages=HI)
    (sent,) = upstream.received
    assert sent.credential == "tok-k" and "s3cret" not in json.dumps(sent.headers)


# -- the Responses API -----------------------------------------------------------------------------------
def test_the_responses_api_on_an_api_key_account(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    with sdk(p) as client:
        answer = client.responses.create(model="claude-test", instructions="be brief", input="hi")
        with client.responses.stream(model="claude-test", input="hi") as stream:
            kinds = [ev.type for ev in stream]
            final = stream.get_final_response()
    assert answer.output_text == "Hello" and answer.status == "completed" and answer.usage.input_tokens == 10
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert final.output_text == "Hello" and final.usage.output_tokens == 5
    first = json.loads(upstream.received[0].body)
    assert first["system"] == "be brief" and first["messages"] == HI
    assert wait_until(lambda: len(p.srv.status()["recent_requests"]) == 2)  # counted just after the answer is relayed
    assert [r["output_tokens"] for r in p.srv.status()["recent_requests"]] == [5, 5]
    no_oauth_traffic(upstream)


# -- an openai account: passed through ---------------------------------------------------------------------
class FakeOpenAI:
    """A tiny OpenAI-compatible upstream on 127.0.0.1:0: records each request, answers ``answer``."""

    def __init__(self, answer: bytes, status: int = 200):
        self.received: list[tuple[str, dict, bytes]] = []
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                fake.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def mixed_pool(upstream):
    """A proxy with an oauth account, an openai account (``gpt-*`` models, key ``sk-prov``) on a fake
    OpenAI upstream, and an api_key account; ``models_toml`` adds a [models] table."""
    made = []

    def factory(answer: bytes = b"{}", models_toml: str = ""):
        fake = FakeOpenAI(answer)
        home = os.environ["SHUNT_HOME"]
        paths = Paths(home)
        write_config(paths, {"upstream_url": upstream.url, "oauth_token_url": upstream.url + "/v1/oauth/token"},
                     [AccountConfig("o", "oauth"), AccountConfig("prov", "openai", base_url=fake.url,
                                                                 models=("gpt-*", "gpt-5")),
                      AccountConfig("k", "api_key")])
        if models_toml:
            with open(paths.config, "a", encoding="utf-8") as f:
                f.write(models_toml)
        store = CredentialStore(paths.credentials)
        store.put("o", Credential(kind="oauth", access_token="tok-o", refresh_token="ref-o",
                                  expires_at_ms=int((time.time() + 3600) * 1000)))
        store.put("prov", Credential(kind="openai", api_key="sk-prov"))
        store.put("k", Credential(kind="api_key", api_key="tok-k"))
        p = Proxy(make_server(load_config(paths), paths, port=0))
        made.append((p, fake))
        return p, fake

    yield factory
    for p, fake in made:
        p.close()
        fake.close()


def test_an_openai_account_gets_the_body_byte_for_byte_with_its_own_key(mixed_pool, upstream):
    answer = json.dumps({"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "gpt-5",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "from provider"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode()
    p, fake = mixed_pool(answer)
    body = b'{"model": "gpt-5",  "messages": [{"role": "user", "content": "hi"}], "seed": 7, "x_vendor": {"a": 1}}'
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"content-type": "application/json", "authorization": "Bearer client-key"})
        resp = conn.getresponse()
        got = resp.read()
    finally:
        conn.close()
    assert resp.status == 200 and got == answer and resp.getheader("x-shunt-account") == "prov"
    ((path, headers, sent),) = fake.received
    assert path == "/v1/chat/completions" and sent == body
    assert headers["authorization"] == "Bearer sk-prov" and "x-api-key" not in headers
    with sdk(p) as client:  # and through the SDK
        assert client.chat.completions.create(model="gpt-4o", messages=HI).choices[0].message.content == "from provider"
    assert upstream.received == []  # neither the oauth nor the api_key account saw it


def test_the_model_picks_the_account_and_models_lists_the_pool(mixed_pool, upstream):
    p, fake = mixed_pool(models_toml='\n[models]\n"fast" = "k:claude-haiku-4-5"\n')
    with sdk(p) as client:
        assert client.chat.completions.create(model="claude-test", messages=HI).choices[0].message.content == "Hello"
        assert client.chat.completions.create(model="fast", messages=HI).model == "fast"
        listed = client.models.list()
    assert [json.loads(r.body)["model"] for r in upstream.received] == ["claude-test", "claude-haiku-4-5"]
    assert {r.credential for r in upstream.received} == {"tok-k"} and fake.received == []
    ids = {m.id: m.owned_by for m in listed.data}
    assert ids["gpt-5"] == "prov" and ids["fast"] == "shunt" and ids["claude-opus-4-5"] == "anthropic"
    assert "gpt-*" not in ids
    anthropic = pytest.importorskip("anthropic")  # an Anthropic client gets Anthropic's page of the same pool
    with anthropic.Anthropic(base_url=p.url, api_key="unused", max_retries=0) as aclient:
        page = aclient.models.list()
    assert "gpt-5" in [m.id for m in page.data] and page.data[0].display_name.startswith("Claude")
    assert upstream.requests_for(path_prefix="/v1/models") == []


def test_anthropic_clients_models_are_still_forwarded_with_only_claude_accounts(make_proxy, upstream):
    p = make_proxy(OAUTH_AND_KEY)
    status, _, _ = p.request("GET", "/v1/models")  # anthropic-version is set: forwarded as before
    assert status == 200 and [r.path for r in upstream.received] == ["/v1/models"]
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
    try:
        conn.request("GET", "/v1/models")
        listed = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert listed["object"] == "list" and listed["data"][0]["owned_by"] == "anthropic"
    assert len(upstream.received) == 1


def test_the_responses_api_with_only_openai_accounts_says_it_needs_an_api_key_account(mixed_pool):
    p, fake = mixed_pool()
    status, _, out = p.request("POST", "/v1/responses", body={"model": "gpt-5", "input": "hi"})
    assert status == 400 and "needs an Anthropic api_key account" in json.loads(out)["error"]["message"]
    assert fake.received == []


def test_a_model_no_api_key_account_takes_is_a_404_model_not_found():
    accounts = [AccountConfig("o", "oauth"), AccountConfig("prov", "openai", models=("gpt-*",))]
    with pytest.raises(FrontError) as missing:
        select("chat", "llama-3", accounts, ModelMap())
    assert missing.value.status == 404 and missing.value.code == "model_not_found"
    assert json.loads(missing.value.body())["error"]["code"] == "model_not_found"


# -- pure parts ------------------------------------------------------------------------------------------
def test_select_keeps_api_key_accounts_only_and_says_why_when_none_fits():
    accounts = [AccountConfig("o", "oauth"), AccountConfig("prov", "openai", models=("gpt-*",)),
                AccountConfig("k", "api_key")]
    assert select("chat", "claude-x", accounts, ModelMap()).targets == {"k": "claude-x"}
    assert select("chat", "gpt-4o", accounts, ModelMap()).targets == {"prov": "gpt-4o"}
    rewrite = ModelMap((("claude-*", Route((Target("o"), Target("prov", "gpt-5")))),))
    assert select("chat", "claude-x", accounts, rewrite).targets == {"prov": "gpt-5"}
    with pytest.raises(FrontError) as none:
        select("chat", "claude-x", accounts[:1], ModelMap())
    assert none.value.status == 400 and "never to subscription" in none.value.message
    with pytest.raises(FrontError) as responses:
        select("responses", "gpt-4o", accounts[:2], ModelMap())
    assert responses.value.status == 400 and "Responses API needs an Anthropic api_key account" in responses.value.message


def test_claude_model_names_for_the_list():
    assert display_name("claude-opus-4-5") == "Claude Opus 4.5" and display_name("claude-3-7-sonnet") == "Claude Sonnet 3.7"
    assert display_name("claude-opus-4-0") == "Claude Opus 4" and display_name("gpt-5") == "gpt-5"
    assert "claude-opus-4-0" in claude_models() and "claude-opus-4" not in claude_models()


@pytest.mark.parametrize("stream, long_head", [(False, True), (True, False)])
def test_a_non_streaming_passthrough_waits_the_long_head_timeout(stream, long_head):
    accounts = [AccountConfig("prov", "openai", base_url="http://127.0.0.1:9", models=("gpt-*",)),
                AccountConfig("k", "api_key")]
    for model, account in (("gpt-5", accounts[0]), ("claude-x", accounts[1])):
        raw = json.dumps({"model": model, "messages": HI, "stream": stream}).encode()
        request = ProxyRequest("POST", "/v1/chat/completions", Headers([("content-type", "application/json")]), raw)
        exchange = prepare("chat", request, accounts, ModelMap(), 0.0).exchange(request, account, "sk")
        up = exchange.request  # the relay's decision: the exchange's own, or else from the request sent
        decided = exchange.long_head if getattr(exchange, "long_head", None) is not None else \
            head_comes_late(up.method, up.target, up.body)
        assert decided is long_head, (model, stream)


def test_usage_of_answers_passed_through_from_an_openai_account_is_counted(make_proxy):
    fake = ScriptedOpenAI().start()
    try:
        p = make_proxy([("o", "oauth"), AccountConfig("prov", "openai", base_url=fake.base_url, models=("gpt-*",),
                                                      capabilities=Capabilities())])
        with sdk(p) as client:
            answer = client.chat.completions.create(model="gpt-5", messages=HI)
            chunks = list(client.chat.completions.create(model="gpt-5", messages=HI, stream=True,
                                                         stream_options={"include_usage": True}))
    finally:
        fake.close()
    assert answer.usage.prompt_tokens == 21 and chunks[-1].usage.prompt_tokens == 21  # passed through unchanged
    def prov():
        return next(a for a in json.loads(p.request("GET", "/status")[2])["accounts"] if a["name"] == "prov")
    assert wait_until(lambda: prov()["requests"] == 2)  # counted just after the answer is relayed
    acct = prov()
    # per answer: prompt 21 of which 4 cached, completion 5; cached tokens counted once
    assert (acct["input_tokens"], acct["cache_read_tokens"], acct["output_tokens"]) == (34, 8, 10)


def test_a_configured_fallback_is_taken_only_once_the_primary_account_is_out(make_proxy, upstream, events):
    """On the OpenAI door as on the Anthropic one: the [models] entry's `to` accounts first, whatever
    the config order; its `fallback` only once they are out, shown in x-shunt-fallback."""
    fake = ScriptedOpenAI().start()
    try:
        p = make_proxy([AccountConfig("prov", "openai", base_url=fake.base_url, models=(), capabilities=Capabilities()),
                        ("k", "api_key")],
                       models={"claude-x": {"to": ["k"], "fallback": ["prov:gpt-fallback"]}})
        with sdk(p) as client:
            for _ in range(3):  # the openai account comes first in the config, yet the primary serves
                raw = client.chat.completions.with_raw_response.create(model="claude-x", messages=HI)
                assert raw.headers["x-shunt-account"] == "k" and "x-shunt-fallback" not in raw.headers
            assert fake.received == []
            upstream.script("tok-k", Reply(429, {"anthropic-ratelimit-unified-status": "rejected",
                                                 "anthropic-ratelimit-unified-reset": "4102444800"},
                                           error_json("rate_limit_error", "quota")))
            raw = client.chat.completions.with_raw_response.create(model="claude-x", messages=HI)
        assert raw.headers["x-shunt-account"] == "prov" and raw.headers["x-shunt-fallback"] == "gpt-fallback"
        assert raw.parse().choices[0].message.content == "Hello from the fake provider"
        assert [r.body["model"] for r in fake.received] == ["gpt-fallback"]
        assert events.wait_for("fallback")
    finally:
        fake.close()
