"""Tool names an OpenAI-compatible provider accepts, and the way back to the client's names.

A Chat Completions function name must match ``^[a-zA-Z0-9_-]{1,64}$`` (documented:
https://platform.openai.com/docs/api-reference/chat/create, ``tools[].function.name``). Anthropic
clients may send other names (MCP tools with dots, longer names); see ``docs/protocol.md`` §9.1.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_VALID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_LEN = 64
_HASH_LEN = 8


def is_valid_openai_name(name: str) -> bool:
    """True when ``name`` is a function name OpenAI accepts as it is."""
    return _VALID.fullmatch(name) is not None


def _candidate(name: str, attempt: int) -> str:
    """``name`` with every character OpenAI refuses turned into ``_``, cut to leave room for ``_`` and a
    hash of the original (plus ``attempt``, bumped only when the first candidate is taken)."""
    seed = name if attempt == 0 else f"{name}\x00{attempt}"
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    prefix = _BAD_CHARS.sub("_", name)[: _MAX_LEN - _HASH_LEN - 1]
    return f"{prefix}_{digest}"


class ToolNames:
    """A reversible mapping between a request's tool names and the names sent to the provider.

    Names OpenAI accepts are kept as they are. Any other name becomes its characters with the refused
    ones replaced by ``_``, cut to 55, then ``_`` and the first 8 hex digits of its SHA-256
    (``mcp__srv__get.file`` → ``mcp__srv__get_file_1a2b3c4d``). The mapping is built over every name
    of one request at once (tools, ``tool_choice``, ``tool_use`` blocks in history), so it is
    deterministic for that set and two names can never share a mapped name: a mapped name that would
    equal a kept name or an earlier mapped one is hashed again with a counter.

    ``openai(name)`` gives the provider's name, ``original(name)`` the client's; a name the mapping
    never saw maps to itself both ways (a model inventing a tool name gets it back unchanged).
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        unique = sorted(set(names))
        self._to_openai: dict[str, str] = {}
        self._to_original: dict[str, str] = {}
        for name in unique:
            if is_valid_openai_name(name):
                self._to_openai[name] = name
                self._to_original[name] = name
        for name in unique:
            if name in self._to_openai:
                continue
            attempt = 0
            mapped = _candidate(name, attempt)
            while mapped in self._to_original:
                attempt += 1
                mapped = _candidate(name, attempt)
            self._to_openai[name] = mapped
            self._to_original[mapped] = name

    def openai(self, name: str) -> str:
        """The name sent to the provider for the client's ``name``."""
        return self._to_openai.get(name, name)

    def original(self, name: str) -> str:
        """The client's name for a name the provider answered with."""
        return self._to_original.get(name, name)

    @property
    def renamed(self) -> dict[str, str]:
        """Only the names that changed: client name → provider name."""
        return {k: v for k, v in self._to_openai.items() if k != v}
