#!/usr/bin/env python3
"""The benchmark's hostile clients: slow drippers, new clients probing meanwhile, unauthenticated uploads.

Started by ``bench/bench.py`` (one process each, so none shares a GIL with shunt or with another):

* ``python bench/hostile.py drip --port P --n 5000 --every 3``: keeps ``n`` connections open, each
  sending one more byte of an endless request head every ``every`` seconds (their first bytes spread
  over the first interval); a connection the server answers or closes is reopened at its next tick.
  Prints ``READY {...}`` once every connection has been opened once, and ``DONE {...}`` (counts of
  the server's answers by status) when its stdin closes;
* ``python bench/hostile.py probe --port P --count 500 --interval 0.02``: new clients, one after the
  other, each a new connection sending ``GET /health`` with ``connection: close``; prints one JSON
  line with each one's time from connect to the end of the answer (integer microseconds) and the
  answers that were not 200;
* ``python bench/hostile.py upload --port P --n 60 --mib 31``: ``n`` connections at once, each sending
  a ``POST /v1/messages`` head without a key and then a ``mib`` MiB body for as long as the server
  reads it; prints ``DONE {...}`` (statuses, bytes the server took, seconds) once each is answered or closed.

Standard library only.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import json
import selectors
import socket
import sys
import time

HOST = "127.0.0.1"
DRIP_HEAD = b"POST /v1/messages HTTP/1.1\r\nhost: bench\r\nx-drip: "
UPLOAD_PIECE = b"x" * 65536


def _status(data: bytes) -> str:
    """The status code of an answer's first bytes (``eof`` for none, ``?`` if unreadable)."""
    if not data:
        return "eof"
    parts = data.split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) > 1 and data.startswith(b"HTTP/") else "?"


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _open(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex((HOST, port))
    if err not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(err, "connect failed")
    return s


def drip(port: int, n: int, every_s: float) -> None:
    """Keep ``n`` dripping connections until stdin closes (see the module docstring)."""
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    socks: list[socket.socket | None] = [None] * n
    sent = [0] * n
    start = time.monotonic()
    ticks = [(start + i * every_s / n, i) for i in range(n)]  # (when, slot): each slot's next byte; a heap
    answers: dict[str, int] = {}
    opened = open_errors = 0
    ready = False
    while True:
        now = time.monotonic()
        while ticks[0][0] <= now:
            when, i = ticks[0]
            heapq.heapreplace(ticks, (when + every_s, i))
            s = socks[i]
            if s is None:
                try:
                    s = socks[i] = _open(port)
                except OSError:
                    open_errors += 1
                    continue
                sent[i] = 0
                opened += 1
                sel.register(s, selectors.EVENT_READ, i)
            k = sent[i]
            try:
                s.send(DRIP_HEAD[k:k + 1] if k < len(DRIP_HEAD) else b"a")
                sent[i] = k + 1
            except (BlockingIOError, InterruptedError):
                pass  # still connecting, or a full buffer: the byte goes at the next tick
            except OSError:
                pass  # reset: the read below sees it
        if not ready and opened + open_errors >= n:
            ready = True
            print("READY " + json.dumps({"opened": opened, "open_errors": open_errors,
                                         "s": round(time.monotonic() - start, 3)}), flush=True)
        timeout = max(0.0, ticks[0][0] - time.monotonic())
        for key, _ in sel.select(min(timeout, 0.5)):
            i = key.data
            if i is None:
                if not sys.stdin.readline():
                    print("DONE " + json.dumps({"opened": opened, "open_errors": open_errors, "answers": answers}),
                          flush=True)
                    for s in socks:
                        if s is not None:
                            s.close()
                    return
                continue
            s = socks[i]
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
                _count(answers, "reset")
            else:
                _count(answers, _status(data))
            sel.unregister(s)
            s.close()
            socks[i] = None


def probe(port: int, count: int, interval_s: float, timeout_s: float, duration_s: float) -> dict:
    """``count`` new clients asking ``GET /health`` in turn, for at most ``duration_s`` seconds (see
    the module docstring)."""
    lat_us, failures = [], {}
    request = b"GET /health HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
    deadline = time.monotonic() + duration_s
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        try:
            with socket.create_connection((HOST, port), timeout=timeout_s) as s:
                s.sendall(request)
                out = b""
                while piece := s.recv(65536):
                    out += piece
            status = _status(out)
        except OSError as exc:
            status = type(exc).__name__
        lat_us.append(int((time.perf_counter() - t0) * 1e6))
        if status != "200":
            _count(failures, status)
        time.sleep(max(0.0, interval_s - (time.perf_counter() - t0)))
    return {"lat_us": lat_us, "failures": failures}


def upload(port: int, n: int, mib: int, timeout_s: float) -> dict:
    """``n`` unauthenticated uploads of ``mib`` MiB at once (see the module docstring)."""
    sel = selectors.DefaultSelector()
    size = mib << 20
    head = (b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (port, size))  # a Host shunt answers: refused by the key check
    left = {}
    t0 = time.monotonic()
    for i in range(n):
        s = _open(port)
        left[s] = [head, size]  # head bytes still to send, body bytes still to send
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
    statuses: dict[str, int] = {}
    taken = 0
    deadline = t0 + timeout_s
    while left and time.monotonic() < deadline:
        for key, mask in sel.select(1.0):
            s = key.fileobj
            if s not in left:
                continue
            state = left[s]
            done = None
            if mask & selectors.EVENT_READ:
                try:
                    done = _status(s.recv(65536))
                except BlockingIOError:
                    pass
                except OSError:
                    done = "reset"
            elif mask & selectors.EVENT_WRITE:
                try:
                    if state[0]:
                        state[0] = state[0][s.send(state[0]):]
                    elif state[1]:
                        k = s.send(UPLOAD_PIECE[:min(len(UPLOAD_PIECE), state[1])])
                        state[1] -= k
                        taken += k
                        if not state[1]:
                            sel.modify(s, selectors.EVENT_READ, key.data)
                except BlockingIOError:
                    pass
                except OSError:
                    done = "reset"
            if done is not None:
                _count(statuses, done)
                sel.unregister(s)
                s.close()
                del left[s]
    for s in left:
        _count(statuses, "timeout")
        s.close()
    return {"n": n, "mib": mib, "statuses": statuses, "body_bytes_sent": taken, "s": round(time.monotonic() - t0, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("drip", help="dripping connections; prints READY, then DONE when stdin closes")
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--n", type=int, default=5000, help="connections to keep open")
    d.add_argument("--every", type=float, default=3.0, help="seconds between two bytes of one connection")
    pr = sub.add_parser("probe", help="new clients asking /health in turn; prints one JSON line")
    pr.add_argument("--port", type=int, required=True)
    pr.add_argument("--count", type=int, default=500)
    pr.add_argument("--interval", type=float, default=0.02, help="seconds from one client's start to the next's")
    pr.add_argument("--timeout", type=float, default=10.0, help="a client's socket timeout, seconds")
    pr.add_argument("--duration", type=float, default=120.0, help="stop probing after this many seconds")
    u = sub.add_parser("upload", help="unauthenticated uploads at once; prints DONE")
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--n", type=int, default=60)
    u.add_argument("--mib", type=int, default=31, help="body size of each, MiB")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up on the rest")
    args = p.parse_args(argv)
    if args.mode == "drip":
        drip(args.port, args.n, args.every)
    elif args.mode == "probe":
        print(json.dumps(probe(args.port, args.count, args.interval, args.timeout, args.duration)))
    else:
        print("DONE " + json.dumps(upload(args.port, args.n, args.mib, args.timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
