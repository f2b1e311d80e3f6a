#!/usr/bin/env python3
"""shunt's performance benchmark: shunt vs. the same fake upstream reached directly, in one run.

Run from the repository root::

    python bench/bench.py                        # full run (a few minutes)
    python bench/bench.py --quick                # fewer rounds and samples
    python bench/bench.py --write-doc            # also (re)write docs/benchmarks.md
    python bench/bench.py --against ../old-shunt # also measure another checkout's shunt ("before")
    python bench/bench.py --only hostile         # metrics 6 and 7 only: slow clients, unauthenticated uploads

This file only orchestrates: it starts ``fake_upstream.py``, one shunt (two with ``--against``) and
one ``loadgen.py`` per measured run (``hostile.py`` and a shunt of their own for the hostile clients),
then hands the samples to ``report.py``. The method, the
targets and the latest figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import report

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from shunt_lib.homes import write_home  # noqa: E402  (the repository root is now importable)

HOST = "127.0.0.1"
FIXTURE = os.path.join(REPO, "tests", "fixtures", "claude-code-2.1.328-turn1.json")
LISTENING = re.compile(rb"listening on http://\S+:(\d+)")
LOG_COPY_INTERVAL_S = 0.05


def raise_nofile(want: int = 8192) -> int:
    """Raise this process's open-files limit (the children inherit it). :returns: the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _proc_status(pid: int) -> dict:
    """``VmRSS`` / ``VmHWM`` (KiB) and ``Threads`` of ``pid``."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def _cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` (utime, stime from ``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _cpu_ticks() -> tuple[int, int]:
    """Machine-wide steal and total CPU time since boot, in clock ticks (first line of ``/proc/stat``)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return ticks[7] if len(ticks) > 7 else 0, sum(ticks[:8])


def _http(port: int, method: str, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class LogCopier(threading.Thread):
    """Copies a child's stderr pipe to a file and notes the port of its ``listening on`` line.

    Until that line it reads as bytes arrive; after it, every :data:`LOG_COPY_INTERVAL_S` seconds
    (shunt writes a line per request: a wake-up per line would compete with the measured processes).
    """

    def __init__(self, pipe, path: str):
        super().__init__(daemon=True, name="log-copier")
        self.fd, self.path = pipe.fileno(), path
        self.port: int | None = None
        self.found = threading.Event()  # set once the port is known or the pipe has closed
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, 1 << 20)  # room for ~20 s of access log at c=8
        except (AttributeError, OSError):
            pass

    def run(self) -> None:
        seen = b""
        with open(self.path, "wb", buffering=0) as log:
            while data := os.read(self.fd, 1 << 20):
                log.write(data)
                if self.port is None:
                    seen = (seen + data)[-8192:]
                    m = LISTENING.search(seen)
                    if m:
                        self.port = int(m[1])
                        self.found.set()
                else:
                    time.sleep(LOG_COPY_INTERVAL_S)
        self.found.set()


@dataclasses.dataclass
class Target:
    """Something to measure: ``direct`` (the fake), ``shunt`` or ``before``. ``pid``: the Python process
    serving a shunt (None for the fake)."""

    label: str
    port: int
    pid: int | None = None
    proc: subprocess.Popen | None = None
    log: LogCopier | None = None


class Bench:
    """The processes of one run and the scenarios measured on them."""

    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="shunt-bench-")
        self.procs: list[subprocess.Popen] = []
        self.targets: list[Target] = []
        self.env = {k: v for k, v in os.environ.items() if k.lower() not in
                    ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}

    # -- processes ----------------------------------------------------------------------------
    def start(self) -> None:
        self.start_fake()
        self.targets.append(self.start_shunt("shunt", self.args.shunt_dir, self.args.py_spy))
        if self.args.against:
            self.targets.append(self.start_shunt("before", self.args.against, None))

    def start_fake(self) -> Target:
        """Start ``fake_upstream.py`` (the ``direct`` target). :returns: its target."""
        pythonpath = os.pathsep.join(filter(None, (REPO, self.env.get("PYTHONPATH"))))  # shunt_lib's builders
        fake = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_upstream.py"), "--hold-timeout", "60",
                                 "--max-life", "1800"], stdout=subprocess.PIPE, text=True,
                                env=dict(self.env, PYTHONPATH=pythonpath))
        self.procs.append(fake)
        line = fake.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit("fake upstream did not start")
        self.fake = Target("direct", int(line.split()[1]))
        self.targets.append(self.fake)
        return self.fake

    def start_shunt(self, label: str, checkout: str, py_spy: str | None, server: dict | None = None,
                    accounts: list | None = None, models: dict | None = None, cluster: dict | None = None,
                    upstream_url: str | None = None) -> Target:
        """Start ``shunt.py serve`` from ``checkout`` in front of the fake (or ``upstream_url``), in a home
        of its own with ``accounts`` (``write_home``'s; default two OAuth accounts), more ``[server]``
        keys, a ``[models]`` and a ``[cluster]`` table; wait until it answers ``/health``. :returns: its
        target (not added to :attr:`targets`)."""
        home = os.path.join(self.tmp, "home-" + label)
        write_home(home, upstream_url or f"http://{HOST}:{self.fake.port}", accounts or [("a", "oauth"), ("b", "oauth")],
                   server={"usage_poll_s": 0, **(server or {})}, models=models, cluster=cluster)
        cmd = [sys.executable, "shunt.py", "serve", "--port", "0"]
        if py_spy:
            fmt = "flamegraph" if py_spy.endswith(".svg") else "speedscope" if py_spy.endswith(".json") else "raw"
            cmd = ["py-spy", "record", "--nonblocking", "--threads", "--gil", "--idle", "--rate", "1000", "-f", fmt,
                   "-o", os.path.abspath(py_spy), "--"] + cmd
        proc = subprocess.Popen(cmd, cwd=checkout, env=dict(self.env, SHUNT_HOME=home), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        log = LogCopier(proc.stderr, os.path.join(self.tmp, f"{label}.log"))
        log.start()
        if not log.found.wait(20) or log.port is None:
            raise SystemExit(f"shunt ({label}) did not log its port; see {log.path}")
        deadline = time.monotonic() + 20
        while True:
            try:
                if _http(log.port, "GET", "/health", 1.0)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"shunt ({label}) did not answer /health; see {log.path}")
            time.sleep(0.05)
        return Target(label, log.port, self._python_pid(proc, bool(py_spy)), proc, log)

    @staticmethod
    def _python_pid(proc: subprocess.Popen, wrapped: bool) -> int:
        """The pid of the Python process serving shunt (a child of the profiler when wrapped)."""
        for _ in range(50 if wrapped else 0):
            try:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    kids = f.read().split()
                if kids:
                    return int(kids[0])
            except OSError:
                pass
            time.sleep(0.1)
        return proc.pid

    def stop(self) -> None:
        shunts = {t.proc for t in self.targets if t.proc}
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT if p in shunts else signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for t in self.targets:
            if t.log:
                t.log.join(5)
        if self.args.keep_tmp:
            print(f"temp files (shunt logs, homes) kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- measuring ----------------------------------------------------------------------------
    def load(self, t: Target, kinds: tuple[str, ...], *, conc: int, count: int, duration_s: float,
             warmup: int) -> dict[str, report.Run]:
        """One load generator run against ``t``; several ``kinds`` are sent in turn on each connection.
        :returns: kind -> its samples."""
        cmd = [sys.executable, os.path.join(HERE, "loadgen.py"), "closed", "--port", str(t.port), "--request",
               ",".join(kinds), "--fixture", FIXTURE, "--conc", str(conc), "--count", str(count), "--duration",
               str(duration_s), "--warmup", str(warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 90, env=self.env)
        if out.returncode != 0:
            raise SystemExit(f"load generator failed against {t.label}: {out.stderr.strip()[-2000:]}")
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        return {k: report.Run(**r) for k, r in doc["by_kind"].items()} if "by_kind" in doc else {kinds[0]: report.Run(**doc)}

    def interleaved(self, rounds: int, kinds: tuple[str, ...], *, conc: int, **kw) -> dict[str, report.Scenario]:
        """``rounds`` rounds; in each, every target runs once, with the request ``kinds`` in turn on each
        connection (one after the other, so they share the machine's state of the moment). The order
        of the targets rotates by one each round. :returns: kind -> scenario."""
        out = {k: {t.label: report.Side() for t in self.targets} for k in kinds}
        cpu: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(rounds):
            shift = r % len(self.targets)
            for t in self.targets[shift:] + self.targets[:shift]:
                before = _cpu_s(t.pid) if t.pid else (0.0, 0.0)
                runs = self.load(t, kinds if r % 2 == 0 else kinds[::-1], conc=conc, **kw)
                after = _cpu_s(t.pid) if t.pid else (0.0, 0.0)
                n = sum(len(run.lat_us) for run in runs.values()) + kw["warmup"] * conc
                for kind, run in runs.items():
                    out[kind][t.label].runs.append(run)
                    if t.pid:  # one process served every kind: its CPU is shared out per request
                        cpu.setdefault((kind, t.label), []).append(
                            ((after[0] - before[0]) / n * 1e6, (after[1] - before[1]) / n * 1e6))
        for (kind, label), samples in cpu.items():
            out[kind][label].cpu = report.Cpu(statistics.median(u for u, _ in samples),
                                              statistics.median(s for _, s in samples))
        return out

    def streams(self, t: Target, n: int) -> report.Streams:
        """Open ``n`` held streams on ``t``, read shunt's memory while they are open, then release them."""
        before = _proc_status(t.pid) if t.pid else {}
        cmd = [sys.executable, os.path.join(HERE, "loadgen.py"), "held", "--port", str(t.port), "--n", str(n),
               "--timeout", "40"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=self.env)
        samples = []
        try:
            line = p.stdout.readline()
            if not line.startswith("READY "):
                raise SystemExit(f"stream test against {t.label}: load generator failed")
            ready = json.loads(line[6:])
            for _ in range(5 if t.pid else 0):
                samples.append(_proc_status(t.pid))
                time.sleep(0.1)
            released = int(_http(self.fake.port, "POST", "/bench/release", 10.0)[1] or 0)
            line = p.stdout.readline()
            done = json.loads(line[5:]) if line.startswith("DONE ") else {"completed": 0, "errors": n}
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        mem = {}
        if t.pid:
            mem = {"rss_before_mb": before["VmRSS"] / 1024, "rss_open_mb": max(s["VmRSS"] for s in samples) / 1024,
                   "threads_open": max(s["Threads"] for s in samples),
                   "rss_after_mb": _proc_status(t.pid)["VmRSS"] / 1024}
        return report.Streams(ready["opened"], ready["started"], ready["all_started_s"], released, done["completed"],
                              done["errors"], **mem)


    def hostile(self, t: Target) -> tuple[report.Uploads, report.SlowClients]:
        """Metrics 7 then 6 on a shunt of their own, from ``t``'s checkout, with a ``remote_key``."""
        checkout = self.args.shunt_dir if t.label == "shunt" else self.args.against
        h = self.start_shunt(t.label + "-hostile", checkout, None, {"remote_key": "bench-remote-key"})
        try:
            rss_before = _proc_status(h.pid)["VmRSS"] / 1024
            cmd = [sys.executable, os.path.join(HERE, "hostile.py"), "upload", "--port", str(h.port),
                   "--n", str(self.args.uploads), "--mib", str(report.TARGET_UPLOAD_MIB)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=self.env)
            if not out.stdout.startswith("DONE "):
                raise SystemExit(f"upload test against {t.label} failed: {out.stderr.strip()[-2000:]}")
            up = json.loads(out.stdout[5:])
            uploads = report.Uploads(up["n"], up["mib"], up["statuses"], up["body_bytes_sent"] / (1 << 20), up["s"],
                                     rss_before, _proc_status(h.pid)["VmHWM"] / 1024)
            return uploads, self._slow_clients(h)
        finally:
            h.proc.send_signal(signal.SIGINT)
            try:
                h.proc.wait(30)
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait(5)
            h.log.join(5)

    def _slow_clients(self, h: Target) -> report.SlowClients:
        n = self.args.drippers
        drip = subprocess.Popen([sys.executable, os.path.join(HERE, "hostile.py"), "drip", "--port", str(h.port),
                                 "--n", str(n), "--every", str(report.DRIP_EVERY_S)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=self.env)
        threads = [0]
        stop = threading.Event()

        def watch_threads() -> None:
            while not stop.wait(0.2):
                try:
                    threads[0] = max(threads[0], _proc_status(h.pid)["Threads"])
                except OSError:
                    return

        watcher = threading.Thread(target=watch_threads, daemon=True)
        watcher.start()
        try:
            if not drip.stdout.readline().startswith("READY "):
                raise SystemExit("slow-client test: the drippers did not start")
            time.sleep(12.0)  # past one header_timeout_s: drippers are being cut off and reopened
            cmd = [sys.executable, os.path.join(HERE, "hostile.py"), "probe", "--port", str(h.port), "--count",
                   str(self.args.probes), "--interval", "0.02", "--duration", "120"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=200, env=self.env)
            if out.returncode != 0:
                raise SystemExit(f"slow-client probe failed: {out.stderr.strip()[-2000:]}")
            probe = json.loads(out.stdout)
            drip.stdin.close()
            line = drip.stdout.readline()
            done = json.loads(line[5:]) if line.startswith("DONE ") else {"opened": 0, "answers": {}}
            drip.wait(30)
        finally:
            stop.set()
            watcher.join()
            if drip.poll() is None:
                drip.kill()
                drip.wait()
        return report.SlowClients(n, done["opened"], done["answers"], probe["lat_us"], probe["failures"], threads[0])


def run(b: Bench, args, res: report.Results) -> None:
    """Measure the scenarios asked for into ``res``."""
    c1 = {"conc": 1, "count": args.samples, "duration_s": 30.0, "warmup": args.warmup}
    if args.only in (None, "latency"):
        print("latency, c=1 ...", flush=True)
        res.latency = b.interleaved(args.rounds, ("small",), **c1)["small"]
        print("latency, c=1, the Claude Code request and the small one in turn ...", flush=True)
        both = b.interleaved(args.rounds, ("small", "claude-code"), **c1)
        res.large, res.large_small = both["claude-code"], both["small"]
    if args.only in (None, "throughput"):
        print("throughput, c=8 ...", flush=True)
        res.throughput = b.interleaved(args.tp_rounds, ("small",), conc=8, count=10 ** 9,
                                       duration_s=args.tp_seconds, warmup=args.warmup // 4)["small"]
    if args.only in (None, "ttfb"):
        print("streaming first byte, c=1 ...", flush=True)
        res.ttfb = b.interleaved(args.rounds, ("stream",), **c1)["stream"]
    if args.only in (None, "streams"):
        print(f"{report.TARGET_STREAMS} held streams ...", flush=True)
        res.streams = {t.label: b.streams(t, report.TARGET_STREAMS) for t in b.targets}
    if args.only in (None, "hostile"):
        print(f"hostile clients: {args.uploads} unauthenticated uploads, then {args.drippers} drippers ...", flush=True)
        res.uploads, res.slow_clients = {}, {}
        for t in b.targets:
            if t.pid:
                res.uploads[t.label], res.slow_clients[t.label] = b.hostile(t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    p.add_argument("--write-doc", action="store_true", help="(re)write docs/benchmarks.md with the results")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (shunt logs) for inspection")
    p.add_argument("--json", metavar="PATH", help="also write the raw results (samples in us) as JSON")
    p.add_argument("--py-spy", metavar="OUT", help="run the shunt under test under `py-spy record` writing OUT"
                   " (.svg flamegraph, .json speedscope, else collapsed stacks)")
    p.add_argument("--shunt-dir", default=REPO, help="checkout whose shunt.py to benchmark (default: this repo)")
    p.add_argument("--against", metavar="DIR", help="another checkout whose shunt.py is measured in the same rounds"
                   " (shown as 'before'; the --shunt-dir one is 'after')")
    p.add_argument("--label", nargs=2, metavar=("BEFORE", "AFTER"), help="how docs/benchmarks.md names the two"
                   " checkouts (default: their directory names)")
    p.add_argument("--only", choices=("latency", "throughput", "ttfb", "streams", "hostile"),
                   help="run one scenario only (latency: metrics 1 and 5, measured in the same rounds; hostile:"
                   " metrics 6 and 7)")
    p.add_argument("--drippers", type=int, default=report.TARGET_DRIPPERS,
                   help="slow connections for metric 6 (fewer only to try the scenario: the target needs the default)")
    p.add_argument("--probes", type=int, default=500, help="new clients measured during metric 6")
    p.add_argument("--uploads", type=int, default=report.TARGET_UPLOADS,
                   help="unauthenticated uploads for metric 7 (fewer only to try the scenario)")
    args = p.parse_args(argv)
    if args.only and args.write_doc:
        p.error("--write-doc needs a full run (no --only)")
    for d in filter(None, (args.shunt_dir, args.against)):
        if not os.path.isfile(os.path.join(d, "shunt.py")):
            p.error(f"no shunt.py in {d}")
    args.shunt_dir = os.path.abspath(args.shunt_dir)
    args.against = args.against and os.path.abspath(args.against)
    if args.quick:
        args.rounds, args.samples, args.warmup, args.tp_rounds, args.tp_seconds = 4, 1000, 300, 2, 2.0
    else:
        args.rounds, args.samples, args.warmup, args.tp_rounds, args.tp_seconds = 6, 2500, 500, 3, 4.0
    need = max(2 * report.TARGET_STREAMS, args.drippers + 1000) + 200  # drippers, and shunt's side of them
    nofile = raise_nofile(max(8192, need))
    if nofile < need:
        print(f"warning: open-files limit is {nofile}; the stream and slow-client tests need ~{need}")
    with open("/proc/loadavg") as f:
        loadavg = " ".join(f.read().split()[:3])
    settings = {"mode": "--quick" if args.quick else "default", "rounds": args.rounds, "samples": args.samples,
                "warmup": args.warmup, "tp_rounds": args.tp_rounds, "tp_seconds": args.tp_seconds,
                "shunt_dir": args.shunt_dir, "against": args.against,
                "against_label": args.label[0] if args.label else f"`{os.path.basename(args.against or '')}`",
                "shunt_label": args.label[1] if args.label else f"`{os.path.basename(args.shunt_dir)}`"}
    res = report.Results(["before", "shunt"] if args.against else ["shunt"], settings, loadavg)
    b = Bench(args)
    t0, ticks0 = time.monotonic(), _cpu_ticks()
    try:
        b.start()
        print(", ".join(f"{t.label} on :{t.port}" + (f" (pid {t.pid})" if t.pid else "") for t in b.targets)
              + f"; nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, load average {loadavg}",
              flush=True)
        run(b, args, res)
    finally:
        b.stop()
    res.wall_s = time.monotonic() - t0
    ticks1 = _cpu_ticks()
    res.steal_pct = 100 * (ticks1[0] - ticks0[0]) / max(1, ticks1[1] - ticks0[1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.plain(res), f)
    print()
    print(report.render_table(res))
    print()
    print("\n".join(report.details(res)))
    print(f"\n(run took {res.wall_s:.0f} s; CPU time stolen by the hypervisor: {res.steal_pct:.0f}%)")
    if args.write_doc:
        print("wrote " + report.write_doc(res, os.path.join(REPO, "docs", "benchmarks.md")))
    return 0 if report.verdict(res) else 1


if __name__ == "__main__":
    sys.exit(main())
