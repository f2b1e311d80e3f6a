"""A simulated Anthropic Messages API with small, fast quotas, for ``shunt demo``.

Each simulated account (known by its bearer token) has a "5h" window that really lasts
``window_s`` seconds and a "7d" window ten times longer, each with an output-token budget. Replies
stream like the real API (``message_start`` … ``message_stop``), every response carries the
``anthropic-ratelimit-unified-*`` headers (utilization as a 0–1 fraction, resets in epoch seconds),
and a request over budget gets the real 429 shape (unified status ``rejected``). A seeded random
source adds the occasional throttle 429 and 529 overload (never twice to the same request body: shunt
moves an overloaded request once, and the demo must never fail by chance). Nothing here is used by
the proxy itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import sse
from .wire import LAST_CHUNK, frame_chunk


def unified_headers(*, util_5h: float = 0.1, reset_5h: float | None = None, status_5h: str = "allowed",
                    util_7d: float = 0.1, reset_7d: float | None = None, status_7d: str = "allowed",
                    overall: str | None = None, now_s: float | None = None) -> dict[str, str]:
    """``anthropic-ratelimit-unified-*`` headers as a subscription account gets them (``docs/protocol.md`` §4):
    utilization a 0–1 fraction, resets in epoch seconds (default: 1 h and 1 day from ``now_s``), the
    overall status ``rejected`` if a window is, and the overall reset that of the rejected window."""
    now_s = time.time() if now_s is None else now_s
    r5 = int(reset_5h if reset_5h is not None else now_s + 3600)
    r7 = int(reset_7d if reset_7d is not None else now_s + 86400)
    overall = overall or ("rejected" if "rejected" in (status_5h, status_7d) else "allowed")
    return {
        "anthropic-ratelimit-unified-status": overall,
        "anthropic-ratelimit-unified-reset": str(r7 if status_7d == "rejected" and status_5h != "rejected" else r5),
        "anthropic-ratelimit-unified-representative-claim": "seven_day" if status_7d == "rejected" else "five_hour",
        "anthropic-ratelimit-unified-5h-status": status_5h,
        "anthropic-ratelimit-unified-5h-reset": str(r5),
        "anthropic-ratelimit-unified-5h-utilization": f"{util_5h:g}",
        "anthropic-ratelimit-unified-7d-status": status_7d,
        "anthropic-ratelimit-unified-7d-reset": str(r7),
        "anthropic-ratelimit-unified-7d-utilization": f"{util_7d:g}",
    }


def message_events(texts=("Hello",), *, model: str = "claude-test", input_tokens: int = 10, output_tokens: int = 5,
                   cache_read: int = 0, cache_creation: int = 0) -> list[bytes]:
    """A complete Messages stream, one bytes object per SSE event: ``message_start`` (input and cache
    usage), one text block with a delta per item of ``texts``, ``message_delta`` (cumulative output
    usage) and ``message_stop`` (``docs/protocol.md`` §5)."""
    start = {"type": "message_start", "message": {
        "id": "msg_sim", "type": "message", "role": "assistant", "content": [], "model": model,
        "stop_reason": None, "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                                       "cache_read_input_tokens": cache_read,
                                       "cache_creation_input_tokens": cache_creation}}}
    evs = [("message_start", start),
           ("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}})]
    evs += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": t}}) for t in texts]
    evs += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": output_tokens}}),
            ("message_stop", {"type": "message_stop"})]
    return [sse.json_event(name, data) for name, data in evs]


def message_json(text: str = "Hello", *, model: str = "claude-test", input_tokens: int = 10, output_tokens: int = 5,
                 cache_read: int = 0) -> bytes:
    """A non-streaming Messages response body."""
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_read:
        usage["cache_read_input_tokens"] = cache_read
    return json.dumps({"id": "msg_sim", "type": "message", "role": "assistant", "model": model,
                       "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                       "usage": usage}).encode()


def error_json(error_type: str, message: str, request_id: str = "req_sim") -> bytes:
    """An upstream error body: the Anthropic envelope plus the ``request_id`` the real API adds."""
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message},
                       "request_id": request_id}).encode()


@dataclasses.dataclass
class SimAccount:
    """One simulated account: ``budget`` output tokens per ``window_s`` seconds (its "5h" window)."""

    token: str
    budget: int
    window_s: float
    used: int = 0
    window_end_s: float = 0.0
    used_7d: int = 0
    week_end_s: float = 0.0

    def roll(self, now_s: float) -> None:
        if now_s >= self.window_end_s:
            self.used, self.window_end_s = 0, math.ceil(now_s + self.window_s)
        if now_s >= self.week_end_s:
            self.used_7d, self.week_end_s = 0, math.ceil(now_s + 10 * self.window_s)

    def headers(self, rejected: bool) -> dict[str, str]:
        u5 = min(1.0, self.used / self.budget)  # the last answer may overshoot the budget; the API says 1 at most
        return unified_headers(util_5h=round(u5, 3), reset_5h=self.window_end_s,
                               status_5h="rejected" if rejected else ("allowed_warning" if u5 >= 0.8 else "allowed"),
                               util_7d=round(self.used_7d / (self.budget * 6), 3), reset_7d=self.week_end_s)


class SimulatedAnthropic:
    """The simulated API on ``127.0.0.1:<port>``. :meth:`start`, then :meth:`close`.

    :param accounts: the simulated accounts, keyed by their bearer token.
    :param chunk_delay_s: pause between streamed text deltas.
    :param throttle_rate: / :param overload_rate: chance of a throttle 429 / a 529 per request.
    """

    def __init__(self, accounts: list[SimAccount], *, chunk_delay_s: float = 0.05, throttle_rate: float = 0.02,
                 overload_rate: float = 0.02, seed: int = 7):
        self.accounts = {a.token: a for a in accounts}
        self.chunk_delay_s = chunk_delay_s
        self.throttle_rate = throttle_rate
        self.overload_rate = overload_rate
        self._rand = random.Random(seed)
        self._lock = threading.Lock()
        self._overloaded: set[bytes] = set()  # request bodies answered 529 once
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                sim._handle(self)

            do_GET = do_HEAD = do_POST

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "SimulatedAnthropic":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="sim-api", daemon=True).start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _reply(self, h, status: int, body: bytes, headers: dict[str, str]) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(n) if n else b""
        if not h.path.startswith("/v1/messages"):
            return self._reply(h, 404, error_json("not_found_error", "Not found"), {})
        token = (h.headers.get("authorization") or "")[7:]
        acct = self.accounts.get(token)
        if acct is None:
            return self._reply(h, 401, error_json("authentication_error", "invalid bearer token"), {})
        try:
            req = json.loads(raw)
        except ValueError:
            return self._reply(h, 400, error_json("invalid_request_error", "body is not JSON"), {})
        want = int(req.get("max_tokens", 300))
        now = time.time()
        with self._lock:
            roll = self._rand.random()
            acct.roll(now)
            if roll < self.overload_rate:
                if raw not in self._overloaded:
                    self._overloaded.add(raw)  # shunt retries an overload once: the retry gets through
                    return self._reply(h, 529, error_json("overloaded_error", "Overloaded"), {})
            elif roll < self.overload_rate + self.throttle_rate:
                return self._reply(h, 429, error_json("rate_limit_error", "Server is temporarily limiting requests"),
                                   {"retry-after": "3"})
            if acct.used >= acct.budget:
                hdrs = acct.headers(rejected=True)
                hdrs["retry-after"] = str(max(1, int(acct.window_end_s - now)))
                return self._reply(h, 429, error_json("rate_limit_error",
                                                "This request would exceed your account's rate limit. Please try again later."), hdrs)
            out_tokens = min(want, 120 + self._rand.randint(0, 240))
            acct.used += out_tokens
            acct.used_7d += out_tokens
            hdrs = acct.headers(rejected=False)
        prompt = sum(len(json.dumps(m)) for m in req.get("messages", [])) // 4
        cache_read = max(0, prompt - 40)
        model = str(req.get("model") or "")
        if not req.get("stream"):
            body = message_json("ok", model=model, input_tokens=prompt - cache_read, output_tokens=out_tokens,
                                cache_read=cache_read)
            return self._reply(h, 200, body, hdrs)
        h.send_response(200)
        for k, v in hdrs.items():
            h.send_header(k, v)
        h.send_header("content-type", "text/event-stream")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        events = message_events(("Working", " on", " it", "…"), model=model, input_tokens=prompt - cache_read,
                                output_tokens=out_tokens, cache_read=cache_read, cache_creation=40)
        try:
            for ev in events:
                h.wfile.write(frame_chunk(ev))
                h.wfile.flush()
                if ev.startswith(b"event: content_block_delta"):
                    time.sleep(self.chunk_delay_s)
            h.wfile.write(LAST_CHUNK)
        except OSError:
            h.close_connection = True
