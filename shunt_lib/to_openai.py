"""An Anthropic Messages request as a Chat Completions request, for an OpenAI-compatible provider.

Only an allow-list of fields is ever sent; everything dropped or approximated is named in
``Translated.degraded`` (the ``x-shunt-degraded`` response header), never silently. Every rule, with
its source, is in ``docs/protocol.md`` §9.1; the Chat Completions fields are documented at
https://platform.openai.com/docs/api-reference/chat/create, the Anthropic ones at
https://platform.claude.com/docs/en/api/messages.
"""

from __future__ import annotations

import dataclasses
import json

from shunt_lib.capabilities import Capabilities
from shunt_lib.tool_names import ToolNames

#: The key under which a tool call's arguments that were not a JSON object travel in ``tool_use.input``
#: (see ``openai_answer``); a ``tool_use`` coming back with only this key is sent as those arguments.
RAW_ARGUMENTS_KEY = "_raw_arguments"

#: Chat Completions accepts at most 4 stop sequences (``stop``, documented in the API reference).
MAX_STOP_SEQUENCES = 4

#: Top-level request fields this module reads; any other one is named in ``degraded``.
_READ_FIELDS = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p",
                          "tools", "tool_choice", "metadata", "stream", "thinking", "output_config"})

#: ``output_config.effort`` → ``reasoning_effort``. ``xhigh`` and ``max`` have no level every provider
#: accepts, so they become ``high`` and are named in ``degraded``.
_EFFORT_LEVELS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}

#: ``thinking.budget_tokens`` → ``reasoning_effort``: under 4,096 → low, under 16,384 → medium, else high.
_BUDGET_STEPS = ((4096, "low"), (16384, "medium"))


@dataclasses.dataclass(frozen=True)
class Translated:
    """One translated request.

    ``body``: the Chat Completions request (a dict ready for ``json.dumps``); ``degraded``: the short
    names of what was dropped or approximated, each once, in the order met; ``tool_names``: the
    mapping used for tool names, needed to translate the answer back.
    """

    body: dict
    degraded: list[str]
    tool_names: ToolNames


class _Degraded:
    """An ordered set of degradation names."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}

    def add(self, name: str) -> None:
        self.names.setdefault(name, None)


def chat_request(messages_body: dict, model: str, caps: Capabilities, *, stream: bool) -> Translated:
    """Translate an Anthropic ``POST /v1/messages`` body into a Chat Completions body for ``model``.

    :param messages_body: the client's parsed JSON body (not modified).
    :param model: the provider's model name to send.
    :param caps: what the provider accepts.
    :param stream: ask for a streamed answer (with ``stream_options.include_usage`` when
        ``caps.stream_usage``).
    :returns: the body, the degradation names and the tool-name mapping.
    """
    deg = _Degraded()
    names = ToolNames(_tool_names_in(messages_body))
    body: dict = {"model": model}
    messages = _system(messages_body.get("system"), caps, deg)
    messages += _messages(messages_body.get("messages") or [], caps, names, deg)
    body["messages"] = messages
    if messages_body.get("max_tokens") is not None:
        body[caps.max_tokens_field] = messages_body["max_tokens"]
    for field in ("temperature", "top_p"):
        if messages_body.get(field) is not None:
            body[field] = messages_body[field]
    _stop(messages_body.get("stop_sequences"), body, deg)
    _tools(messages_body, caps, names, body, deg)
    _reasoning(messages_body, caps, body, deg)
    _metadata(messages_body.get("metadata"), body, deg)
    if stream:
        body["stream"] = True
        if caps.stream_usage:
            body["stream_options"] = {"include_usage": True}
    for field in messages_body:
        if field not in _READ_FIELDS:
            deg.add(field)
    return Translated(body=body, degraded=list(deg.names), tool_names=names)


def _tool_names_in(messages_body: dict) -> list[str]:
    """Every tool name a request mentions: its tools, ``tool_choice`` and the ``tool_use`` blocks in history."""
    found = [t["name"] for t in messages_body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
    choice = messages_body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        found.append(choice["name"])
    for message in messages_body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            found += [b["name"] for b in content
                      if isinstance(b, dict) and b.get("type") == "tool_use" and isinstance(b.get("name"), str)]
    return found


def _system(system, caps: Capabilities, deg: _Degraded) -> list[dict]:
    """The ``system`` prompt (a string, or text blocks joined with ``\\n``) as a first message."""
    if isinstance(system, str):
        text = system
    elif isinstance(system, list):
        texts = []
        for block in system:
            if not isinstance(block, dict):
                deg.add("block.invalid")
                continue
            if "cache_control" in block:
                deg.add("cache_control")
            if block.get("type") == "text":
                texts.append(block.get("text", ""))
            else:
                deg.add(f"system.{block.get('type')}")
        text = "\n".join(texts)
    else:
        return []
    return [{"role": caps.system_role, "content": text}] if text else []


def _messages(messages: list, caps: Capabilities, names: ToolNames, deg: _Degraded) -> list[dict]:
    out: list[dict] = []
    for message in messages:
        if not isinstance(message, dict):
            deg.add("message.invalid")
            continue
        if message.get("role") == "assistant":
            out.append(_assistant(message.get("content"), names, deg))
        else:
            out += _user(message.get("content"), caps, deg)
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        deg.add("assistant_prefill")  # the provider answers in a new message, it does not continue this one
    return out


def _assistant(content, names: ToolNames, deg: _Degraded) -> dict:
    """An assistant turn: its texts joined with ``\\n``, its ``tool_use`` blocks as ``tool_calls``."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, calls = [], []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            deg.add("block.invalid")
            continue
        kind = block.get("type")
        if "cache_control" in block:
            deg.add("cache_control")
        if kind == "text":
            texts.append(block.get("text", ""))
            if block.get("citations"):
                deg.add("citations")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": names.openai(block.get("name", "")),
                                       "arguments": _arguments(block.get("input"))}})
        elif kind in ("thinking", "redacted_thinking"):
            deg.add("thinking_history")
        else:
            deg.add(f"block.{kind}")
    message: dict = {"role": "assistant", "content": "\n".join(texts) if texts else (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def _arguments(tool_input) -> str:
    """A ``tool_use.input`` as Chat Completions ``arguments`` (a JSON string); arguments that came from the
    provider as something other than a JSON object go back exactly as they came."""
    if isinstance(tool_input, dict) and set(tool_input) == {RAW_ARGUMENTS_KEY} and isinstance(tool_input[RAW_ARGUMENTS_KEY], str):
        return tool_input[RAW_ARGUMENTS_KEY]
    return json.dumps(tool_input if tool_input is not None else {}, ensure_ascii=False)


def _user(content, caps: Capabilities, deg: _Degraded) -> list[dict]:
    """A user turn: its ``tool_result`` blocks first, as ``tool`` messages in order (they must follow the
    assistant's ``tool_calls``), then one user message with the images the tool results carried and the
    turn's other content."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages, moved, parts = [], [], []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            deg.add("block.invalid")
            continue
        if "cache_control" in block:
            deg.add("cache_control")
        if block.get("type") == "tool_result":
            message, images = _tool_result(block, caps, deg)
            tool_messages.append(message)
            moved += images
        else:
            parts += _part(block, caps, deg)
    parts = moved + parts
    if not parts:
        return tool_messages
    if len(parts) == 1 and parts[0]["type"] == "text":
        return tool_messages + [{"role": "user", "content": parts[0]["text"]}]
    return tool_messages + [{"role": "user", "content": parts}]


def _part(block: dict, caps: Capabilities, deg: _Degraded) -> list[dict]:
    """One content block of a user turn as Chat Completions content parts."""
    kind = block.get("type")
    if kind == "text":
        if block.get("citations"):
            deg.add("citations")
        return [_text(block.get("text", ""))]
    if kind == "image":
        return _image(block, caps, deg)
    if kind == "document":
        return _document(block, caps, deg)
    deg.add(f"block.{kind}")
    return []


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _image(block: dict, caps: Capabilities, deg: _Degraded) -> list[dict]:
    """An image block as an ``image_url`` part (base64 as a ``data:`` URL); a placeholder text where the
    provider takes no images or the source is not base64 or a URL."""
    source = block.get("source") or {}
    if not caps.vision:
        deg.add("image")
        return [_text("[image not sent: this model does not accept images]")]
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        deg.add("image")
        return [_text(f"[image not sent: {source.get('type')} sources are not supported]")]
    return [{"type": "image_url", "image_url": {"url": url}}]


def _document(block: dict, caps: Capabilities, deg: _Degraded) -> list[dict]:
    """A document block: plain text (``text`` source) and ``content`` sources are sent as their text and
    images; PDFs and files are not sent (a placeholder names them), since not every provider takes
    Chat Completions ``file`` parts."""
    source = block.get("source") or {}
    if block.get("citations"):
        deg.add("citations")
    header = [t for t in (block.get("title"), block.get("context")) if t]
    if source.get("type") == "text":
        return [_text("\n\n".join(header + [source.get("data", "")]))]
    if source.get("type") == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [_text("\n\n".join(header + [inner]))]
        parts = [_text("\n\n".join(header))] if header else []
        for item in inner if isinstance(inner, list) else []:
            parts += _part(item, caps, deg) if isinstance(item, dict) else []
        return parts
    deg.add("document")
    name = block.get("title") or source.get("media_type") or source.get("type") or "document"
    return [_text(f"[document not sent: {name}]")]


def _tool_result(block: dict, caps: Capabilities, deg: _Degraded) -> tuple[dict, list[dict]]:
    """A ``tool_result`` as a ``tool`` message (texts joined with ``\\n``; ``is_error`` prefixes ``Error: ``)
    and the parts to move to the following user message (tool messages carry text only)."""
    content = block.get("content")
    call_id = block.get("tool_use_id")
    texts, images = [], []
    if isinstance(content, str):
        texts.append(content)
    for item in content if isinstance(content, list) else []:
        if not isinstance(item, dict):
            deg.add("block.invalid")
            continue
        if "cache_control" in item:
            deg.add("cache_control")
        for part in _part(item, caps, deg):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(part)
    text = "\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    moved = []
    if images:
        deg.add("tool_result.image")
        moved = [_text(f"[images returned by tool call {call_id}]")] + images
    return {"role": "tool", "tool_call_id": call_id, "content": text}, moved


def _stop(stop_sequences, body: dict, deg: _Degraded) -> None:
    if not stop_sequences:
        return
    if len(stop_sequences) > MAX_STOP_SEQUENCES:
        deg.add("stop_sequences")
    body["stop"] = list(stop_sequences[:MAX_STOP_SEQUENCES])


def _tools(messages_body: dict, caps: Capabilities, names: ToolNames, body: dict, deg: _Degraded) -> None:
    """``tools`` as functions; ``tool_choice`` auto/any/tool/none as auto/required/a named function/none;
    ``disable_parallel_tool_use`` as ``parallel_tool_calls: false`` where the provider accepts it."""
    functions = []
    for tool in messages_body.get("tools") or []:
        if not isinstance(tool, dict):
            deg.add("tools.invalid")
            continue
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            deg.add(f"tools.{tool.get('type') or tool.get('name')}")  # a server tool: the provider cannot run it
            continue
        function = {"name": names.openai(tool.get("name", ""))}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool["input_schema"]
        functions.append({"type": "function", "function": function})
        for key in tool:
            if key not in ("name", "description", "input_schema", "type"):
                deg.add("cache_control" if key == "cache_control" else f"tools.{key}")
    choice = messages_body.get("tool_choice")
    if not functions:
        if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
            deg.add("tool_choice")
        return
    body["tools"] = functions
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind in ("auto", "none"):
        body["tool_choice"] = kind
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "tool":
        body["tool_choice"] = {"type": "function", "function": {"name": names.openai(choice.get("name", ""))}}
    else:
        deg.add("tool_choice")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        if caps.parallel_tool_calls:
            body["parallel_tool_calls"] = False
        else:
            deg.add("disable_parallel_tool_use")


def _reasoning(messages_body: dict, caps: Capabilities, body: dict, deg: _Degraded) -> None:
    """``output_config.effort`` (first) or ``thinking.budget_tokens`` as ``reasoning_effort``, only where the
    provider takes it. Adaptive thinking without an effort leaves the provider's default."""
    thinking = messages_body.get("thinking") if isinstance(messages_body.get("thinking"), dict) else {}
    config = messages_body.get("output_config") if isinstance(messages_body.get("output_config"), dict) else {}
    for key in config:
        if key != "effort":
            deg.add(f"output_config.{key}")
    kind, effort = thinking.get("type"), config.get("effort")
    wants_thinking = kind in ("enabled", "adaptive")
    if not caps.reasoning:
        if wants_thinking:
            deg.add("thinking")
        if effort:
            deg.add("effort")
        return
    level = None
    if effort:
        level = _EFFORT_LEVELS.get(effort, "high")
        if level != effort:
            deg.add("effort")
    elif kind == "enabled" and isinstance(thinking.get("budget_tokens"), int):
        budget = thinking["budget_tokens"]
        level = next((name for limit, name in _BUDGET_STEPS if budget < limit), "high")
        deg.add("thinking.budget_tokens")
    if level:
        body["reasoning_effort"] = level
    if kind == "disabled":
        deg.add("thinking")  # a reasoning model may reason anyway
    if wants_thinking and thinking.get("display") == "omitted":
        deg.add("thinking.display")  # the answer carries the provider's reasoning text


def _metadata(metadata, body: dict, deg: _Degraded) -> None:
    if not isinstance(metadata, dict):
        return
    for key, value in metadata.items():
        if key == "user_id" and isinstance(value, str) and value:
            body["user"] = value
        elif key != "user_id":
            deg.add(f"metadata.{key}")
