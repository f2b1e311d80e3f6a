"""Token usage of an OpenAI-dialect answer passed through unchanged (a Chat Completions request on an
``openai`` account), read as it streams past like :class:`~shunt_lib.usage.UsageTap` reads Anthropic's.

* JSON: the ``chat.completion``'s top-level ``usage`` and ``model``.
* SSE: the chunk carrying ``usage`` (the last one before ``[DONE]`` when the request set
  ``stream_options.include_usage``; a stream without it carries no usage and counts 0;
  https://platform.openai.com/docs/api-reference/chat-streaming).

A stream that ends without a usage chunk (cut off, or without ``include_usage``) reports at least one
output token per 4 characters of the content and tool-argument deltas it carried, as
:class:`~shunt_lib.usage.UsageTap` does for a cut Anthropic stream.

Counted as Anthropic's usage with cached prompt tokens once (``input = prompt_tokens − cached``,
``cache_read = cached``; :func:`~shunt_lib.openai_answer.anthropic_usage`), so that ``/status``, the
history and the savings count them like any other answer.
"""

from __future__ import annotations

import json
import re

from .openai_answer import anthropic_usage
from .usage import UsageTap

_USAGE_MARK = b'"prompt_tokens"'  # only a chunk with a usage object is parsed
# The streamed text of a chunk's delta: its content, reasoning or a tool call's arguments.
_DELTA_TEXT = re.compile(rb'"(?:content|reasoning_content|arguments)"\s*:\s*"((?:[^"\\]|\\.)*)"')


class OpenAIUsageTap(UsageTap):
    """:class:`~shunt_lib.usage.UsageTap` for Chat Completions answers (same interface and fields)."""

    def _line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            if _USAGE_MARK in line:
                try:
                    chunk = json.loads(line[5:])
                except ValueError:
                    return
                self._whole(chunk)
            elif b'"delta"' in line:
                for m in _DELTA_TEXT.finditer(line):
                    self.streamed_chars += len(m.group(1))

    def _whole(self, answer: object) -> None:
        if not isinstance(answer, dict):
            return
        self.model = str(answer.get("model") or self.model)
        usage = answer.get("usage")
        if isinstance(usage, dict):
            self._take(anthropic_usage(usage))
            self.final = True
