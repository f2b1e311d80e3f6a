#!/usr/bin/env python3
"""The benchmark's load generator: one thread, epoll, one keep-alive connection per concurrent client.

Started by ``bench/bench.py`` once per measured run, so it shares no GIL with the server it measures:

* ``python bench/loadgen.py closed --port P --request KIND[,KIND] --conc N ...``: a closed loop (each
  connection sends its next request when the previous answer is complete, the kinds in turn);
  prints one JSON line with the samples, in integer microseconds;
* ``python bench/loadgen.py held --port P --n 500``: opens ``n`` held streams; prints ``READY {...}``
  once every one has its ``message_start``, then ``DONE {...}`` when they have all ended.

Request bytes are built once per connection, before the clock starts; the same code and bytes are
used against the fake upstream directly and through shunt. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

HOST = "127.0.0.1"
RECV_BYTES = 65536
SMALL_BODY = b'{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY = b'{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
SMALL_HEADERS = [("content-type", "application/json"), ("anthropic-version", "2023-06-01"),
                 ("x-api-key", "bench-client-key"), ("user-agent", "shunt-bench/1")]
FIXTURE_DROP = frozenset({"host", "content-length", "connection"})  # the load generator sets these itself
KINDS = ("small", "stream", "hold", "claude-code")


def build_request(port: int, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """One HTTP/1.1 request: ``Host``, then ``headers`` in order, then ``content-length`` and the body."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}"] + [f"{k}: {v}" for k, v in headers]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def request_for(kind: str, port: int, client: int, fixture: str | None = None) -> bytes:
    """The request bytes of client number ``client`` for ``kind``:

    * ``small``: a ~90-byte non-streaming Messages request with an ``x-claude-code-session-id``;
    * ``stream``: the same with ``"stream":true``; ``hold``: that, to ``/v1/messages?hold=1``;
    * ``claude-code``: the recorded Claude Code request in ``fixture`` (its path, its headers minus
      host/content-length/connection, its body as ``json.dumps`` writes it), made non-streaming
      (``"stream": false``) so that it gets the same answer as ``small``.
    """
    if kind == "claude-code":
        with open(fixture, encoding="utf-8") as f:
            fx = json.load(f)
        headers = [(k, v) for k, v in fx["headers"].items() if k.lower() not in FIXTURE_DROP]
        body = json.dumps(dict(fx["body"], stream=False)).encode()
        return build_request(port, fx["path"], headers, body)
    path = "/v1/messages?hold=1" if kind == "hold" else "/v1/messages"
    session = ("x-claude-code-session-id", f"bench-{kind}-{client}")
    return build_request(port, path, SMALL_HEADERS + [session], SMALL_BODY if kind == "small" else STREAM_BODY)


class Conn:
    """One keep-alive client connection and the parse state of the response in progress.

    ``t0`` / ``t_first``: ``perf_counter()`` seconds when the request was sent / when the first body
    byte arrived (0.0 before).
    """

    __slots__ = ("sock", "reqs", "sent", "buf", "t0", "t_first", "body_at", "clen", "chunked", "pos")

    def __init__(self, port: int, *reqs: bytes):
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reqs = reqs  # sent in turn, one per request
        self.sent = 0  # requests sent; (sent - 1) % len(reqs) is the one in progress
        self.t0 = 0.0
        self.reset()

    @property
    def which(self) -> int:
        """The index in ``reqs`` of the request in progress."""
        return (self.sent - 1) % len(self.reqs)

    def reset(self) -> None:
        self.buf = bytearray()
        self.t_first = 0.0
        self.body_at = -1  # offset of the body in buf, -1 until the head is complete
        self.clen = -1
        self.chunked = False
        self.pos = 0  # chunked: offset of the next chunk-size line

    def send(self) -> None:
        req = self.reqs[self.sent % len(self.reqs)]
        self.sent += 1
        self.reset()
        self.t0 = time.perf_counter()
        self.sock.sendall(req)

    def feed(self, data: bytes, now: float) -> bool:
        """Add received bytes. :returns: True when the response is complete. :raises ValueError: non-200."""
        buf = self.buf
        buf += data
        if self.body_at < 0:
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                return False
            if buf[9:12] != b"200":
                raise ValueError("status " + bytes(buf[9:12]).decode())
            head = bytes(buf[:he]).lower()
            self.body_at = self.pos = he + 4
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                self.clen = int(head[i + 17:j if j >= 0 else len(head)])
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
        if not self.t_first and len(buf) > self.body_at:
            self.t_first = now
        if self.clen >= 0:
            return len(buf) >= self.body_at + self.clen
        if not self.chunked:
            raise ValueError("response without content-length or chunking")
        pos = self.pos
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
            if size == 0:
                return len(buf) >= nl + 4
            end = nl + 2 + size + 2
            if len(buf) < end:
                break
            pos = end
        self.pos = pos
        return False


class Event(NamedTuple):
    """What one read did to a connection: ``done`` (the response is complete), ``error`` (a bad
    answer: its text, else ""), ``closed`` (the server closed the connection or the read failed);
    ``now``: ``perf_counter()`` seconds just after the read."""

    conn: Conn
    done: bool
    error: str
    closed: bool
    now: float


class Pump:
    """The one select/recv loop: connections are added, and :meth:`events` reports what their reads did."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []

    def open(self, port: int, *reqs: bytes) -> Conn:
        c = Conn(port, *reqs)
        self.conns.append(c)
        self.sel.register(c.sock, selectors.EVENT_READ, c)
        return c

    def drop(self, c: Conn) -> None:
        """Stop watching ``c`` (its socket stays open until :meth:`close`)."""
        self.sel.unregister(c.sock)

    def events(self, tick_s: float) -> Iterator[Event | None]:
        """One :class:`Event` per read, forever; None after ``tick_s`` seconds without any (the caller's
        chance to check its deadline)."""
        while True:
            ready = self.sel.select(tick_s)
            if not ready:
                yield None
            for key, _ in ready:
                c = key.data
                try:
                    data = c.sock.recv(RECV_BYTES)
                except OSError:
                    data = b""
                now = time.perf_counter()
                if not data:
                    yield Event(c, False, "connection closed by server", True, now)
                    continue
                try:
                    done = c.feed(data, now)
                except ValueError as exc:
                    yield Event(c, False, str(exc), False, now)
                else:
                    yield Event(c, done, "", False, now)

    def close(self) -> None:
        for c in self.conns:
            c.sock.close()
        self.sel.close()


def closed_loop(port: int, kinds: list[str], conc: int, count: int, duration_s: float, warmup: int,
                fixture: str | None) -> dict:
    """``conc`` connections, each sending its next request when the previous answer is complete; with
    several ``kinds``, each connection sends them in turn, so every kind meets the same conditions
    (two kinds measured in separate runs differ by whatever the machine did in between).

    The first ``warmup * conc`` answers are not recorded; then answers are recorded until each kind
    has ``count`` or ``duration_s`` seconds have passed. :returns: per kind (``{"by_kind": {...}}``
    with several kinds): ``lat_us`` (request sent to last byte) and ``ttfb_us`` (to the first body
    byte), integer microseconds; ``rps`` over the measured part; ``errors`` (non-200 answers);
    ``request_bytes``.
    """
    runs = measure(port, kinds, [[request_for(k, port, i, fixture) for k in kinds] for i in range(conc)],
                   count, duration_s, warmup)
    return runs[kinds[0]] if len(kinds) == 1 else {"by_kind": runs}


def measure(port: int | list[int], names: list[str], reqs: list[list[bytes]], count: int, duration_s: float,
            warmup: int) -> dict[str, dict]:
    """The closed loop of :func:`closed_loop` with given request bytes: ``reqs[i]`` are connection
    ``i``'s requests, one per name in ``names``, sent in turn. ``port``: one port, or several, connection
    ``i`` going to ``port[i % len(port)]`` (a balancer spreading connections round-robin).
    :returns: name -> its samples (as :func:`closed_loop` describes them)."""
    kinds, conc = names, len(reqs)
    ports = port if isinstance(port, list) else [port]
    pump = Pump()
    conns = [pump.open(ports[i % len(ports)], *r) for i, r in enumerate(reqs)]
    lats: list[list[int]] = [[] for _ in kinds]
    ttfbs: list[list[int]] = [[] for _ in kinds]
    errors = 0
    warm_left = warmup * conc
    deadline = time.monotonic() + duration_s + 60  # replaced when measuring starts
    t_start = t_end = time.perf_counter()
    for c in conns:
        c.send()
    for ev in pump.events(1.0):
        if min(map(len, lats)) >= count or time.monotonic() >= deadline:
            break
        if ev is None:
            continue
        c = ev.conn
        if ev.closed:
            raise SystemExit(ev.error)
        if ev.error:
            errors += 1
            if errors > 10:
                raise SystemExit(f"too many errors: {ev.error}")
            c.send()
            continue
        if not ev.done:
            continue
        if warm_left > 0:
            warm_left -= 1
            if warm_left == 0:
                t_start = t_end = time.perf_counter()
                deadline = time.monotonic() + duration_s
        else:
            lats[c.which].append(int((ev.now - c.t0) * 1e6))
            if c.t_first:
                ttfbs[c.which].append(int((c.t_first - c.t0) * 1e6))
            t_end = ev.now
        c.send()
    pump.close()
    elapsed_s = t_end - t_start if lats[0] else 0.0
    return {k: {"lat_us": lats[i], "ttfb_us": ttfbs[i], "rps": len(lats[i]) / elapsed_s if elapsed_s > 0 else 0.0,
                "errors": errors, "request_bytes": len(conns[0].reqs[i])} for i, k in enumerate(kinds)}


def held_streams(port: int, n: int, timeout_s: float) -> None:
    """Open ``n`` held streams; print ``READY`` once each has its ``message_start`` (or failed), then
    ``DONE`` once each has ended (or ``timeout_s`` seconds have passed). Times in seconds."""
    pump = Pump()
    t0 = time.perf_counter()
    for i in range(n):
        pump.open(port, request_for("hold", port, i)).send()
    ready = {"opened": n, "send_s": time.perf_counter() - t0, "all_started_s": None}
    started: set[Conn] = set()
    done = errors = 0
    deadline = time.monotonic() + timeout_s
    ready_printed = False
    for ev in pump.events(0.5):
        if ev is not None:
            c = ev.conn
            if ev.error or ev.done:
                pump.drop(c)
                errors += bool(ev.error)
                done += ev.done
            if c not in started and not ev.error and b"event: message_start" in c.buf:
                started.add(c)
        if not ready_printed and len(started) + errors >= n:
            ready_printed = True
            ready.update(started=len(started), errors=errors, all_started_s=time.perf_counter() - t0)
            print("READY " + json.dumps(ready), flush=True)
        if done + errors >= n or time.monotonic() >= deadline:
            break
    if not ready_printed:
        ready.update(started=len(started), errors=errors)
        print("READY " + json.dumps(ready), flush=True)
    print("DONE " + json.dumps({"completed": done, "errors": errors}), flush=True)
    pump.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("closed", help="closed-loop load; prints one JSON line")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--request", default="small", help="a request kind (" + ", ".join(KINDS) + "), or several"
                   " separated by commas, sent in turn on each connection")
    c.add_argument("--fixture", help="recorded request (JSON with path, headers, body) for --request claude-code")
    c.add_argument("--conc", type=int, default=1, help="concurrent connections")
    c.add_argument("--count", type=int, default=1000, help="measured answers to collect")
    c.add_argument("--duration", type=float, default=30.0, help="measuring time limit, seconds")
    c.add_argument("--warmup", type=int, default=300, help="unrecorded answers per connection first")
    h = sub.add_parser("held", help="held streams; prints READY and DONE lines")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--n", type=int, default=500, help="streams to open")
    h.add_argument("--timeout", type=float, default=40.0, help="seconds to wait for all of them to end")
    args = p.parse_args(argv)
    if args.mode == "closed":
        kinds = args.request.split(",")
        if not set(kinds) <= set(KINDS):
            p.error(f"--request: unknown kind in {args.request!r}")
        out = closed_loop(args.port, kinds, args.conc, args.count, args.duration, args.warmup, args.fixture)
        print(json.dumps(out))
    else:
        held_streams(args.port, args.n, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
