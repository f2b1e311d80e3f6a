"""A real ``redis-server`` for the cluster tests: started on a free loopback port in a temporary
directory, without persistence, stoppable and restartable on the same port (a Redis outage)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
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

    def __init__(self, directory: str, password: str = "", tls: bool = False):
        self.dir = directory
        self.password = password
        self.tls = tls  # TLS only, with a self-signed certificate for 127.0.0.1 (:attr:`ca_file`)
        self.ca_file = os.path.join(directory, "cert.pem")
        if tls:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-keyout", os.path.join(directory, "key.pem"), "-out", self.ca_file,
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True, timeout=60)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.ca_file, "--tls-key-file",
                 os.path.join(self.dir, "key.pem"), "--tls-auth-clients", "no"] if self.tls else ["--port", str(self.port)]
        args = [REDIS_SERVER, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
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
            with self._connect() as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        if not self.tls:
            return s
        return ssl.create_default_context(cafile=self.ca_file).wrap_socket(s, server_hostname="127.0.0.1")

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
