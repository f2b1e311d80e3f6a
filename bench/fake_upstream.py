#!/usr/bin/env python3
"""The benchmark's fake Anthropic API: one thread, epoll, HTTP/1.1 keep-alive, canned answers.

Started by ``bench/bench.py`` as ``python bench/fake_upstream.py`` with the repository root on
``PYTHONPATH`` (its canned bytes come from shunt's shared builders in :mod:`shunt_lib.simulator`,
:mod:`shunt_lib.sse` and :mod:`shunt_lib.wire`). It prints ``PORT <n>`` once listening on 127.0.0.1,
then answers every request after reading its whole body (``content-length`` bytes):

* a target containing ``/chat/completions`` (an OpenAI-compatible provider's Chat Completions,
  https://platform.openai.com/docs/api-reference/chat): a ``chat.completion`` JSON, or for a streaming
  body a chunked SSE stream of 4 chunks (role, text, finish, usage) and ``[DONE]``, with the
  ``x-ratelimit-*`` headers OpenAI sends;
* a body containing ``"stream":true`` (or ``"stream": true``): a chunked SSE stream of 7 events;
* a target containing ``hold=1``: the SSE head and ``message_start``, then nothing until
  ``POST /bench/release`` (which answers with the number of streams it finished) or
  ``--hold-timeout`` seconds;
* anything else: a non-streaming JSON message.

Every Messages answer carries the ``anthropic-ratelimit-unified-*`` headers a subscription account gets.
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import sys
import time
from typing import NamedTuple

from shunt_lib import sse
from shunt_lib.simulator import message_events, message_json, unified_headers
from shunt_lib.wire import LAST_CHUNK, frame_chunk

HOST = "127.0.0.1"
MODEL = "claude-sonnet-4-5"
RECV_BYTES = 65536


class Canned(NamedTuple):
    """Complete response bytes: ``json`` (head and body), ``sse`` (a whole stream), and the same
    stream cut in two for held streams: ``sse_first`` (head and ``message_start``) and ``sse_rest``;
    ``chat_json`` and ``chat_sse``: the Chat Completions answers."""

    json: bytes
    sse: bytes
    sse_first: bytes
    sse_rest: bytes
    chat_json: bytes
    chat_sse: bytes


def canned_responses() -> Canned:
    """Build the answers once, with rate-limit headers resetting 1 h / 1 day from now."""
    limits = "".join(f"{k}: {v}\r\n" for k, v in unified_headers(util_5h=0.12, util_7d=0.34).items()).encode()
    body = message_json("Hello", model=MODEL)
    json_resp = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_bench\r\n" + limits
                 + b"content-length: %d\r\n\r\n" % len(body) + body)
    events = message_events(("Hello",), model=MODEL)
    events.insert(2, sse.json_event("ping", {"type": "ping"}))  # where the real API sends it
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
            b"request-id: req_bench\r\n" + limits + b"transfer-encoding: chunked\r\n\r\n")
    first = head + frame_chunk(events[0])
    rest = b"".join(frame_chunk(e) for e in events[1:]) + LAST_CHUNK
    return Canned(json_resp, first + rest, first, rest, *chat_responses())


def chat_responses() -> tuple[bytes, bytes]:
    """A Chat Completions answer (``chat.completion`` JSON) and its stream (chunks, usage chunk, ``[DONE]``),
    shapes as in https://platform.openai.com/docs/api-reference/chat/object and .../chat/streaming."""
    limits = (b"x-ratelimit-limit-requests: 5000\r\nx-ratelimit-remaining-requests: 4999\r\n"
              b"x-ratelimit-reset-requests: 12ms\r\nx-ratelimit-limit-tokens: 2000000\r\n"
              b"x-ratelimit-remaining-tokens: 1990000\r\nx-ratelimit-reset-tokens: 300ms\r\n")
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
    base = {"id": "chatcmpl-bench", "created": 1, "model": "gpt-bench"}
    body = json.dumps(dict(base, object="chat.completion", usage=usage, choices=[
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}])).encode()
    json_resp = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: req_bench\r\n" + limits
                 + b"content-length: %d\r\n\r\n" % len(body) + body)
    chunk = dict(base, object="chat.completion.chunk")
    chunks = [dict(chunk, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
              dict(chunk, choices=[{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]),
              dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
              dict(chunk, choices=[], usage=usage)]
    events = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-request-id: req_bench\r\n" + limits
            + b"transfer-encoding: chunked\r\n\r\n")
    return json_resp, head + b"".join(frame_chunk(e) for e in events) + LAST_CHUNK


def content_length(head: bytes) -> int:
    """The ``content-length`` of a lower-cased request or response head (without its blank line), or -1."""
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        return -1
    j = head.find(b"\r\n", i + 2)
    return int(head[i + 17:j if j >= 0 else len(head)])


class FakeUpstream:
    """The server loop. :param hold_timeout_s: a held stream is finished after this many seconds."""

    def __init__(self, hold_timeout_s: float):
        self.canned = canned_responses()
        self.hold_timeout_s = hold_timeout_s
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(4096)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.bufs: dict[socket.socket, bytearray] = {}
        self.held: dict[socket.socket, float] = {}  # socket -> monotonic deadline, seconds

    @property
    def port(self) -> int:
        return self.lsock.getsockname()[1]

    def close(self, s: socket.socket) -> None:
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        self.bufs.pop(s, None)
        self.held.pop(s, None)
        s.close()

    def release(self, s: socket.socket) -> None:
        """Finish a held stream, then serve whatever the client pipelined behind it."""
        del self.held[s]
        try:
            s.sendall(self.canned.sse_rest)
        except OSError:
            self.close(s)
            return
        self.serve(s)

    def serve(self, s: socket.socket) -> None:
        """Answer every complete request in ``s``'s buffer (a request is complete with its whole body)."""
        buf = self.bufs[s]
        while s not in self.held:
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                return
            head = bytes(buf[:he]).lower()
            if b"\r\ntransfer-encoding:" in head:
                self.close(s)  # neither shunt (bytes bodies) nor the load generator sends chunked requests
                return
            end = he + 4 + max(0, content_length(head))
            if len(buf) < end:
                return
            line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
            stream = buf.find(b'"stream":true', he + 4, end) >= 0 or buf.find(b'"stream": true', he + 4, end) >= 0
            del buf[:end]
            try:
                if b"/bench/release" in line:
                    msg = str(len(self.held)).encode()
                    for h in list(self.held):
                        self.release(h)
                    s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(msg), msg))
                elif b"hold=1" in line:
                    s.sendall(self.canned.sse_first)
                    self.held[s] = time.monotonic() + self.hold_timeout_s
                    return
                elif b"/chat/completions" in line:
                    s.sendall(self.canned.chat_sse if stream else self.canned.chat_json)
                else:
                    s.sendall(self.canned.sse if stream else self.canned.json)
            except OSError:
                self.close(s)
                return
            if b"\r\nconnection: close" in head:
                self.close(s)
                return

    def run(self, max_life_s: float) -> None:
        """Serve until ``max_life_s`` seconds have passed (or the process is terminated)."""
        end_of_life = time.monotonic() + max_life_s
        while time.monotonic() < end_of_life:
            timeout = 0.5
            if self.held:
                timeout = max(0.0, min(timeout, min(self.held.values()) - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                s = key.fileobj
                if key.data is None:
                    self.accept()
                    continue
                try:
                    data = s.recv(RECV_BYTES)
                except OSError:
                    data = b""
                if not data:
                    self.close(s)
                    continue
                self.bufs[s] += data
                if s not in self.held:
                    self.serve(s)
            now = time.monotonic()
            for h in [h for h, deadline in self.held.items() if deadline <= now]:
                if h in self.held:
                    self.release(h)

    def accept(self) -> None:
        try:
            c, _ = self.lsock.accept()
        except OSError:
            return
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.bufs[c] = bytearray()
        self.sel.register(c, selectors.EVENT_READ, 1)


def _exit_on_sigterm(signum, frame) -> None:
    sys.exit(0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hold-timeout", type=float, default=60.0, help="seconds before a held stream is finished")
    p.add_argument("--max-life", type=float, default=900.0, help="seconds before the process exits by itself")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    server = FakeUpstream(args.hold_timeout)
    print(f"PORT {server.port}", flush=True)
    server.run(args.max_life)
    return 0


if __name__ == "__main__":
    sys.exit(main())
