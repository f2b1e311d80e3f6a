"""One ``serve`` per home (a locked home, ``serve.json``), a clear word on a taken port, and the
commands finding the running proxy (``--url``, ``$SHUNT_URL``, ``serve.json``, config)."""

import json
import os
import signal
import socket
import subprocess
import sys

from shunt_lib.cli import main
from shunt_lib.config import Paths, load_config
from shunt_lib.instance import ServeLock, local_url, running_url
from shunt_lib.server import make_server
from tests.support import ROOT, Proxy, ServeProcess, write_home


def serve_once(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "shunt.py"), "serve", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_second_serve_on_the_same_home_says_who_serves_it(tmp_path, upstream):
    home = str(tmp_path / "home")
    write_home(home, upstream.url, [("a", "oauth")])
    env = dict(os.environ, SHUNT_HOME=home, PYTHONPATH=ROOT)
    first = ServeProcess(env)
    try:
        info = json.load(open(os.path.join(home, "serve.json")))
        assert info["pid"] == first.proc.pid and info["url"] == f"http://127.0.0.1:{first.port}"
        assert oct(os.stat(os.path.join(home, "serve.json")).st_mode & 0o777) == "0o600"
        second = serve_once(env, "--port", "0")
        assert second.returncode == 1
        assert f"another shunt (pid {first.proc.pid}) is serving this home on http://127.0.0.1:{first.port}" in second.stderr
        assert "Traceback" not in second.stderr
        assert running_url(Paths(home)) == f"http://127.0.0.1:{first.port}"
    finally:
        assert first.stop(signal.SIGTERM) == 0
    assert not os.path.exists(os.path.join(home, "serve.json"))
    assert running_url(Paths(home)) is None


def test_a_port_taken_by_a_shunt_is_named(tmp_path, make_proxy):
    p = make_proxy(accounts=[("a", "oauth")])
    other = str(tmp_path / "other")
    env = dict(os.environ, SHUNT_HOME=other, PYTHONPATH=ROOT)
    result = serve_once(env, "--port", str(p.port))
    assert result.returncode == 1
    assert f"port {p.port} on 127.0.0.1 is in use by another shunt" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_a_port_taken_by_another_program_is_named(upstream, capsys):
    port = int(upstream.url.rsplit(":", 1)[1])
    assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use by another program (not a shunt)" in err
    assert not os.path.exists(os.path.join(os.environ["SHUNT_HOME"], "serve.json"))


def test_status_and_use_find_the_proxy_by_flag_env_record_and_config(upstream, monkeypatch, capsys):
    closed = free_port()
    paths = write_home(os.environ["SHUNT_HOME"], upstream.url, [("a", "oauth")], {"port": closed})
    p = Proxy(make_server(load_config(paths), paths, port=0))  # not where config.toml says
    try:
        assert main(["status"]) == 2
        assert f"not running at http://127.0.0.1:{closed}/status" in capsys.readouterr().err
        assert main(["status", "--url", p.url]) == 0 and "ACCOUNT" in capsys.readouterr().out
        assert main(["use", "a", "--url", p.url + "/"]) == 0 and p.pool.pinned == "a"
        monkeypatch.setenv("SHUNT_URL", p.url)
        assert main(["use", "auto"]) == 0 and p.pool.pinned is None
        monkeypatch.delenv("SHUNT_URL")
        capsys.readouterr()
        lock = ServeLock(paths)
        lock.acquire()  # what `serve` does: lock the home, then record where it listens
        try:
            lock.announce("0.0.0.0", p.port)
            assert main(["status", "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["accounts"][0]["name"] == "a"
        finally:
            lock.release()
        assert main(["status"]) == 2  # the record went with the lock: back to config.toml
        capsys.readouterr()
        assert main(["status", "--url", "ftp://x"]) == 2 and "--url must be" in capsys.readouterr().err
    finally:
        p.close()


def test_a_record_left_by_a_killed_serve_is_ignored(tmp_path):
    paths = Paths(str(tmp_path))
    paths.ensure()
    with open(os.path.join(paths.home, "serve.json"), "w") as f:
        json.dump({"pid": 1, "url": "http://127.0.0.1:1"}, f)
    open(os.path.join(paths.home, "serve.lock"), "w").close()
    assert running_url(paths) is None


def test_local_url_reaches_wildcard_binds_on_loopback():
    assert local_url("0.0.0.0", 8082) == "http://127.0.0.1:8082"
    assert local_url("::", 8082) == "http://[::1]:8082"
    assert local_url("::1", 9) == "http://[::1]:9"
    assert local_url("192.168.1.5", 80) == "http://192.168.1.5:80"


def test_a_symlinked_lock_file_is_refused_without_a_traceback(tmp_path, capsys):
    paths = Paths(os.environ["SHUNT_HOME"])
    paths.ensure()
    os.symlink(tmp_path / "elsewhere", os.path.join(paths.home, "serve.lock"))
    assert main(["serve", "--port", "0"]) == 1
    assert "cannot lock" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "elsewhere")


def test_a_port_taken_by_a_shunt_behind_a_key_is_named(make_proxy, capsys):
    p = make_proxy(accounts=[("a", "oauth")], remote_key="the-right-key-0123456789")
    assert main(["serve", "--port", str(p.port)]) == 1
    assert f"port {p.port} on 127.0.0.1 is in use by another shunt" in capsys.readouterr().err
