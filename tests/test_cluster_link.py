"""The [cluster] table, the Redis link's health and notices, and a shunt alone never importing redis."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

from shunt_lib.cluster_config import ClusterConfig, check_security, connection_facts, parse_cluster
from shunt_lib.cluster_keys import Keys
from shunt_lib.errors import ConfigError
from tests.support import ROOT, wait_until


def test_cluster_table_is_checked_and_never_quotes_the_url():
    assert parse_cluster({}) == ClusterConfig()
    assert not ClusterConfig().enabled
    cfg = parse_cluster({"redis_url": "rediss://:pw@redis.example:6380/1", "cluster_name": "team-a"})
    assert cfg.enabled and cfg.cluster_name == "team-a"
    for raw, needle in (({"redis_url": "http://:sekret-pw@x/"}, "redis://"), ({"cluster_name": "a:b"}, "letters"),
                        ({"timeout_s": 0}, "between"), ({"bogus": 1}, "unknown key cluster.bogus"),
                        ({"redis_url": "redis://:sekret-pw@"}, "host")):
        with pytest.raises(ConfigError) as exc:
            parse_cluster(raw)
        assert needle in str(exc.value)
        assert "sekret" not in str(exc.value)


def test_a_remote_redis_needs_a_password_and_is_warned_about_without_tls():
    remote = ClusterConfig(redis_url="redis://10.1.2.3:6379/0")
    with pytest.raises(ConfigError) as exc:
        check_security(remote, env={})
    assert "10.1.2.3:6379" in str(exc.value) and "REDIS_PASSWORD" in str(exc.value)
    warnings = check_security(remote, env={"REDIS_PASSWORD": "pw"})
    assert len(warnings) == 1 and "TLS" in warnings[0]
    assert check_security(ClusterConfig(redis_url="rediss://:pw@10.1.2.3:6379/0"), env={}) == []
    assert check_security(ClusterConfig(redis_url="redis://127.0.0.1:6379/0"), env={}) == []
    assert check_security(ClusterConfig(redis_url="unix:///run/redis.sock"), env={}) == []
    assert connection_facts("redis://:pw@[::1]:7000/0", env={}) == ("[::1]:7000", True, True, False)


def test_a_password_given_as_a_query_parameter_counts():
    """The Redis client takes ``?password=`` in the URL as well as ``:PASSWORD@``: such a URL is not refused."""
    url = "redis://10.1.2.3:6379/0?password=sekret-pw"
    assert connection_facts(url, env={}) == ("10.1.2.3:6379", False, True, False)
    warnings = check_security(ClusterConfig(redis_url=url), env={})
    assert len(warnings) == 1 and "TLS" in warnings[0] and "sekret" not in warnings[0]
    assert check_security(ClusterConfig(redis_url="rediss://10.1.2.3:6379/0?db=0&password=pw"), env={}) == []
    assert connection_facts("unix:///run/redis.sock?password=pw", env={}).password
    with pytest.raises(ConfigError):  # an empty one is no password
        check_security(ClusterConfig(redis_url="redis://10.1.2.3:6379/0?password="), env={})


def test_keys_carry_the_cluster_name_and_hash_tags():
    k = Keys("team")
    assert k.account("work") == "team:{work}:state"
    assert k.credential("work") == "team:{work}:cred" and k.refresh_lock("work") == "team:{work}:refresh-lock"
    assert k.token("0123456789ab", "rpm") == "team:{token:0123456789ab}:rpm"
    assert k.channel == "team:events"


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_a_shunt_alone_never_imports_redis(tmp_path):
    env = dict(os.environ, SHUNT_HOME=str(tmp_path / "home"))
    code = ("import sys\nfrom shunt_lib.config import Paths, load_config\nfrom shunt_lib.server import make_server\n"
            "paths = Paths(sys.argv[0] if False else __import__('os').environ['SHUNT_HOME'])\n"
            "srv = make_server(load_config(paths), paths, port=0)\nprint(srv.status()['cluster'])\nsrv.close()\n"
            "print('redis' in sys.modules)\n")
    out = _python(code, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["{'state':", "'off'}", "False"]


def test_without_the_redis_package_a_cluster_is_a_clear_start_up_error(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[cluster]\nredis_url = "redis://127.0.0.1:1/0"\n')
    code = ("import sys\nsys.modules['redis'] = None\nfrom shunt_lib.cli import main\nsys.exit(main(['serve', '--port', '0']))\n")
    out = _python(code, dict(os.environ, SHUNT_HOME=str(home)))
    assert out.returncode != 0
    assert "pip install 'shunt[redis]'" in out.stderr
    assert "Traceback" not in out.stderr


def _link(redis_server, name="t", **kw):
    from shunt_lib.cluster_link import Link
    cfg = ClusterConfig(redis_url=redis_server.url, cluster_name=name, timeout_s=0.3)
    return Link(cfg, kw.pop("instance_id", "i"), retry_s=0.05, **kw)


def test_notices_reach_the_other_instances_and_not_the_sender(redis_server):
    a, b = _link(redis_server, instance_id="a"), _link(redis_server, instance_id="b")
    got_a, got_b, arrived = [], [], threading.Event()
    a.on("x", got_a.append)
    b.on("x", lambda m: (got_b.append(m), arrived.set()))
    a.start(), b.start()
    try:
        assert a.healthy and b.healthy and a.status()["state"] == "ok"
        a.later("k", lambda p: p.set("t:k", "1"))
        a.later("k", lambda p: p.set("t:k", "2"))  # the queued write of the same key is replaced
        a.publish("x", {"n": 1})
        assert arrived.wait(5)
        assert got_b[0]["n"] == 1 and got_b[0]["from"] == "a" and got_a == []
        assert a.run(lambda r: r.get("t:k")) == b"2"
        a.later("lazy", lambda p: p.set("t:lazy", "1"), lazy=True)  # no wake-up of its own: sent within LAZY_S
        assert wait_until(lambda: a.run(lambda r: r.get("t:lazy")) == b"1", 5)
        assert wait_until(lambda: a.run(lambda r: r.hlen("t:instances")) == 2, 5)
    finally:
        a.stop(), b.stop()


def test_an_outage_degrades_the_link_and_the_return_rejoins(redis_server, caplog):
    caplog.set_level(logging.INFO, "shunt.cluster")
    link = _link(redis_server)
    joins = []
    link.on_rejoin(lambda: joins.append(1))
    link.start()
    try:
        assert link.healthy and joins == [1]
        redis_server.stop()
        assert link.run(lambda r: r.get("x"), default="local") == "local"
        assert wait_until(lambda: not link.healthy, 5)
        assert link.status()["state"] == "degraded" and link.status()["reason"]
        assert link.run(lambda r: r.get("x"), default="local") == "local"  # not even tried while down
        redis_server.start()
        assert wait_until(lambda: link.healthy, 10)
        assert joins == [1, 1]
        assert [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    finally:
        link.stop()


def test_a_proxy_in_a_cluster_shows_it_in_status_and_metrics(redis_server, tmp_path, upstream):
    from shunt_lib.config import load_config
    from shunt_lib.server import make_server
    from tests.support import Proxy, write_home
    paths = write_home(str(tmp_path / "h"), upstream.url, [("a", "api_key")],
                       cluster={"redis_url": redis_server.url, "cluster_name": "p"})
    proxy = Proxy(make_server(load_config(paths), paths, port=0))
    try:
        status = json.loads(proxy.request("GET", "/status")[2])
        assert status["cluster"]["state"] == "ok" and status["cluster"]["name"] == "p"
        assert os.stat(os.path.join(paths.home, "cluster-id")).st_mode & 0o777 == 0o600
        page = proxy.request("GET", "/metrics")[2].decode()
        assert 'shunt_cluster_up{cluster="p"} 1' in page
    finally:
        proxy.close()


def test_a_password_comes_from_the_url_or_redis_password_and_is_never_logged(tmp_path, caplog, monkeypatch):
    from tests.redis_support import WHY_MISSING, RedisServer
    if WHY_MISSING:
        pytest.skip(WHY_MISSING)
    from shunt_lib.cluster_link import Link
    caplog.set_level(logging.DEBUG)
    secret = "pw-7f3a9c1e5b"
    server = RedisServer(str(tmp_path), password=secret)
    try:
        bare = f"redis://127.0.0.1:{server.port}/0"
        monkeypatch.delenv("REDIS_PASSWORD", raising=False)
        link = Link(ClusterConfig(redis_url=bare, cluster_name="pw", timeout_s=0.3), "i", retry_s=0.05)
        link.start()
        try:
            assert not link.healthy and "Authentication" in link.status()["reason"]  # refused without it
        finally:
            link.stop()
        monkeypatch.setenv("REDIS_PASSWORD", secret)
        for url in (bare, f"redis://:{secret}@127.0.0.1:{server.port}/0"):
            link = Link(ClusterConfig(redis_url=url, cluster_name="pw", timeout_s=0.3), "i", retry_s=0.05)
            link.start()
            try:
                assert link.healthy
            finally:
                link.stop()
    finally:
        server.stop()
    assert secret not in caplog.text


def test_a_tls_redis_is_joined_over_rediss_and_its_certificate_is_checked(tmp_path, upstream):
    from tests.redis_support import WHY_MISSING, RedisServer
    if WHY_MISSING:
        pytest.skip(WHY_MISSING)
    from shunt_lib.config import load_config
    from shunt_lib.server import make_server
    from tests.support import Proxy, write_home
    server = RedisServer(str(tmp_path), tls=True)
    try:
        unchecked = server.url.split("?", 1)[0]  # without the CA: the self-signed certificate is refused
        for url, state in ((server.url, "ok"), (unchecked, "degraded")):
            paths = write_home(str(tmp_path / state), upstream.url, [("a", "api_key")],
                               cluster={"redis_url": url, "cluster_name": "tls", "timeout_s": 0.3})
            proxy = Proxy(make_server(load_config(paths), paths, port=0))
            try:
                cluster = json.loads(proxy.request("GET", "/status")[2])["cluster"]
                assert cluster["state"] == state, cluster
                if state == "degraded":
                    assert "certificate" in cluster["reason"].lower() or "SSL" in cluster["reason"]
                assert proxy.request(body={"model": "m", "max_tokens": 1, "messages": []})[0] == 200
            finally:
                proxy.close()
    finally:
        server.stop()


def test_a_heartbeat_under_this_id_is_another_instances_only_when_it_cannot_be_this_ones_past():
    from shunt_lib.cluster_link import id_taken
    now = 1_000_000.0

    def beat(**kw):
        return json.dumps({"host": "h1", "pid": 7, "run": "r-old", "at_s": now - 1, **kw})

    assert not id_taken(None, run="r", host="h1", now_s=now, wrote_before=False)
    assert not id_taken(beat(), run="r", host="h1", now_s=now, wrote_before=False)  # this home restarted here
    assert id_taken(beat(host="h2"), run="r", host="h1", now_s=now, wrote_before=False)  # a copied home, live
    assert not id_taken(beat(host="h2", at_s=now - 60), run="r", host="h1", now_s=now, wrote_before=False)  # stale
    assert id_taken(beat(), run="r", host="h1", now_s=now, wrote_before=True)  # written over since this one wrote
    assert not id_taken(beat(run="r"), run="r", host="h1", now_s=now, wrote_before=True)  # its own
    assert not id_taken(b"not json", run="r", host="h1", now_s=now, wrote_before=True)


def _same_id_link(client, tmp_path, name, **kw):
    from shunt_lib.cluster_link import Link
    home = tmp_path / name
    home.mkdir()
    (home / "cluster-id").write_text("dup\n")
    cfg = ClusterConfig(redis_url="redis://127.0.0.1:6379/0", cluster_name="t", timeout_s=0.5)
    return Link(cfg, "dup", client=client, retry_s=0.05, home=str(home), **kw), home


def test_an_instance_whose_id_another_live_instance_uses_takes_a_new_one(tmp_path, caplog):
    fakeredis = pytest.importorskip("fakeredis")
    server = fakeredis.FakeServer()
    r = fakeredis.FakeRedis(server=server)
    import time
    theirs = json.dumps({"host": "ci-runner-2", "pid": 1, "run": "x", "at_s": int(time.time())})
    r.hset("t:instances", "dup", theirs)  # a copied home on another machine, live
    link, home = _same_id_link(fakeredis.FakeRedis(server=server), tmp_path, "a")
    link.start()
    try:
        assert link.healthy and link.instance_id != "dup"
        assert (home / "cluster-id").read_text().strip() == link.instance_id  # kept across restarts
        assert r.hget("t:instances", "dup").decode() == theirs  # the other's heartbeat is left alone
        assert r.hexists("t:instances", link.instance_id)
        assert any("another live instance uses" in rec.getMessage() for rec in caplog.records)
    finally:
        link.stop(), r.close()


def test_two_live_instances_on_one_machine_with_one_id_end_with_two(tmp_path):
    fakeredis = pytest.importorskip("fakeredis")
    server = fakeredis.FakeServer()
    a, _ = _same_id_link(fakeredis.FakeRedis(server=server), tmp_path, "a", heartbeat_s=0.05)
    b, _ = _same_id_link(fakeredis.FakeRedis(server=server), tmp_path, "b", heartbeat_s=0.05)
    joins = []
    a.on_rejoin(lambda: joins.append(a.instance_id))
    a.start(), b.start()  # the same host: b may be a restart of a's home, until a writes over b's heartbeat
    try:
        assert wait_until(lambda: a.instance_id != b.instance_id, 5)
        if a.instance_id != "dup":  # a renamed link rejoins under its new id (its share is rewritten)
            assert wait_until(lambda: joins[-1] == a.instance_id and a.healthy, 5)
        assert wait_until(lambda: a.healthy and b.healthy, 5)
        assert a.client.hexists("t:instances", a.instance_id) and a.client.hexists("t:instances", b.instance_id)
    finally:
        a.stop(), b.stop()


def _recording_redis(sock, seen: list) -> None:
    """Answer one client on ``sock`` as a Redis would (enough for a connection's setup and PING), recording each command."""
    conn, _ = sock.accept()
    with conn, conn.makefile("rb") as f:
        while line := f.readline():
            args = []
            for _ in range(int(line[1:])):
                size = int(f.readline()[1:])
                args.append(f.read(size + 2)[:-2].decode())
            seen.append(args)
            name = args[0].upper()
            conn.sendall(b"%1\r\n+proto\r\n:3\r\n" if name == "HELLO" else b"+PONG\r\n" if name == "PING" else b"+OK\r\n")


def test_a_new_connection_sends_only_the_setup_it_needs(monkeypatch):
    # each setup command may take timeout_s on a slow Redis: the fewer, the shorter an operation's worst wait
    import socket
    from shunt_lib.cluster_link import connect
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        seen: list = []
        server = threading.Thread(target=_recording_redis, args=(sock, seen))
        server.start()
        client = connect(ClusterConfig(redis_url=f"redis://:pw@127.0.0.1:{sock.getsockname()[1]}/2", timeout_s=2))
        try:
            assert client.ping()
        finally:
            client.close()
            server.join(5)
    names = [args[0].upper() for args in seen]
    assert names[-1] == "PING" and set(names[:-1]) <= {"HELLO", "AUTH", "SELECT"} and len(names) <= 3, names
