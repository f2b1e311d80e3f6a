"""One attempt of an OpenAI-dialect request (``/v1/chat/completions``, ``/v1/responses``): the
:class:`~shunt_lib.dialect.Exchange` for the account the relay chose.

- An ``openai`` account (Chat Completions only): :func:`passthrough` sends the client's body byte for
  byte (its model rewritten only where ``[models]`` says so) to ``{base_url}/chat/completions`` with
  ``Authorization: Bearer KEY`` instead of the client's credential; the answer comes back unchanged.
- An Anthropic ``api_key`` account: :class:`ToAnthropic` sends the translated Messages request
  (``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``) and turns the answer
  into the client's dialect: a ``chat.completion`` or ``response`` object, or their streams, and
  errors in OpenAI's envelope with the upstream's status (``docs/protocol.md`` §9.3). Every field the
  translation dropped or approximated is named in ``x-shunt-degraded``.
"""

from __future__ import annotations

import json
from typing import Iterator

from . import __version__
from .chat_stream import ChatChunksFromAnthropic
from .dialect import Exchange, PassThrough, ProxyRequest, UpstreamRequest
from .forwarding import ResponseHead, upstream_headers
from .from_chat import chat_completion
from .openai_errors import anthropic_error_to_openai
from .openai_usage import OpenAIUsageTap
from .responses_api import ResponsesEventsFromAnthropic, response_object
from .usage import decode_body
from .json_body import body_bytes

ANTHROPIC_VERSION = "2023-06-01"  # https://platform.claude.com/docs/en/api/versioning
DEGRADED_HEADER = "x-shunt-degraded"
#: Upstream answer fields that describe the upstream's body, not the translated one the client gets.
_BODY_FIELDS = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})


def passthrough(request: ProxyRequest, base_url: str, secret: str, upstream_model: str, model: str,
                stream: bool = False, extra: list[tuple[str, str]] | None = None) -> PassThrough:
    """The exchange of a Chat Completions request through an ``openai`` account at ``base_url``.

    Headers as forwarded to Anthropic (hop-by-hop fields and the client's credential removed,
    ``accept-encoding`` narrowed) plus ``Authorization: Bearer secret`` (none for a keyless local
    server). The body is the client's bytes; only when ``upstream_model`` differs from the requested
    ``model`` (a ``[models]`` rewrite) is it re-serialised with that model. A request that does not
    ask for a stream gets ``long_head``: the provider sends its head only with the whole answer, which
    may take minutes. Its usage is read from the provider's answer by
    :class:`~shunt_lib.openai_usage.OpenAIUsageTap`. ``extra``: response headers added (the route's
    ``x-shunt-model`` / ``x-shunt-fallback``).
    """
    headers = upstream_headers(request.headers.items(), "api_key", "")
    headers.pop("x-api-key", None)
    if secret:
        headers["authorization"] = "Bearer " + secret
    body = request.body
    if upstream_model != model:
        data = json.loads(body)
        data["model"] = upstream_model
        body = body_bytes(data)
    query = request.target.partition("?")[2]
    return PassThrough(UpstreamRequest("POST", "/chat/completions" + ("?" + query if query else ""), headers, body),
                       base_url, extra=extra or None, long_head=not stream, usage_tap=OpenAIUsageTap)


def anthropic_request(request: ProxyRequest, body: dict, secret: str) -> UpstreamRequest:
    """The translated Messages request for an Anthropic ``api_key`` account holding ``secret``.

    Only the headers the Messages API needs, the client's ``user-agent`` (so the request says which
    client it came from) and ``accept-encoding: identity`` (the answer is translated, so it is read
    decoded)."""
    headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION, "x-api-key": secret,
               "accept": "text/event-stream" if body.get("stream") else "application/json",
               "accept-encoding": "identity",
               "user-agent": request.headers.by_name.get("user-agent") or f"shunt/{__version__}"}
    return UpstreamRequest("POST", "/v1/messages", headers, body_bytes(body))


class ToAnthropic(Exchange):
    """An OpenAI-dialect request on an Anthropic ``api_key`` account (see the module docstring).

    :param api: ``chat`` (Chat Completions) or ``responses`` (the Responses API).
    :param model: the model the client asked for (every answer names it).
    :param degraded: the fields translation dropped or approximated.
    :param include_usage: Chat Completions streams: send the final usage chunk.
    :param created_s: epoch seconds for the answer's ``created`` / ``created_at``.
    :param stream_id: the id of a streamed chat completion's chunks (``chatcmpl-...``).
    :param extra: response headers added (the route's ``x-shunt-model`` / ``x-shunt-fallback``).
    """

    __slots__ = ("request", "base_url", "api", "model", "degraded", "include_usage", "created_s", "stream_id",
                 "extra")

    def __init__(self, request: UpstreamRequest, *, api: str, model: str, degraded: list[str], include_usage: bool,
                 created_s: int, stream_id: str, extra: list[tuple[str, str]] | None = None):
        self.request = request
        self.base_url = None  # Anthropic: the server's upstream_url
        self.api, self.model, self.degraded = api, model, degraded
        self.include_usage, self.created_s, self.stream_id = include_usage, created_s, stream_id
        self.extra = extra or []

    def _head(self, head: ResponseHead, content_type: str) -> ResponseHead:
        items = [(k, v) for k, v in head.items if k.lower() not in _BODY_FIELDS]
        items.append(("content-type", content_type))
        if self.degraded:
            items.append((DEGRADED_HEADER, ", ".join(dict.fromkeys(self.degraded))))
        items += self.extra
        return ResponseHead.from_items(head.status, head.reason, items)

    def client_head(self, head: ResponseHead) -> ResponseHead:
        sse = "text/event-stream" in head.by_name.get("content-type", "")
        return self._head(head, "text/event-stream; charset=utf-8" if sse else "application/json")

    def client_body(self, head: ResponseHead, pieces: Iterator[bytes]) -> Iterator[bytes]:
        if "text/event-stream" in head.by_name.get("content-type", ""):
            return self._stream(pieces)
        return self._whole(head, pieces)

    def _stream(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        if self.api == "chat":
            chunks = ChatChunksFromAnthropic(self.model, self.stream_id, self.created_s, self.include_usage)
        else:
            chunks = ResponsesEventsFromAnthropic(self.model, "resp_", self.created_s)
        for piece in pieces:
            out = chunks.feed(piece)
            if out:
                yield b"".join(out)
        if isinstance(chunks, ChatChunksFromAnthropic):
            tail = chunks.close()
        elif not chunks.finished:
            tail = [b"event: error\ndata: " + json.dumps(
                {"type": "error", "code": "stream_incomplete", "param": None,
                 "message": "the upstream stream ended before the answer was complete"}).encode() + b"\n\n"]
        else:
            tail = []
        if tail:
            yield b"".join(tail)

    def _whole(self, head: ResponseHead, pieces: Iterator[bytes]) -> Iterator[bytes]:
        raw = decode_body(b"".join(pieces), head.by_name.get("content-encoding", ""))
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            yield json.dumps({"error": {"message": "the upstream answer was not a JSON message", "type": "server_error",
                                        "param": None, "code": "bad_upstream_answer"}}).encode()
            return
        if self.api == "chat":
            answer = chat_completion(message, self.model, self.created_s)
        else:
            answer = response_object(message, self.model, self.created_s)
        yield body_bytes(answer)

    def client_error(self, head: ResponseHead, body: bytes) -> tuple[ResponseHead, bytes]:
        raw = decode_body(body, head.by_name.get("content-encoding", ""))
        return self._head(head, "application/json"), anthropic_error_to_openai(head.status, raw)
