"""A scriptable fake Anthropic API on 127.0.0.1:0 for integration tests.

Responses are scripted per credential (the bearer token or API key the proxy sends); unscripted
requests get a default streaming or JSON reply. Every request received is recorded, and a test can
wait for requests to arrive (:meth:`FakeUpstream.wait_for_requests`) instead of sleeping.
"""

from __future__ import annotations

import dataclasses
import json
import select
import socket
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from shunt_lib.simulator import error_json, message_events, message_json, unified_headers  # noqa: F401 (re-exported)
from shunt_lib.wire import LAST_CHUNK, frame_chunk


def sse_events(text: str = "Hello", **kw) -> list[bytes]:
    """A complete Messages stream with one text delta, one bytes object per SSE event."""
    return message_events((text,), **kw)


@dataclasses.dataclass
class Reply:
    """One scripted answer.

    ``events``: SSE events sent as separate chunks (``gates``: an Event per event, waited for before
    sending it); ``body``: a fixed body; ``break_after``: drop the connection after that many events;
    ``arrived``: set when the request arrives; ``release``: waited for before answering;
    ``on_disconnect``: set when the client (the proxy) hung up mid-stream.
    """

    status: int = 200
    headers: dict = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    events: list | None = None
    gates: list | None = None
    break_after: int | None = None
    arrived: threading.Event | None = None
    release: threading.Event | None = None
    on_disconnect: threading.Event | None = None


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the stdlib's 5 drops connections when a test sends 50 at once

    def handle_error(self, request, client_address) -> None:
        pass  # shunt hanging up mid-body is expected


class FakeUpstream:
    """Start with :meth:`start`; ``url`` is its base URL; :meth:`close` stops it and ends its threads."""

    def __init__(self):
        self._cond = threading.Condition()
        self._scripts: dict[str, deque] = defaultdict(deque)
        self.received: list[Received] = []
        self.token_handler: Callable[[dict], tuple[int, dict]] | None = None
        self.token_calls = 0
        self.refused: set[str] = set()  # credentials always answered 401 (expired or rotated out)
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

        self.httpd = _Server(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> "FakeUpstream":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-upstream", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()

    def script(self, credential: str, *replies: Reply) -> None:
        with self._cond:
            self._scripts[credential].extend(replies)

    def requests_for(self, credential: str | None = None, path_prefix: str = "/v1/messages") -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.path.startswith(path_prefix) and (credential is None or r.credential == credential)]

    def wait_for_requests(self, count: int, credential: str | None = None, timeout: float = 30.0) -> bool:
        """Block until ``count`` Messages requests (for ``credential``, if given) have arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: len([r for r in self.received if r.path.startswith("/v1/messages")
                                                    and (credential is None or r.credential == credential)]) >= count,
                                       timeout)

    def _record(self, rec: Received) -> None:
        with self._cond:
            self.received.append(rec)
            self._cond.notify_all()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(n) if n else b""
        auth = h.headers.get("authorization") or ""
        cred = auth[7:] if auth.lower().startswith("bearer ") else (h.headers.get("x-api-key") or "")
        rec = Received(h.command, h.path, list(h.headers.items()), body, cred)
        if h.path.startswith("/v1/oauth/token"):
            with self._cond:
                self.token_calls += 1
            self._record(rec)
            status, data = self.token_handler(json.loads(body or b"{}")) if self.token_handler else (500, {"error": "no handler"})
            self._send(h, Reply(status=status, body=json.dumps(data).encode()))
            return
        if h.path.startswith("/api/oauth/") or h.path.startswith("/v1/oauth/revoke"):
            with self._cond:
                if h.path.startswith("/v1/oauth/revoke"):
                    self.revoke_calls.append(json.loads(body or b"{}"))
                    doc = {}
                else:
                    doc = (self.usage if h.path.startswith("/api/oauth/usage") else self.profile).get(cred)
            self._record(rec)
            self._send(h, Reply(status=404, body=error_json("not_found_error", "no")) if doc is None
                       else Reply(body=json.dumps(doc).encode()))
            return
        with self._cond:
            q = self._scripts.get(cred)
            reply = q.popleft() if q else None
            if reply is None and cred in self.refused:
                reply = Reply(status=401, body=error_json("authentication_error", "OAuth token has expired"))
        if reply is None:
            stream = b'"stream": true' in body or b'"stream":true' in body
            reply = Reply(events=sse_events()) if stream else Reply(body=message_json())
        self._record(rec)
        if reply.arrived is not None:
            reply.arrived.set()
        if reply.release is not None:
            reply.release.wait(30)
        self._send(h, reply)

    def _send(self, h: BaseHTTPRequestHandler, r: Reply) -> None:
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
                        h.connection.shutdown(socket.SHUT_RDWR)
                        return
                    h.wfile.write(frame_chunk(ev))
                    h.wfile.flush()
                h.wfile.write(LAST_CHUNK)
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
    r, _, _ = select.select([h.connection], [], [], 0)
    if not r:
        return False
    try:
        return h.connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
