"""The `[models]` table and `candidates()`: which accounts may take a model, under which upstream id (no sockets)."""

import tomllib

import pytest

from shunt_lib.config import parse_config
from shunt_lib.errors import ConfigError
from shunt_lib.model_map import Candidate, ModelMap, Target, candidates, parse_models, parse_target

ACCOUNTS = '''
[[accounts]]
name = "work"
[[accounts]]
name = "ci"
kind = "api_key"
[[accounts]]
name = "or"
kind = "openai"
provider = "openrouter"
models = ["anthropic/*", "qwen/*"]
[[accounts]]
name = "local"
kind = "openai"
provider = "ollama"
models = ["qwen3-coder*", "llama3"]
'''


def config(models=""):
    return parse_config(tomllib.loads(ACCOUNTS + models))


def pick(model, models="", dialect="anthropic"):
    c = config(models)
    return candidates(model, c.accounts, c.models, dialect=dialect)


def test_without_models_claude_goes_to_claude_accounts_and_others_by_their_globs():
    assert pick("claude-sonnet-4-5") == [Candidate("work", "claude-sonnet-4-5"), Candidate("ci", "claude-sonnet-4-5")]
    assert pick("qwen3-coder:30b") == [Candidate("local", "qwen3-coder:30b")]
    assert pick("anthropic/claude-opus-4.1") == [Candidate("or", "anthropic/claude-opus-4.1")]
    # A model no openai account serves stays with the Claude accounts, as before there were other kinds.
    assert pick("gpt-5") == [Candidate("work", "gpt-5"), Candidate("ci", "gpt-5")]
    assert pick("Qwen3-coder") == [Candidate("work", "Qwen3-coder"), Candidate("ci", "Qwen3-coder")]  # case-sensitive


def test_an_openai_account_with_a_catch_all_glob_shares_claude_models_in_config_order():
    c = parse_config(tomllib.loads('[[accounts]]\nname = "all"\nkind = "openai"\nbase_url = "http://h/v1"\n'
                                   'models = ["*"]\n[[accounts]]\nname = "work"\n'))
    assert candidates("claude-x", c.accounts, c.models) == [Candidate("all", "claude-x"), Candidate("work", "claude-x")]
    assert candidates("gpt-5", c.accounts, c.models) == [Candidate("all", "gpt-5")]


def test_translated_traffic_never_goes_to_a_subscription_account():
    assert pick("claude-sonnet-4-5", dialect="openai") == [Candidate("ci", "claude-sonnet-4-5")]
    m = '[models]\n"claude-*" = "work"\n'
    assert pick("claude-sonnet-4-5", m) == [Candidate("work", "claude-sonnet-4-5")]
    assert pick("claude-sonnet-4-5", m, dialect="openai") == []


def test_a_short_entry_restricts_and_rewrites():
    m = '[models]\n"claude-sonnet-*" = "or:anthropic/claude-sonnet-4.5"\n"claude-haiku-*" = "local:qwen3-coder:30b"\n'
    assert pick("claude-sonnet-4-5-20250929", m) == [Candidate("or", "anthropic/claude-sonnet-4.5")]
    assert pick("claude-haiku-4-5", m) == [Candidate("local", "qwen3-coder:30b")]  # the model keeps its ':'
    assert pick("claude-opus-4-1", m) == [Candidate("work", "claude-opus-4-1"), Candidate("ci", "claude-opus-4-1")]


def test_an_alias_and_an_exact_key_win_over_an_earlier_pattern():
    m = '[models]\n"claude-*" = "ci"\n"claude-opus-4-1" = "work"\n"fast" = "local:llama3"\n'
    assert pick("claude-opus-4-1", m) == [Candidate("work", "claude-opus-4-1")]
    assert pick("claude-haiku-4-5", m) == [Candidate("ci", "claude-haiku-4-5")]
    assert pick("fast", m) == [Candidate("local", "llama3")]


def test_the_first_matching_pattern_in_file_order_wins():
    m = '[models]\n"claude-sonnet-*" = "ci"\n"claude-*" = "work"\n'
    assert pick("claude-sonnet-4", m) == [Candidate("ci", "claude-sonnet-4")]


def test_fallbacks_come_after_every_primary_once_in_order():
    m = ('[models."claude-opus-*"]\nfallback = ["or:anthropic/claude-opus-4.1", "local:qwen3-coder", "ci"]\n')
    assert pick("claude-opus-4-1", m) == [
        Candidate("work", "claude-opus-4-1"), Candidate("ci", "claude-opus-4-1"),
        Candidate("or", "anthropic/claude-opus-4.1", True), Candidate("local", "qwen3-coder", True)]  # ci already in
    m2 = ('[models."claude-opus-*"]\nto = ["work"]\nfallback = ["ci:claude-sonnet-4-5"]\n')
    assert pick("claude-opus-4-1", m2) == [Candidate("work", "claude-opus-4-1"),
                                           Candidate("ci", "claude-sonnet-4-5", True)]
    assert pick("claude-opus-4-1", m2, dialect="openai") == [Candidate("ci", "claude-sonnet-4-5", True)]


def test_a_to_list_keeps_its_order():
    m = '[models."gpt-*"]\nto = ["or:openai/gpt-5", "local"]\n'
    assert pick("gpt-5", m) == [Candidate("or", "openai/gpt-5"), Candidate("local", "gpt-5")]


@pytest.mark.parametrize("text, message", [
    ('"claude-*" = "nobody"', "names account 'nobody', which is not in"),
    ('"claude-*" = "or:"', 'is not "ACCOUNT" or "ACCOUNT:MODEL"'),
    ('"claude-*" = ":m"', 'is not "ACCOUNT" or "ACCOUNT:MODEL"'),
    ('"claude-*" = "or:a b"', "no spaces"),
    ('"claude-*" = 3', 'a target is a string'),
    ('"claude-*" = []', "must name 1-32 targets"),
    ('"" = "ci"', "1-200 characters"),
    ('[models."claude-*"]\nuse = "ci"', r"unknown key models\.'claude-\*'\.use"),
    ('[models."claude-*"]\nfallback = "ci"', "fallback must be a list"),
    ('[models."claude-*"]\nfallback = ["ci", "ghost:x"]', r"models\.'claude-\*'\.fallback names account 'ghost'"),
])
def test_bad_entries_name_the_key(text, message):
    body = text if text.startswith("[") else "[models]\n" + text
    with pytest.raises(ConfigError, match=message):
        config(body)


def test_models_must_be_a_table_and_an_empty_entry_is_refused():
    with pytest.raises(ConfigError, match=r"\[models\] must be a table"):
        parse_models(["x"], ["a"])
    with pytest.raises(ConfigError, match="needs `to` or `fallback`"):
        config('[models."claude-*"]\n')


def test_targets_split_at_the_first_colon():
    assert parse_target("local") == Target("local", "")
    assert parse_target("local:qwen3:30b") == Target("local", "qwen3:30b")


def test_no_models_table_is_an_empty_map():
    assert config().models == ModelMap()
