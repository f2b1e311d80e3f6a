"""A simulated Anthropic Messages API with small, fast quotas, for ``shunt demo``.

Each simulated account (known by its bearer token) has a "5h" window that really lasts
``window_s`` seconds and a "7d" window ten times longer, each with an output-token budget. Replies
stream like the real API (``message_start`` … ``message_stop``), every response carries the
``anthropic-ratelimit-unified-*`` headers (utilization as a 0–1 fraction, resets in epoch seconds),
and a request over budget gets the real 429 shape (unified status ``rejected``). A seeded random
source adds the occasional throttle 429 and 529 overload. Nothing here is used by the proxy itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
        u5 = self.used / self.budget
        u7 = self.used_7d / (self.budget * 6)
        status5 = "rejected" if rejected else ("allowed_warning" if u5 >= 0.8 else "allowed")
        return {
            "anthropic-ratelimit-unified-status": "rejected" if rejected else "allowed",
            "anthropic-ratelimit-unified-reset": str(int(self.window_end_s)),
            "anthropic-ratelimit-unified-representative-claim": "five_hour",
            "anthropic-ratelimit-unified-5h-status": status5,
            "anthropic-ratelimit-unified-5h-reset": str(int(self.window_end_s)),
            "anthropic-ratelimit-unified-5h-utilization": f"{u5:.3f}",
            "anthropic-ratelimit-unified-7d-status": "allowed",
            "anthropic-ratelimit-unified-7d-reset": str(int(self.week_end_s)),
            "anthropic-ratelimit-unified-7d-utilization": f"{u7:.3f}",
        }


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
            return self._reply(h, 404, _err("not_found_error", "Not found"), {})
        token = (h.headers.get("authorization") or "")[7:]
        acct = self.accounts.get(token)
        if acct is None:
            return self._reply(h, 401, _err("authentication_error", "invalid bearer token"), {})
        try:
            req = json.loads(raw)
        except ValueError:
            return self._reply(h, 400, _err("invalid_request_error", "body is not JSON"), {})
        want = int(req.get("max_tokens", 300))
        now = time.time()
        with self._lock:
            roll = self._rand.random()
            acct.roll(now)
            if roll < self.overload_rate:
                return self._reply(h, 529, _err("overloaded_error", "Overloaded"), {})
            if roll < self.overload_rate + self.throttle_rate:
                return self._reply(h, 429, _err("rate_limit_error", "Server is temporarily limiting requests"),
                                   {"retry-after": "3"})
            if acct.used >= acct.budget:
                hdrs = acct.headers(rejected=True)
                hdrs["retry-after"] = str(max(1, int(acct.window_end_s - now)))
                return self._reply(h, 429, _err("rate_limit_error",
                                                "This request would exceed your account's rate limit. Please try again later."), hdrs)
            out_tokens = min(want, 120 + self._rand.randint(0, 240))
            acct.used += out_tokens
            acct.used_7d += out_tokens
            hdrs = acct.headers(rejected=False)
        prompt = sum(len(json.dumps(m)) for m in req.get("messages", [])) // 4
        cache_read = max(0, prompt - 40)
        if not req.get("stream"):
            body = json.dumps({"id": "msg_sim", "type": "message", "role": "assistant", "model": req.get("model"),
                               "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                               "usage": {"input_tokens": prompt - cache_read, "output_tokens": out_tokens,
                                         "cache_read_input_tokens": cache_read}}).encode()
            return self._reply(h, 200, body, hdrs)
        h.send_response(200)
        for k, v in hdrs.items():
            h.send_header(k, v)
        h.send_header("content-type", "text/event-stream")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        events = [("message_start", {"type": "message_start", "message": {
            "id": "msg_sim", "type": "message", "role": "assistant", "content": [], "model": req.get("model"),
            "stop_reason": None, "usage": {"input_tokens": prompt - cache_read, "output_tokens": 1,
                                           "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": 40}}}),
                  ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})]
        for word in ("Working", " on", " it", "…"):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": word}}))
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": {"output_tokens": out_tokens}}),
                   ("message_stop", {"type": "message_stop"})]
        try:
            for name, data in events:
                chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                h.wfile.flush()
                if name == "content_block_delta":
                    time.sleep(self.chunk_delay_s)
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            h.close_connection = True


def _err(etype: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": etype, "message": message}}).encode()
