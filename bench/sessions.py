#!/usr/bin/env python3
"""Routing cost with a full session table, in-process (no sockets): new sessions vs bound ones.

With 20,000 live sessions on three accounts under ``least-utilization``, it times ``Pool.route`` for
N new sessions (each evicts the least recently used binding) and N requests of a bound session,
and the size of the ``state.json`` document. Before per-account counts were kept incrementally, a new
session walked the whole table to count active sessions per account.

    python bench/sessions.py              # 20,000 sessions, 5,000 routes of each kind
    python bench/sessions.py --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from shunt_lib.config import AccountConfig  # noqa: E402  (the repository root is now importable)
from shunt_lib.sessions import id_key  # noqa: E402
from shunt_lib.state import Pool  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20000, help="live sessions before timing (default 20000)")
    ap.add_argument("--n", type=int, default=5000, help="routes timed per kind (default 5000)")
    args = ap.parse_args(argv)
    now = time.time()
    pool = Pool([AccountConfig(n) for n in "abc"], strategy="least-utilization", session_ttl_s=3600,
                max_sessions=args.sessions)
    for i in range(args.sessions):
        pool.route(id_key(f"warm-{i}"), frozenset(), now)
    keys = [id_key(f"new-{i}") for i in range(args.n)]
    t0 = time.perf_counter()
    for k in keys:
        pool.route(k, frozenset(), now)
    new_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.n):
        pool.route(keys[-1], frozenset(), now)
    bound_s = time.perf_counter() - t0
    size = len(json.dumps(pool.to_json(now), separators=(",", ":")))
    print(f"{args.sessions} live sessions: new session {args.n / new_s:,.0f} routes/s, "
          f"bound session {args.n / bound_s:,.0f} routes/s, state.json {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
