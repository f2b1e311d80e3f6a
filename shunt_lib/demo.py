"""``shunt demo``: the real proxy in front of a simulated Anthropic API, driven by a live workload.

Needs no accounts and no network: everything runs on 127.0.0.1 in a temporary SHUNT_HOME.
Three simulated accounts with small quotas and short windows; several concurrent multi-turn
conversations stream through shunt. What shunt decides (a request moved to another account, requests
held while every account is out, a window reset) is told as it happens, from shunt's own
``shunt.events`` log records and its ``/status`` document; on a terminal a live block above the
cursor shows each account's 5-hour window (:mod:`~shunt_lib.demo_view` draws it). Per-turn lines
only with ``verbose``. Then a summary.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from typing import Mapping

from .config import load_config
from .demo_view import Story, ViewMode, frame, render_rows, rows_from_status, view_mode
from .homes import write_home
from .server import make_server, serve_in_thread, start_background
from .simulator import SimAccount, SimulatedAnthropic

#: Output-token budget per window of each account: small enough that the three run out well within
#: one window even on a slow machine (a turn is 120–360 tokens), so that every run shows a failover,
#: a hold and a window reset.
ACCOUNTS = (("alpha", 500), ("bravo", 750), ("charlie", 1000))
WINDOW_S = 6.0  # how long the simulated "5-hour" window really lasts
CONVERSATIONS = 6
DURATION_S = 14.0  # the workload's length; held requests still finish within a window after it
TICK_S = 0.2  # how often the live view is redrawn and /status is read


#: The symbols the demo prints, and what stands in for them where the output cannot encode them.
SYMBOLS = {"exhausted": ("⛔", "XX"), "cooling": ("🧊", "~~"), "hold": ("⏸ ", "||"), "recovered": ("✅", "ok"),
           "failover": ("↪ ", "->"), "overloaded": ("⚠ ", "!!"), "server_error": ("⚠ ", "!!"), "other": ("· ", "- "),
           "to": ("→", "->"), "failed": ("✗", "x"), "ellipsis": ("…", "..."), "held": ("▶ ", ">>"),
           "bar": ("█░", "#-")}


class Out:
    """The demo's output: picks Unicode symbols or their ASCII stand-ins for the stream's encoding
    (``sys.stdout`` on a non-UTF-8 terminal or pipe, e.g. ``LANG=C``), and writes every line so that
    it cannot fail to encode (what remains unencodable is backslash-escaped). Lines are written whole
    under a lock, so concurrent conversations never interleave.

    On a live terminal (:func:`~shunt_lib.demo_view.view_mode`) lines told with :meth:`tell` wait for
    the next :meth:`draw`, which prints them above the account block and redraws the block in place;
    elsewhere they are written at once.

    :param env: the environment deciding colour and live drawing (``TERM``, ``NO_COLOR``).
    """

    def __init__(self, stream, env: Mapping[str, str] | None = None):
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self.unicode = _can_encode("".join(u for u, _ in SYMBOLS.values()), self.encoding)
        isatty = getattr(stream, "isatty", None)
        self.mode: ViewMode = view_mode(bool(isatty and isatty()), os.environ if env is None else env, self.unicode)
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._height = 0  # lines of the account block now on screen
        self._block: list[str] = []  # the block now on screen

    def tell(self, text: str) -> None:
        """A line of the story: above the live block at its next redraw, or written now."""
        if not self.mode.live:
            return self.say(text)
        with self._lock:
            self._pending.append(self._safe(text))

    def draw(self, block: list[str]) -> None:
        """Live only: print the lines told since the last draw, then ``block`` in place of the old one."""
        with self._lock:
            if not self._pending and block == self._block:
                return  # nothing changed: nothing to write
            above, self._pending, self._block = self._pending, [], block
            self.stream.write(frame(self._height, above, [self._safe(line) for line in block]))
            self.stream.flush()
            self._height = len(block)

    def _safe(self, text: str) -> str:
        return text.encode(self.encoding, "backslashreplace").decode(self.encoding)

    def sym(self, name: str) -> str:
        """The symbol ``name`` of :data:`SYMBOLS` as this output can show it."""
        unicode, ascii_ = SYMBOLS[name]
        return unicode if self.unicode else ascii_

    def say(self, text: str = "") -> None:
        """Write ``text`` and a newline, and flush."""
        safe = self._safe(text)
        with self._lock:
            self.stream.write(safe + "\n")
            self.stream.flush()


def _can_encode(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


#: The fields of a ``shunt.events`` record the story reads.
_EVENT_FIELDS = ("event", "account", "until_s", "reason", "from_account", "status")


class _EventTap(logging.Handler):
    """Queues shunt's ``shunt.events`` records (as dicts, with the monotonic time they came) for the narrator."""

    def __init__(self, queue: collections.deque):
        super().__init__(logging.INFO)
        self.queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) not in (None, "request"):
            fields = {k: getattr(record, k, None) for k in _EVENT_FIELDS}
            self.queue.append((time.monotonic(), {**fields, "message": record.getMessage()}))


class _Narrator:
    """Every :data:`TICK_S`: tells the story of the events queued and of the held requests ``/status``
    lists as finished, and on a live terminal redraws the account block from ``/status``."""

    def __init__(self, status, out: Out, t0: float, in_flight: dict[str, int]):
        self.status, self.out, self.t0, self.in_flight = status, out, t0, in_flight
        self.story = Story(out.unicode)
        self.queue: collections.deque = collections.deque()
        self.seen: set = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo-view", daemon=True)

    def _stamp(self, at: float, icon: str, text: str) -> str:
        return f"[{at - self.t0:5.1f}s] {self.out.sym(icon)} {text}"

    def tick(self) -> None:
        """Tell what happened since the last tick; redraw the live block."""
        while self.queue:
            at, e = self.queue.popleft()
            for line in self.story.event(e, time.time() - (time.monotonic() - at)):
                self.out.tell(self._stamp(at, e["event"] if e["event"] in SYMBOLS else "other", line))
        doc = self.status()
        done = []
        for r in doc["recent_requests"]:
            key = (r.get("request_id"), r["ts_s"], r["duration_ms"])
            if key not in self.seen:
                self.seen.add(key)
                done.append(r)
        for line in self.story.held(done):
            self.out.tell(self._stamp(time.monotonic(), "held", line))
        if self.out.mode.live:
            block = render_rows(rows_from_status(doc, time.time(), dict(self.in_flight)),
                                shutil.get_terminal_size((80, 24)).columns, self.out.mode)
            self.out.draw(block)

    def _run(self) -> None:
        try:
            while not self.stop.wait(TICK_S):
                self.tick()
        except OSError:  # the output went away: the conversations notice it too
            pass


def _conversation_or_failure(port: int, idx: int, deadline: float, t0: float, out: Out, results: list,
                             lock: threading.Lock, in_flight: dict[str, int], verbose: bool) -> None:
    """Run one conversation; if it crashes, count that as a failed turn and say so (the demo then fails)."""
    try:
        _conversation(port, idx, deadline, t0, out, results, lock, in_flight, verbose)
    except Exception as exc:  # noqa: BLE001 - a crash must fail the demo, not vanish with its thread
        with lock:
            results.append({"ok": False, "account": None, "tokens": 0, "took": 0.0, "status": "CRASH"})
        out.tell(f"[{time.monotonic() - t0:5.1f}s] {out.sym('failed')}  conversation {idx} crashed: "
                 f"{type(exc).__name__}: {exc}")


def _conversation(port: int, idx: int, deadline: float, t0: float, out: Out, results: list, lock: threading.Lock,
                  in_flight: dict[str, int], verbose: bool) -> None:
    rnd = random.Random(idx)
    session = f"demo-conversation-{idx}"
    messages: list[dict] = []
    turn = 0
    while time.monotonic() < deadline:
        turn += 1
        messages.append({"role": "user", "content": f"Conversation {idx}, turn {turn}: keep going."})
        body = json.dumps({"model": "claude-sim-1", "max_tokens": 400, "stream": True, "messages": messages}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
        started = time.monotonic()
        serving = None
        try:
            conn.request("POST", "/v1/messages?beta=true", body=body, headers={
                "content-type": "application/json", "anthropic-version": "2023-06-01",
                "x-claude-code-session-id": session})
            resp = conn.getresponse()
            serving = resp.getheader("x-shunt-account")
            if serving:
                with lock:
                    in_flight[serving] = in_flight.get(serving, 0) + 1
            data = resp.read()
            account = serving
            if account is None and b": x-shunt-account " in data:
                account = data.split(b": x-shunt-account ", 1)[1].split(b"\n", 1)[0].decode()
            ok = resp.status == 200 and b"message_stop" in data
            tokens = 0
            for line in data.split(b"\n"):
                if line.startswith(b"data:") and b"message_delta" in line:
                    tokens = json.loads(line[5:]).get("usage", {}).get("output_tokens", 0)
        except OSError as exc:
            ok, account, tokens, data = False, None, 0, str(exc).encode()
            resp = None
        finally:
            conn.close()
            if serving:
                with lock:
                    in_flight[serving] -= 1
        took = time.monotonic() - started
        status = resp.status if resp is not None else "ERR"
        with lock:
            results.append({"ok": ok, "account": account, "tokens": tokens, "took": took, "status": status})
        if verbose or not ok:
            mark = "" if ok else f"  {out.sym('failed')} {data[:120]!r}"
            held = f"  (held {took:.1f}s)" if took > 2 else ""
            out.tell(f"[{time.monotonic() - t0:5.1f}s]    conversation {idx} turn {turn:<2} {out.sym('to')} "
                     f"{account or '-':<8} {status}  {tokens:>3} tokens{held}{mark}")
        messages.append({"role": "assistant", "content": "Working on it" + SYMBOLS["ellipsis"][0]})
        time.sleep(rnd.uniform(0.3, 1.5))


def run_demo(duration_s: float = DURATION_S, out=None, *, verbose: bool = False,
             env: Mapping[str, str] | None = None) -> int:
    """Run the demo for about ``duration_s`` seconds of workload (held requests then finish within a
    window, :data:`WINDOW_S`); tell its story and print a summary.

    :param out: a text stream (default ``sys.stdout``); symbols fall back to ASCII where it cannot
        encode them; a terminal (``isatty()``, ``TERM`` not ``dumb``) gets the live account block.
    :param verbose: also print a line per conversation turn (a failed turn is always printed).
    :param env: the environment deciding colour and live drawing (default ``os.environ``).
    :returns: the exit code: 0 if every turn was answered, 1 if one failed or a conversation crashed.
    """
    out = Out(out or sys.stdout, env)
    sim = SimulatedAnthropic([SimAccount(f"sim-token-{n}", budget, WINDOW_S) for n, budget in ACCOUNTS]).start()
    with tempfile.TemporaryDirectory(prefix="shunt-demo-") as home:
        paths = write_home(home, sim.url, [(name, "oauth") for name, _ in ACCOUNTS],
                           server={"max_wait_s": 30, "session_ttl_s": 600}, token="sim-token-{name}",
                           refresh_token="sim-refresh")
        srv = make_server(load_config(paths), paths, port=0, overload_backoff_s=0.3)
        start_background(srv, refresh=False, recovery=False, usage=False, reload=False, alerts=False)
        serve_in_thread(srv)
        t0 = time.monotonic()
        in_flight: dict[str, int] = {}
        narrator = _Narrator(srv.status, out, t0, in_flight)
        tap = _EventTap(narrator.queue)
        events = logging.getLogger("shunt.events")
        saved_logging = (events.level, events.propagate)
        events.addHandler(tap)
        events.setLevel(logging.INFO)
        events.propagate = False
        budgets = ", ".join(f"{n} {b}" for n, b in ACCOUNTS)
        out.say(f"shunt demo: the real proxy on 127.0.0.1:{srv.port} in front of a simulated Anthropic API.\n"
                f"Three simulated accounts whose 5-hour window lasts {WINDOW_S:.0f}s (output tokens per window: "
                f"{budgets});\n{CONVERSATIONS} conversations stream turns through shunt for {duration_s:.0f}s. "
                "No real account or network is used.\n")
        results: list = []
        lock = threading.Lock()
        deadline = t0 + duration_s
        narrator.thread.start()
        threads = [threading.Thread(target=_conversation_or_failure, daemon=True,
                                    args=(srv.port, i + 1, deadline, t0, out, results, lock, in_flight, verbose))
                   for i in range(CONVERSATIONS)]
        for t in threads:
            t.start()
            time.sleep(0.1)
        for t in threads:
            t.join(duration_s + 60)
        stuck = sum(1 for t in threads if t.is_alive())
        narrator.stop.set()
        narrator.thread.join(10)
        narrator.tick()  # what happened since its last tick
        status = srv.status()
        events.removeHandler(tap)
        events.level, events.propagate = saved_logging
        srv.close()
        sim.close()
    ok = sum(1 for r in results if r["ok"])
    failed = len(results) - ok + stuck
    longest = max((r["took"] for r in results), default=0)
    stats = narrator.story.counts
    out.say(f"\nSummary after {time.monotonic() - t0:.0f}s: {len(results)} turns, {ok} answered, {failed} failed"
            + (f" ({stuck} conversation(s) never finished)" if stuck else "")
            + (": no conversation ever saw a 429 or an error." if failed == 0 else "."))
    for a in status["accounts"]:
        out.say(f"  {a['name']:<8} {a['requests']:>3} requests  {a['output_tokens']:>6} output tokens  "
                f"{a['cache_read_tokens']:>6} cache-read tokens")
    out.say(f"  {stats.get('failover', 0)} failovers, {stats.get('exhausted', 0)} quota exhaustions, "
            f"{stats.get('held', 0)} requests held, {stats.get('recovered', 0)} recoveries; longest turn {longest:.1f}s")
    out.say("\nNext: `shunt setup` adds your first account, points Claude Code at shunt and runs it as a service\n"
            "(`shunt setup --undo` takes that out again); then run `claude`. `shunt monitor`, or\n"
            "http://127.0.0.1:8082/ in a browser, shows the pool live; `shunt usage` what it served.")
    return 0 if failed == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(float(os.environ.get("SHUNT_DEMO_SECONDS", DURATION_S))))
