"""What a client (or a config) does wrong becomes one clear line, never a traceback: client resets,
deeply nested JSON, an IPv6 loopback bind, an upstream URL with a bad port."""

import http.client
import logging
import os
import signal
import socket
import struct
import threading

import pytest

from shunt_lib.cli import main
from shunt_lib.config import parse_config
from shunt_lib.errors import ConfigError
from shunt_lib.control import ROUTES
from tests.support import ROOT, ServeProcess, write_home


class Records(logging.Handler):
    """Collects one logger's records; :meth:`wait` blocks until one matches."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(name)
        self.records: list[logging.LogRecord] = []
        self.cond = threading.Condition()

    def __enter__(self):
        self.old_level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.old_level)

    def emit(self, record):
        with self.cond:
            self.records.append(record)
            self.cond.notify_all()

    def wait(self, predicate, timeout=10.0) -> logging.LogRecord | None:
        with self.cond:
            self.cond.wait_for(lambda: any(predicate(r) for r in self.records), timeout)
            return next((r for r in self.records if predicate(r)), None)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_a_client_reset_is_one_debug_line_not_a_traceback(make_proxy, upstream, capfd):
    p = make_proxy([("a", "oauth")])
    with Records("shunt") as logs:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        resp.read()  # the server now waits for the next request on this connection...
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # ...and gets a reset instead
        record = logs.wait(lambda r: "connection ended" in r.getMessage())
    assert record is not None and record.levelno == logging.DEBUG and record.exc_info is None
    assert "\n" not in record.getMessage()
    assert "Traceback" not in capfd.readouterr().err


def test_a_shunt_bug_is_logged_with_its_traceback(make_proxy, upstream, monkeypatch, capfd):
    p = make_proxy([("a", "oauth")])

    def broken(server, body):
        raise RuntimeError("a bug")

    monkeypatch.setitem(ROUTES, ("GET", "/status"), broken)
    with Records("shunt.server") as logs:
        with pytest.raises(http.client.RemoteDisconnected):
            p.request("GET", "/status")
        record = logs.wait(lambda r: r.levelno == logging.ERROR)
    assert record is not None and record.exc_info and "a bug" in record.getMessage()
    assert "Exception occurred during processing" not in capfd.readouterr().err  # not socketserver's print


def test_deeply_nested_json_to_use_is_a_400(make_proxy, upstream, capfd):
    p = make_proxy([("a", "oauth"), ("b", "oauth")])
    for body in (b"[" * 100000, b'{"account":' * 100000):
        status, _, answer = p.request("POST", "/use", body)
        assert status == 400 and b"invalid_request_error" in answer
    assert p.pool.pinned is None
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_shunt_serves_on_ipv6_loopback(tmp_path, upstream):
    home = str(tmp_path / "home")
    write_home(home, upstream.url, [("a", "oauth")], {"host": "::1"})
    serve = ServeProcess(dict(os.environ, SHUNT_HOME=home, PYTHONPATH=ROOT))
    try:
        assert "listening on http://[::1]:" in serve.first_line
        conn = http.client.HTTPConnection("::1", serve.port, timeout=10)
        try:
            conn.request("GET", "/status")  # Host: [::1]:PORT
            resp = conn.getresponse()
            assert resp.status == 200 and b'"accounts"' in resp.read()
        finally:
            conn.close()
    finally:
        assert serve.stop(signal.SIGTERM) == 0
    assert not any("Traceback" in line for line in serve.log)


def test_an_upstream_url_with_a_bad_port_is_a_config_error(tmp_path, monkeypatch, capsys):
    for url in ("https://api.anthropic.com:99999", "https://api.anthropic.com:44x", "https://[::1"):
        with pytest.raises(ConfigError, match="server.upstream_url"):
            parse_config({"server": {"upstream_url": url}})
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[server]\nupstream_url = "https://api.anthropic.com:99999"\n')
    monkeypatch.setenv("SHUNT_HOME", str(home))
    assert main(["serve", "--port", "0"]) != 0
    err = capsys.readouterr().err
    assert "server.upstream_url" in err and "port" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
