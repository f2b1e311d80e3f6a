"""A real ``redis-server`` for the cluster tests: started on a free loopback port in a temporary
directory, without persistence, stoppable and restartable on the same port (a Redis outage)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

REDIS_SERVER = shutil.which("redis-server")
WHY_MISSING = ("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)"
               if REDIS_SERVER is None else "")


def free_port() -> int:
    """A loopback port free just now (Redis cannot be told to pick one itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port`` with ``dir`` as its working directory, no RDB, no AOF.

    :attr:`url` is its ``redis://`` URL; :meth:`stop` kills it (SIGKILL: an outage, nothing saved) and
    :meth:`start` starts it again, empty, on the same port."""

    def __init__(self, directory: str, password: str = ""):
        self.dir = directory
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def ping(self) -> bool:
        """Whether the server answers ``PING`` now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def client(self):
        """A ``redis.Redis`` client of this server (close it)."""
        import redis
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        """Kill the server (SIGKILL) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def redis_env() -> dict:
    """The environment for a ``shunt serve`` subprocess: this one, without ``REDIS_PASSWORD``."""
    env = dict(os.environ)
    env.pop("REDIS_PASSWORD", None)
    return env
