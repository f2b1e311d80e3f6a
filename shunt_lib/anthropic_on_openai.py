"""An Anthropic client's request served by an ``openai`` account (an OpenAI-compatible provider).

:class:`ChatExchange` is the :class:`~shunt_lib.dialect.Exchange` of one attempt: the Messages body
becomes a Chat Completions request (:func:`~shunt_lib.to_openai.chat_request`, ``docs/protocol.md``
§9.1) sent to ``{base_url}/chat/completions`` with only the provider's own headers
(``Authorization: Bearer KEY``, none for a keyless local server; ``content-type``; the client's
``accept-encoding`` narrowed to what shunt decodes); the client's Anthropic headers and identity never
go. The answer comes back in Anthropic's shape: a JSON message
(:func:`~shunt_lib.openai_answer.anthropic_message`), or an event stream
(:class:`~shunt_lib.openai_stream.AnthropicFromChatStream`, §9.2), or an error with the provider's
status (:func:`~shunt_lib.openai_answer.openai_error_to_anthropic`). What translation dropped or
approximated is named in ``x-shunt-degraded``.

``count_tokens`` has no Chat Completions counterpart: :class:`EstimateExchange` answers it locally
(:func:`~shunt_lib.token_estimate.estimate_tokens`, flagged ``x-shunt-estimate: true``) without an
upstream call, through :attr:`EstimateExchange.local_answer`.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Iterator

from .config import AccountConfig
from .requests_shape import Exchange
from .capabilities import Capabilities
from .requests_shape import ProxyRequest, UpstreamRequest
from .errors import UpstreamStreamError
from .forwarding import ResponseHead, narrow_accept_encoding
from .model_routing import Routed
from .openai_answer import anthropic_message, openai_error_to_anthropic
from .openai_stream import AnthropicFromChatStream
from .silence import with_silences
from .to_openai import chat_request
from .token_estimate import estimate_tokens
from .usage import decode_body, make_decoder
from .json_body import body_bytes

log = logging.getLogger("shunt.translate")

DEGRADED_HEADER = "x-shunt-degraded"
ESTIMATE_HEADER = "x-shunt-estimate"
CHAT_PATH = "/chat/completions"  # appended to the account's base_url (https://platform.openai.com/docs/api-reference/chat/create)
#: Provider response headers not passed on: the body is shunt's (new type, length, no encoding).
_DROP = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})
MAX_ANSWER_BYTES = 64 << 20  # a non-streaming answer larger than this is treated as broken
#: A translated stream gets a ``ping`` after this long without a byte from the provider (Anthropic's
#: streams carry pings while the model is slow, https://docs.anthropic.com/en/docs/build-with-claude/streaming).
SILENT_PING_S = 10.0


def provider_headers(request: ProxyRequest, secret: str) -> dict[str, str]:
    """The only headers sent to the provider: ``content-type``, the narrowed ``accept-encoding`` the
    client asked for (if any remains), ``authorization: Bearer KEY`` unless ``secret`` is empty."""
    out = {"content-type": "application/json"}
    narrowed = narrow_accept_encoding(request.headers.get("accept-encoding") or "")
    if narrowed:
        out["accept-encoding"] = narrowed
    if secret:
        out["authorization"] = "Bearer " + secret
    return out


def _head(head: ResponseHead, content_type: str, extra: list[tuple[str, str]]) -> ResponseHead:
    items = [(k, v) for k, v in head.items if k.lower() not in _DROP]
    return ResponseHead.from_items(head.status, head.reason, items + [("content-type", content_type)] + extra)


class ChatExchange(Exchange):
    """One attempt of an Anthropic Messages request on an ``openai`` account.

    :param routed: the request's parsed body and models (:class:`~shunt_lib.model_routing.Routed`).
    :attr translated: True: usage is read from the body the client gets (Anthropic's shape).
    :attr long_head: a non-streaming request: the provider sends its head only with the whole answer.
    :attr degraded: what translation dropped or approximated (short names, in order).
    :attr ping_after_s: a stream gets a ``ping`` event each time the provider is silent this long.
    :attr served_model: the model the provider was asked for (what the access log and history record;
        the client's answer names the model it asked for).
    """

    translated = True
    ping_after_s = SILENT_PING_S

    def __init__(self, request: ProxyRequest, account: AccountConfig, secret: str, routed: Routed):
        body = routed.body
        self.stream = body.get("stream") is True
        self.model, self.served_model = routed.model, routed.upstream_model
        stops = body.get("stop_sequences")
        self.stop_sequences = [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []
        tr = chat_request(body, routed.upstream_model, account.capabilities or Capabilities(), stream=self.stream)
        self.tool_names = tr.tool_names
        self.degraded = tr.degraded
        self.request = UpstreamRequest("POST", CHAT_PATH, provider_headers(request, secret),
                                       body_bytes(tr.body))
        self.base_url = account.base_url
        self.long_head = not self.stream
        self.extra = list(routed.headers)
        if self.degraded:
            self.extra.append((DEGRADED_HEADER, ", ".join(self.degraded)))
            log.debug("translated for %s with %s dropped or approximated: %s", account.name,
                     DEGRADED_HEADER, ", ".join(self.degraded))
        self._translator: AnthropicFromChatStream | None = None

    def client_head(self, head: ResponseHead) -> ResponseHead:
        return _head(head, "text/event-stream" if self.stream else "application/json", self.extra)

    def client_body(self, head: ResponseHead, pieces: Iterator[bytes]) -> Iterator[bytes]:
        decoder = make_decoder(head.by_name.get("content-encoding", ""))
        if self.stream:
            return self._stream(decoder, pieces)
        return self._whole(decoder, pieces)

    def _stream(self, decoder, pieces: Iterator[bytes]) -> Iterator[bytes]:
        tr = self._translator = AnthropicFromChatStream(self.model, f"msg_{uuid.uuid4().hex}", self.tool_names.original,
                                                        self.stop_sequences)
        for piece in with_silences(pieces, self.ping_after_s):
            if piece is None:
                if not tr.ended:  # nothing may follow message_stop
                    yield tr.ping()
                continue
            data = decoder.decompress(piece) if decoder is not None else piece
            out = tr.feed(data)
            if out:
                yield b"".join(out)
        tail = tr.finish()
        if tail:
            yield b"".join(tail)

    def _whole(self, decoder, pieces: Iterator[bytes]) -> Iterator[bytes]:
        parts, size = [], 0
        for piece in pieces:
            data = decoder.decompress(piece) if decoder is not None else piece
            size += len(data)
            if size > MAX_ANSWER_BYTES:
                raise UpstreamStreamError(f"the provider's answer is over {MAX_ANSWER_BYTES >> 20} MiB")
            parts.append(data)
        if decoder is not None:
            parts.append(decoder.flush())
        try:
            answer = json.loads(b"".join(parts))
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamStreamError("the provider's answer is not a JSON object")
        yield body_bytes(anthropic_message(answer, self.model, self.tool_names, self.stop_sequences))

    def broken_event(self, message: str) -> bytes:
        """The SSE event ending a stream the provider broke off (the translator's ``error`` event;
        empty if the translated stream had already ended)."""
        tr = self._translator
        if tr is None:
            tr = AnthropicFromChatStream(self.model, "msg_broken")
        return b"".join(tr.fail(message))

    def client_error(self, head: ResponseHead, body: bytes) -> tuple[ResponseHead, bytes]:
        raw = decode_body(body, head.by_name.get("content-encoding", ""))
        return _head(head, "application/json", self.extra), openai_error_to_anthropic(head.status, raw)


class EstimateExchange(Exchange):
    """``count_tokens`` on an ``openai`` account: answered locally, no upstream call.

    :attr local_answer: ``(head, body)``: 200 ``{"input_tokens": N}`` with ``x-shunt-estimate: true``.
    :attr served_model: the model the estimate stands for (recorded as :class:`ChatExchange` records it).
    """

    translated = True

    def __init__(self, routed: Routed):
        self.served_model = routed.upstream_model
        count = estimate_tokens(routed.body)
        body = json.dumps({"input_tokens": count}).encode()
        head = ResponseHead.from_items(200, "OK", [("content-type", "application/json"), (ESTIMATE_HEADER, "true")]
                                       + routed.headers)
        self.local_answer = (head, body)
        self.request = UpstreamRequest("POST", "/v1/messages/count_tokens", {}, None)  # never sent
        self.base_url = None

    def client_head(self, head: ResponseHead) -> ResponseHead:
        return head

    def client_body(self, head: ResponseHead, pieces: Iterator[bytes]) -> Iterator[bytes]:
        return pieces

    def client_error(self, head: ResponseHead, body: bytes) -> tuple[ResponseHead, bytes]:
        return head, body


def exchange(request: ProxyRequest, account: AccountConfig, secret: str, routed: Routed) -> ChatExchange | EstimateExchange:
    """The exchange of an Anthropic request (``/v1/messages`` or its ``count_tokens``) on ``account``."""
    if request.target.split("?", 1)[0].endswith("/count_tokens"):
        return EstimateExchange(routed)
    return ChatExchange(request, account, secret, routed)
