#!/usr/bin/env python3
"""shunt's performance benchmark: shunt vs. the same fake upstream reached directly, in one run.

Run from the repository root::

    python bench/bench.py               # full run (about a minute)
    python bench/bench.py --quick       # fewer rounds and samples (about 25 s)
    python bench/bench.py --write-doc   # also (re)write docs/benchmarks.md

Three kinds of process, so none shares a GIL with another (on a 2-core machine they share the cores):

* a **fake upstream** (``_fake`` role of this script): one thread, epoll, HTTP/1.1 keep-alive with
  TCP_NODELAY and canned answers: a small JSON message (non-streaming), a short chunked SSE stream
  (``"stream":true`` in the body), or, for ``?hold=1``, ``message_start`` then the stream held open
  until ``POST /bench/release`` (or a timeout) finishes it;
* **shunt** itself, started as ``python shunt.py serve --port P`` with ``SHUNT_HOME`` in a temp dir
  (``config.toml`` pointing at the fake, two OAuth accounts in ``credentials.json``);
* a **load generator** (``_load`` / ``_streams`` roles): one thread, epoll, one keep-alive connection
  per concurrent client, pre-built request bytes with an ``x-claude-code-session-id`` header. It is
  the same code and the same request bytes for the direct and the via-shunt runs.

Direct and via-shunt rounds are interleaved (alternating which goes first) after a warm-up, and the
figures are medians / percentiles over all measured samples. Everything is on 127.0.0.1; nothing is
written outside a temp dir unless ``--write-doc`` is given. Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from shunt_lib.config import AccountConfig, Paths, write_config  # noqa: E402
from shunt_lib.credentials import Credential, CredentialStore  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"

# -- targets ---------------------------------------------------------------------------------
TARGET_ADDED_P50_MS = 0.5
TARGET_RPS_C8 = 1000.0
TARGET_TTFB_OVERHEAD_MS = 1.0
TARGET_STREAMS = 500
TARGET_STREAMS_RSS_MB = 100.0

# -- canned traffic ------------------------------------------------------------------------------
REQ_BODY = b'{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
REQ_BODY_STREAM = b'{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}'


def build_request(port: int, path: str, body: bytes, session: str) -> bytes:
    """One client request as Claude Code would send it (minus its many beta headers)."""
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\ncontent-type: application/json\r\n"
            f"anthropic-version: 2023-06-01\r\nx-api-key: bench-client-key\r\nuser-agent: shunt-bench/1\r\n"
            f"x-claude-code-session-id: {session}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


def _ratelimit_headers() -> bytes:
    now = int(time.time())
    return (f"anthropic-ratelimit-unified-status: allowed\r\n"
            f"anthropic-ratelimit-unified-reset: {now + 3600}\r\n"
            f"anthropic-ratelimit-unified-5h-status: allowed\r\n"
            f"anthropic-ratelimit-unified-5h-reset: {now + 3600}\r\n"
            f"anthropic-ratelimit-unified-5h-utilization: 0.12\r\n"
            f"anthropic-ratelimit-unified-7d-status: allowed\r\n"
            f"anthropic-ratelimit-unified-7d-reset: {now + 86400}\r\n"
            f"anthropic-ratelimit-unified-7d-utilization: 0.34\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def canned_responses() -> dict:
    rl = _ratelimit_headers()
    msg = json.dumps({"id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                      "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
                      "usage": {"input_tokens": 10, "output_tokens": 5}}, separators=(",", ":")).encode()
    json_resp = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_bench\r\n" + rl
                 + b"content-length: %d\r\n\r\n" % len(msg) + msg)
    start = _sse("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5",
        "stop_reason": None, "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 0,
                                       "cache_creation_input_tokens": 0}}})
    rest = [
        _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        _sse("ping", {"type": "ping"}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    sse_head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
                b"request-id: req_bench\r\n" + rl + b"transfer-encoding: chunked\r\n\r\n")
    sse_first = sse_head + _chunk(start)
    sse_rest = b"".join(_chunk(e) for e in rest) + b"0\r\n\r\n"
    return {"json": json_resp, "sse": sse_first + sse_rest, "sse_first": sse_first, "sse_rest": sse_rest}


def raise_nofile(want: int = 8192) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# =============================================================================================
# role: fake upstream
# =============================================================================================
def run_fake(hold_timeout_s: float, max_life_s: float) -> None:
    raise_nofile()
    canned = canned_responses()
    resp_json, resp_sse = canned["json"], canned["sse"]
    sse_first, sse_rest = canned["sse_first"], canned["sse_rest"]
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((HOST, 0))
    lsock.listen(4096)
    print(f"PORT {lsock.getsockname()[1]}", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    bufs: dict[socket.socket, bytearray] = {}
    held: dict[socket.socket, float] = {}  # sock -> monotonic deadline
    end_of_life = time.monotonic() + max_life_s

    def close(s: socket.socket) -> None:
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        bufs.pop(s, None)
        held.pop(s, None)
        s.close()

    def release(s: socket.socket) -> None:
        del held[s]
        try:
            s.sendall(sse_rest)
        except OSError:
            close(s)
            return
        serve(s)  # anything pipelined behind it

    def serve(s: socket.socket) -> None:
        buf = bufs[s]
        while s not in held:
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                return
            head = bytes(buf[:he]).lower()
            cl = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                cl = int(head[i + 17:j if j >= 0 else len(head)])
            if b"\r\ntransfer-encoding:" in head:
                close(s)  # not used by shunt for bytes bodies, nor by the load generator
                return
            end = he + 4 + cl
            if len(buf) < end:
                return
            line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
            body = bytes(buf[he + 4:end])
            del buf[:end]
            try:
                if b"/bench/release" in line:
                    n = len(held)
                    for h in list(held):
                        release(h)
                    msg = str(n).encode()
                    s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(msg), msg))
                elif b"hold=1" in line:
                    s.sendall(sse_first)
                    held[s] = time.monotonic() + hold_timeout_s
                    return
                elif b'"stream":true' in body:
                    s.sendall(resp_sse)
                else:
                    s.sendall(resp_json)
            except OSError:
                close(s)
                return
            if b"\r\nconnection: close" in head:
                close(s)
                return

    while time.monotonic() < end_of_life:
        timeout = 0.5
        if held:
            timeout = max(0.0, min(timeout, min(held.values()) - time.monotonic()))
        for key, _ in sel.select(timeout):
            s = key.fileobj
            if key.data is None:
                try:
                    c, _ = lsock.accept()
                except OSError:
                    continue
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                bufs[c] = bytearray()
                sel.register(c, selectors.EVENT_READ, 1)
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                close(s)
                continue
            bufs[s] += data
            if s not in held:
                serve(s)
        if held:
            now = time.monotonic()
            for h in [h for h, d in held.items() if d <= now]:
                if h in held:
                    release(h)


# =============================================================================================
# role: load generator
# =============================================================================================
class _Conn:
    __slots__ = ("sock", "req", "buf", "t0", "t_first", "hdr_end", "clen", "chunked", "pos", "left")

    def __init__(self, port: int, req: bytes, left: int):
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.req = req
        self.left = left
        self.reset()

    def reset(self) -> None:
        self.buf = bytearray()
        self.t_first = 0.0
        self.hdr_end = -1
        self.clen = -1
        self.chunked = False
        self.pos = 0

    def send(self) -> None:
        self.reset()
        self.t0 = time.perf_counter()
        self.sock.sendall(self.req)

    def feed(self, data: bytes, now: float) -> bool:
        """:returns: True when the response is complete. :raises ValueError: on a non-200 answer."""
        buf = self.buf
        buf += data
        if self.hdr_end < 0:
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                return False
            if buf[9:12] != b"200":
                raise ValueError("status " + bytes(buf[9:12]).decode())
            head = bytes(buf[:he]).lower()
            self.hdr_end = he + 4
            self.pos = he + 4
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                self.clen = int(head[i + 17:j if j >= 0 else len(head)])
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
        if not self.t_first and len(buf) > self.hdr_end:
            self.t_first = now
        if self.clen >= 0:
            return len(buf) >= self.hdr_end + self.clen
        if self.chunked:
            pos = self.pos
            while True:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
                if size == 0:
                    if len(buf) >= nl + 4:
                        return True
                    break
                end = nl + 2 + size + 2
                if len(buf) < end:
                    break
                pos = end
            self.pos = pos
            return False
        raise ValueError("response without content-length or chunking")


def run_load(cfg: dict) -> dict:
    """Closed-loop load: ``conc`` connections, each sends its next request when the previous one is done.

    Each connection first does ``warmup`` requests, then measured ones until ``count`` in total are
    done or ``duration_s`` has passed. Returns latency / first-byte samples in microseconds.
    """
    raise_nofile()
    port, conc, stream = cfg["port"], cfg["conc"], cfg["stream"]
    body = REQ_BODY_STREAM if stream else REQ_BODY
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(conc):
        c = _Conn(port, build_request(port, "/v1/messages", body, f"bench-session-{i}"), 0)
        conns.append(c)
        sel.register(c.sock, selectors.EVENT_READ, c)
    lat: list[int] = []
    ttfb: list[int] = []
    errors = 0
    count = cfg["count"]
    warm_left = cfg["warmup"] * conc  # the first completions are warm-up, not recorded
    deadline = time.monotonic() + cfg["duration_s"] + 60  # replaced when measuring starts
    t_start = t_end = time.perf_counter()
    for c in conns:
        c.send()
    while len(lat) < count and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            now = time.perf_counter()
            if not data:
                raise SystemExit("connection closed by server")
            try:
                done = c.feed(data, now)
            except ValueError as exc:
                errors += 1
                if errors > 10:
                    raise SystemExit(f"too many errors: {exc}")
                c.send()
                continue
            if not done:
                continue
            if warm_left > 0:
                warm_left -= 1
                if warm_left == 0:
                    t_start = t_end = time.perf_counter()
                    deadline = time.monotonic() + cfg["duration_s"]
            else:
                lat.append(int((now - c.t0) * 1e6))
                if c.t_first:
                    ttfb.append(int((c.t_first - c.t0) * 1e6))
                t_end = now
            c.send()
    for c in conns:
        c.sock.close()
    elapsed = (t_end - t_start) if lat else 0.0
    return {"n": len(lat), "elapsed_s": elapsed, "rps": len(lat) / elapsed if elapsed > 0 else 0.0,
            "lat_us": lat, "ttfb_us": ttfb, "errors": errors}


def run_streams(cfg: dict) -> None:
    """Open ``n`` held streams; print READY once every one has its ``message_start``, then DONE."""
    raise_nofile()
    port, n = cfg["port"], cfg["n"]
    sel = selectors.DefaultSelector()
    t0 = time.perf_counter()
    conns = []
    for i in range(n):
        c = _Conn(port, build_request(port, "/v1/messages?hold=1", REQ_BODY_STREAM, f"bench-hold-{i}"), 0)
        c.send()
        conns.append(c)
        sel.register(c.sock, selectors.EVENT_READ, c)
    t_sent = time.perf_counter()
    started, done, errors = set(), set(), 0
    deadline = time.monotonic() + cfg["timeout_s"]
    ready_printed = False
    while len(done) + errors < n and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                errors += 1
                sel.unregister(c.sock)
                continue
            try:
                finished = c.feed(data, time.perf_counter())
            except ValueError:
                errors += 1
                sel.unregister(c.sock)
                continue
            if c not in started and b"message_start" in c.buf:
                started.add(c)
            if finished:
                done.add(c)
                sel.unregister(c.sock)
        if not ready_printed and len(started) + errors >= n:
            ready_printed = True
            print("READY " + json.dumps({"opened": n, "started": len(started), "errors": errors,
                                         "send_s": t_sent - t0, "all_started_s": time.perf_counter() - t0}), flush=True)
    if not ready_printed:
        print("READY " + json.dumps({"opened": n, "started": len(started), "errors": errors, "send_s": t_sent - t0,
                                     "all_started_s": None}), flush=True)
    print("DONE " + json.dumps({"completed": len(done), "errors": errors}), flush=True)
    for c in conns:
        c.sock.close()


# =============================================================================================
# orchestration
# =============================================================================================
def _free_port() -> int:
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def _cpu_s(pid: int, part: str = "both") -> float:
    """CPU seconds of ``pid``: user, sys or both (utime + stime from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    user, system = int(fields[11]), int(fields[12])
    return {"user": user, "sys": system, "both": user + system}[part] / os.sysconf("SC_CLK_TCK")


def _pct(samples: list, q: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def _http(port: int, method: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def write_home(home: str, upstream_url: str) -> None:
    """A shunt home with two OAuth accounts in front of ``upstream_url`` (shunt's own writers)."""
    paths = Paths(home)
    write_config(paths, {"upstream_url": upstream_url, "oauth_token_url": f"{upstream_url}/v1/oauth/token",
                         "usage_poll_s": 0}, [AccountConfig(n, "oauth") for n in ("a", "b")])
    store = CredentialStore(paths.credentials)
    exp = int((time.time() + 8 * 3600) * 1000)
    for n in ("a", "b"):
        store.put(n, Credential(kind="oauth", access_token=f"tok-{n}", refresh_token=f"ref-{n}", expires_at_ms=exp))


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="shunt-bench-")
        self.procs: list[subprocess.Popen] = []
        self.fake_port = 0
        self.shunt_port = 0
        self.shunt: subprocess.Popen | None = None
        self.env = {k: v for k, v in os.environ.items() if k.lower() not in
                    ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}

    # -- processes --------------------------------------------------------------------------
    def start(self) -> None:
        fake = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_fake", "--hold-timeout", "60",
                                 "--max-life", "900"], stdout=subprocess.PIPE, stderr=None, env=self.env, text=True)
        self.procs.append(fake)
        line = fake.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit("fake upstream did not start")
        self.fake_port = int(line.split()[1])
        home = os.path.join(self.tmp, "home")
        write_home(home, f"http://{HOST}:{self.fake_port}")
        self.shunt_port = _free_port()
        env = dict(self.env, SHUNT_HOME=home)
        self.shunt_log = open(os.path.join(self.tmp, "shunt.log"), "wb")
        cmd = [sys.executable, "shunt.py", "serve", "--port", str(self.shunt_port)]
        if self.args.py_spy:
            out = self.args.py_spy
            fmt = "flamegraph" if out.endswith(".svg") else "speedscope" if out.endswith(".json") else "raw"
            cmd = ["py-spy", "record", "--nonblocking", "--threads", "--gil", "--idle", "--rate", "1000", "-f", fmt,
                   "-o", out, "--"] + cmd
        self.shunt = subprocess.Popen(cmd, cwd=self.args.shunt_dir, env=env, stdout=subprocess.DEVNULL, stderr=self.shunt_log)
        self.procs.append(self.shunt)
        deadline = time.monotonic() + 20
        while True:
            try:
                if _http(self.shunt_port, "GET", "/health", 1.0)[0] == 200:
                    break
            except OSError:
                pass
            if self.shunt.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"shunt did not come up; see {self.shunt_log.name}")
            time.sleep(0.05)
        self.shunt_pid = self._python_pid()

    def _python_pid(self) -> int:
        """The pid of the Python process serving shunt (a child of py-spy when profiling)."""
        if not self.args.py_spy:
            return self.shunt.pid
        for _ in range(50):
            try:
                with open(f"/proc/{self.shunt.pid}/task/{self.shunt.pid}/children") as f:
                    kids = f.read().split()
                if kids:
                    return int(kids[0])
            except OSError:
                pass
            time.sleep(0.1)
        return self.shunt.pid

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT if p is self.shunt else signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if getattr(self, "shunt_log", None):
            self.shunt_log.close()
        if self.args.keep_tmp:
            print(f"temp files kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def load(self, port: int, *, conc: int, stream: bool, count: int, duration_s: float, warmup: int) -> dict:
        cfg = {"port": port, "conc": conc, "stream": stream, "count": count, "duration_s": duration_s, "warmup": warmup}
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "_load", json.dumps(cfg)],
                             capture_output=True, text=True, timeout=duration_s + 90, env=self.env)
        if out.returncode != 0:
            raise SystemExit(f"load generator failed: {out.stderr.strip()[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    # -- scenarios ----------------------------------------------------------------------------
    def interleaved(self, rounds: int, **kw) -> dict:
        res = {"direct": [], "shunt": []}
        cpu = []
        for r in range(rounds):
            order = ("direct", "shunt") if r % 2 == 0 else ("shunt", "direct")
            for which in order:
                port = self.fake_port if which == "direct" else self.shunt_port
                u0, s0 = (_cpu_s(self.shunt_pid, "user"), _cpu_s(self.shunt_pid, "sys")) if which == "shunt" else (0, 0)
                out = self.load(port, **kw)
                if which == "shunt":
                    n = out["n"] + kw["warmup"] * kw["conc"]
                    cpu.append(((_cpu_s(self.shunt_pid, "user") - u0) / n * 1e6, (_cpu_s(self.shunt_pid, "sys") - s0) / n * 1e6))
                res[which].append(out)
        res["shunt_cpu_us_per_req"] = statistics.median(u + s for u, s in cpu) if cpu else float("nan")
        res["shunt_user_us_per_req"] = statistics.median(u for u, _ in cpu) if cpu else float("nan")
        res["shunt_sys_us_per_req"] = statistics.median(s for _, s in cpu) if cpu else float("nan")
        return res

    def latency(self, stream: bool) -> dict:
        a = self.args
        res = self.interleaved(a.rounds, conc=1, stream=stream, count=a.samples, duration_s=30.0, warmup=a.warmup)
        out = {k: res[k] for k in ("shunt_cpu_us_per_req", "shunt_user_us_per_req", "shunt_sys_us_per_req")}
        key = "ttfb_us" if stream else "lat_us"
        for which in ("direct", "shunt"):
            pooled = [x for r in res[which] for x in r[key]]
            total = [x for r in res[which] for x in r["lat_us"]]
            out[which] = {"n": len(pooled), "p50": _pct(pooled, 50) / 1000, "p90": _pct(pooled, 90) / 1000,
                          "p99": _pct(pooled, 99) / 1000, "round_p50": [_pct(r[key], 50) / 1000 for r in res[which]],
                          "total_p50": _pct(total, 50) / 1000, "errors": sum(r["errors"] for r in res[which])}
        out["added_p50"] = out["shunt"]["p50"] - out["direct"]["p50"]
        out["round_added"] = [s - d for s, d in zip(out["shunt"]["round_p50"], out["direct"]["round_p50"])]
        return out

    def throughput(self) -> dict:
        a = self.args
        res = self.interleaved(a.tp_rounds, conc=8, stream=False, count=10 ** 9, duration_s=a.tp_seconds,
                               warmup=a.warmup // 4)
        out = {k: res[k] for k in ("shunt_cpu_us_per_req", "shunt_user_us_per_req", "shunt_sys_us_per_req")}
        for which in ("direct", "shunt"):
            pooled = [x for r in res[which] for x in r["lat_us"]]
            out[which] = {"rps": statistics.median(r["rps"] for r in res[which]),
                          "round_rps": [r["rps"] for r in res[which]], "n": len(pooled),
                          "p50": _pct(pooled, 50) / 1000, "p99": _pct(pooled, 99) / 1000,
                          "errors": sum(r["errors"] for r in res[which])}
        return out

    def streams(self, port: int, n: int, measure_pid: int | None) -> dict:
        before = _proc_status(measure_pid) if measure_pid else {}
        cfg = {"port": port, "n": n, "timeout_s": 40.0}
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_streams", json.dumps(cfg)],
                             stdout=subprocess.PIPE, text=True, env=self.env)
        try:
            line = p.stdout.readline()
            if not line.startswith("READY "):
                raise SystemExit("stream test: load generator failed")
            ready = json.loads(line[6:])
            samples = []
            if measure_pid:
                for _ in range(5):
                    samples.append(_proc_status(measure_pid))
                    time.sleep(0.1)
            released = int(_http(self.fake_port, "POST", "/bench/release", 10.0)[1] or 0)
            line = p.stdout.readline()
            done = json.loads(line[5:]) if line.startswith("DONE ") else {"completed": 0, "errors": n}
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        out = {"n": n, "ready": ready, "released": released, "done": done}
        if measure_pid:
            out["rss_before_mb"] = before["VmRSS"] / 1024
            out["rss_open_mb"] = max(s["VmRSS"] for s in samples) / 1024
            out["threads_open"] = max(s["Threads"] for s in samples)
            out["rss_after_mb"] = _proc_status(measure_pid)["VmRSS"] / 1024
        return out


def _fmt(v, unit="", nd=3) -> str:
    if isinstance(v, float):
        return f"{v:.{nd}f}{unit}"
    return f"{v}{unit}"


def evaluate(r: dict) -> list[dict]:
    lat, tp, sse, st = r["latency"], r["throughput"], r["ttfb"], r["streams"]
    stv = st["shunt"]
    streams_ok = (stv["ready"]["started"] == TARGET_STREAMS and stv["done"]["completed"] == TARGET_STREAMS
                  and stv["rss_open_mb"] <= TARGET_STREAMS_RSS_MB)
    return [
        {"metric": "1. added latency p50, c=1, non-streaming POST /v1/messages",
         "direct": f"{lat['direct']['p50']:.3f} ms", "shunt": f"{lat['shunt']['p50']:.3f} ms",
         "measured": f"+{lat['added_p50']:.3f} ms", "target": f"<= {TARGET_ADDED_P50_MS} ms",
         "pass": lat["added_p50"] <= TARGET_ADDED_P50_MS},
        {"metric": "2. throughput, c=8, non-streaming",
         "direct": f"{tp['direct']['rps']:.0f} req/s", "shunt": f"{tp['shunt']['rps']:.0f} req/s",
         "measured": f"{tp['shunt']['rps']:.0f} req/s", "target": f">= {TARGET_RPS_C8:.0f} req/s",
         "pass": tp["shunt"]["rps"] >= TARGET_RPS_C8},
        {"metric": "3. streaming first-byte overhead p50, c=1",
         "direct": f"{sse['direct']['p50']:.3f} ms", "shunt": f"{sse['shunt']['p50']:.3f} ms",
         "measured": f"+{sse['added_p50']:.3f} ms", "target": f"<= {TARGET_TTFB_OVERHEAD_MS} ms",
         "pass": sse["added_p50"] <= TARGET_TTFB_OVERHEAD_MS},
        {"metric": f"4. {TARGET_STREAMS} open streams: shunt RSS",
         "direct": f"{st['direct']['ready']['started']}/{TARGET_STREAMS} open",
         "shunt": f"{stv['ready']['started']}/{TARGET_STREAMS} open, {stv['done']['completed']} completed",
         "measured": f"{stv['rss_open_mb']:.1f} MB", "target": f"<= {TARGET_STREAMS_RSS_MB:.0f} MB, all open",
         "pass": streams_ok},
    ]


def render_table(rows: list[dict]) -> str:
    cols = [("metric", "metric"), ("direct", "direct"), ("shunt", "via shunt"), ("measured", "measured"),
            ("target", "target"), ("pass", "result")]
    cells = [[h for _, h in cols]] + [[("PASS" if r[k] else "FAIL") if k == "pass" else str(r[k]) for k, _ in cols]
                                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(r: dict) -> str:
    lat, tp, sse, st = r["latency"], r["throughput"], r["ttfb"], r["streams"]
    j = lambda xs: ", ".join(f"{x:.3f}" for x in xs)  # noqa: E731
    out = [
        f"latency c=1 (ms): direct p50/p90/p99 {lat['direct']['p50']:.3f}/{lat['direct']['p90']:.3f}/{lat['direct']['p99']:.3f}"
        f" (n={lat['direct']['n']}); shunt {lat['shunt']['p50']:.3f}/{lat['shunt']['p90']:.3f}/{lat['shunt']['p99']:.3f}"
        f" (n={lat['shunt']['n']}); added p50 per round: {j(lat['round_added'])}; shunt CPU {lat['shunt_cpu_us_per_req']:.0f} us/request"
        f" ({lat['shunt_user_us_per_req']:.0f} user + {lat['shunt_sys_us_per_req']:.0f} sys)",
        f"throughput c=8 (req/s per round): direct {', '.join(f'{x:.0f}' for x in tp['direct']['round_rps'])};"
        f" shunt {', '.join(f'{x:.0f}' for x in tp['shunt']['round_rps'])}; latency p50/p99 direct"
        f" {tp['direct']['p50']:.3f}/{tp['direct']['p99']:.3f} ms, shunt {tp['shunt']['p50']:.3f}/{tp['shunt']['p99']:.3f} ms;"
        f" shunt CPU {tp['shunt_cpu_us_per_req']:.0f} us/request ({tp['shunt_user_us_per_req']:.0f} user +"
        f" {tp['shunt_sys_us_per_req']:.0f} sys)",
        f"SSE c=1 first byte (ms): direct p50/p90/p99 {sse['direct']['p50']:.3f}/{sse['direct']['p90']:.3f}/{sse['direct']['p99']:.3f};"
        f" shunt {sse['shunt']['p50']:.3f}/{sse['shunt']['p90']:.3f}/{sse['shunt']['p99']:.3f}; added per round: {j(sse['round_added'])};"
        f" whole stream p50 direct {sse['direct']['total_p50']:.3f}, shunt {sse['shunt']['total_p50']:.3f} ms",
        f"{st['shunt']['n']} held streams via shunt: all message_start received after {st['shunt']['ready']['all_started_s']:.2f} s"
        f" (direct {st['direct']['ready']['all_started_s']:.2f} s); shunt RSS idle {st['shunt']['rss_before_mb']:.1f} MB,"
        f" with streams open {st['shunt']['rss_open_mb']:.1f} MB ({st['shunt']['threads_open']} threads),"
        f" after {st['shunt']['rss_after_mb']:.1f} MB; completed {st['shunt']['done']['completed']}, errors {st['shunt']['done']['errors']}",
    ]
    errs = lat["direct"]["errors"] + lat["shunt"]["errors"] + tp["direct"]["errors"] + tp["shunt"]["errors"] + \
        sse["direct"]["errors"] + sse["shunt"]["errors"]
    out.append(f"non-200 answers during the run: {errs}")
    return "\n".join(out)


def write_doc(r: dict, rows: list[dict], args) -> str:
    path = os.path.join(REPO, "docs", "benchmarks.md")
    a = args
    lines = [
        "# shunt benchmarks",
        "",
        "Produced by `python bench/bench.py --write-doc`; rerun it to refresh this page.",
        "",
        f"* date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"* machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.machine()},"
        f" Linux {platform.release()}, Python {platform.python_version()}; load average at start"
        f" {r.get('loadavg_start', '?')} (other work on the machine adds noise: see the per-round figures)",
        f"* run: {'--quick' if a.quick else 'default'} ({a.rounds} interleaved rounds x {a.samples} samples for each"
        f" c=1 figure, {a.tp_rounds} x {a.tp_seconds:g} s for c=8, {a.warmup} warm-up requests per c=1 round)",
        "",
        "## Results",
        "",
        "| metric | direct | via shunt | measured | target | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(f"| {row['metric']} | {row['direct']} | {row['shunt']} | {row['measured']} | {row['target']} |"
                     f" {'PASS' if row['pass'] else 'FAIL'} |")
    lines += ["", "Details:", ""] + [f"* {d}" for d in details(r).splitlines()]
    lines += [
        "",
        "## Method",
        "",
        "Three separate processes, so none shares a GIL with another; on this 2-core machine the fake"
        " upstream and the load generator share the cores with shunt, as they would in any local test:",
        "",
        "* **fake upstream**: one thread, epoll, HTTP/1.1 keep-alive, TCP_NODELAY, canned answers with"
        " realistic OAuth rate-limit headers (`anthropic-ratelimit-unified-*`): a 200-byte JSON message, a"
        " 7-event chunked SSE stream (`\"stream\":true`), or for `?hold=1` the SSE head and `message_start`,"
        " then nothing until `POST /bench/release` (or 60 s) finishes the stream;",
        "* **shunt**: `python shunt.py serve --port P`, `SHUNT_HOME` in a temp dir with `config.toml`"
        " (`upstream_url` = the fake) and two OAuth accounts in `credentials.json`; its stderr log goes to a"
        " temp file; measuring starts once `GET /health` answers;",
        "* **load generator**: one thread, epoll, one keep-alive connection per concurrent client,"
        " pre-built request bytes with an `x-claude-code-session-id` header (shunt's fast path: it does not"
        " parse the body). Same code and same bytes for the direct and the via-shunt runs.",
        "",
        "Each c=1 figure: warm-up requests, then rounds alternating direct/shunt (which one goes first"
        " alternates too); percentiles are over all measured samples of all rounds, and the per-round"
        " differences are shown to judge the noise. Latency = request sent to last response byte; first byte"
        " = request sent to the first byte of the response body (the first SSE chunk). Throughput: closed"
        " loop with 8 connections for a fixed time per round, median of rounds. Streams: 500 connections"
        " each open a held stream; once every one has received `message_start`, shunt's `VmRSS` is read"
        " from `/proc/<pid>/status` five times (the maximum is reported), then the fake finishes all"
        " streams and every one must complete. Shunt CPU per request comes from `/proc/<pid>/stat`"
        " (utime+stime) across the shunt rounds (warm-up included).",
        "",
    ]
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    p.add_argument("--write-doc", action="store_true", help="(re)write docs/benchmarks.md with the results")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (shunt's log) for inspection")
    p.add_argument("--json", metavar="PATH", help="also write the raw results as JSON (under /tmp)")
    p.add_argument("--py-spy", metavar="OUT", help="run shunt under `py-spy record` writing OUT (.svg flamegraph, .json speedscope, else collapsed stacks)")
    p.add_argument("--shunt-dir", default=REPO, help="checkout whose shunt.py to benchmark (default: this repo)")
    p.add_argument("--only", choices=("latency", "throughput", "ttfb", "streams"), help="run one scenario only")
    sub = p.add_subparsers(dest="role")
    f = sub.add_parser("_fake")
    f.add_argument("--hold-timeout", type=float, default=60.0)
    f.add_argument("--max-life", type=float, default=900.0)
    sub.add_parser("_load").add_argument("cfg")
    sub.add_parser("_streams").add_argument("cfg")
    args = p.parse_args(argv)

    if args.role == "_fake":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        run_fake(args.hold_timeout, args.max_life)
        return 0
    if args.role == "_load":
        print(json.dumps(run_load(json.loads(args.cfg))))
        return 0
    if args.role == "_streams":
        run_streams(json.loads(args.cfg))
        return 0

    if args.quick:
        args.rounds, args.samples, args.warmup, args.tp_rounds, args.tp_seconds = 4, 1000, 300, 2, 2.0
    else:
        args.rounds, args.samples, args.warmup, args.tp_rounds, args.tp_seconds = 6, 2500, 500, 3, 4.0
    nofile = raise_nofile()
    if nofile < 2 * TARGET_STREAMS + 200:
        print(f"warning: open-files limit is {nofile}; the {TARGET_STREAMS}-stream test needs ~{2 * TARGET_STREAMS + 200}")
    b = Bench(args)
    results: dict = {}
    with open("/proc/loadavg") as f:
        results["loadavg_start"] = " ".join(f.read().split()[:3])
    t0 = time.monotonic()
    try:
        b.start()
        print(f"fake upstream on :{b.fake_port}, shunt on :{b.shunt_port} (pid {b.shunt_pid}); nproc"
              f" {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, load average {results['loadavg_start']}", flush=True)
        if args.only in (None, "latency"):
            print("latency, c=1 ...", flush=True)
            results["latency"] = b.latency(stream=False)
        if args.only in (None, "throughput"):
            print("throughput, c=8 ...", flush=True)
            results["throughput"] = b.throughput()
        if args.only in (None, "ttfb"):
            print("streaming first byte, c=1 ...", flush=True)
            results["ttfb"] = b.latency(stream=True)
        if args.only in (None, "streams"):
            print(f"{TARGET_STREAMS} held streams ...", flush=True)
            results["streams"] = {"direct": b.streams(b.fake_port, TARGET_STREAMS, None),
                                  "shunt": b.streams(b.shunt_port, TARGET_STREAMS, b.shunt_pid)}
    finally:
        b.stop()
    results["wall_s"] = time.monotonic() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if args.only:
        print(json.dumps({k: v for k, v in results.items()}, indent=1, default=str)[:20000])
        return 0
    rows = evaluate(results)
    print()
    print(render_table(rows))
    print()
    print(details(results))
    print(f"\n(run took {results['wall_s']:.0f} s)")
    if args.write_doc:
        print("wrote " + write_doc(results, rows, args))
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
