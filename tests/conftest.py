"""Shared fixtures: an isolated SHUNT_HOME, a fake upstream, and a real proxy on 127.0.0.1:0."""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shunt_lib.config import AccountConfig, Paths, load_config, write_config  # noqa: E402
from shunt_lib.credentials import Credential, CredentialStore  # noqa: E402
from shunt_lib.server import make_server, serve_in_thread  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.setenv("SHUNT_HOME", str(tmp_path / "shunt"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    import logging

    root = logging.getLogger("shunt")
    saved = (list(root.handlers), root.propagate, root.level)
    yield
    root.handlers[:], root.propagate, root.level = saved


@pytest.fixture
def upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.close()


def write_home(home: str, upstream_url: str, accounts: list[tuple[str, str]], server_extra: dict | None = None,
               expires_at_ms: int | None = None) -> Paths:
    """Write config.toml + credentials.json. ``accounts``: (name, kind); the secret is ``tok-<name>``."""
    paths = Paths(home)
    server = {"upstream_url": upstream_url, "oauth_token_url": upstream_url + "/v1/oauth/token"}
    server.update(server_extra or {})
    write_config(paths, server, [AccountConfig(name, kind) for name, kind in accounts])
    store = CredentialStore(paths.credentials)
    exp = expires_at_ms if expires_at_ms is not None else int((time.time() + 8 * 3600) * 1000)
    for name, kind in accounts:
        if kind == "oauth":
            store.put(name, Credential(kind="oauth", access_token=f"tok-{name}", refresh_token=f"ref-{name}", expires_at_ms=exp))
        else:
            store.put(name, Credential(kind="api_key", api_key=f"tok-{name}"))
    return paths


class Proxy:
    def __init__(self, srv):
        self.srv = srv
        self.port = srv.port
        self.url = f"http://127.0.0.1:{srv.port}"
        self.thread = serve_in_thread(srv)

    @property
    def pool(self):
        return self.srv.pool

    def close(self):
        self.srv.close()

    def request(self, method="POST", path="/v1/messages", body=None, headers=None, timeout=30):
        """Send one request with http.client; returns (status, headers dict lower, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
        hdrs.update(headers or {})
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        out = resp.read()
        result = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, out)
        conn.close()
        return result


@pytest.fixture
def make_proxy(tmp_path, upstream):
    """``make_proxy(accounts=[("a","oauth")], **server_extra)`` → a running :class:`Proxy`."""
    proxies = []

    def factory(accounts=(("a", "oauth"), ("b", "oauth")), *, hold_first_ping_s=5.0, hold_ping_interval_s=15.0,
                overload_backoff_s=0.01, expires_at_ms=None, idle_timeout_s=120.0, **server_extra):
        paths = write_home(os.environ["SHUNT_HOME"], upstream.url, list(accounts), server_extra, expires_at_ms)
        srv = make_server(load_config(paths), paths, port=0, hold_first_ping_s=hold_first_ping_s,
                          hold_ping_interval_s=hold_ping_interval_s, overload_backoff_s=overload_backoff_s,
                          idle_timeout_s=idle_timeout_s)
        p = Proxy(srv)
        proxies.append(p)
        return p

    yield factory
    for p in proxies:
        p.close()


MSG = {"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
STREAM_MSG = dict(MSG, stream=True)


class EventCatcher:
    """Collects shunt.events records; ``wait_for(kind)`` blocks until one of that kind arrives."""

    def __init__(self):
        import logging

        self.records = []
        self.cond = threading.Condition()
        catcher = self

        class H(logging.Handler):
            def emit(self, record):
                with catcher.cond:
                    catcher.records.append(record)
                    catcher.cond.notify_all()

        self.handler = H(logging.DEBUG)

    def kinds(self):
        return [getattr(r, "event", None) for r in self.records]

    def wait_for(self, kind, timeout=5.0, count=1):
        with self.cond:
            return self.cond.wait_for(lambda: self.kinds().count(kind) >= count, timeout)


@pytest.fixture
def events():
    import logging

    c = EventCatcher()
    logs = [logging.getLogger("shunt.events"), logging.getLogger("shunt.access")]
    old = [log.level for log in logs]
    for log in logs:
        log.addHandler(c.handler)
        log.setLevel(logging.DEBUG)
    yield c
    for log, level in zip(logs, old):
        log.removeHandler(c.handler)
        log.setLevel(level)
