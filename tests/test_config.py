import os

import pytest

from shunt_lib.config import (
    Paths,
    ServerConfig,
    add_account_to_config,
    check_bind,
    load_config,
    parse_config,
    remove_account_from_config,
)
from shunt_lib.credentials import CredentialStore, parse_claude_code_credentials
from shunt_lib.errors import ConfigError
from shunt_lib.server import make_server


def test_defaults_and_template_written_on_first_use(tmp_path):
    paths = Paths(str(tmp_path / "home"))
    cfg = load_config(paths)
    assert os.path.exists(paths.config)
    assert oct(os.stat(paths.config).st_mode & 0o777) == "0o600"
    assert cfg.server == ServerConfig() and cfg.accounts == ()
    assert cfg.server.port == 8082 and cfg.server.strategy == "least-utilization"


@pytest.mark.parametrize("doc, needle", [
    ({"server": {"prot": 1}}, "server.prot"),
    ({"server": {"port": "8082"}}, "server.port"),
    ({"server": {"port": 70000}}, "server.port"),
    ({"server": {"strategy": "random"}}, "server.strategy"),
    ({"server": {"max_wait_s": -1}}, "server.max_wait_s"),
    ({"server": {"upstream_url": "ftp://x"}}, "server.upstream_url"),
    ({"accounts": [{"name": "a"}, {"name": "a"}]}, "duplicate account name 'a'"),
    ({"accounts": [{"name": "a", "kind": "cookie"}]}, "accounts[0].kind"),
    ({"accounts": [{"name": "a", "token": "x"}]}, "accounts[0].token"),
    ({"accounts": [{"name": "bad name"}]}, "accounts[0].name"),
    ({"extra": {}}, "extra"),
])
def test_bad_config_names_the_key(doc, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert needle in str(e.value)


def test_toml_syntax_error_is_config_error(tmp_path):
    paths = Paths(str(tmp_path))
    with open(paths.config, "w") as f:
        f.write("[server\n")
    with pytest.raises(ConfigError):
        load_config(paths)


def test_non_loopback_bind_requires_remote_key():
    with pytest.raises(ConfigError, match="remote_key"):
        check_bind(ServerConfig(host="0.0.0.0"))
    check_bind(ServerConfig(host="0.0.0.0", remote_key="k"))
    check_bind(ServerConfig(host="127.0.0.1"))
    check_bind(ServerConfig(host="::1"))


def test_remote_key_not_in_repr():
    assert "hunter2" not in repr(ServerConfig(remote_key="hunter2"))


def test_add_and_remove_account_blocks_keep_comments(tmp_path):
    paths = Paths(str(tmp_path))
    with open(paths.config, "w") as f:
        f.write("# my comment\n[server]\nport = 9000\n")
    assert add_account_to_config(paths, "work", "oauth")
    assert not add_account_to_config(paths, "work", "oauth")
    assert add_account_to_config(paths, "ci", "api_key")
    with pytest.raises(ConfigError):
        add_account_to_config(paths, "ci", "oauth")
    cfg = load_config(paths)
    assert [(a.name, a.kind) for a in cfg.accounts] == [("work", "oauth"), ("ci", "api_key")]
    assert remove_account_from_config(paths, "work")
    assert not remove_account_from_config(paths, "work")
    text = open(paths.config).read()
    assert "# my comment" in text and "port = 9000" in text
    assert [a.name for a in load_config(paths).accounts] == ["ci"]


def test_account_without_credentials_is_marked_reauth_required(tmp_path, caplog):
    paths = Paths(str(tmp_path))
    with open(paths.config, "w") as f:
        f.write('[[accounts]]\nname = "ghost"\n')
    srv = make_server(load_config(paths), paths, port=0)
    try:
        st = srv.status()["accounts"][0]
        assert st["name"] == "ghost" and st["status"] == "reauth_required"
        assert "ghost has no credentials" in caplog.text
    finally:
        srv.close()


def test_kind_mismatch_between_config_and_credentials_is_an_error(tmp_path):
    paths = Paths(str(tmp_path))
    with open(paths.config, "w") as f:
        f.write('[[accounts]]\nname = "a"\nkind = "api_key"\n')
    CredentialStore(paths.credentials).put("a", parse_claude_code_credentials(
        '{"claudeAiOauth": {"accessToken": "x", "refreshToken": "y", "expiresAt": 1}}'))
    with pytest.raises(ConfigError, match="kind"):
        make_server(load_config(paths), paths, port=0)


def test_credentials_file_is_private_and_malformed_is_clear(tmp_path):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    store.put("a", parse_claude_code_credentials('{"claudeAiOauth": {"accessToken": "at", "refreshToken": "rt", '
                                                 '"expiresAt": 1790000000000, "subscriptionType": "max"}}'))
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    c = store.load()["a"]
    assert (c.access_token, c.refresh_token, c.expires_at_ms, c.plan) == ("at", "rt", 1790000000000, "max")
    assert "at" not in repr(c).replace("expires_at", "")
    with open(store.path, "w") as f:
        f.write('{"accounts": {"a": {"kind": "oauth"}}}')
    with pytest.raises(ConfigError, match="accounts.a.access_token"):
        store.load()


def test_write_config_round_trips_and_refuses_invalid_input(tmp_path):
    from shunt_lib.config import AccountConfig, write_config

    paths = Paths(str(tmp_path / "gen"))
    cfg = write_config(paths, {"port": 9000, "upstream_url": "http://127.0.0.1:1"}, [AccountConfig("a"), AccountConfig("k", "api_key")])
    assert load_config(paths) == cfg and cfg.server.port == 9000 and [a.kind for a in cfg.accounts] == ["oauth", "api_key"]
    assert oct(os.stat(paths.config).st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError, match="server.port"):
        write_config(paths, {"port": "x"}, [])
    assert load_config(paths) == cfg  # nothing written


def test_the_template_and_the_readme_table_come_from_the_one_table():
    import tomllib

    from shunt_lib.config import SERVER_KEYS, readme_table, template

    assert parse_config(tomllib.loads(template())).server == ServerConfig()  # every default, commented out
    names = tuple(f"# {f.name} = " for f in SERVER_KEYS)
    uncommented = "\n".join(line[2:] if line.startswith(names) else line for line in template().splitlines())
    assert parse_config(tomllib.loads(uncommented)).server == ServerConfig()  # ...and valid when uncommented
    for f in SERVER_KEYS:
        assert f"# {f.name} = " in template() and f.metadata["help"]
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    assert readme_table() in readme, ("README.md's config table differs from shunt_lib.config; regenerate it with "
                                      "python -c 'from shunt_lib.config import readme_table; print(readme_table())'")


@pytest.mark.parametrize("key, needle", [("short-key", "too short"), ("has space in it 12345", "whitespace")])
def test_the_admin_key_is_held_to_the_rules_of_the_old_remote_key_and_never_quoted(tmp_path, key, needle):
    with pytest.raises(ConfigError) as exc:
        parse_config({"gateway": {"admin_key": key}})
    assert needle in str(exc.value) and key not in str(exc.value)
