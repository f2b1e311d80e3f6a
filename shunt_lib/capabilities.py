"""What an OpenAI-compatible provider accepts, as flags per account (from a provider preset,
overridable in ``config.toml``). Translation reads these flags; it never guesses from model names.

The fields a Chat Completions request may carry are documented at
https://platform.openai.com/docs/api-reference/chat/create; providers differ in which they accept.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """One OpenAI-compatible provider's capabilities.

    ``system_role``: the role system instructions are sent with (``system``, or ``developer`` for
    OpenAI's reasoning models); ``reasoning``: it accepts ``reasoning_effort``; ``max_tokens_field``:
    ``max_tokens`` or ``max_completion_tokens``; ``stream_usage``: it accepts
    ``stream_options.include_usage`` (usage in a last stream chunk); ``vision``: it accepts image
    content parts; ``parallel_tool_calls``: it accepts the ``parallel_tool_calls`` field.
    """

    system_role: str = "system"
    reasoning: bool = False
    max_tokens_field: str = "max_tokens"
    stream_usage: bool = True
    vision: bool = True
    parallel_tool_calls: bool = True

    #: The flags' names, as ``config.toml`` spells them.
    FIELDS = ("system_role", "reasoning", "max_tokens_field", "stream_usage", "vision", "parallel_tool_calls")
