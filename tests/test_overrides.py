"""Runtime overrides (model, fallback, effort; global or per client token): what reaches the upstream
byte for byte, x-shunt-override, the fallback, the control API, the CLI with shunt running and
stopped, persistence across a restart, and where they are shown."""

import json
import os
import stat
import time

import pytest

from shunt_lib.cli import main
from shunt_lib.clients import LOCAL, Client
from shunt_lib.config import AccountConfig, load_config
from shunt_lib.errors import BadRequest
from shunt_lib.monitor_view import MonitorData, header_lines, line_text, overrides_text
from shunt_lib.overrides import Override, Overrides, overrides_path
from shunt_lib.requests_shape import ProxyRequest
from shunt_lib.server import make_server
from shunt_lib.status_view import render_status
from shunt_lib.wire import Headers
from tests.fakes.upstream import Reply, error_json, unified_headers
from tests.support import Proxy, client_token, write_home

# A body as a client may write it: odd spacing, escapes, a float in exponent form, `model` not first.
RAW = (b'{\n  "max_tokens" : 1.0E3,\t"messages":[{"role":"user","content":"h\\u00e9llo \\/ \\"q\\""}],\n'
       b'  "model":   "claude-opus-4-1" ,"metadata":{"user_id":"u"}, "stream":false }')


def splice(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert raw.count(old) == 1
    return raw.replace(old, new)


def post(p, body: bytes, path="/v1/messages", headers=None):
    return p.request(body=body, path=path, headers=headers)


def set_override(p, **body):
    code, _, out = p.request("POST", "/overrides", body=body)
    assert code == 200, out
    return json.loads(out)


# -- the edits, through the proxy ------------------------------------------------------------------
def test_a_model_override_changes_only_the_model_byte_for_byte(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth")])
    set_override(p, model="claude-sonnet-4-5")
    status, h, _ = post(p, RAW)
    assert status == 200 and h["x-shunt-override"] == "model=claude-sonnet-4-5"
    sent = upstream.requests_for()[-1].body
    assert sent == splice(RAW, b'"claude-opus-4-1"', b'"claude-sonnet-4-5"')
    assert events.wait_for("override")
    rec = next(r for r in events.records if getattr(r, "event", None) == "override")
    assert rec.override == "model=claude-sonnet-4-5"
    # count_tokens carries a model too; a GET has no body and is not touched
    post(p, b'{"model":"x","messages":[]}', path="/v1/messages/count_tokens")
    assert upstream.requests_for()[-1].body == b'{"model":"claude-sonnet-4-5","messages":[]}'
    status, h, _ = p.request("GET", "/v1/models")
    assert "x-shunt-override" not in h


def test_an_effort_override_sets_output_config_effort_only(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    set_override(p, effort="high")
    status, h, _ = post(p, RAW)
    assert status == 200 and h["x-shunt-override"] == "effort=high"
    assert upstream.requests_for()[-1].body == b'{"output_config":{"effort":"high"},' + RAW[1:]
    with_config = b'{"model":"m", "output_config" : { "effort" : "low" , "format":{"type":"json_schema"}}, "max_tokens":5}'
    post(p, with_config)
    assert upstream.requests_for()[-1].body == splice(with_config, b'"low"', b'"high"')
    set_override(p, model="claude-haiku-4-5")
    status, h, _ = post(p, with_config)
    assert h["x-shunt-override"] == "model=claude-haiku-4-5,effort=high"
    assert upstream.requests_for()[-1].body == splice(splice(with_config, b'"low"', b'"high"'), b'"m"', b'"claude-haiku-4-5"')
    # count_tokens gets the model, never the effort
    post(p, b'{"model":"m","messages":[]}', path="/v1/messages/count_tokens")
    assert upstream.requests_for()[-1].body == b'{"model":"claude-haiku-4-5","messages":[]}'


def test_a_body_that_is_not_a_json_object_is_left_alone_and_logged(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth")])
    set_override(p, model="claude-sonnet-4-5", effort="low")
    for body in (b'["model"]', b'{"model": "x",}', b"\xff\xfe"):
        post(p, body)
        assert upstream.requests_for()[-1].body == body
    assert events.wait_for("override_skipped", count=3)


def test_without_overrides_nothing_changes_and_no_header(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    status, h, _ = post(p, RAW)
    assert status == 200 and "x-shunt-override" not in h and upstream.requests_for()[-1].body == RAW
    set_override(p, fallback="claude-sonnet-4-5")  # a fallback alone changes nothing while the model is served
    status, h, _ = post(p, RAW)
    assert status == 200 and "x-shunt-override" not in h and upstream.requests_for()[-1].body == RAW


# -- the fallback ----------------------------------------------------------------------------------
MODELS = {"claude-opus-4-1": {"to": ["a"]}, "claude-sonnet-4-5": {"to": ["b"]}}


def exhaust(upstream, cred):
    upstream.script(cred, Reply(status=429, body=error_json("rate_limit_error", "quota"),
                                headers=unified_headers(status_5h="rejected", util_5h=1.0, reset_5h=int(time.time()) + 3600)))


def test_the_fallback_is_taken_only_when_no_account_can_serve_the_requested_model(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], models=MODELS)
    set_override(p, fallback="claude-sonnet-4-5")
    status, h, _ = post(p, RAW)  # a serves opus: no fallback
    assert status == 200 and h["x-shunt-account"] == "a" and "x-shunt-override" not in h
    exhaust(upstream, "tok-a")
    status, h, _ = post(p, RAW)
    assert status == 200 and h["x-shunt-account"] == "b"
    assert h["x-shunt-override"] == "fallback=claude-sonnet-4-5"
    got = [(r.credential, r.body) for r in upstream.requests_for()]
    assert got[-2:] == [("tok-a", RAW), ("tok-b", splice(RAW, b'"claude-opus-4-1"', b'"claude-sonnet-4-5"'))]
    assert events.wait_for("fallback_model")
    # a is exhausted now: the next request falls back at once, without trying a
    status, h, _ = post(p, RAW)
    assert h["x-shunt-account"] == "b" and h["x-shunt-override"] == "fallback=claude-sonnet-4-5"
    assert [r.credential for r in upstream.requests_for()][-1:] == ["tok-b"] and len(upstream.requests_for()) == 4


def test_fallback_off_or_a_fallback_nobody_can_take_holds_as_before(make_proxy, upstream, events):
    p = make_proxy([("a", "oauth"), ("b", "oauth")], models=MODELS, max_wait_s=0)
    exhaust(upstream, "tok-a")
    status, h, body = post(p, RAW)  # no fallback set: shunt's own 429
    assert status == 429 and "x-shunt-override" not in h
    set_override(p, fallback="off")
    status, h, _ = post(p, RAW)
    assert status == 429 and "x-shunt-override" not in h
    set_override(p, fallback="claude-sonnet-4-5")
    exhaust(upstream, "tok-b")
    post(p, b'{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}')  # b is exhausted too
    n = len(upstream.requests_for())
    status, h, _ = post(p, RAW)
    assert status == 429 and "x-shunt-override" not in h and len(upstream.requests_for()) == n
    assert events.wait_for("fallback_model_unusable")


def test_the_fallback_on_the_openai_door(make_proxy, upstream):
    openai = pytest.importorskip("openai")
    p = make_proxy([("k1", "api_key"), ("k2", "api_key")],
                   models={"claude-opus-4-1": {"to": ["k1"]}, "claude-sonnet-4-5": {"to": ["k2"]}})
    set_override(p, fallback="claude-sonnet-4-5", effort="medium")
    exhaust(upstream, "tok-k1")
    with openai.OpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="claude-opus-4-1",
                                                               messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-shunt-account"] == "k2"
    assert raw.headers["x-shunt-override"] == "effort=medium,fallback=claude-sonnet-4-5"
    sent = [json.loads(r.body) for r in upstream.requests_for()]
    assert [b["model"] for b in sent] == ["claude-opus-4-1", "claude-sonnet-4-5"]
    assert sent[-1]["thinking"] == {"type": "enabled", "budget_tokens": 8192}  # reasoning_effort medium, translated


def test_the_openai_door_gets_reasoning_effort_on_the_raw_body(make_proxy, upstream):
    from tests.fakes.openai_upstream import FakeOpenAI

    fake = FakeOpenAI().start()
    try:
        p = make_proxy([AccountConfig("prov", "openai", base_url=fake.base_url, models=("gpt-*",))])
        set_override(p, model="gpt-5", effort="max")
        raw = b'{"model": "gpt-4o",  "messages": [{"role": "user", "content": "hi"}]}'
        status, h, _ = p.request(body=raw, path="/v1/chat/completions")
        assert status == 200 and h["x-shunt-override"] == "model=gpt-5,effort=max"
        assert fake.received[-1].raw == b'{"reasoning_effort":"xhigh","model": "gpt-5",  "messages": [{"role": "user", "content": "hi"}]}'
    finally:
        fake.close()


# -- global and per token --------------------------------------------------------------------------
def request_of(client, body=b'{"model":"m","max_tokens":1}'):
    return ProxyRequest("POST", "/v1/messages", Headers([]), body, client)


def test_a_tokens_override_wins_over_the_global_one_field_by_field(tmp_path):
    store = Overrides(str(tmp_path / "o.json"))
    store.set({"model": "g-model", "effort": "low", "fallback": "g-fb"})
    store.set({"model": "t-model", "fallback": "off"}, token="t1")
    ci = Client("ci", token_id="t1")
    assert store.effective("t1") == Override("t-model", "off", "low")
    assert store.effective(None) == store.effective("other") == Override("g-model", "g-fb", "low")
    req, applied = store.apply(request_of(ci))
    assert req.body == b'{"output_config":{"effort":"low"},"model":"t-model","max_tokens":1}'
    assert applied.changes == [("model", "t-model"), ("effort", "low")] and applied.fallback is None  # off wins
    req, applied = store.apply(request_of(LOCAL))
    assert req.body == b'{"output_config":{"effort":"low"},"model":"g-model","max_tokens":1}' and applied.fallback == "g-fb"
    # clearing a token's field falls back to the global one; clearing all of them forgets the token
    store.set({"model": None}, token="t1")
    assert store.effective("t1") == Override("g-model", "off", "low")
    store.set({"fallback": "clear"}, token="t1")
    assert store.doc()["tokens"] == {}
    store.set({"model": None, "effort": None, "fallback": None})
    req = request_of(ci)
    assert not store.active and store.apply(req) == (req, None)


def test_bad_values_are_refused_and_change_nothing(tmp_path):
    store = Overrides(str(tmp_path / "o.json"), known_token=lambda t: t == "t1")
    for fields, token in [({"effort": "extreme"}, None), ({"model": ""}, None), ({"model": "a b"}, None),
                          ({"model": 5}, None), ({"temperature": 1}, None), ({"model": "m"}, "nobody"),
                          ({"model": "m"}, "bad id!")]:
        with pytest.raises(BadRequest):
            store.set(fields, token)
    assert store.doc() == {"global": {}, "tokens": {}} and not os.path.exists(tmp_path / "o.json")
    for effort in ("low", "medium", "high", "xhigh", "max"):
        store.set({"effort": effort}, "t1")


def test_a_token_override_applies_to_that_tokens_requests_through_the_relay(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    token, tid = client_token(p, "ci")
    set_override(p, model="claude-global")
    set_override(p, model="claude-for-ci", token=tid)
    status, h, _ = post(p, RAW, headers={"x-api-key": token})
    assert h["x-shunt-override"] == "model=claude-for-ci"
    status, h, _ = post(p, RAW)
    assert h["x-shunt-override"] == "model=claude-global"


# -- control API, persistence, CLI, views ----------------------------------------------------------
def test_the_control_api_sets_shows_and_refuses(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    _, t1 = client_token(p, "ci")
    code, _, body = p.request("GET", "/overrides")
    assert code == 200 and json.loads(body) == {"global": {}, "tokens": {}}
    doc = set_override(p, model="claude-sonnet-4-5", effort="xhigh")
    assert doc == {"global": {"model": "claude-sonnet-4-5", "effort": "xhigh"}, "tokens": {}}
    doc = set_override(p, fallback="claude-haiku-4-5", token=t1)
    assert doc["tokens"] == {t1: {"fallback": "claude-haiku-4-5"}}
    doc = set_override(p, effort=None)
    assert doc["global"] == {"model": "claude-sonnet-4-5"}
    for bad in ({"effort": "extreme"}, {}, {"token": t1}, {"colour": "red"}, [1]):
        code, _, body = p.request("POST", "/overrides", body=bad)
        assert code == 400, body
    assert json.loads(p.request("GET", "/status")[2])["overrides"] == doc


def test_overrides_survive_a_restart_in_their_own_0600_file(upstream):
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, [("a", "oauth")])
    p = Proxy(make_server(load_config(paths), paths, port=0))
    try:
        _, t1 = client_token(p, "ci")
        set_override(p, model="claude-sonnet-4-5")
        set_override(p, effort="high", token=t1)
    finally:
        p.close()
    path = overrides_path(paths.home)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    p = Proxy(make_server(load_config(paths), paths, port=0))
    try:
        assert p.srv.status()["overrides"] == {"global": {"model": "claude-sonnet-4-5"}, "tokens": {t1: {"effort": "high"}}}
        assert post(p, RAW)[1]["x-shunt-override"] == "model=claude-sonnet-4-5"
    finally:
        p.close()


def test_the_cli_with_shunt_running_and_stopped(upstream, capsys):
    accounts = [("a", "oauth")]
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, accounts)
    assert main(["override"]) == 0 and "no overrides (saved; shunt is not running" in capsys.readouterr().out
    assert main(["override", "model", "claude-opus-4-1"]) == 0  # stopped: saved for the next start
    assert "shunt is not running, they apply when it starts" in capsys.readouterr().out
    assert main(["override", "effort", "extreme"]) == 2 and "effort must be one of" in capsys.readouterr().err
    p = Proxy(make_server(load_config(paths), paths, port=0))
    write_home(paths.home, upstream.url, accounts, {"port": p.port})
    _, t1 = client_token(p, "ci")
    try:
        assert p.srv.overrides.effective(None).model == "claude-opus-4-1"
        assert main(["override", "effort", "high", "--token", t1]) == 0
        assert f"effort override for token {t1}: high (in the running proxy)" in capsys.readouterr().out
        assert p.srv.overrides.effective(t1) == Override("claude-opus-4-1", None, "high")
        assert main(["override", "fallback", "off"]) == 0 and p.srv.overrides.effective(None).fallback == "off"
        capsys.readouterr()
        assert main(["override", "show", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {
            "global": {"model": "claude-opus-4-1", "fallback": "off"}, "tokens": {t1: {"effort": "high"}}}
        assert main(["override", "model", "clear"]) == 0
        assert p.srv.overrides.effective(None).model is None
        assert main(["override", "effort", "bogus"]) == 2 and "effort must be one of" in capsys.readouterr().err
        capsys.readouterr()
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert "override: every request: fallback off" in out and f"override: token {t1}: effort high" in out
    finally:
        p.close()
    assert json.load(open(overrides_path(paths.home))) == {"global": {"fallback": "off"}, "tokens": {t1: {"effort": "high"}}}


def test_the_views_show_them():
    doc = {"version": "x", "accounts": [], "overrides": {"global": {"model": "m", "effort": "low"},
                                                           "tokens": {"t1": {"fallback": "off"}}}}
    text = render_status(doc)
    assert "override: every request: model m, effort low" in text and "override: token t1: fallback off" in text
    assert "override" not in render_status({"version": "x", "accounts": [], "overrides": {"global": {}, "tokens": {}}})
    assert overrides_text(doc["overrides"]) == "override model=m effort=low 1 token with their own"
    assert overrides_text({"global": {}, "tokens": {}}) == ""
    second = line_text(header_lines(MonitorData(status=doc), 120)[1])
    assert second.startswith("override model=m effort=low 1 token with their own")
