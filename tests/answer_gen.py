"""Generated answers in both dialects, each as a non-streaming object AND as the equivalent stream.

Used by the stream-equivalence properties (tests/test_stream_equivalence.py): one drawn answer gives
the body a provider (or Anthropic) would return without streaming and the SSE bytes it would stream
for the same answer, so translating both must give the same message.

Stream shapes follow the providers' documentation: Chat Completions chunks
(https://platform.openai.com/docs/api-reference/chat-streaming/streaming; ``reasoning_content``:
https://api-docs.deepseek.com/guides/reasoning_model; vLLM's ``choice.stop_reason``:
https://github.com/vllm-project/vllm/pull/2976) and Anthropic's events
(https://platform.claude.com/docs/en/build-with-claude/streaming).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import strategies as st

#: Characters that stress UTF-8 splitting (2-, 3- and 4-byte sequences) and JSON escaping.
ALPHABET = st.sampled_from("ab é漢字€😀🛑\n\"\\{}#")
texts = st.text(alphabet=ALPHABET, min_size=1, max_size=8)

#: Stop sequences a request may carry; ``b`` / ``ab`` and ``#`` / ``##`` overlap (the longest match wins).
STOP_POOL = ["###", "##", "#", "END", "b", "ab", "止", "🛑\n"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6)
tool_inputs = st.dictionaries(texts, json_values, max_size=3)
tool_names = st.sampled_from(["get_weather", "Read", "bash-run", "f"])


def split_text(draw, text: str, max_cuts: int = 4) -> list[str]:
    """``text`` cut at drawn character positions (empty pieces possible, as providers send them)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=max_cuts)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def byte_pieces(draw, data: bytes, max_cuts: int = 30) -> list[bytes]:
    """``data`` cut at drawn byte positions (inside lines, inside UTF-8 characters)."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=max_cuts))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


# -- Chat Completions (a provider's answer) ----------------------------------------------------------

@dataclass
class ChatAnswer:
    """One provider answer in both forms, and the request facts the translation needs."""

    completion: dict        # the non-streaming ``chat.completion`` object
    stream: bytes           # the equivalent SSE stream
    stop_sequences: list[str]
    include_usage: bool


def _chat_chunk(delta: dict | None, finish=None, *, usage_null: bool, extra: dict | None = None) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish, **(extra or {})}
    chunk = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "gpt-x-2025", "system_fingerprint": "fp_1", "choices": [choice]}
    if usage_null:
        chunk["usage"] = None
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


@st.composite
def chat_answers(draw) -> ChatAnswer:
    """A Chat Completions answer: reasoning and text pieces, 0..3 tool calls whose argument
    fragments interleave by index, a finish_reason, usage with or without cached tokens, maybe a
    stop sequence at the text's tail (or named by the provider, vLLM style)."""
    reasoning = draw(st.lists(texts, max_size=3))
    text_pieces = draw(st.lists(texts, max_size=4))
    stop_sequences = draw(st.lists(st.sampled_from(STOP_POOL), max_size=3, unique=True))
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    matched = None
    if stop_sequences and draw(st.booleans()):
        sequence = draw(st.sampled_from(stop_sequences))
        if draw(st.booleans()):
            text_pieces.append(sequence)  # a server that keeps the sequence in the text
        else:
            matched = sequence  # vLLM: the sequence is left out of the text and named in choice.stop_reason
        finish = "stop"
    n_calls = draw(st.integers(0, 3))
    calls = []
    for i in range(n_calls):
        arguments = json.dumps(draw(tool_inputs), ensure_ascii=draw(st.booleans()))
        calls.append({"id": f"call_{i}_{draw(st.integers(0, 999))}", "name": draw(tool_names),
                      "arguments": arguments, "fragments": split_text(draw, arguments)})
    prompt = draw(st.integers(0, 5000))
    usage = {"prompt_tokens": prompt, "completion_tokens": draw(st.integers(0, 5000))}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if draw(st.booleans()):
        usage["prompt_tokens_details"] = {"cached_tokens": draw(st.integers(0, prompt))}
    include_usage = draw(st.booleans())
    text = "".join(text_pieces)
    choice_extra = {"stop_reason": matched} if matched is not None else {}

    message: dict = {"role": "assistant", "content": text or None, "refusal": None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
    completion = {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000, "model": "gpt-x-2025",
                  "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish,
                               **choice_extra}],
                  "usage": usage}

    def chunk(delta=None, finish_reason=None, extra=None):
        return _chat_chunk(delta, finish_reason, usage_null=include_usage, extra=extra)

    body = [chunk({"role": "assistant", "content": "" if not reasoning else None, "refusal": None})]
    body += [chunk({"reasoning_content": piece, "content": None}) for piece in reasoning]
    body += [chunk({"content": piece}) for piece in text_pieces]
    pending = [[{"index": i, "id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": c["fragments"][0]}}]
               + [{"index": i, "function": {"arguments": f}} for f in c["fragments"][1:]] for i, c in enumerate(calls)]
    begun = 0
    while any(pending):  # parallel calls interleave; each call's own order kept; calls begin in index order
        i = draw(st.sampled_from([k for k, p in enumerate(pending) if p and k <= begun]))
        begun = max(begun, i + 1)
        body.append(chunk({"tool_calls": [pending[i].pop(0)]}))
    body.append(chunk({}, finish, choice_extra))
    if include_usage:
        body.append(b"data: " + json.dumps({"id": "chatcmpl-abc", "object": "chat.completion.chunk",
                                            "created": 1700000000, "model": "gpt-x-2025", "choices": [],
                                            "usage": usage}).encode() + b"\n\n")
    body.append(b"data: [DONE]\n\n")
    return ChatAnswer(completion, b"".join(body), stop_sequences, include_usage)


# -- Anthropic Messages (Anthropic's answer) ----------------------------------------------------------

@dataclass
class AnthropicAnswer:
    """One Anthropic answer in both forms."""

    message: dict   # the non-streaming Messages answer
    stream: bytes   # the equivalent SSE events


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data}, ensure_ascii=False)}\n\n".encode()


anthropic_blocks = st.lists(st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.text(alphabet=ALPHABET, min_size=1, max_size=16)),
    st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s},
              st.text(alphabet=ALPHABET, min_size=1, max_size=16), st.sampled_from(["", "EqQBCgIYAhIM"])),
    st.builds(lambda n, name, v: {"type": "tool_use", "id": f"toolu_{n:04d}", "name": name, "input": v},
              st.integers(0, 9999), tool_names, tool_inputs)), max_size=5)


@st.composite
def anthropic_answers(draw) -> AnthropicAnswer:
    """An Anthropic answer (text, thinking and tool_use blocks; a stop_reason; usage with cache reads
    and writes) and its stream, with deltas cut at drawn points and pings sprinkled in."""
    blocks = draw(anthropic_blocks)
    stop = draw(st.sampled_from(["end_turn", "max_tokens", "tool_use", "stop_sequence"]))
    sequence = draw(st.sampled_from(STOP_POOL)) if stop == "stop_sequence" else None
    usage = {"input_tokens": draw(st.integers(0, 5000)), "cache_creation_input_tokens": draw(st.integers(0, 5000)),
             "cache_read_input_tokens": draw(st.integers(0, 5000)), "output_tokens": draw(st.integers(1, 5000))}
    message = {"id": f"msg_{draw(st.integers(0, 10**6)):07d}", "type": "message", "role": "assistant",
               "model": "claude-x-1", "content": blocks, "stop_reason": stop, "stop_sequence": sequence,
               "usage": usage}

    events = [_event("message_start", {"message": {**message, "content": [], "stop_reason": None,
                                                   "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}})]
    for index, block in enumerate(blocks):
        kind = block["type"]
        empty = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "tool_use": {**block, "input": {}}}[kind]
        events.append(_event("content_block_start", {"index": index, "content_block": empty}))
        if kind == "tool_use":
            raw = json.dumps(block["input"], ensure_ascii=draw(st.booleans()))
            raw = "" if raw == "{}" and draw(st.booleans()) else raw  # an empty input may stream no fragment
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in split_text(draw, raw)]
        else:
            deltas = [{"type": f"{kind}_delta", kind: p} for p in split_text(draw, block[kind]) if p]
            if kind == "thinking" and block["signature"]:
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        events += [_event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        events.append(_event("content_block_stop", {"index": index}))
    end_usage = usage if draw(st.booleans()) else {"output_tokens": usage["output_tokens"]}
    events.append(_event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": sequence},
                                           "usage": end_usage}))
    events.append(_event("message_stop", {}))
    for _ in range(draw(st.integers(0, 3))):  # pings anywhere after message_start
        events.insert(draw(st.integers(1, len(events) - 1)), _event("ping", {}))
    return AnthropicAnswer(message, b"".join(events))
