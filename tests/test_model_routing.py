"""Routing one request by its model (pure): when the body is parsed at all, primaries vs fallbacks,
the route headers, and the one change a pass-through body gets (the configured model rewrite)."""

from __future__ import annotations

import json

import pytest

from shunt_lib.config import AccountConfig
from shunt_lib.model_map import parse_models
from shunt_lib.model_routing import NoAccountForModel, plan_request, with_model

CLAUDE = (AccountConfig("a", "oauth"), AccountConfig("k", "api_key"))
OR = AccountConfig("or", "openai", base_url="http://x/v1", models=("gpt-*",))
BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}).encode()


def test_without_openai_accounts_or_models_the_body_is_not_parsed():
    # a body that is not even JSON: nothing reads it, so the pass-through path costs what it did
    assert plan_request("POST", "/v1/messages", b"not json", CLAUDE, parse_models({}, [])) is None


def test_only_the_messages_paths_are_routed_by_model():
    accounts = CLAUDE + (OR,)
    assert plan_request("GET", "/v1/models", b"", accounts, parse_models({}, [])) is None
    assert plan_request("POST", "/v1/messages/batches", BODY, accounts, parse_models({}, [])) is None
    plan = plan_request("POST", "/v1/messages?beta=true", BODY, accounts, parse_models({}, []))
    assert plan.primary == {"a", "k"} and not plan.fallback


def test_fallbacks_are_kept_apart_and_shown():
    accounts = CLAUDE + (OR,)
    models = parse_models({"claude-sonnet-*": {"to": ["a"], "fallback": ["or:gpt-5"]}}, ["a", "k", "or"])
    plan = plan_request("POST", "/v1/messages", BODY, accounts, models)
    assert plan.primary == {"a"} and plan.fallback == {"or"} and plan.every == {"a", "or"}
    assert plan.routes["a"].headers == []
    assert plan.routes["or"].headers == [("x-shunt-model", "gpt-5"), ("x-shunt-fallback", "gpt-5")]


def test_a_model_no_account_takes_raises():
    with pytest.raises(NoAccountForModel, match="llama-9"):
        plan_request("POST", "/v1/messages", json.dumps({"model": "llama-9"}).encode(), (OR,), parse_models({}, []))


def test_a_rewrite_changes_only_the_model():
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "é"}], "stream": True}
    assert json.loads(with_model(body, "qwen3")) == dict(body, model="qwen3") and body["model"] == "claude-x"
