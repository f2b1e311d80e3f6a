"""The benchmark's results, their evaluation against the targets, and ``docs/benchmarks.md``.

Records hold raw samples (one :class:`Run` per round and target); figures derived from them are in
milliseconds unless a name says otherwise (``_us`` microseconds, ``_s`` seconds, ``_mb`` MiB).
Targets are keyed ``direct`` (the fake upstream itself), ``shunt`` (the checkout under test) and,
with ``--against``, ``before`` (another checkout). The method is described once, in :data:`METHOD`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import statistics
from typing import NamedTuple

TARGET_ADDED_P50_MS = 0.5
TARGET_RPS_C8 = 1000.0
TARGET_TTFB_OVERHEAD_MS = 1.0
TARGET_STREAMS = 500
TARGET_STREAMS_RSS_MB = 100.0
TARGET_LARGE_EXTRA_P50_MS = 0.2
TARGET_DRIPPERS = 5000  # slow clients dripping a byte every DRIP_EVERY_S ...
DRIP_EVERY_S = 3.0
TARGET_SLOW_P99_MS = 50.0  # ... while new clients' GET /health p99 stays under this
TARGET_UPLOADS = 60  # unauthenticated uploads at once ...
TARGET_UPLOAD_MIB = 31
TARGET_UPLOADS_RSS_MB = 100.0  # ... while shunt's peak RSS stays under this
INSTRUCTIONS_BEGIN, INSTRUCTIONS_END = "<!-- instructions:begin -->", "<!-- instructions:end -->"
NOTES_BEGIN, NOTES_END = "<!-- notes:begin -->", "<!-- notes:end -->"  # hand-written reading of the figures

METHOD = """\
## Method

Three kinds of process, so none shares a GIL with another; on a 2-core machine the fake upstream and
the load generator share the cores with shunt, as they would in any local test:

* **fake upstream** (`bench/fake_upstream.py`): one thread, epoll, HTTP/1.1 keep-alive, TCP_NODELAY.
  It reads each request's whole body, then answers with canned bytes built by shunt's own helpers
  (`shunt_lib.simulator`, `shunt_lib.sse`, `shunt_lib.wire`) that carry the OAuth rate-limit headers
  (`anthropic-ratelimit-unified-*`): a ~210-byte JSON message, a 7-event chunked SSE stream
  (`"stream":true`), or for `?hold=1` the SSE head and `message_start`, then nothing until
  `POST /bench/release` (or 60 s) finishes the stream;
* **shunt**: `python shunt.py serve --port 0` with `SHUNT_HOME` in a temp dir written by
  `shunt_lib.homes.write_home` (`upstream_url` = the fake, two OAuth accounts, usage polling off).
  Its port is read from its `listening on http://HOST:PORT` log line; the rest of its stderr goes to
  a temp file, copied in blocks every 50 ms (no wake-up per log line); measuring starts once
  `GET /health` answers. With `--against DIR`, a second shunt from another checkout ("before") is
  started the same way in front of the same fake and measured in the same rounds as the first ("after");
* **load generator** (`bench/loadgen.py`, one process per measured run): one thread, epoll, one
  keep-alive connection per concurrent client, request bytes built before the clock starts. The
  small request is a ~90-byte body with an `x-claude-code-session-id` header (shunt's fast path: it
  does not parse the body). The Claude Code request is `tests/fixtures/claude-code-2.1.328-turn1.json`:
  its path, its headers but host/content-length/connection (18, the session header included), and
  its body as `json.dumps` writes it, with `"stream": false` so that it gets the same answer as the
  small one. Same code and same bytes for the direct and the via-shunt runs.

Each c=1 figure: warm-up requests, then rounds in which every target (direct, shunt, and the
"before" shunt if any) is measured in turn, the order rotating from round to round; percentiles
(`statistics.quantiles`, inclusive method) are over all measured samples of all rounds, and the
per-round differences are shown to judge the noise. Latency = request sent to last response byte;
first byte = request sent to the first byte of the response body (the first SSE chunk). Metric 5 has
rounds of its own, in which each connection sends the Claude Code request and the small one in turn,
so that both meet the same state of the machine; the figure is shunt's added p50 for the Claude Code
request minus its added p50 for the small one of those same runs: what a real request's size and
headers add to shunt's own cost. Throughput: closed loop with
8 connections for a fixed time per round, median of rounds. Streams: 500 connections each open a
held stream; once every one has received `message_start`, shunt's `VmRSS` is read from
`/proc/<pid>/status` five times (the maximum is reported), then the fake finishes all streams and
every one must complete. Shunt CPU per request comes from `/proc/<pid>/stat` (utime+stime) across
each shunt run (warm-up included), median of rounds. CPU steal is the hypervisor's share of the
machine's CPU time during the run (`/proc/stat`); with more than a few percent, absolute figures are
inflated and only the per-round differences within one run are comparable.

Hostile clients (`bench/hostile.py`; metrics 6 and 7) meet a shunt of their own, started for them
with a `remote_key` and otherwise the defaults (`max_connections` 1000, `header_timeout_s` 10).
Metric 7 first: 60 connections at once each send a `POST /v1/messages` head without the key and
then a 31 MiB body for as long as shunt reads it; the figure is shunt's peak RSS (`VmHWM` of the
fresh process). Metric 6: 5,000 connections each send one more byte of an endless request head every
3 s (a connection shunt answers or closes is reopened at its next tick); once all have been opened
and 12 s more have passed (past one `header_timeout_s`), 500 new clients, one every 20 ms, each open
a connection and ask `GET /health`; the figure is their p99 from connect to the end of the answer,
and any answer other than 200 counts as a failure.

To judge a before/after difference, run the same checkout against itself first (`--against .`): on
a shared machine that A/A run differs by as much as a tenth of a millisecond, and so does any
difference smaller than it. `bench/instructions.py` counts the instructions shunt spends per request
under callgrind, which other load does not change (section below).
"""


class Percentiles(NamedTuple):
    """Percentiles of latency samples, milliseconds, over ``n`` samples (NaN below two samples)."""

    n: int
    p50: float
    p90: float
    p99: float

    @classmethod
    def of_us(cls, samples_us: list[int]) -> Percentiles:
        """From samples in microseconds."""
        if len(samples_us) < 2:
            return cls(len(samples_us), math.nan, math.nan, math.nan)
        q = statistics.quantiles(samples_us, n=100, method="inclusive")
        return cls(len(samples_us), q[49] / 1000, q[89] / 1000, q[98] / 1000)

    def trio(self) -> str:
        """``p50/p90/p99`` in ms, three decimals."""
        return f"{self.p50:.3f}/{self.p90:.3f}/{self.p99:.3f}"


class Run(NamedTuple):
    """One load-generator run: samples in microseconds (request sent to last byte / to first body
    byte), requests per second over the measured part, non-200 answers, request size in bytes."""

    lat_us: list[int]
    ttfb_us: list[int]
    rps: float
    errors: int
    request_bytes: int


class Cpu(NamedTuple):
    """A shunt's CPU time per request, microseconds (median over its runs)."""

    user_us: float
    sys_us: float

    @property
    def total_us(self) -> float:
        return self.user_us + self.sys_us

    def text(self) -> str:
        """E.g. ``513 us/request (422 user + 92 sys)``."""
        return f"{self.total_us:.0f} us/request ({self.user_us:.0f} user + {self.sys_us:.0f} sys)"


@dataclasses.dataclass
class Side:
    """One target in one scenario: its runs, one per round, and (for a shunt) its CPU per request."""

    runs: list[Run] = dataclasses.field(default_factory=list)
    cpu: Cpu | None = None

    def pct(self, first_byte: bool = False) -> Percentiles:
        """Percentiles (ms) of the latency, or of the first-byte time, pooled over all rounds."""
        return Percentiles.of_us([x for r in self.runs for x in (r.ttfb_us if first_byte else r.lat_us)])

    def round_p50(self, first_byte: bool = False) -> list[float]:
        """The median of each round, ms (NaN for a round without samples)."""
        samples = [r.ttfb_us if first_byte else r.lat_us for r in self.runs]
        return [statistics.median(xs) / 1000 if xs else math.nan for xs in samples]

    @property
    def rps(self) -> float:
        """Requests per second: the median over rounds."""
        return statistics.median(r.rps for r in self.runs)

    @property
    def errors(self) -> int:
        """Non-200 answers over all rounds."""
        return sum(r.errors for r in self.runs)


#: A scenario: each target's :class:`Side`, keyed direct / shunt / before.
Scenario = dict[str, Side]


def added_p50(scn: Scenario, who: str, first_byte: bool = False) -> float:
    """``who``'s p50 minus direct's, ms."""
    return scn[who].pct(first_byte).p50 - scn["direct"].pct(first_byte).p50


def round_added(scn: Scenario, who: str, first_byte: bool = False) -> list[float]:
    """``who``'s per-round p50 minus direct's, ms."""
    return [s - d for s, d in zip(scn[who].round_p50(first_byte), scn["direct"].round_p50(first_byte), strict=True)]


class Streams(NamedTuple):
    """The held-streams scenario for one target: counts, times in seconds, shunt's memory in MiB
    (None when measuring the fake directly)."""

    opened: int
    started: int
    all_started_s: float | None
    released: int
    completed: int
    errors: int
    rss_before_mb: float | None = None
    rss_open_mb: float | None = None
    threads_open: int | None = None
    rss_after_mb: float | None = None


class SlowClients(NamedTuple):
    """Metric 6 for one shunt: the drippers (``answers``: shunt's answers to them by status), and the
    new clients' latencies (``lat_us``, microseconds) with their ``failures`` by status."""

    drippers: int
    opened: int
    answers: dict
    lat_us: list
    failures: dict
    threads_max: int | None = None

    def pct(self) -> "Percentiles":
        return Percentiles.of_us(self.lat_us)


class Uploads(NamedTuple):
    """Metric 7 for one shunt: ``statuses`` of the uploads, MiB of body the server took, seconds,
    and shunt's RSS (MiB) before and at its peak."""

    n: int
    mib: int
    statuses: dict
    body_mib_sent: float
    wall_s: float
    rss_before_mb: float
    rss_peak_mb: float


@dataclasses.dataclass
class Results:
    """Everything one run measured; a scenario that was not run is None."""

    shunts: list[str]  # the shunt targets: ["shunt"], or ["before", "shunt"] with --against
    settings: dict  # mode, rounds, samples, warmup, tp_rounds, tp_seconds, shunt_dir, against
    loadavg_start: str
    latency: Scenario | None = None
    large: Scenario | None = None  # the Claude Code request, alternating with the small one on each connection
    large_small: Scenario | None = None  # the small requests of those same runs
    throughput: Scenario | None = None
    ttfb: Scenario | None = None
    streams: dict[str, Streams] | None = None
    slow_clients: dict[str, SlowClients] | None = None  # keyed by shunt target only
    uploads: dict[str, Uploads] | None = None  # keyed by shunt target only
    wall_s: float = 0.0
    steal_pct: float = 0.0  # share of the machine's CPU time taken by the hypervisor during the run

    def name(self, who: str) -> str:
        """The label shown for a target."""
        if who == "direct":
            return "direct"
        return "via shunt" if len(self.shunts) == 1 else {"shunt": "after"}.get(who, who)


def plain(obj):
    """``obj`` as JSON-ready dicts and lists (records become dicts with their field names)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# -- evaluation ----------------------------------------------------------------------------------
class Row(NamedTuple):
    """One metric for one shunt: the direct figure, shunt's, the measured value, the target, pass."""

    metric: str
    direct: str
    value: str
    measured: str
    target: str
    ok: bool


def evaluate(r: Results, who: str) -> list[Row]:
    """The rows for shunt target ``who``, for the scenarios that were run."""
    rows = []
    if r.latency:
        d, s, added = r.latency["direct"].pct(), r.latency[who].pct(), added_p50(r.latency, who)
        rows.append(Row("1. added latency p50, c=1, non-streaming POST /v1/messages", f"{d.p50:.3f} ms",
                        f"{s.p50:.3f} ms", f"{added:+.3f} ms", f"<= {TARGET_ADDED_P50_MS} ms",
                        added <= TARGET_ADDED_P50_MS))
    if r.throughput:
        d, s = r.throughput["direct"].rps, r.throughput[who].rps
        rows.append(Row("2. throughput, c=8, non-streaming", f"{d:.0f} req/s", f"{s:.0f} req/s", f"{s:.0f} req/s",
                        f">= {TARGET_RPS_C8:.0f} req/s", s >= TARGET_RPS_C8))
    if r.ttfb:
        d, s, added = r.ttfb["direct"].pct(True), r.ttfb[who].pct(True), added_p50(r.ttfb, who, True)
        rows.append(Row("3. streaming first-byte overhead p50, c=1", f"{d.p50:.3f} ms", f"{s.p50:.3f} ms",
                        f"{added:+.3f} ms", f"<= {TARGET_TTFB_OVERHEAD_MS} ms", added <= TARGET_TTFB_OVERHEAD_MS))
    if r.streams:
        d, s = r.streams["direct"], r.streams[who]
        ok = s.started == TARGET_STREAMS and s.completed == TARGET_STREAMS and s.rss_open_mb <= TARGET_STREAMS_RSS_MB
        rows.append(Row(f"4. {TARGET_STREAMS} open streams: shunt RSS", f"{d.started}/{TARGET_STREAMS} open",
                        f"{s.started}/{TARGET_STREAMS} open, {s.completed} completed", f"{s.rss_open_mb:.1f} MB",
                        f"<= {TARGET_STREAMS_RSS_MB:.0f} MB, all open", ok))
    if r.large and r.large_small:
        d, s = r.large["direct"].pct(), r.large[who].pct()
        extra = added_p50(r.large, who) - added_p50(r.large_small, who)
        rows.append(Row("5. added latency of a ~90 KB Claude Code request minus added latency of the small one,"
                        " p50, c=1", f"{d.p50:.3f} ms", f"{s.p50:.3f} ms", f"{extra:+.3f} ms",
                        f"<= {TARGET_LARGE_EXTRA_P50_MS} ms", extra <= TARGET_LARGE_EXTRA_P50_MS))
    if r.slow_clients:
        sc = r.slow_clients[who]
        p99 = sc.pct().p99
        ok = p99 <= TARGET_SLOW_P99_MS and not sc.failures and sc.drippers >= TARGET_DRIPPERS
        rows.append(Row(f"6. new clients' GET /health p99 while {sc.drippers} connections drip a byte every"
                        f" {DRIP_EVERY_S:g} s", "-", f"{len(sc.lat_us) - sum(sc.failures.values())}/{len(sc.lat_us)} ok",
                        f"{p99:.1f} ms", f"<= {TARGET_SLOW_P99_MS:.0f} ms, all ok, {TARGET_DRIPPERS} drippers", ok))
    if r.uploads:
        up = r.uploads[who]
        ok = up.rss_peak_mb <= TARGET_UPLOADS_RSS_MB and up.n >= TARGET_UPLOADS
        rows.append(Row(f"7. shunt peak RSS with {up.n} unauthenticated {up.mib} MiB uploads at once", "-",
                        ", ".join(f"{k}: {v}" for k, v in sorted(up.statuses.items())), f"{up.rss_peak_mb:.1f} MB",
                        f"<= {TARGET_UPLOADS_RSS_MB:.0f} MB, {TARGET_UPLOADS} uploads", ok))
    return rows


def verdict(r: Results) -> bool:
    """Whether the shunt under test meets every target measured."""
    return all(row.ok for row in evaluate(r, "shunt"))


def table(r: Results) -> list[list[str]]:
    """Header and rows; with ``--against`` each figure shows before and after."""
    per = {who: evaluate(r, who) for who in r.shunts}
    after = per["shunt"]
    if len(r.shunts) == 1:
        head = ["metric", "direct", "via shunt", "measured", "target", "result"]
        return [head] + [[x.metric, x.direct, x.value, x.measured, x.target, "PASS" if x.ok else "FAIL"]
                         for x in after]
    head = ["metric", "direct", "before", "after", "measured: before -> after", "target", "result: before -> after"]
    rows = [head]
    for b, a in zip(per["before"], after, strict=True):
        rows.append([a.metric, a.direct, b.value, a.value, f"{b.measured} -> {a.measured}", a.target,
                     f"{'PASS' if b.ok else 'FAIL'} -> {'PASS' if a.ok else 'FAIL'}"])
    return rows


def render_table(r: Results) -> str:
    """The table as aligned plain text."""
    cells = table(r)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(xs: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in xs)


def details(r: Results) -> list[str]:
    """One line per scenario with the figures behind the table (times in ms unless marked)."""
    out, names = [], {who: r.name(who) for who in ["direct"] + r.shunts}
    if r.latency:
        lat = r.latency
        d = lat["direct"].pct()
        parts = [f"latency c=1 (ms): direct p50/p90/p99 {d.trio()} (n={d.n})"]
        for who in r.shunts:
            s = lat[who].pct()
            parts.append(f"{names[who]} {s.trio()} (n={s.n}), added p50 per round: {_ms(round_added(lat, who))},"
                         f" CPU {lat[who].cpu.text()}")
        out.append("; ".join(parts))
    if r.large and r.large_small:
        big, small = r.large, r.large_small
        size = big["direct"].runs[0].request_bytes
        parts = [f"Claude Code request ({size} bytes with headers) c=1 (ms): direct p50 {big['direct'].pct().p50:.3f}"
                 f" (small {small['direct'].pct().p50:.3f})"]
        for who in r.shunts:
            extra = [b - s for b, s in zip(round_added(big, who), round_added(small, who), strict=True)]
            parts.append(f"{names[who]} p50 {big[who].pct().p50:.3f} (small {small[who].pct().p50:.3f}), added"
                         f" {added_p50(big, who):+.3f} (small {added_p50(small, who):+.3f}), difference per round:"
                         f" {_ms(extra)}, CPU {big[who].cpu.text()} (the two kinds together)")
        out.append("; ".join(parts))
    if r.throughput:
        tp = r.throughput
        parts = ["throughput c=8 (req/s per round): " + "; ".join(
            f"{names[who]} {', '.join(f'{x.rps:.0f}' for x in tp[who].runs)}" for who in ["direct"] + r.shunts)]
        parts += [f"{names[who]} latency p50/p99 {tp[who].pct().p50:.3f}/{tp[who].pct().p99:.3f} ms"
                  for who in ["direct"] + r.shunts]
        parts += [f"{names[who]} CPU {tp[who].cpu.text()}" for who in r.shunts]
        out.append("; ".join(parts))
    if r.ttfb:
        sse = r.ttfb
        parts = [f"SSE c=1 first byte (ms): direct p50/p90/p99 {sse['direct'].pct(True).trio()},"
                 f" whole stream p50 {sse['direct'].pct().p50:.3f}"]
        for who in r.shunts:
            parts.append(f"{names[who]} {sse[who].pct(True).trio()}, whole stream p50 {sse[who].pct().p50:.3f},"
                         f" added per round: {_ms(round_added(sse, who, True))}")
        out.append("; ".join(parts))
    if r.streams:
        st, d = r.streams, r.streams["direct"]
        for who in r.shunts:
            s = st[who]
            started = f"{s.all_started_s:.2f} s" if s.all_started_s is not None else "never"
            direct_started = f"{d.all_started_s:.2f} s" if d.all_started_s is not None else "never"
            out.append(f"{s.opened} held streams {names[who]}: all message_start received after {started}"
                       f" (direct {direct_started}); shunt RSS idle {s.rss_before_mb:.1f} MB, with streams open"
                       f" {s.rss_open_mb:.1f} MB ({s.threads_open} threads), after {s.rss_after_mb:.1f} MB;"
                       f" completed {s.completed}, errors {s.errors}")
    for who in r.shunts if r.slow_clients else ():
        sc = r.slow_clients[who]
        p = sc.pct()
        out.append(f"slow clients {names[who]}: {sc.drippers} drippers ({sc.opened} connections opened in all; shunt's"
                   f" answers to them {json_counts(sc.answers)}; up to {sc.threads_max} shunt threads); new clients"
                   f" GET /health p50/p90/p99 {p.trio()} ms (n={p.n}), failures {json_counts(sc.failures)}")
    for who in r.shunts if r.uploads else ():
        up = r.uploads[who]
        out.append(f"unauthenticated uploads {names[who]}: {up.n} x {up.mib} MiB, answers {json_counts(up.statuses)},"
                   f" {up.body_mib_sent:.0f} MiB of body sent before the answers (socket buffers included), all done in"
                   f" {up.wall_s:.2f} s; shunt RSS before {up.rss_before_mb:.1f} MB, peak {up.rss_peak_mb:.1f} MB")
    errs = sum(side.errors for scn in (r.latency, r.large, r.large_small, r.throughput, r.ttfb) if scn
               for side in scn.values())
    out.append(f"non-200 answers during the run: {errs}")
    return out


def json_counts(counts: dict) -> str:
    """``{"408": 3}`` as ``408 x3``; ``none`` when empty."""
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"


# -- docs/benchmarks.md ----------------------------------------------------------------------------
def write_doc(r: Results, path: str) -> str:
    """(Re)write the benchmarks page at ``path`` from a full run. :returns: ``path``."""
    s = r.settings
    lines = [
        "# shunt benchmarks",
        "",
        "Produced by `python bench/bench.py --write-doc`; rerun it to refresh this page.",
        "",
        f"* date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"* machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.machine()},"
        f" Linux {platform.release()}, Python {platform.python_version()}; load average at start"
        f" {r.loadavg_start}, CPU steal during the run {r.steal_pct:.0f}% (other work on the machine or its host"
        " adds noise: see the per-round figures)",
        f"* run: {s['mode']} ({s['rounds']} interleaved rounds x {s['samples']} samples for each c=1 figure,"
        f" {s['tp_rounds']} x {s['tp_seconds']:g} s for c=8, {s['warmup']} warm-up requests per c=1 run)",
    ]
    if s.get("against"):
        lines.append(f"* before: {s['against_label']} (`--against`), measured in the same rounds as after:"
                     f" {s['shunt_label']}")
    cells = table(r)
    lines += ["", "## Results", "", "| " + " | ".join(cells[0]) + " |", "|" + " --- |" * len(cells[0])]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    lines += ["", "Details:", ""] + [f"* {d}" for d in details(r)] + ["", METHOD]
    kept = ""  # the instruction counts of bench/instructions.py and the notes, each between their markers
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        for begin, end in ((NOTES_BEGIN, NOTES_END), (INSTRUCTIONS_BEGIN, INSTRUCTIONS_END)):
            if begin in old and end in old:
                kept += "\n" * bool(kept) + old[old.index(begin):old.index(end) + len(end)] + "\n"
    with open(path, "w") as f:
        f.write("\n".join(lines) + ("\n" + kept if kept else ""))
    return path
