"""Credentials that cannot go in a header are refused when stored and left unused when loaded; no
message, answer or log line ever carries a secret, in any encoding."""

import io
import json
import logging
import os
import urllib.parse

import pytest
import requests

from shunt_lib.cli import main
from shunt_lib.config import Paths, load_config
from shunt_lib.credentials import Credential, CredentialStore, secret_problem
from shunt_lib.errors import ConfigError, UpstreamRequestInvalid
from shunt_lib.oauth import RefreshStatus, parse_token_response
from shunt_lib.server import make_server
from tests.support import MSG, Proxy, write_home

SECRET = "sk-ant-oat01-SECRETVALUE\nX-Evil: 1"


def forms(secret: str) -> list[str]:
    """The ways a secret could show up in text: as is, its repr, JSON-escaped, percent-encoded, and its core."""
    return [secret, repr(secret), json.dumps(secret), json.dumps(secret)[1:-1], urllib.parse.quote(secret),
            urllib.parse.quote_plus(secret), "SECRETVALUE"]


def assert_absent(secret: str, *texts: str | bytes) -> None:
    for text in texts:
        text = text.decode("latin-1") if isinstance(text, bytes) else text
        for form in forms(secret):
            assert form not in text


def corrupt(paths: Paths, name: str, field: str, value: str) -> None:
    """Write ``value`` into a stored credential directly, as a hand edit would."""
    with open(paths.credentials) as f:
        data = json.load(f)
    data["accounts"][name][field] = value
    with open(paths.credentials, "w") as f:
        json.dump(data, f)


@pytest.mark.parametrize("value, ok", [("sk-ant-api03-abc_DEF~+/=", True), ("", False), ("a b", False),
                                       ("a\nb", False), ("a\tb", False), ("a\x00b", False), ("a\x7fb", False),
                                       ("tok\u00e9", False), (" tok", False)])
def test_secret_problem_accepts_visible_ascii_only(value, ok):
    assert (secret_problem(value) is None) == ok


def test_an_unusable_stored_token_is_never_sent_and_never_echoed(upstream, caplog):
    caplog.set_level(logging.DEBUG, logger="shunt")
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, [("work", "oauth")])
    corrupt(paths, "work", "access_token", SECRET)
    p = Proxy(make_server(load_config(paths), paths, port=0))
    try:
        status, headers, body = p.request(body=MSG)
        doc = p.srv.status()
    finally:
        p.close()
    assert status == 401  # no usable account: the client is told so, not handed a 400 about its own request
    assert upstream.requests_for() == []  # nothing was sent with it
    assert [a["status"] for a in doc["accounts"]] == ["reauth_required"]
    assert "account 'work'" in caplog.text and "access_token" in caplog.text and "add-account work" in caplog.text
    assert "has no credentials" not in caplog.text  # said once, with the reason, not again as "missing"
    assert_absent(SECRET, body, json.dumps(headers), caplog.text, json.dumps(doc))


def test_storing_an_unusable_secret_is_refused_without_quoting_it(tmp_path):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    store.put("ok", Credential(kind="api_key", api_key="sk-ant-api03-fine"))
    before = open(store.path, "rb").read()
    for cred in (Credential(kind="oauth", access_token=SECRET), Credential(kind="api_key", api_key=SECRET),
                 Credential(kind="oauth", access_token="fine", refresh_token=SECRET)):
        with pytest.raises(ConfigError) as exc:
            store.put("bad", cred)
        assert "'bad'" in str(exc.value)
        assert_absent(SECRET, str(exc.value), repr(exc.value))
    assert open(store.path, "rb").read() == before


def test_an_unusable_entry_survives_other_writes_unchanged(tmp_path):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    store.put("a", Credential(kind="api_key", api_key="sk-a"))
    corrupt(Paths(str(tmp_path)), "a", "api_key", SECRET)
    store.put("b", Credential(kind="api_key", api_key="sk-b"))  # must not drop a's entry (a hand fix may follow)
    assert json.load(open(store.path))["accounts"]["a"]["api_key"] == SECRET
    assert list(store.load()) == ["b"] and list(store.unusable()) == ["a"]
    assert store.remove("a") and "a" not in json.load(open(store.path))["accounts"]


def test_an_unusable_openai_key_suggests_storing_it_again_with_openai(tmp_path):
    store = CredentialStore(str(tmp_path / "credentials.json"))
    store.put("gpt", Credential(kind="openai", api_key="sk-fine"))
    store.put("ci", Credential(kind="api_key", api_key="sk-ant-fine"))
    corrupt(Paths(str(tmp_path)), "gpt", "api_key", SECRET)
    corrupt(Paths(str(tmp_path)), "ci", "api_key", SECRET)
    msgs = store.unusable()
    assert "`shunt add-account gpt --openai`" in msgs["gpt"] and "--api-key" not in msgs["gpt"]
    assert "`shunt add-account ci --api-key`" in msgs["ci"]
    assert_absent(SECRET, *msgs.values())


def test_import_and_add_account_refuse_unusable_secrets(tmp_path, monkeypatch, capsys):
    src = tmp_path / "cc.json"
    src.write_text(json.dumps({"claudeAiOauth": {"accessToken": SECRET, "refreshToken": "r", "expiresAt": 1}}))
    assert main(["import", "--name", "work", "--from", str(src)]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-ant-\x01SECRETVALUE\n"))
    assert main(["add-account", "ci", "--api-key"]) == 2  # refused before the key is sent anywhere
    err = capsys.readouterr().err
    assert "cannot be used" in err and "control character" in err
    assert_absent(SECRET, err)
    assert_absent("sk-ant-\x01SECRETVALUE", err)
    paths = Paths(os.environ["SHUNT_HOME"])
    assert CredentialStore(paths.credentials).load() == {}


def test_accounts_names_an_unusable_credential_without_its_value(tmp_path, capsys):
    paths = write_home(os.environ["SHUNT_HOME"], "http://127.0.0.1:9", [("work", "oauth")])
    corrupt(paths, "work", "refresh_token", SECRET)
    assert main(["accounts"]) == 0
    captured = capsys.readouterr()
    assert "unusable credentials" in captured.out and "refresh_token" in captured.out
    assert_absent(SECRET, captured.out, captured.err)


def test_a_refresh_answer_with_an_unusable_token_is_not_taken():
    resp = requests.Response()
    resp.status_code = 200
    resp._content = json.dumps({"access_token": SECRET, "refresh_token": "r2", "expires_in": 3600}).encode()
    result = parse_token_response(resp, Credential(kind="oauth", access_token="a", refresh_token="r"), 0.0)
    assert result.status is RefreshStatus.ERROR and result.credential is None
    assert_absent(SECRET, result.message)


def test_an_upstream_refusal_of_a_header_is_answered_without_its_text(make_proxy, monkeypatch):
    p = make_proxy(accounts=[("a", "oauth")])

    def refuse(*args, **kwargs):  # http.client's own message quotes the value
        raise UpstreamRequestInvalid(f"Invalid header value {SECRET!r}")

    monkeypatch.setattr(p.srv.relay.upstream, "send", refuse)
    status, _, body = p.request(body=MSG)
    assert status == 400 and b"cannot be forwarded" in body
    assert_absent(SECRET, body)


def test_the_upstream_layer_never_quotes_a_refused_header(monkeypatch):
    from shunt_lib.upstream import Upstream

    up = Upstream("http://127.0.0.1:9")
    try:
        def urlopen(*args, **kwargs):
            raise ValueError(f"Invalid header value {SECRET.encode()!r}")  # what http.client says

        monkeypatch.setattr(up._pool, "urlopen", urlopen)
        with pytest.raises(UpstreamRequestInvalid) as exc:
            up.send("POST", "/v1/messages", {"authorization": "Bearer " + SECRET}, b"{}")
        assert exc.value.__cause__ is None and exc.value.__suppress_context__
        assert_absent(SECRET, str(exc.value), repr(exc.value))
    finally:
        up.close()


def test_an_unusable_token_written_while_running_takes_the_account_out_on_reload(make_proxy, upstream, caplog):
    caplog.set_level(logging.DEBUG, logger="shunt")
    p = make_proxy(accounts=[("a", "api_key")])
    assert p.request(body=MSG)[0] == 200
    corrupt(Paths(os.environ["SHUNT_HOME"]), "a", "api_key", SECRET)
    p.srv.reload()
    status, _, body = p.request(body=MSG)
    assert status == 401 and len(upstream.requests_for()) == 1
    assert p.srv.status()["accounts"][0]["status"] == "reauth_required"
    assert "account 'a'" in caplog.text
    assert_absent(SECRET, body, caplog.text)
