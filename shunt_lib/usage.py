"""Token usage read from a response as it streams past, without holding it up (pure, incremental).

* SSE (``text/event-stream``): ``message_start`` carries ``message.usage`` (input, cache read and
  cache creation tokens) and ``message.model``; ``message_delta`` carries **cumulative** usage
  (streaming docs), so later values replace earlier ones.
* JSON: the message's top-level ``usage`` and ``model``.

Cache writes are counted in total (``cache_creation_input_tokens``) and, when the answer splits them by
TTL in ``usage.cache_creation`` (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``;
docs/protocol.md §5.2), per TTL too, so that they can be priced apart (:mod:`shunt_lib.pricing`).
An answer without the split leaves both at 0; pricing then takes the total as 5-minute writes.

A stream that ends before its final ``message_delta`` (the client left, the upstream broke off, shunt
stopped) has only ``message_start``'s usage, whose output count is a placeholder. The tap therefore
counts the characters of the text, thinking and tool-input deltas it saw, and :attr:`UsageTap.usage`
then reports at least one output token per 4 of them (rounded up: the rule of
:mod:`shunt_lib.token_estimate`), so a cancelled stream is charged for what it actually streamed.

Bodies compressed with ``gzip`` or ``deflate`` (the only encodings shunt lets upstream use, since the
standard library decodes them) are decoded on a copy; the client gets the original bytes.
"""

from __future__ import annotations

import json
import re
import zlib

from .numbers import count

USAGE_KEYS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_input_tokens": "cache_read_tokens",
    "cache_creation_input_tokens": "cache_creation_tokens",
}
CACHE_CREATION_KEYS = {
    "ephemeral_5m_input_tokens": "cache_write_5m_tokens",
    "ephemeral_1h_input_tokens": "cache_write_1h_tokens",
}
JSON_TAP_LIMIT = 8 << 20  # bytes of a non-streaming body kept for usage parsing
CHARS_PER_TOKEN = 4  # the estimate of a cut stream's output (shunt_lib.token_estimate.BYTES_PER_TOKEN)
# The streamed text of a content_block_delta: text, thinking or a tool's partial JSON (escapes counted as written).
_DELTA_TEXT = re.compile(rb'"(?:text|thinking|partial_json)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def make_decoder(content_encoding: str):
    """A ``zlib`` decompressor for ``gzip``/``deflate``, or None for any other encoding (identity)."""
    enc = (content_encoding or "").strip().lower()
    if enc == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    return None


def decode_body(raw: bytes, content_encoding: str) -> bytes:
    """Decode a whole gzip/deflate body; other or bad encodings return ``raw`` unchanged."""
    d = make_decoder(content_encoding)
    if d is None:
        return raw
    try:
        return d.decompress(raw) + d.flush()
    except zlib.error:
        return raw


class UsageTap:
    """Feed it every body piece with :meth:`feed`; read :attr:`usage` and :attr:`model` at the end.

    :param content_type: the response's ``content-type``.
    :param content_encoding: the response's ``content-encoding`` (gzip/deflate decoded on a copy).

    Subclasses reading another answer shape (:class:`~shunt_lib.openai_usage.OpenAIUsageTap`) override
    ``_line`` (one SSE line) and ``_whole`` (a parsed JSON body), and record usage with ``_take``.
    """

    def __init__(self, content_type: str, content_encoding: str = ""):
        self.sse = "text/event-stream" in (content_type or "")
        self._usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_creation_tokens": 0,
                      "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0}
        self.model = ""
        self.streamed_chars = 0  # characters of text / thinking / tool input deltas seen (SSE)
        self.final = False  # the stream's final usage (message_delta) was seen
        self._decoder = make_decoder(content_encoding)
        self._buf = b""  # SSE: the unfinished line; JSON: the body so far
        self._overflow = False

    def feed(self, piece: bytes) -> None:
        """Take the next raw body piece (any size, split anywhere)."""
        if self._decoder is not None:
            try:
                piece = self._decoder.decompress(piece)
            except zlib.error:
                self._decoder, self._overflow = None, True
                return
        if self._overflow:
            return
        if not self.sse:
            if len(self._buf) + len(piece) > JSON_TAP_LIMIT:
                self._overflow, self._buf = True, b""
            else:
                self._buf += piece
            return
        data = self._buf + piece
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            self._line(data[start:nl])
            start = nl + 1
        self._buf = data[start:]
        if len(self._buf) > JSON_TAP_LIMIT:
            self._buf, self._overflow = b"", True

    def _line(self, line: bytes) -> None:
        """One whole SSE line of the stream (without its newline)."""
        if line.startswith(b"data:"):
            if b"content_block_delta" in line:
                m = _DELTA_TEXT.search(line)
                if m is not None:
                    self.streamed_chars += len(m.group(1))
            elif b"message_start" in line or b"message_delta" in line:
                self._on_data(line[5:])

    def _on_data(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            msg = event["message"]
            self.model = str(msg.get("model") or self.model)
            self._take(msg.get("usage"))
        elif kind == "message_delta":
            self._take(event.get("usage"))
            if isinstance(event.get("usage"), dict):
                self.final = True

    @property
    def usage(self) -> dict[str, int]:
        """The answer's usage so far (token counts by name). A stream without its final usage reports
        at least the output tokens estimated from the characters it streamed (see the module docstring)."""
        if self.sse and not self.final and self.streamed_chars:
            estimate = -(-self.streamed_chars // CHARS_PER_TOKEN)
            if estimate > self._usage["output_tokens"]:
                return {**self._usage, "output_tokens": estimate}
        return self._usage

    def _take(self, usage: object) -> None:
        if isinstance(usage, dict):
            for src, dst in USAGE_KEYS.items():
                v = count(usage.get(src))  # a negative, huge or non-integer count is ignored
                if v is not None:
                    self._usage[dst] = v
            split = usage.get("cache_creation")
            if isinstance(split, dict):
                for src, dst in CACHE_CREATION_KEYS.items():
                    v = count(split.get(src))
                    if v is not None:
                        self._usage[dst] = v

    def finish(self) -> None:
        """Parse a buffered JSON body (call once, after the last :meth:`feed`)."""
        if self.sse or self._overflow or not self._buf:
            return
        try:
            msg = json.loads(self._buf)
        except ValueError:
            return
        finally:
            self._buf = b""
        self._whole(msg)

    def _whole(self, msg: object) -> None:
        """The parsed JSON body of a whole (non-streaming) answer."""
        if isinstance(msg, dict):
            self.model = str(msg.get("model") or self.model)
            self._take(msg.get("usage"))
