#!/usr/bin/env python3
"""Instructions per request spent by shunt, counted by callgrind: a figure a busy machine cannot move.

Wall-clock figures on a shared VM swing with other tenants' load (see the CPU steal in
docs/benchmarks.md); instruction counts do not. For each checkout and each request kind (the small
request and the recorded Claude Code one), this starts ``shunt serve`` under
``valgrind --tool=callgrind --separate-threads=yes`` in front of ``fake_upstream.py``, warms it up,
zeroes the counters, sends N requests on one keep-alive connection with ``loadgen.py`` and dumps the
counters. The figure is the instructions of the connection's handler thread (which does all of a
request's work but the state writer's) divided by N: the last thread started, since the measured
connection is opened after the counters are zeroed. (Not the busiest thread: under callgrind the
state writer's periodic JSON encoding of state.json can cost more than all the requests.)

    python bench/instructions.py                          # this checkout, 300 requests per kind
    python bench/instructions.py --against ../old-shunt   # and another checkout, side by side
    python bench/instructions.py --write-doc              # also put the table in docs/benchmarks.md

Needs valgrind. Takes a few minutes (shunt runs about 50 times slower under callgrind).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from shunt_lib.homes import write_home  # noqa: E402  (the repository root is now importable)

FIXTURE = os.path.join(REPO, "tests", "fixtures", "claude-code-2.1.328-turn1.json")
KINDS = ("small", "claude-code")
LISTENING = re.compile(r"listening on http://\S+:(\d+)")
BEGIN, END = "<!-- instructions:begin -->", "<!-- instructions:end -->"  # as report.py keeps them


def count(checkout: str, kind: str, fake_url: str, requests: int, tmp: str, env: dict) -> float:
    """Instructions per request of ``checkout``'s shunt for ``kind`` (thousands)."""
    home = os.path.join(tmp, f"home-{os.getpid()}-{kind}-{abs(hash(checkout))}")
    write_home(home, fake_url, [("a", "oauth"), ("b", "oauth")], server={"usage_poll_s": 0})
    out = os.path.join(tmp, f"cg-{kind}-{abs(hash(checkout))}")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
                             sys.executable, "shunt.py", "serve", "--port", "0"], cwd=checkout,
                            env=dict(env, SHUNT_HOME=home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    for line in proc.stderr:
        m = LISTENING.search(line)
        if m:
            port = int(m[1])
            break
    if port is None:
        raise SystemExit(f"shunt in {checkout} did not start under valgrind")
    drain = threading.Thread(target=proc.stderr.read, daemon=True)  # keep its log flowing
    drain.start()
    load = [sys.executable, os.path.join(HERE, "loadgen.py"), "closed", "--port", str(port), "--request", kind,
            "--fixture", FIXTURE, "--conc", "1", "--duration", "3600"]
    subprocess.run(load + ["--count", "50", "--warmup", "20"], check=True, capture_output=True, env=env)
    subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
    subprocess.run(load + ["--count", str(requests), "--warmup", "0"], check=True, capture_output=True, env=env)
    subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(300)
    handler = 0
    # the dump: one file per thread, numbered in the order the threads started; the newest is the handler
    for path in sorted(glob.glob(out + ".1-*"), key=lambda p: int(p.rsplit("-", 1)[1])):
        with open(path) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    handler = int(line.split()[1]) or handler
                    break
    return handler / requests / 1000


def table(rows: dict[str, dict[str, float]], requests: int) -> str:
    labels = list(rows)
    head = ["request"] + [f"{label} (k instructions / request)" for label in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind in KINDS:
        lines.append(f"| {kind} | " + " | ".join(f"{rows[label][kind]:.0f}" for label in labels) + " |")
    lines.append("| Claude Code minus small | " + " | ".join(
        f"{rows[label]['claude-code'] - rows[label]['small']:.0f}" for label in labels) + " |")
    return "\n".join(lines) + f"\n\n({requests} requests per kind and checkout, after 70 of warm-up.)"


def write_doc(text: str, path: str) -> None:
    """Put ``text`` between the instruction markers of ``path`` (appended if they are missing)."""
    with open(path) as f:
        doc = f.read()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300, help="requests counted per kind and checkout")
    p.add_argument("--against", metavar="DIR", help="another checkout to count side by side ('before')")
    p.add_argument("--write-doc", action="store_true", help="put the table in docs/benchmarks.md")
    args = p.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    checkouts = ([("before", os.path.abspath(args.against))] if args.against else []) + [("after", REPO)]
    with tempfile.TemporaryDirectory(prefix="shunt-instr-") as tmp:
        fake = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_upstream.py"), "--max-life", "3600"],
                                stdout=subprocess.PIPE, text=True, env=dict(env, PYTHONPATH=REPO))
        try:
            url = f"http://127.0.0.1:{int(fake.stdout.readline().split()[1])}"
            rows = {label: {kind: count(d, kind, url, args.requests, tmp, env) for kind in KINDS}
                    for label, d in checkouts}
        finally:
            fake.terminate()
            fake.wait(10)
    text = "## Instructions per request\n\nCounted by `python bench/instructions.py" + (
        " --against DIR" if args.against else "") + "` (callgrind, the handler thread):\n\n" + table(rows, args.requests)
    print(text)
    if args.write_doc:
        write_doc(text, os.path.join(REPO, "docs", "benchmarks.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
