"""A scriptable fake Anthropic API on 127.0.0.1:0 for integration tests.

Responses are scripted per credential (the bearer token or API key the proxy sends); unscripted
requests get a default streaming or JSON reply. Every request received is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def sse_events(text: str = "Hello", *, model: str = "claude-test", input_tokens: int = 10, output_tokens: int = 5,
               cache_read: int = 0, cache_creation: int = 0) -> list[bytes]:
    """A complete Messages stream, one bytes object per SSE event."""
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
             "model": model, "stop_reason": None, "usage": {"input_tokens": input_tokens, "output_tokens": 1,
             "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_creation}}}
    evs = [("message_start", start),
           ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
           ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
           ("content_block_stop", {"type": "content_block_stop", "index": 0}),
           ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output_tokens}}),
           ("message_stop", {"type": "message_stop"})]
    return [f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in evs]


def message_json(text: str = "Hello", *, model: str = "claude-test", input_tokens: int = 10, output_tokens: int = 5) -> bytes:
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                       "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}).encode()


def error_json(etype: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_fake"}).encode()


def unified_headers(*, util_5h=0.1, reset_5h=None, status_5h="allowed", util_7d=0.1, reset_7d=None, status_7d="allowed",
                    overall=None) -> dict[str, str]:
    now = time.time()
    reset_5h = int(reset_5h if reset_5h is not None else now + 3600)
    reset_7d = int(reset_7d if reset_7d is not None else now + 86400)
    overall = overall or ("rejected" if "rejected" in (status_5h, status_7d) else "allowed")
    return {
        "anthropic-ratelimit-unified-status": overall,
        "anthropic-ratelimit-unified-reset": str(reset_5h if status_5h == "rejected" else reset_7d if status_7d == "rejected" else reset_5h),
        "anthropic-ratelimit-unified-5h-status": status_5h,
        "anthropic-ratelimit-unified-5h-reset": str(reset_5h),
        "anthropic-ratelimit-unified-5h-utilization": str(util_5h),
        "anthropic-ratelimit-unified-7d-status": status_7d,
        "anthropic-ratelimit-unified-7d-reset": str(reset_7d),
        "anthropic-ratelimit-unified-7d-utilization": str(util_7d),
    }


@dataclasses.dataclass
class Reply:
    """One scripted answer.

    ``events``: SSE events sent as separate chunks (``chunk_gate`` events let a test release them one
    at a time); ``body``: a fixed body; ``break_after``: drop the connection after that many events.
    """

    status: int = 200
    headers: dict = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    events: list | None = None
    delay_s: float = 0.0
    gates: list | None = None  # threading.Event per event: wait before sending it
    break_after: int | None = None
    on_disconnect: threading.Event | None = None  # set when the client (the proxy) hung up mid-stream


@dataclasses.dataclass
class Received:
    method: str
    path: str
    headers: list
    body: bytes
    credential: str

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


class FakeUpstream:
    """Start with :meth:`start`; ``url`` is its base URL; :meth:`close` stops it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._scripts: dict[str, deque] = defaultdict(deque)
        self.received: list[Received] = []
        self.token_handler: Callable[[dict], tuple[int, dict]] | None = None
        self.token_calls = 0
        self.revoke_calls: list[dict] = []
        # credential -> JSON document for GET /api/oauth/usage and /api/oauth/profile (404 if absent)
        self.usage: dict[str, dict] = {}
        self.profile: dict[str, dict] = {}
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake._handle(self)

            do_POST = do_HEAD = do_PUT = do_DELETE = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # shunt hanging up mid-body is expected
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "FakeUpstream":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, credential: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[credential].extend(replies)

    def requests_for(self, credential: str | None = None, path_prefix: str = "/v1/messages") -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.startswith(path_prefix) and (credential is None or r.credential == credential)]

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(n) if n else b""
        auth = h.headers.get("authorization") or ""
        cred = auth[7:] if auth.lower().startswith("bearer ") else (h.headers.get("x-api-key") or "")
        rec = Received(h.command, h.path, list(h.headers.items()), body, cred)
        if h.path.startswith("/v1/oauth/token"):
            with self._lock:
                self.token_calls += 1
                self.received.append(rec)
            status, data = self.token_handler(json.loads(body or b"{}")) if self.token_handler else (500, {"error": "no handler"})
            out = json.dumps(data).encode()
            h.send_response(status)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(out)))
            h.end_headers()
            h.wfile.write(out)
            return
        if h.path.startswith("/api/oauth/") or h.path.startswith("/v1/oauth/revoke"):
            with self._lock:
                self.received.append(rec)
                if h.path.startswith("/v1/oauth/revoke"):
                    self.revoke_calls.append(json.loads(body or b"{}"))
                    doc = {}
                else:
                    doc = (self.usage if h.path.startswith("/api/oauth/usage") else self.profile).get(cred)
            self._send(h, Reply(status=404, body=error_json("not_found_error", "no")) if doc is None
                       else Reply(body=json.dumps(doc).encode()))
            return
        with self._lock:
            self.received.append(rec)
            q = self._scripts.get(cred)
            reply = q.popleft() if q else None
        if reply is None:
            stream = b'"stream": true' in body or b'"stream":true' in body
            reply = Reply(events=sse_events()) if stream else Reply(body=message_json())
        self._send(h, reply)

    def _send(self, h: BaseHTTPRequestHandler, r: Reply) -> None:
        if r.delay_s:
            time.sleep(r.delay_s)
        h.send_response(r.status)
        for k, v in r.headers.items():
            h.send_header(k, v)
        if r.events is not None:
            h.send_header("content-type", "text/event-stream")
            h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            try:
                for i, ev in enumerate(r.events):
                    if r.gates and i < len(r.gates) and r.gates[i] is not None:
                        while not r.gates[i].wait(0.05):
                            if _peer_gone(h):
                                raise ConnectionResetError("peer gone")
                    if r.break_after is not None and i >= r.break_after:
                        h.close_connection = True
                        h.wfile.flush()
                        h.connection.shutdown(2)
                        return
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    h.wfile.flush()
                h.wfile.write(b"0\r\n\r\n")
            except OSError:
                h.close_connection = True
                if r.on_disconnect is not None:
                    r.on_disconnect.set()
            return
        body = r.body if r.body is not None else b""
        if not any(k.lower() == "content-type" for k in r.headers):
            h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def _peer_gone(h: BaseHTTPRequestHandler) -> bool:
    import select
    import socket

    r, _, _ = select.select([h.connection], [], [], 0)
    if not r:
        return False
    try:
        return h.connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
