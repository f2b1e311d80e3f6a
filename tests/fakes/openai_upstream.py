"""A scriptable fake OpenAI-compatible provider on 127.0.0.1:0: ``POST /v1/chat/completions``.

Unscripted requests get a text answer (``text``), streamed with a usage chunk when the request asks
for a stream. Scripted replies (:meth:`FakeOpenAI.script`) are taken in order: a :class:`ChatReply`
(text and/or tool calls, as JSON or a stream, optionally broken off mid-stream) or a raw
:class:`RawReply` (a status, headers and body: a 429 with ``x-ratelimit-*`` headers). Every request
is recorded (:attr:`FakeOpenAI.received`) and can be waited for.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shunt_lib.wire import LAST_CHUNK, frame_chunk

USAGE = {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26, "prompt_tokens_details": {"cached_tokens": 4}}


@dataclasses.dataclass
class ChatReply:
    """A successful answer: ``text``, ``tool_calls`` (``[(id, name, arguments_json), ...]``);
    ``break_after``: for a stream, drop the connection after that many chunks; ``pause_after``: for a
    stream, wait for ``resume`` (an Event) after that many chunks."""

    text: str = "Hello from the fake provider"
    tool_calls: list = dataclasses.field(default_factory=list)
    usage: dict = dataclasses.field(default_factory=lambda: dict(USAGE))
    break_after: int | None = None
    pause_after: int | None = None
    resume: threading.Event | None = None


@dataclasses.dataclass
class RawReply:
    status: int
    body: bytes
    headers: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Received:
    path: str
    headers: dict  # lower-case names
    body: dict
    raw: bytes = b""  # the body as it arrived


def quota_429() -> RawReply:
    """OpenAI's ``insufficient_quota`` 429 (https://platform.openai.com/docs/guides/error-codes)."""
    return RawReply(429, json.dumps({"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                                               "param": None, "code": "insufficient_quota"}}).encode())


def rate_limit_429(reset: str = "20s") -> RawReply:
    """A ``rate_limit_exceeded`` 429 with the rate-limit headers (tokens window exhausted, reset in ``reset``)."""
    return RawReply(429, json.dumps({"error": {"message": "Rate limit reached", "type": "requests",
                                               "code": "rate_limit_exceeded"}}).encode(),
                    {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "0",
                     "x-ratelimit-reset-tokens": reset, "x-ratelimit-limit-requests": "60",
                     "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s"})


def _chunks(model: str, r: ChatReply) -> list[dict]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model}
    out = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    for word in r.text.split(" ") if r.text else []:
        piece = word if not out[1:] else " " + word
        out.append(dict(base, choices=[{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
    for i, (call_id, name, args) in enumerate(r.tool_calls):
        out.append(dict(base, choices=[{"index": 0, "delta": {"tool_calls": [
            {"index": i, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]},
            "finish_reason": None}]))
        out.append(dict(base, choices=[{"index": 0, "delta": {"tool_calls": [
            {"index": i, "function": {"arguments": args}}]}, "finish_reason": None}]))
    finish = "tool_calls" if r.tool_calls else "stop"
    out.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": finish}]))
    out.append(dict(base, choices=[], usage=r.usage))
    return out


def _completion(model: str, r: ChatReply) -> dict:
    message: dict = {"role": "assistant", "content": r.text or None}
    if r.tool_calls:
        message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                 for i, n, a in r.tool_calls]
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if r.tool_calls else "stop"}],
            "usage": r.usage}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


class FakeOpenAI:
    """Start with :meth:`start`; ``base_url`` (``…/v1``) goes in the account's config; :meth:`close` stops it."""

    def __init__(self):
        self._cond = threading.Condition()
        self._scripts: deque = deque()
        self.received: list[Received] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                outer._handle(self)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread: threading.Thread | None = None

    def start(self) -> "FakeOpenAI":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()

    def script(self, *replies) -> None:
        """Answer the next requests with ``replies`` (ChatReply or RawReply), in order."""
        with self._cond:
            self._scripts.extend(replies)

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.received) >= count, timeout)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        with self._cond:
            self.received.append(Received(h.path, {k.lower(): v for k, v in h.headers.items()}, body, raw))
            reply = self._scripts.popleft() if self._scripts else ChatReply()
            self._cond.notify_all()
        if h.path != "/v1/chat/completions":
            reply = RawReply(404, b'{"error": {"message": "no such path", "type": "invalid_request_error"}}')
        if isinstance(reply, RawReply):
            h.send_response(reply.status)
            h.send_header("content-type", "application/json")
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.send_header("content-length", str(len(reply.body)))
            h.end_headers()
            h.wfile.write(reply.body)
            return
        model = body.get("model", "")
        if not body.get("stream"):
            data = json.dumps(_completion(model, reply)).encode()
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        chunks = _chunks(model, reply)
        for i, chunk in enumerate(chunks):
            if reply.break_after is not None and i >= reply.break_after:
                h.close_connection = True
                h.wfile.flush()
                h.connection.shutdown(2)
                return
            if reply.pause_after is not None and i == reply.pause_after and reply.resume is not None:
                reply.resume.wait(30)
            h.wfile.write(frame_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n"))
            h.wfile.flush()
        h.wfile.write(frame_chunk(b"data: [DONE]\n\n") + LAST_CHUNK)
