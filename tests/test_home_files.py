"""shunt's home: a weak remote_key is refused without being quoted, symlinked files are written
through, and a home writable by others is noticed."""

import json
import os
import subprocess
import sys

import pytest

from shunt_lib.config import Paths, load_config
from shunt_lib.credentials import Credential, CredentialStore
from shunt_lib.errors import ConfigError
from tests.support import ROOT


@pytest.mark.parametrize("key", ["a", " ", "short-key-123", " padded-key-0123456789", "padded-key-0123456789 ",
                                 "has a space in it 0123", "tab\tkey-0123456789abc"])
def test_weak_remote_keys_are_refused_without_quoting_them(tmp_path, key):
    paths = Paths(str(tmp_path))
    with open(paths.config, "w") as f:
        f.write(f"[server]\nremote_key = {json.dumps(key)}\n")
    with pytest.raises(ConfigError, match="server.remote_key") as exc:
        load_config(paths)
    assert "(got" not in str(exc.value)
    if len(key.strip()) > 3:
        assert key.strip() not in str(exc.value)


def test_a_strong_remote_key_and_no_key_are_accepted(tmp_path):
    paths = Paths(str(tmp_path))
    for key in ("", "0123456789abcdef", "k3y_-~+/=.0123456789ABCDEF"):
        with open(paths.config, "w") as f:
            f.write(f"[server]\nremote_key = {json.dumps(key)}\n")
        assert load_config(paths).server.remote_key == key


def test_a_symlinked_credentials_file_is_written_through_the_link(tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    target = vault / "shunt-credentials.json"
    home = tmp_path / "home"
    home.mkdir()
    store = CredentialStore(str(home / "credentials.json"))
    CredentialStore(str(target)).put("a", Credential(kind="oauth", access_token="old", refresh_token="spent"))
    os.symlink(target, home / "credentials.json")
    store.put("a", Credential(kind="oauth", access_token="new", refresh_token="rotated"))  # as a refresh saves
    assert os.path.islink(home / "credentials.json")
    assert json.loads(target.read_text())["accounts"]["a"]["refresh_token"] == "rotated"
    assert store.load()["a"].refresh_token == "rotated"
    assert oct(os.stat(target).st_mode & 0o777) == "0o600"
    assert [p for p in os.listdir(home) + os.listdir(vault) if p.endswith(".tmp")] == []


def test_a_home_writable_by_others_is_reported(tmp_path):
    paths = Paths(str(tmp_path / "home"))
    paths.ensure()
    assert not paths.writable_by_others()
    os.chmod(paths.home, 0o777)
    assert paths.writable_by_others()
    env = dict(os.environ, SHUNT_HOME=paths.home)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "shunt.py"), "serve", "--host", "0.0.0.0", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=60)  # refused right after the check
    assert proc.returncode == 2
    assert "writable by other users" in proc.stderr and "chmod go-w" in proc.stderr
