"""An OpenAI-compatible provider's Chat Completions stream, translated into Anthropic Messages events.

The provider sends server-sent events whose ``data`` is a ``chat.completion.chunk`` (text in
``choices[0].delta.content``, tool calls as ``delta.tool_calls[i]`` fragments keyed by ``index``, a
``finish_reason`` in one chunk, with ``stream_options.include_usage`` a last chunk with empty
``choices`` and the ``usage``, then ``data: [DONE]``;
https://platform.openai.com/docs/api-reference/chat-streaming/streaming). The client gets Anthropic's
stream: ``message_start``, ``content_block_start/delta/stop``, ``message_delta`` (stop reason and the
final usage), ``message_stop`` (https://docs.anthropic.com/en/docs/build-with-claude/streaming). The
rules, and the providers' variants they cover, are in ``docs/protocol.md`` §9.2.

:class:`AnthropicFromChatStream` is the state machine: bytes in, Anthropic SSE events (bytes) out, no
I/O and no clock. ``stream_collect.collect`` rebuilds the final message from its events and checks
their order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import sse
from .errors import error_body
from .openai_answer import anthropic_usage, stop_reason

log = logging.getLogger("shunt.translate")

def stop_reason_for(finish_reason: str, *, tool_calls: bool, refused: bool, text: str,
                    stop_sequences: Sequence[str], matched: object = None) -> tuple[str, str | None]:
    """Anthropic ``(stop_reason, stop_sequence)`` for a provider's ``finish_reason``: the rules of the
    non-streaming answer (:func:`shunt_lib.openai_answer.stop_reason`, over ``text``, the answer's
    text tail, and ``matched``, the sequence a provider names in the finish chunk), except that
    ``refused`` (the provider sent ``delta.refusal``) is ``refusal``.
    """
    if refused:
        return "refusal", None
    reason, sequence, _ = stop_reason(finish_reason, text, list(stop_sequences), has_tool_calls=tool_calls,
                                      matched=matched)
    return reason, sequence


def error_type_for(code: object) -> str:
    """Anthropic error type for a provider's mid-stream error ``code`` (OpenRouter sends an HTTP-like
    number, others a string): 429/rate limits → ``rate_limit_error``, 503/529/overload →
    ``overloaded_error``, anything else ``api_error``."""
    text = str(code).lower()
    if text == "429" or "rate_limit" in text:
        return "rate_limit_error"
    if text in ("503", "529") or "overload" in text:
        return "overloaded_error"
    return "api_error"


class SseDataReader:
    """Server-sent events framing over raw bytes, split anywhere (even inside a UTF-8 character).

    Bytes are buffered and only complete lines (ended by LF or CRLF) are decoded; ``data:`` lines are
    joined with newlines and handed out at the blank line that ends the event. Comment lines (``:``)
    and other fields (``event``, ``id``, ``retry``) are ignored
    (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[str]:
        """The payloads of the events ``data`` completes, in order."""
        self._buffer += data
        out: list[str] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            self._line(bytes(self._buffer[start:end]), out)
            start = end + 1
        del self._buffer[:start]
        return out

    def close(self) -> list[str]:
        """The payload of an event the stream ended inside (a last line without its newline counts)."""
        out: list[str] = []
        if self._buffer:
            self._line(bytes(self._buffer), out)
            self._buffer.clear()
        self._line(b"", out)
        return out

    def _line(self, raw: bytes, out: list[str]) -> None:
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            if self._data:
                out.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if name == b"data":
            self._data.append((value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace"))


_DELTA_FIELDS = {"text": (b"text_delta", b"text"), "thinking": (b"thinking_delta", b"thinking"),
                 "tool_use": (b"input_json_delta", b"partial_json")}
_json_string = json.encoder.encode_basestring_ascii  # a str as a JSON string literal (C speed-up when present)


@dataclass
class _ToolCall:
    """One tool call being assembled from its fragments."""

    id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    live: bool = False  # its block is open and its arguments are streamed as they come


class AnthropicFromChatStream:
    """Translates one Chat Completions stream into Anthropic Messages events.

    :param model: the ``model`` named in ``message_start`` (the one the client asked for).
    :param message_id: the message's ``id`` (``msg_…``).
    :param tool_name_original: the client's tool name for a name sent to the provider (the reverse of
        the request's name mapping).
    :param stop_sequences: the request's ``stop_sequences`` (to report ``stop_sequence``).
    :param input_tokens: ``message_start``'s ``usage.input_tokens`` (an estimate, or 0); the real
        count follows in ``message_delta``.

    Rules (``docs/protocol.md`` §9.2): one block index counter; a block is closed before the next
    opens. ``reasoning_content`` / ``reasoning`` deltas are a ``thinking`` block (with an empty
    ``signature``: these providers sign nothing, and no ``signature_delta`` is sent); ``content`` and
    ``refusal`` deltas a ``text`` block. The FIRST tool call streams live as ``input_json_delta``
    from when its name is known, and its block stays open until the ``finish_reason``; anything that
    arrives while it is open (other tool calls, whose fragments may interleave, and any later text or
    reasoning) is buffered per call and sent as complete blocks, in order of arrival, when the
    ``finish_reason`` comes. With ``stop_sequences``, the text's last characters (as many as the
    longest sequence has) are held back until more text, another block or the ``finish_reason``, so
    that a sequence the provider kept is cut as in the non-streaming answer (``stop_reason``,
    ``stop_sequence`` and usage follow :mod:`shunt_lib.openai_answer`). ``message_delta`` waits for ``[DONE]`` (or the end of the body) because
    the usage comes after the ``finish_reason``. A provider error, an unreadable chunk, or an end
    without a ``finish_reason`` gives an ``error`` event and nothing after it (no block is closed and
    no ``message_stop`` is sent, as in Anthropic's own streams).

    Only the choice with ``index`` 0 is read (shunt never asks for ``n`` > 1); unknown fields are
    ignored. Not thread-safe: one instance per response, fed by one thread.
    """

    def __init__(self, model: str, message_id: str, tool_name_original: Callable[[str], str] = str,
                 stop_sequences: Sequence[str] = (), input_tokens: int = 0) -> None:
        self.model = model
        self.message_id = message_id
        self._tool_name = tool_name_original
        self._stop_sequences = [s for s in stop_sequences if s]
        self._input_tokens = input_tokens
        self._reader = SseDataReader()
        self._started = False
        self._ended = False  # message_stop or error sent
        self._next_index = 0
        self._open: str | None = None  # kind of the open block: "text", "thinking" or "tool_use"
        self._tools: dict[int, _ToolCall] = {}
        self._first_tool: int | None = None  # the key of the tool call that streams live
        self._made_ids = 0
        self._deferred: list[list] = []  # ["tool", key] or [kind, text] waiting for the finish_reason
        self._text_tail = ""
        # The text's last characters, as long as the longest stop sequence, are held back until more
        # text, another block or the finish_reason comes: a sequence the provider kept in the text is
        # then cut, as in the non-streaming answer.
        self._hold = max((len(s) for s in self._stop_sequences), default=0)
        self._held = ""
        self._refused = False
        self._finish_reason: str | None = None
        self._stop: tuple[str, str | None] = ("end_turn", None)  # (stop_reason, stop_sequence)
        self._usage: dict | None = None

    # -- the caller's side ---------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """True once ``message_stop`` or an ``error`` event has been produced; later input is ignored."""
        return self._ended

    def feed(self, data: bytes) -> list[bytes]:
        """The events the provider's next bytes complete (possibly none)."""
        out: list[bytes] = []
        for payload in self._reader.feed(data):
            if self._ended:
                break
            self._payload(payload, out)
        return out

    def ping(self) -> bytes:
        """A ``ping`` event, to send while the provider is silent (clients skip it; it keeps the
        connection and the client's idle timer alive)."""
        return sse.PING

    def fail(self, message: str, error_type: str = "api_error") -> list[bytes]:
        """The provider broke mid-way (connection lost, read timeout): an ``error`` event carrying
        Anthropic's envelope (``api_error``, or e.g. ``overloaded_error``), after which the stream
        ends. Open blocks are left open and no ``message_stop`` follows, so a client never takes a
        cut answer for a whole one. Nothing if the stream had already ended."""
        if self._ended:
            return []
        self._ended = True
        return [sse.event("error", error_body(error_type, message))]

    def finish(self) -> list[bytes]:
        """The provider's body ended. After a ``finish_reason`` the message is completed (even without
        ``[DONE]``); without one the answer was cut, and that is an ``error`` event."""
        out: list[bytes] = []
        for payload in self._reader.close():
            if self._ended:
                break
            self._payload(payload, out)
        if not self._ended:
            if self._finish_reason is None:
                out += self.fail("the provider's stream ended before the answer was complete")
            else:
                self._complete(out)
        return out

    # -- reading chunks ------------------------------------------------------------------------

    def _payload(self, payload: str, out: list[bytes]) -> None:
        if payload.strip() == "[DONE]":
            if self._finish_reason is None:
                out += self.fail("the provider ended the stream without a finish_reason")
            else:
                self._complete(out)
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            out += self.fail("the provider sent an unreadable stream chunk")
            return
        if not isinstance(chunk, dict):
            out += self.fail("the provider sent an unreadable stream chunk")
            return
        error = chunk.get("error")
        if error:
            detail = error if isinstance(error, dict) else {"message": str(error)}
            out += self.fail(str(detail.get("message") or "the provider reported an error"),
                             error_type_for(detail.get("code", detail.get("type", ""))))
            return
        self._start(out)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage  # cumulative: the latest one wins

    def _choice(self, choice: dict, out: list[bytes]) -> None:
        if self._ended:
            return
        delta = choice.get("delta")
        if isinstance(delta, dict) and self._finish_reason is None:
            for key in ("reasoning_content", "reasoning"):
                if isinstance(delta.get(key), str) and delta[key]:
                    self._text("thinking", delta[key], out)
                    break
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text("text", delta["content"], out)
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                self._refused = True
                self._text("text", delta["refusal"], out)
            calls = delta.get("tool_calls")
            for position, fragment in enumerate(calls if isinstance(calls, list) else ()):
                if isinstance(fragment, dict):
                    self._tool_fragment(position, fragment, out)
        reason = choice.get("finish_reason")
        if reason and self._finish_reason is None:
            if reason == "error":
                out += self.fail("the provider reported an error while answering")
                return
            self._finish_reason = str(reason)
            self._stop = stop_reason_for(
                self._finish_reason, tool_calls=bool(self._tools), refused=self._refused, text=self._text_tail,
                stop_sequences=self._stop_sequences, matched=choice.get("stop_reason") or choice.get("matched_stop"))
            held, self._held = self._held, ""
            if self._stop[1] is not None:
                held = held.removesuffix(self._stop[1])
            if held:
                self._write("text", held, out)
            self._close_all(out)

    # -- blocks --------------------------------------------------------------------------------

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        if kind == "text":
            self._text_tail = (self._text_tail + text)[-256:]
            if self._hold:
                text = self._held + text
                self._held, text = text[-self._hold:], text[:-self._hold]
                if not text:
                    return
        else:
            self._release(out)
        self._write(kind, text, out)

    def _release(self, out: list[bytes]) -> None:
        """Send the held-back text: something other than text follows it, so it is not the tail."""
        if self._held:
            held, self._held = self._held, ""
            self._write("text", held, out)

    def _write(self, kind: str, text: str, out: list[bytes]) -> None:
        if self._open == "tool_use":
            if self._deferred and self._deferred[-1][0] == kind:
                self._deferred[-1][1] += text
            else:
                self._deferred.append([kind, text])
            return
        if self._open != kind:
            self._close(out)
            self._begin(kind, out)
        self._delta(kind, text, out)

    def _tool_fragment(self, position: int, fragment: dict, out: list[bytes]) -> None:
        self._release(out)
        key = fragment.get("index")
        key = key if isinstance(key, int) else position
        function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
        call = self._tools.get(key)
        if call is None:
            call = self._tools[key] = _ToolCall(id="")
            if self._first_tool is None:
                self._first_tool = key
            else:
                self._deferred.append(["tool", key])
        if not call.id and isinstance(fragment.get("id"), str):
            call.id = fragment["id"]
        if not call.name and isinstance(function.get("name"), str):
            call.name = function["name"]
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        if call.live:
            if arguments:
                self._delta("tool_use", arguments, out)
            return
        if arguments:
            call.arguments.append(arguments)
        if key == self._first_tool and call.name:
            self._close(out)
            self._begin_tool(call, out)
            call.live = True
            if call.arguments:
                self._delta("tool_use", "".join(call.arguments), out)
                call.arguments.clear()

    def _close_all(self, out: list[bytes]) -> None:
        self._close(out)
        first = self._tools.get(self._first_tool)
        pending = ([["tool", self._first_tool]] if first is not None and not first.live else []) + self._deferred
        self._deferred = []
        for kind, value in pending:
            if kind == "tool":
                call = self._tools[value]
                self._begin_tool(call, out)
                if call.arguments:
                    self._delta("tool_use", "".join(call.arguments), out)
            else:
                self._begin(kind, out)
                self._delta(kind, value, out)
            self._close(out)

    def _begin(self, kind: str, out: list[bytes]) -> None:
        block = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "", "signature": ""}
        self._emit(out, "content_block_start", {"index": self._next_index, "content_block": block})
        self._open = kind

    def _begin_tool(self, call: _ToolCall, out: list[bytes]) -> None:
        if not call.id:
            call.id = f"toolu_{self.message_id.removeprefix('msg_')}_{self._made_ids}"
            self._made_ids += 1
        if not call.name:
            log.warning("a tool call from the provider has no name")
        block = {"type": "tool_use", "id": call.id, "name": self._tool_name(call.name), "input": {}}
        self._emit(out, "content_block_start", {"index": self._next_index, "content_block": block})
        self._open = "tool_use"

    def _delta(self, kind: str, text: str, out: list[bytes]) -> None:
        # The most frequent event by far: written directly (the same JSON ``_emit`` would give, spacing aside).
        field = _DELTA_FIELDS[kind]
        out.append(b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": %d, "delta": '
                   b'{"type": "%s", "%s": %s}}\n\n' % (self._next_index, field[0], field[1],
                                                       _json_string(text).encode()))

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            self._emit(out, "content_block_stop", {"index": self._next_index})
            self._next_index += 1
            self._open = None

    # -- the message ---------------------------------------------------------------------------

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                       "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": {"input_tokens": self._input_tokens, "output_tokens": 0}}
            self._emit(out, "message_start", {"message": message})

    def _complete(self, out: list[bytes]) -> None:
        assert self._finish_reason is not None
        reason, sequence = self._stop
        usage = anthropic_usage(self._usage) if self._usage is not None else {"output_tokens": 0}
        self._emit(out, "message_delta", {"delta": {"stop_reason": reason, "stop_sequence": sequence},
                                          "usage": usage})
        self._emit(out, "message_stop", {})
        self._ended = True

    @staticmethod
    def _emit(out: list[bytes], name: str, body: dict) -> None:
        out.append(sse.json_event(name, {"type": name, **body}))
