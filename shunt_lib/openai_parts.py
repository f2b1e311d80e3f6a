"""Pieces both OpenAI dialects (Chat Completions and Responses) share when a request goes to an
Anthropic account: content parts → Anthropic blocks, function tools → Anthropic tools, a
conversation's turns (same roles merged, tool results first), reasoning effort → a thinking budget,
and Anthropic ``usage`` → OpenAI token counts.

Protocol facts and their sources are in ``docs/protocol.md`` §9.3. Every function raises
:class:`~shunt_lib.errors.InvalidOpenAIRequest` naming the field (``param``) for input it cannot
translate, and appends the names of fields it drops or approximates to ``degraded``.
"""

from __future__ import annotations

import base64
import binascii
import re

from .errors import InvalidOpenAIRequest

#: ``max_tokens`` when the client gives no ``max_tokens`` / ``max_completion_tokens`` /
#: ``max_output_tokens``: Anthropic requires one, OpenAI defaults to the model's maximum. 4096 fits
#: every Claude model's output limit.
DEFAULT_MAX_TOKENS = 4096

#: ``reasoning_effort`` → Anthropic ``thinking.budget_tokens`` (Anthropic's minimum budget is 1024,
#: https://platform.claude.com/docs/en/build-with-claude/extended-thinking). ``none`` means no thinking.
EFFORT_BUDGET_TOKENS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
MIN_BUDGET_TOKENS = 1024

#: Image media types Anthropic accepts in a base64 source
#: (https://platform.claude.com/docs/en/build-with-claude/vision).
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_DATA_URL = re.compile(r"data:([^;,]*)((?:;[^;,]*)*),(.*)", re.S)


def bad(message: str, param: str | None) -> InvalidOpenAIRequest:
    """The 400 for a field shunt cannot translate (``param`` names it)."""
    return InvalidOpenAIRequest(message, param)


def _data_url(url: str, where: str) -> tuple[str, str]:
    """``data:MEDIA;base64,DATA`` → (media type, base64 data); anything else is a 400."""
    m = _DATA_URL.fullmatch(url)
    if not m or ";base64" not in m.group(2).lower():
        raise bad(f"{where}: only base64 data URLs are supported", where)
    data = m.group(3)
    try:
        base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise bad(f"{where}: the data URL is not valid base64", where) from None
    return m.group(1).lower(), data


def image_block(url: object, where: str) -> dict:
    """An OpenAI image URL (``data:`` base64, or http/https) → an Anthropic ``image`` block."""
    if not isinstance(url, str) or not url:
        raise bad(f"{where}: an image needs a url", where)
    if url.startswith("data:"):
        media_type, data = _data_url(url, where)
        if media_type not in IMAGE_MEDIA_TYPES:
            raise bad(f"{where}: image type {media_type or '(none)'} is not supported "
                      f"(use {', '.join(sorted(IMAGE_MEDIA_TYPES))})", where)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad(f"{where}: an image url must be a data: URL or http(s)", where)


def document_block(file_data: object, file_url: object, where: str) -> dict:
    """An OpenAI file part (``file_data`` as a data URL, or ``file_url``) → an Anthropic ``document``
    block: PDF as base64, ``text/plain`` as a text source, a URL as a url source."""
    if isinstance(file_data, str) and file_data:
        media_type, data = _data_url(file_data if file_data.startswith("data:")
                                     else "data:application/pdf;base64," + file_data, where)
        if media_type == "application/pdf":
            return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
        if media_type == "text/plain":
            try:
                text = base64.b64decode(data).decode("utf-8")
            except (binascii.Error, ValueError):
                raise bad(f"{where}: text/plain file data is not base64 UTF-8", where) from None
            return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
        raise bad(f"{where}: file type {media_type or '(none)'} is not supported (application/pdf, text/plain)",
                  where)
    if isinstance(file_url, str) and file_url.startswith(("https://", "http://")):
        return {"type": "document", "source": {"type": "url", "url": file_url}}
    raise bad(f"{where}: files are supported inline (file_data) or by URL only; file_id is not", where)


def content_blocks(content: object, where: str, degraded: list[str]) -> list[dict]:
    """A message's ``content`` (string, list of parts, or null) → Anthropic blocks; empty texts are
    left out (Anthropic rejects empty text blocks).

    Parts: ``text`` / ``input_text`` / ``output_text`` → text; ``refusal`` → text; ``image_url`` /
    ``input_image`` → image (``detail`` other than ``auto`` is degraded); ``file`` / ``input_file`` →
    document. ``input_audio`` and other parts are a 400.
    """
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise bad(f"{where} must be a string or a list of content parts", where)
    blocks = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise bad(f"{at} must be an object", at)
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text", "refusal"):
            text = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise bad(f"{at}: a {kind} part needs a string", at)
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            url, detail = (image.get("url"), image.get("detail")) if isinstance(image, dict) else (image, None)
            blocks.append(image_block(url, f"{at}.image_url"))
            if detail not in (None, "auto"):
                degraded.append(f"{at}.image_url.detail")
        elif kind == "input_image":
            if part.get("file_id") is not None:
                raise bad(f"{at}.file_id: images by file_id are not supported", f"{at}.file_id")
            blocks.append(image_block(part.get("image_url"), f"{at}.image_url"))
            if part.get("detail") not in (None, "auto"):
                degraded.append(f"{at}.detail")
        elif kind == "file":
            file = part.get("file") if isinstance(part.get("file"), dict) else {}
            blocks.append(document_block(file.get("file_data"), None, f"{at}.file"))
        elif kind == "input_file":
            blocks.append(document_block(part.get("file_data"), part.get("file_url"), at))
        else:
            raise bad(f"{at}.type: content part type {kind!r} is not supported", f"{at}.type")
    return blocks


def tool_definition(name: object, description: object, parameters: object, strict: object, where: str) -> dict:
    """An OpenAI function tool → ``{name, description, input_schema[, strict]}``. No ``parameters``
    means no arguments (``{"type": "object", "properties": {}}``), as OpenAI documents."""
    if not isinstance(name, str) or not name:
        raise bad(f"{where}.name: a function tool needs a name", f"{where}.name")
    tool: dict = {"name": name}
    if isinstance(description, str) and description:
        tool["description"] = description
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise bad(f"{where}.parameters must be a JSON schema object", f"{where}.parameters")
    tool["input_schema"] = parameters
    if strict is True:
        tool["strict"] = True
    return tool


def tool_choice(choice: object, names: set[str], where: str) -> dict | None:
    """OpenAI ``tool_choice`` → Anthropic's: ``auto``/``none`` keep their names, ``required`` → ``any``,
    a named function → ``{type: tool, name}``. ``None`` when absent."""
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        name = fn.get("name")
        if not isinstance(name, str) or name not in names:
            raise bad(f"{where}: names no function among tools", where)
        return {"type": "tool", "name": name}
    raise bad(f"{where}: {choice!r} is not supported (auto, none, required, or a function)", where)


def apply_tool_choice(out: dict, choice: dict | None, parallel: object) -> None:
    """Set ``out["tool_choice"]`` from ``choice``, with ``disable_parallel_tool_use`` when the client sent
    ``parallel_tool_calls: false`` (Anthropic puts it on auto/any/tool, not none)."""
    if parallel is False and (choice is None or choice["type"] != "none"):
        choice = dict(choice or {"type": "auto"}, disable_parallel_tool_use=True)
    if choice is not None:
        out["tool_choice"] = choice


class Turns:
    """Builds Anthropic ``messages`` from OpenAI's: consecutive same-role messages merge into one turn,
    and in a user turn the ``tool_result`` blocks come first (Anthropic requires the results of an
    assistant's tool calls at the start of the next user turn)."""

    def __init__(self) -> None:
        self._turns: list[tuple[str, list[dict]]] = []

    def add(self, role: str, blocks: list[dict]) -> None:
        if not blocks:
            return
        if self._turns and self._turns[-1][0] == role:
            self._turns[-1][1].extend(blocks)
        else:
            self._turns.append((role, list(blocks)))

    def messages(self) -> list[dict]:
        """The turns; a turn that is one plain text block becomes string content."""
        out = []
        for role, blocks in self._turns:
            if role == "user":
                blocks = ([b for b in blocks if b["type"] == "tool_result"]
                          + [b for b in blocks if b["type"] != "tool_result"])
            if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:
                out.append({"role": role, "content": blocks[0]["text"]})
            else:
                out.append({"role": role, "content": blocks})
        return out


def tool_result_content(content: object, where: str, degraded: list[str]) -> str | list[dict]:
    """A tool result's content: a string stays a string; parts become text/image blocks."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return content_blocks(content, where, degraded)


def max_tokens_value(value: object, where: str) -> int | None:
    """A positive integer token limit, ``None`` when absent; anything else is a 400."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad(f"{where} must be a positive integer", where)
    return value


def apply_sampling(out: dict, temperature: object, top_p: object, degraded: list[str]) -> None:
    """``temperature`` (OpenAI 0–2) → Anthropic 0–1, clamped (degraded when clamped); ``top_p`` kept,
    except when ``temperature`` is also set: current Claude models accept only one of the two, so
    ``top_p`` is then dropped (degraded)."""
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
            raise bad("temperature must be a number from 0 to 2", "temperature")
        if temperature > 1:
            degraded.append("temperature")
        out["temperature"] = min(float(temperature), 1.0) if temperature > 1 else temperature
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 <= top_p <= 1:
            raise bad("top_p must be a number from 0 to 1", "top_p")
        if "temperature" in out:
            degraded.append("top_p")
        else:
            out["top_p"] = top_p


def apply_effort(out: dict, effort: object, explicit_max: int | None, where: str, degraded: list[str]) -> None:
    """``reasoning_effort`` → ``thinking: {type: enabled, budget_tokens}`` (:data:`EFFORT_BUDGET_TOKENS`).

    ``out["max_tokens"]`` is the whole output including thinking, as OpenAI's
    ``max_completion_tokens`` is; without an explicit limit it becomes budget + :data:`DEFAULT_MAX_TOKENS`.
    With an explicit limit the budget shrinks to fit below it; under the 1024 minimum there is no
    thinking. Thinking is also left off (degraded) where Anthropic rejects it: with a forced tool
    choice, or when the conversation is in a tool loop (the previous assistant turn's thinking
    blocks, with their signatures, cannot be given back from OpenAI's history). Thinking requires the
    default temperature, so ``temperature`` and ``top_p`` are then dropped (degraded).
    """
    if effort is None or effort == "none":
        return
    if effort not in EFFORT_BUDGET_TOKENS:
        raise bad(f"{where}: {effort!r} is not one of none, {', '.join(EFFORT_BUDGET_TOKENS)}", where)
    budget = EFFORT_BUDGET_TOKENS[effort]
    if explicit_max is not None:
        budget = min(budget, explicit_max - 1)
    forced = out.get("tool_choice", {}).get("type") in ("any", "tool")
    last = out["messages"][-1] if out.get("messages") else None
    in_tool_loop = (last is not None and last["role"] == "user" and isinstance(last["content"], list)
                    and any(b["type"] == "tool_result" for b in last["content"]))
    if budget < MIN_BUDGET_TOKENS or forced or in_tool_loop:
        degraded.append(where)
        return
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if explicit_max is None:
        out["max_tokens"] = budget + DEFAULT_MAX_TOKENS
    for key in ("temperature", "top_p"):
        if out.pop(key, None) is not None:
            degraded.append(key)


def prompt_tokens(usage: dict) -> tuple[int, int]:
    """Anthropic ``usage`` → (all input tokens, cache reads): input + cache reads + cache writes,
    since Anthropic's ``input_tokens`` counts only what follows the last cache breakpoint
    (``docs/protocol.md`` §5.2)."""
    def n(key: str) -> int:
        v = usage.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
    cached = n("cache_read_input_tokens")
    return n("input_tokens") + cached + n("cache_creation_input_tokens"), cached


def output_tokens(usage: dict) -> int:
    v = usage.get("output_tokens")
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
