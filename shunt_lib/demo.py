"""``shunt demo``: the real proxy in front of a simulated Anthropic API, driven by a live workload.

Needs no accounts and no network: everything runs on 127.0.0.1 in a temporary SHUNT_HOME.
Three simulated accounts with small quotas and short windows; several concurrent multi-turn
conversations stream through shunt; what shunt decides is printed as it happens, then a summary.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time

from .config import load_config
from .homes import write_home
from .server import make_server, serve_in_thread, start_background
from .simulator import SimAccount, SimulatedAnthropic

ACCOUNTS = (("alpha", 1800), ("bravo", 2600), ("charlie", 3400))  # output-token budget per window
WINDOW_S = 12.0
CONVERSATIONS = 6


#: The symbols the demo prints, and what stands in for them where the output cannot encode them.
SYMBOLS = {"exhausted": ("⛔", "XX"), "cooling": ("🧊", "~~"), "hold": ("⏸ ", "||"), "recovered": ("✅", "ok"),
           "failover": ("↪ ", "->"), "overloaded": ("⚠ ", "!!"), "server_error": ("⚠ ", "!!"), "other": ("· ", "- "),
           "to": ("→", "->"), "failed": ("✗", "x"), "ellipsis": ("…", "...")}


class Out:
    """The demo's output: picks Unicode symbols or their ASCII stand-ins for the stream's encoding
    (``sys.stdout`` on a non-UTF-8 terminal or pipe, e.g. ``LANG=C``), and writes every line so that
    it cannot fail to encode (what remains unencodable is backslash-escaped). Lines are written whole
    under a lock, so concurrent conversations never interleave."""

    def __init__(self, stream):
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self.unicode = _can_encode("".join(u for u, _ in SYMBOLS.values()), self.encoding)
        self._lock = threading.Lock()

    def sym(self, name: str) -> str:
        """The symbol ``name`` of :data:`SYMBOLS` as this output can show it."""
        unicode, ascii_ = SYMBOLS[name]
        return unicode if self.unicode else ascii_

    def say(self, text: str = "") -> None:
        """Write ``text`` and a newline, and flush."""
        safe = text.encode(self.encoding, "backslashreplace").decode(self.encoding)
        with self._lock:
            self.stream.write(safe + "\n")
            self.stream.flush()


def _can_encode(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class _Printer(logging.Handler):
    """Prints shunt's account events (exhausted, cooling, hold, recovered, failover) as they happen."""

    def __init__(self, t0: float, out: Out, stats: dict):
        super().__init__(logging.INFO)
        self.t0, self.out, self.stats = t0, out, stats

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event in (None, "request"):
            return
        self.stats[event] = self.stats.get(event, 0) + 1
        icon = self.out.sym(event if event in SYMBOLS else "other")
        self.out.say(f"[{time.monotonic() - self.t0:5.1f}s] {icon} {record.getMessage()}")


def _conversation_or_failure(port: int, idx: int, deadline: float, t0: float, out: Out, results: list,
                             lock: threading.Lock) -> None:
    """Run one conversation; if it crashes, count that as a failed turn and say so (the demo then fails)."""
    try:
        _conversation(port, idx, deadline, t0, out, results, lock)
    except Exception as exc:  # noqa: BLE001 - a crash must fail the demo, not vanish with its thread
        with lock:
            results.append({"ok": False, "account": None, "tokens": 0, "took": 0.0, "status": "CRASH"})
        out.say(f"[{time.monotonic() - t0:5.1f}s]    conversation {idx} crashed: {type(exc).__name__}: {exc}")


def _conversation(port: int, idx: int, deadline: float, t0: float, out: Out, results: list, lock: threading.Lock) -> None:
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
        try:
            conn.request("POST", "/v1/messages?beta=true", body=body, headers={
                "content-type": "application/json", "anthropic-version": "2023-06-01",
                "x-claude-code-session-id": session})
            resp = conn.getresponse()
            data = resp.read()
            account = resp.getheader("x-shunt-account")
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
        took = time.monotonic() - started
        status = resp.status if resp is not None else "ERR"
        with lock:
            results.append({"ok": ok, "account": account, "tokens": tokens, "took": took, "status": status})
            mark = "" if ok else f"  {out.sym('failed')} {data[:120]!r}"
            held = f"  (held {took:.1f}s)" if took > 2 else ""
        out.say(f"[{time.monotonic() - t0:5.1f}s]    conversation {idx} turn {turn:<2} {out.sym('to')} "
                f"{account or '-':<8} {status}  {tokens:>3} tokens{held}{mark}")
        messages.append({"role": "assistant", "content": "Working on it" + SYMBOLS["ellipsis"][0]})
        time.sleep(rnd.uniform(0.3, 1.5))


def run_demo(duration_s: float = 40.0, out=None) -> int:
    """Run the demo for about ``duration_s`` seconds of workload; print a summary.

    :param out: a text stream (default ``sys.stdout``); symbols fall back to ASCII where it cannot encode them.
    :returns: the exit code: 0 if every turn was answered, 1 if one failed or a conversation crashed.
    """
    out = Out(out or sys.stdout)
    sim = SimulatedAnthropic([SimAccount(f"sim-token-{n}", budget, WINDOW_S) for n, budget in ACCOUNTS]).start()
    with tempfile.TemporaryDirectory(prefix="shunt-demo-") as home:
        paths = write_home(home, sim.url, [(name, "oauth") for name, _ in ACCOUNTS],
                           server={"max_wait_s": 30, "session_ttl_s": 600}, token="sim-token-{name}",
                           refresh_token="sim-refresh")
        srv = make_server(load_config(paths), paths, port=0, overload_backoff_s=0.3)
        start_background(srv, refresh=False, recovery=False, usage=False, reload=False)
        serve_in_thread(srv)
        t0 = time.monotonic()
        stats: dict = {}
        printer = _Printer(t0, out, stats)
        events = logging.getLogger("shunt.events")
        saved_logging = (events.level, events.propagate)
        events.addHandler(printer)
        events.setLevel(logging.INFO)
        events.propagate = False
        budgets = ", ".join(f"{n} {b} tokens" for n, b in ACCOUNTS)
        out.say(f"shunt demo: the real proxy on 127.0.0.1:{srv.port} in front of a simulated Anthropic API.\n"
                f"Three simulated accounts whose 5-hour window lasts {WINDOW_S:.0f}s ({budgets} per window);\n"
                f"{CONVERSATIONS} conversations stream turns through shunt for {duration_s:.0f}s. "
                "No real account or network is used.\n")
        results: list = []
        lock = threading.Lock()
        deadline = t0 + duration_s
        threads = [threading.Thread(target=_conversation_or_failure, args=(srv.port, i + 1, deadline, t0, out, results,
                                                                           lock), daemon=True)
                   for i in range(CONVERSATIONS)]
        for t in threads:
            t.start()
            time.sleep(0.15)
        for t in threads:
            t.join(duration_s + 60)
        stuck = sum(1 for t in threads if t.is_alive())
        status = srv.status()
        events.removeHandler(printer)
        events.level, events.propagate = saved_logging
        srv.close()
        sim.close()
    ok = sum(1 for r in results if r["ok"])
    failed = len(results) - ok + stuck
    longest = max((r["took"] for r in results), default=0)
    out.say(f"\nSummary after {time.monotonic() - t0:.0f}s: {len(results)} turns, {ok} answered, {failed} failed"
            + (f" ({stuck} conversation(s) never finished)" if stuck else "")
            + (": no conversation ever saw a 429 or an error." if failed == 0 else "."))
    for a in status["accounts"]:
        out.say(f"  {a['name']:<8} {a['requests']:>3} requests  {a['output_tokens']:>6} output tokens  "
                f"{a['cache_read_tokens']:>6} cache-read tokens")
    out.say(f"  {stats.get('failover', 0)} failovers, {stats.get('exhausted', 0)} quota exhaustions, "
            f"{stats.get('hold', 0)} holds, {stats.get('recovered', 0)} recoveries; longest turn {longest:.1f}s")
    out.say("\nNext: add your accounts (`shunt add-account NAME`, `shunt import`, `shunt add-account NAME --api-key`),\n"
            "run `shunt serve`, and point Claude Code at it: ANTHROPIC_BASE_URL=http://127.0.0.1:8082 claude")
    return 0 if failed == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(float(os.environ.get("SHUNT_DEMO_SECONDS", "40"))))
