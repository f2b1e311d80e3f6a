"""Anthropic's streamed Messages events → OpenAI ``chat.completion.chunk`` lines, for a streaming
``/v1/chat/completions`` request served by an Anthropic account.

Anthropic's stream: ``docs/protocol.md`` §5.3–5.4
(https://platform.claude.com/docs/en/build-with-claude/streaming). OpenAI's chunks:
https://platform.openai.com/docs/api-reference/chat-streaming/streaming. The mapping is
``docs/protocol.md`` §9.3.
"""

from __future__ import annotations

import json
from typing import Iterator

from .from_chat import chat_usage, finish_reason
from .openai_errors import error_from_anthropic

DONE = b"data: [DONE]\n\n"

#: Sent for Anthropic's ``ping``: an SSE comment, which OpenAI clients skip, keeps the connection busy.
KEEPALIVE = b": ping\n\n"


class SSEEvents:
    """Splits an SSE byte stream into events. :meth:`feed` takes bytes split anywhere (inside a line,
    inside a UTF-8 character) and returns the complete events as ``(event name, data text)``; lines
    are decoded only once whole, so a character split across pieces is never damaged. ``\\r\\n`` line
    ends are accepted; comment lines are skipped; several ``data:`` lines join with ``\\n``
    (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""

    def __init__(self) -> None:
        self._buf = b""
        self._name = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        events = []
        buf = self._buf + data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl].rstrip(b"\r").decode("utf-8", "replace")
            start = nl + 1
            if not line:
                if self._data or self._name:
                    events.append((self._name or "message", "\n".join(self._data)))
                self._name, self._data = "", []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    self._name = value
                elif field == "data":
                    self._data.append(value)
        self._buf = buf[start:]
        return events


def sse_data(obj: object) -> bytes:
    """One ``data: JSON`` event (compact JSON, UTF-8, no ASCII escaping)."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def anthropic_events(reader: "SSEEvents", data: bytes) -> Iterator[tuple[str, dict]]:
    """The Anthropic events ``data`` completes in ``reader``, parsed: ``(type, event)`` pairs (the
    ``type`` field, else the SSE event name); data that is not a JSON object is skipped."""
    for name, text in reader.feed(data):
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            yield str(event.get("type") or name), event


class ChatChunksFromAnthropic:
    """A state machine: Anthropic SSE bytes in (:meth:`feed`), OpenAI stream lines out.

    - ``message_start`` → the first chunk, ``delta: {role: assistant}`` (no ``content``: it is not known
      yet whether any text follows, and a client that accumulates the deltas must get ``null`` for a
      tool-only answer, as the non-streaming answer has);
    - ``text_delta`` → ``delta.content``; ``thinking_delta`` → ``delta.reasoning_content``;
    - a ``tool_use`` block start → ``delta.tool_calls[{index: k, id, type: function, function: {name,
      arguments: ""}}]``, k counting tool calls from 0 (not Anthropic's block index);
      ``input_json_delta`` → ``delta.tool_calls[{index: k, function: {arguments: fragment}}]``;
      a tool call whose block ends without any fragment gets ``{}`` (as the non-streaming answer has);
    - ``message_delta`` with a ``stop_reason`` → an empty delta with ``finish_reason``;
    - ``message_stop`` → when ``include_usage``, a chunk with ``choices: []`` and the usage (every
      other chunk then carries ``usage: null``, as OpenAI's do), then ``data: [DONE]``;
    - ``ping`` → an SSE comment (:data:`KEEPALIVE`); other events (signatures, citations,
      server-tool blocks) → nothing;
    - an ``error`` event → ``data: {"error": {message, type, param, code}}`` (OpenAI's envelope, which
      the ``openai`` SDK raises as ``APIError`` mid-stream) and no ``[DONE]``: the stream is over.

    ``chunk_id`` is every chunk's ``id``, ``created_s`` their ``created`` (epoch seconds), ``model``
    the name the client asked for. After the end (``[DONE]`` or an error) :meth:`feed` returns nothing;
    :meth:`close` reports a stream that broke off before its end.
    """

    def __init__(self, model: str, chunk_id: str, created_s: int, include_usage: bool):
        self.model, self.chunk_id, self.created_s = model, chunk_id, created_s
        self.include_usage = include_usage
        self.finished = False
        self._events = SSEEvents()
        self._usage: dict = {}
        self._tool_index: dict[int, int] = {}  # Anthropic block index → tool-call index
        self._has_arguments: set[int] = set()  # tool blocks that sent an argument fragment
        self._started = False

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        chunk = {"id": self.chunk_id, "object": "chat.completion.chunk", "created": self.created_s,
                 "model": self.model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                   "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return sse_data(chunk)

    def _take_usage(self, usage: object) -> None:
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next piece of Anthropic's stream; return the OpenAI lines it completes."""
        out: list[bytes] = []
        for kind, event in anthropic_events(self._events, data):
            if self.finished:
                break
            self._on_event(kind, event, out)
        return out

    def _on_event(self, kind: str, event: dict, out: list[bytes]) -> None:
        if kind == "message_start":
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            self._take_usage(message.get("usage"))
            self._start(out)
        elif kind == "content_block_start":
            self._start(out)
            self._block_start(event.get("index"), event.get("content_block") or {}, out)
        elif kind == "content_block_delta":
            self._start(out)
            self._delta(event.get("index"), event.get("delta") or {}, out)
        elif kind == "content_block_stop":
            index = event.get("index")
            if index in self._tool_index and index not in self._has_arguments:
                out.append(self._arguments(index, "{}"))
        elif kind == "message_delta":
            self._start(out)
            self._take_usage(event.get("usage"))
            delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
            if delta.get("stop_reason") is not None:
                out.append(self._chunk({}, finish_reason(delta["stop_reason"])))
        elif kind == "message_stop":
            self._start(out)
            if self.include_usage:
                out.append(sse_data({"id": self.chunk_id, "object": "chat.completion.chunk",
                                     "created": self.created_s, "model": self.model, "choices": [],
                                     "usage": chat_usage(self._usage)}))
            out.append(DONE)
            self.finished = True
        elif kind == "ping":
            out.append(KEEPALIVE)
        elif kind == "error":
            out.append(sse_data({"error": error_from_anthropic(200, event)}))
            self.finished = True

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant"}))

    def _block_start(self, index: object, block: dict, out: list[bytes]) -> None:
        kind = block.get("type")
        if kind == "tool_use" and isinstance(index, int):
            k = self._tool_index[index] = len(self._tool_index)
            out.append(self._chunk({"tool_calls": [{"index": k, "id": block.get("id"), "type": "function",
                                                    "function": {"name": block.get("name"), "arguments": ""}}]}))
        elif kind == "text" and block.get("text"):
            out.append(self._chunk({"content": block["text"]}))
        elif kind == "thinking" and block.get("thinking"):
            out.append(self._chunk({"reasoning_content": block["thinking"]}))

    def _delta(self, index: object, delta: dict, out: list[bytes]) -> None:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            out.append(self._chunk({"content": delta["text"]}))
        elif kind == "thinking_delta" and delta.get("thinking"):
            out.append(self._chunk({"reasoning_content": delta["thinking"]}))
        elif kind == "input_json_delta" and delta.get("partial_json") and index in self._tool_index:
            self._has_arguments.add(index)
            out.append(self._arguments(index, delta["partial_json"]))

    def _arguments(self, index: int, fragment: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": self._tool_index[index], "function": {"arguments": fragment}}]})

    def close(self) -> list[bytes]:
        """The upstream stream ended: nothing if it had finished; otherwise an OpenAI error line saying
        the answer broke off (and the stream is then over)."""
        if self.finished:
            return []
        self.finished = True
        return [sse_data({"error": {"message": "the upstream stream ended before the answer was complete",
                                    "type": "server_error", "param": None, "code": "stream_incomplete"}})]
