"""`kind = "openai"` accounts: their keys, presets and overrides; the credential; `add-account --openai`."""

import io
import os
import tomllib

import pytest

from shunt_lib.capabilities import Capabilities
from shunt_lib.cli import main
from shunt_lib.config import Paths, load_config, parse_config, write_config
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.errors import ConfigError
from shunt_lib.providers import PRESETS, readme_table

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


def parse(text):
    return parse_config(tomllib.loads(text))


def one(text):
    return parse(text).accounts[0]


def test_a_preset_gives_base_url_and_flags_and_each_flag_can_be_overridden():
    a = one('[[accounts]]\nname = "oa"\nkind = "openai"\nprovider = "openai"\nmodels = ["gpt-5*", "o3"]\n'
            'reasoning = false\n')
    assert (a.kind, a.provider, a.base_url, a.models) == ("openai", "openai", "https://api.openai.com/v1",
                                                          ("gpt-5*", "o3"))
    assert a.capabilities == Capabilities(system_role="developer", reasoning=False,
                                          max_tokens_field="max_completion_tokens")
    d = one('[[accounts]]\nname = "ds"\nkind = "openai"\nprovider = "deepseek"\nbase_url = "https://api.deepseek.com/v1/"\n')
    assert d.base_url == "https://api.deepseek.com/v1" and d.capabilities.reasoning and not d.capabilities.vision
    assert d.models == ()


def test_without_a_preset_base_url_is_required_and_the_flags_are_the_defaults():
    a = one('[[accounts]]\nname = "x"\nkind = "openai"\nbase_url = "http://127.0.0.1:9000/v1"\n'
            'system_role = "developer"\nmax_tokens_field = "max_completion_tokens"\nstream_usage = false\n')
    assert a.provider == "" and a.base_url == "http://127.0.0.1:9000/v1"
    assert a.capabilities == Capabilities(system_role="developer", max_tokens_field="max_completion_tokens",
                                          stream_usage=False)
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.base_url is required"):
        parse('[[accounts]]\nname = "x"\nkind = "openai"\n')


@pytest.mark.parametrize("line, where", [
    ('base_url = "ftp://x.example/v1"', r"accounts\[0\]\.base_url must be an http\(s\) URL"),
    ('base_url = "https://"', r"accounts\[0\]\.base_url"),
    ('base_url = "https://x.example:99999/v1"', r"accounts\[0\]\.base_url .*port"),
    ('base_url = "https://u:p@x.example/v1"', r"accounts\[0\]\.base_url must not carry"),
    ('base_url = "https://x.example/v1?key=1"', r"accounts\[0\]\.base_url must not carry"),
    ('base_url = 3', r"accounts\[0\]\.base_url"),
    ('provider = "nosuch"', r"accounts\[0\]\.provider must be one of openai, openrouter"),
    ('models = "gpt-5"', r"accounts\[0\]\.models must be a list"),
    ('models = ["gpt 5"]', r"accounts\[0\]\.models has 'gpt 5'"),
    ('models = [""]', r"accounts\[0\]\.models"),
    ('system_role = "assistant"', r'accounts\[0\]\.system_role must be "system" or "developer"'),
    ('max_tokens_field = "max_output_tokens"', r"accounts\[0\]\.max_tokens_field must be"),
    ('vision = "yes"', r"accounts\[0\]\.vision must be true or false"),
    ('api_key = "sk-1"', r"unknown key accounts\[0\]\.api_key"),
])
def test_bad_values_name_the_key(line, where):
    base = '' if line.startswith("base_url") else 'base_url = "https://x.example/v1"\n'
    with pytest.raises(ConfigError, match=where):
        parse(f'[[accounts]]\nname = "x"\nkind = "openai"\n{base}{line}\n')


def test_openai_keys_are_unknown_on_claude_accounts_and_claude_accounts_are_unchanged():
    with pytest.raises(ConfigError, match=r"unknown key accounts\[0\]\.base_url"):
        parse('[[accounts]]\nname = "w"\nkind = "api_key"\nbase_url = "https://x.example"\n')
    a = one('[[accounts]]\nname = "w"\n')
    assert (a.kind, a.base_url, a.models, a.capabilities, a.provider) == ("oauth", "", (), None, "")
    with pytest.raises(ConfigError, match=r"kind must be 'oauth', 'api_key' or 'openai'"):
        parse('[[accounts]]\nname = "w"\nkind = "gemini"\n')


def test_every_preset_validates_and_cites_its_docs():
    for name, p in PRESETS.items():
        a = one(f'[[accounts]]\nname = "a"\nkind = "openai"\nprovider = "{name}"\n')
        assert a.base_url == p.base_url and a.capabilities == p.capabilities
        assert p.docs_url.startswith("https://")
        assert p.needs_key == (not p.base_url.startswith("http://localhost"))


def test_write_config_keeps_an_openai_account_whole(tmp_path):
    acct = one('[[accounts]]\nname = "or"\nkind = "openai"\nprovider = "openrouter"\nmodels = ["a/*"]\nvision = false\n')
    config = write_config(Paths(str(tmp_path)), {"port": 0}, [acct])
    assert config.accounts == (acct,)


def test_the_readme_shows_the_presets_table():
    assert readme_table() in open(README).read(), ("README.md's presets table differs from shunt_lib.providers; "
                                                   "regenerate it with readme_table()")


def test_an_openai_credential_may_have_an_empty_key_and_never_shows_it(tmp_path):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    store.put("or", Credential(kind="openai", api_key="sk-or-secret-1"))
    store.put("local", Credential(kind="openai", api_key=""))
    creds = store.load()
    assert creds["or"].secret == "sk-or-secret-1" and creds["local"].secret == ""
    assert "sk-or" not in repr(creds["or"])
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError):  # only an openai account may go without a key
        store.put("ci", Credential(kind="api_key", api_key=""))
    with pytest.raises(ConfigError, match="whitespace"):
        store.put("or", Credential(kind="openai", api_key="sk or"))


def test_add_account_openai_writes_config_and_credentials_and_never_prints_the_key(monkeypatch, capsys):
    paths = Paths(os.environ["SHUNT_HOME"])
    load_config(paths)  # the template, with its comments
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-or-v1-testkey\n"))
    assert main(["add-account", "or", "--openai", "--provider", "openrouter", "--models", "anthropic/*, qwen/*"]) == 0
    out = capsys.readouterr()
    assert "sk-or-v1-testkey" not in out.out + out.err and "https://openrouter.ai/api/v1" in out.out
    [acct] = load_config(paths).accounts
    assert (acct.name, acct.kind, acct.provider, acct.models) == ("or", "openai", "openrouter", ("anthropic/*", "qwen/*"))
    text = open(paths.config).read()
    assert text.startswith("# shunt configuration.") and "sk-or" not in text
    cred = CredentialStore(paths.credentials).load()["or"]
    assert (cred.kind, cred.api_key) == ("openai", "sk-or-v1-testkey")
    for f in (paths.config, paths.credentials):
        assert oct(os.stat(f).st_mode & 0o777) == "0o600"
    # A new key for the same account: the config stays as it is.
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-or-v1-second\n"))
    assert main(["add-account", "or", "--openai"]) == 0
    assert open(paths.config).read() == text
    assert CredentialStore(paths.credentials).load()["or"].api_key == "sk-or-v1-second"
    assert main(["accounts"]) == 0
    assert "sk-or" not in capsys.readouterr().out


def test_add_account_openai_for_a_local_server_needs_no_key(monkeypatch, capsys):
    paths = Paths(os.environ["SHUNT_HOME"])
    assert main(["add-account", "local", "--openai", "--base-url", "http://127.0.0.1:8000/v1", "--models",
                 "qwen3-coder", "--no-key"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["add-account", "ol", "--openai", "--provider", "ollama"]) == 0
    creds = CredentialStore(paths.credentials).load()
    assert creds["local"].api_key == "" and creds["ol"].api_key == ""
    assert [a.base_url for a in load_config(paths).accounts] == ["http://127.0.0.1:8000/v1", "http://localhost:11434/v1"]


@pytest.mark.parametrize("argv, stdin, message", [
    (["add-account", "x", "--openai", "--provider", "groq"], "\n", "no API key given"),
    (["add-account", "x", "--openai", "--models", "m"], "sk-1234\n", "base_url is required"),
    (["add-account", "x", "--openai", "--base-url", "ftp://h/v1"], "sk-1234\n", "base_url must be an http"),
    (["add-account", "x", "--openai", "--provider", "nope"], "sk-1234\n", "provider must be one of"),
    (["add-account", "x", "--openai", "--provider", "groq"], "sk-\x01bad\n", "control character"),
    (["add-account", "x", "--api-key", "--no-key"], "", "--no-key goes with --openai"),
])
def test_add_account_openai_with_bad_input_changes_nothing(monkeypatch, capsys, argv, stdin, message):
    paths = Paths(os.environ["SHUNT_HOME"])
    load_config(paths)
    before = open(paths.config).read()
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "sk-" not in err
    assert open(paths.config).read() == before and CredentialStore(paths.credentials).load() == {}


def test_add_account_openai_refuses_to_change_an_existing_account(monkeypatch, capsys):
    paths = Paths(os.environ["SHUNT_HOME"])
    assert main(["add-account", "x", "--openai", "--provider", "ollama", "--no-key"]) == 0
    assert main(["add-account", "x", "--openai", "--provider", "vllm", "--no-key"]) == 2
    assert "already configured with another provider" in capsys.readouterr().err
    assert load_config(paths).accounts[0].provider == "ollama"


def test_the_fix_for_a_rejected_openai_key_names_add_account_openai():
    from shunt_lib.advice import action_for

    assert "`shunt add-account or --openai`" in action_for("or", "openai", "reauth_required")
    assert "`shunt add-account or --openai`" in action_for("or", "openai", "disabled")
    assert "--api-key" in action_for("ci", "api_key", "reauth_required")


def test_doctor_never_sends_an_openai_key_to_the_anthropic_upstream():
    from shunt_lib.doctor import identity_skip_reason

    reason = identity_skip_reason(Credential(kind="openai", api_key="sk-or-1"), {}, True, 0.0)
    assert reason is not None and "not checked against the Anthropic API" in reason
    assert identity_skip_reason(Credential(kind="api_key", api_key="sk-ant-1"), {}, True, 0.0) is None
