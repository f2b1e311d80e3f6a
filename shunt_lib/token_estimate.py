"""A local input-token estimate for ``POST /v1/messages/count_tokens`` on an OpenAI-compatible account.

Such a provider has no count endpoint, and its tokenizer is not Anthropic's, so shunt answers an
estimate, flagged as one (``x-shunt-estimate: true``). Anthropic's own count "is an estimate" too
(https://platform.claude.com/docs/en/build-with-claude/token-counting). The rule, ``docs/protocol.md``
§9.1: one token per 4 bytes of UTF-8 text (rounded up), plus fixed costs below.
"""

from __future__ import annotations

import json

#: Bytes of UTF-8 text per token: the usual rule of thumb for English text and code.
BYTES_PER_TOKEN = 4
#: Added per message (role and framing) and once per request (the reply's priming).
MESSAGE_OVERHEAD_TOKENS = 4
REQUEST_OVERHEAD_TOKENS = 3
#: One image, any size: about the cost of the largest image Anthropic takes without scaling it down
#: (width × height / 750 ≈ 1,600 tokens at 1.15 megapixels; https://platform.claude.com/docs/en/build-with-claude/vision).
IMAGE_TOKENS = 1600
#: A PDF or file document whose text shunt cannot read locally: a flat guess of one dense page.
DOCUMENT_TOKENS = 1600


def estimate_tokens(messages_body: dict) -> int:
    """Estimated input tokens of an Anthropic Messages (or count_tokens) body.

    Counted: the system text; every message's text, ``tool_use`` name and input (as JSON),
    ``tool_result`` text, thinking text, text documents; each tool's name, description and
    ``input_schema`` (as JSON). Images cost :data:`IMAGE_TOKENS`, other documents
    :data:`DOCUMENT_TOKENS`; each message adds :data:`MESSAGE_OVERHEAD_TOKENS`.
    """
    fixed = REQUEST_OVERHEAD_TOKENS
    system = messages_body.get("system")
    texts: list[str] = []
    if isinstance(system, str):
        texts.append(system)
    elif isinstance(system, list):
        texts += [b.get("text", "") for b in system if isinstance(b, dict)]
    for message in messages_body.get("messages") or []:
        fixed += MESSAGE_OVERHEAD_TOKENS
        content = message.get("content") if isinstance(message, dict) else None
        fixed += _content(content, texts)
    for tool in messages_body.get("tools") or []:
        if isinstance(tool, dict):
            texts += [str(tool.get("name", "")), str(tool.get("description", ""))]
            if "input_schema" in tool:
                texts.append(json.dumps(tool["input_schema"], separators=(",", ":")))
    total_bytes = sum(len(t.encode("utf-8", "replace")) for t in texts)
    return fixed + -(-total_bytes // BYTES_PER_TOKEN)


def _content(content, texts: list[str]) -> int:
    """Append ``content``'s texts to ``texts``; return its fixed token costs (images, documents)."""
    if isinstance(content, str):
        texts.append(content)
        return 0
    fixed = 0
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            texts.append(block.get("thinking", ""))
        elif kind == "tool_use":
            texts += [str(block.get("name", "")), json.dumps(block.get("input", {}), separators=(",", ":"))]
        elif kind == "tool_result":
            fixed += _content(block.get("content"), texts)
        elif kind == "image":
            fixed += IMAGE_TOKENS
        elif kind == "document":
            source = block.get("source") or {}
            if source.get("type") == "text":
                texts.append(source.get("data", ""))
            elif source.get("type") == "content":
                fixed += _content(source.get("content"), texts)
            else:
                fixed += DOCUMENT_TOKENS
    return fixed
