"""An Anthropic Messages stream read back: its events, and the final message they describe.

The stream's rules (https://docs.anthropic.com/en/docs/build-with-claude/streaming, ``docs/protocol.md``
§5.3): ``message_start`` first; per block ``content_block_start``, deltas, ``content_block_stop`` with
one increasing index, one block open at a time; ``message_delta`` (cumulative usage);
``message_stop``. An ``error`` event ends a failed stream. Used to check translated streams and to
turn one into a non-streaming answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable


def parse_events(data: bytes) -> list[tuple[str, dict]]:
    """Anthropic SSE bytes as ``(event name, data object)`` pairs, in order (``ping`` included)."""
    events = []
    for text in data.decode("utf-8").split("\n\n"):
        name, payload = "", []
        for line in text.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                payload.append(line[len("data: "):])
        if name:
            events.append((name, json.loads("\n".join(payload))))
    return events


def collect(events: Iterable[bytes]) -> dict:
    """The final Anthropic message the events describe, as a non-streaming answer would carry it;
    the error envelope if the stream ended with an ``error`` event.

    Raises ``ValueError`` on an event sequence Anthropic's stream never produces: no
    ``message_start`` first, a block index that is not the next one, a block opened while another
    is open, a delta or stop for a block that is not open, a delta of the wrong type, anything after
    ``message_stop``, or no ``message_stop`` at the end.
    """
    message: dict | None = None
    open_index: int | None = None
    partial_json = ""
    stopped = False
    for name, data in parse_events(b"".join(events)):
        if name == "ping":
            continue
        if stopped:
            raise ValueError(f"{name} after message_stop")
        if name == "error":
            return data
        if message is None:
            if name != "message_start":
                raise ValueError(f"{name} before message_start")
            message = json.loads(json.dumps(data["message"]))
            continue
        blocks = message["content"]
        if name == "content_block_start":
            if open_index is not None or data["index"] != len(blocks):
                raise ValueError(f"block {data['index']} opened while {open_index} open / {len(blocks)} done")
            blocks.append(dict(data["content_block"]))
            open_index, partial_json = data["index"], ""
        elif name == "content_block_delta":
            if data["index"] != open_index:
                raise ValueError(f"delta for block {data['index']}, open is {open_index}")
            block, delta = blocks[open_index], data["delta"]
            expected = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}
            if delta["type"] == "signature_delta" and block["type"] == "thinking":
                block["signature"] = block.get("signature", "") + delta["signature"]
            elif delta["type"] != expected.get(block["type"]):
                raise ValueError(f"{delta['type']} in a {block['type']} block")
            elif block["type"] == "text":
                block["text"] += delta["text"]
            elif block["type"] == "thinking":
                block["thinking"] += delta["thinking"]
            else:
                partial_json += delta["partial_json"]
        elif name == "content_block_stop":
            if data["index"] != open_index:
                raise ValueError(f"stop for block {data['index']}, open is {open_index}")
            if blocks[open_index]["type"] == "tool_use":
                blocks[open_index]["input"] = json.loads(partial_json) if partial_json else {}
            open_index = None
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"] = {**message["usage"], **data["usage"]}
        elif name == "message_stop":
            if open_index is not None:
                raise ValueError(f"message_stop with block {open_index} open")
            stopped = True
    if not stopped:
        raise ValueError("the stream ended without message_stop")
    assert message is not None
    return message
