"""Presets for common OpenAI-compatible providers: base URL, capability flags, whether a key is needed,
and the provider's page that documents them (pure data).

An ``[[accounts]]`` entry of ``kind = "openai"`` names one with ``provider = "NAME"``; every flag can
still be overridden in the entry. Flags describe the provider's Chat Completions endpoint as its
docs state it, never a guess from model names; where a provider's docs do not say a field is
accepted, the flag is off (translation then leaves the field out and says so in ``x-shunt-degraded``).

The fields of a Chat Completions request are those of https://platform.openai.com/docs/api-reference/chat/create.
"""

from __future__ import annotations

import dataclasses

from .capabilities import Capabilities


@dataclasses.dataclass(frozen=True)
class Preset:
    """One provider: ``name`` (as ``provider =`` spells it), ``title`` (for people), ``base_url`` (the
    URL the provider's docs give the OpenAI SDK; ``/chat/completions`` is appended to it),
    ``capabilities``, ``needs_key`` (False for servers on localhost, which take no key) and ``docs_url``
    (the page that supports the base URL and flags)."""

    name: str
    title: str
    base_url: str
    capabilities: Capabilities
    needs_key: bool
    docs_url: str


PRESETS: dict[str, Preset] = {p.name: p for p in (
    # Reasoning models take `developer` messages and `max_completion_tokens` (`max_tokens` is deprecated
    # and refused by them), and `reasoning_effort`; an account for a non-reasoning model sets reasoning = false.
    Preset("openai", "OpenAI", "https://api.openai.com/v1",
           Capabilities(system_role="developer", reasoning=True, max_tokens_field="max_completion_tokens"),
           True, "https://platform.openai.com/docs/api-reference/chat/create"),
    # OpenRouter takes the OpenAI request shape; its reasoning control is its own `reasoning` object.
    Preset("openrouter", "OpenRouter", "https://openrouter.ai/api/v1", Capabilities(),
           True, "https://openrouter.ai/docs/api-reference/overview"),
    # Groq: `messages[].name`, `logprobs`, `logit_bias` are refused with a 400; few models take images.
    Preset("groq", "Groq", "https://api.groq.com/openai/v1", Capabilities(vision=False),
           True, "https://console.groq.com/docs/openai"),
    # DeepSeek: thinking comes back as `reasoning_content`; `reasoning_effort` with thinking enabled; text only.
    Preset("deepseek", "DeepSeek", "https://api.deepseek.com",
           Capabilities(reasoning=True, vision=False, parallel_tool_calls=False),
           True, "https://api-docs.deepseek.com/"),
    Preset("together", "Together AI", "https://api.together.xyz/v1", Capabilities(),
           True, "https://docs.together.ai/docs/openai-api-compatibility"),
    Preset("fireworks", "Fireworks AI", "https://api.fireworks.ai/inference/v1", Capabilities(),
           True, "https://docs.fireworks.ai/tools-sdks/openai-compatibility"),
    # Mistral: `max_tokens`, `parallel_tool_calls`; no `stream_options`.
    Preset("mistral", "Mistral", "https://api.mistral.ai/v1", Capabilities(stream_usage=False),
           True, "https://docs.mistral.ai/api/"),
    # Gemini's OpenAI-compatible endpoint maps `reasoning_effort` to its thinking budget.
    Preset("gemini", "Google Gemini (OpenAI compatibility)", "https://generativelanguage.googleapis.com/v1beta/openai",
           Capabilities(reasoning=True, parallel_tool_calls=False), True, "https://ai.google.dev/gemini-api/docs/openai"),
    # Ollama lists its supported request fields: stream_options.include_usage and reasoning_effort are among
    # them, parallel_tool_calls is not. The SDKs require a key; Ollama ignores it.
    Preset("ollama", "Ollama (localhost)", "http://localhost:11434/v1",
           Capabilities(reasoning=True, parallel_tool_calls=False),
           False, "https://docs.ollama.com/api/openai-compatibility"),
    # vLLM's server takes a key only when started with --api-key.
    Preset("vllm", "vLLM (localhost)", "http://localhost:8000/v1", Capabilities(),
           False, "https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html"),
    Preset("lmstudio", "LM Studio (localhost)", "http://localhost:1234/v1", Capabilities(parallel_tool_calls=False),
           False, "https://lmstudio.ai/docs/app/api/endpoints/openai"),
)}


def preset(name: str) -> Preset:
    """The preset called ``name``. :raises KeyError: if there is none."""
    return PRESETS[name]


def readme_table() -> str:
    """The README's table of presets (a test keeps the README equal to it)."""
    def flag(b: bool) -> str:
        return "yes" if b else "no"

    rows = ["| provider | base_url | system role | max tokens field | reasoning | stream usage | vision | "
            "parallel tool calls | key | docs |", "|---" * 10 + "|"]
    for p in PRESETS.values():
        c = p.capabilities
        rows.append(f"| `{p.name}` | `{p.base_url}` | `{c.system_role}` | `{c.max_tokens_field}` | {flag(c.reasoning)} "
                    f"| {flag(c.stream_usage)} | {flag(c.vision)} | {flag(c.parallel_tool_calls)} "
                    f"| {'required' if p.needs_key else 'none'} | [{p.title}]({p.docs_url}) |")
    return "\n".join(rows)
