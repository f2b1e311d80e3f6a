"""The keys of an ``[[accounts]]`` entry of ``kind = "openai"`` (an OpenAI-compatible provider), validated (pure).

Shape::

    [[accounts]]
    name = "openrouter"
    kind = "openai"
    provider = "openrouter"            # a preset (shunt_lib/providers.py): base_url and flags; optional
    base_url = "https://openrouter.ai/api/v1"   # required unless the preset gives it; http(s)
    models = ["anthropic/*", "qwen/qwen3-coder"]  # model ids or fnmatch patterns this account serves
    # capability overrides (default: the preset's, else shunt_lib.capabilities.Capabilities()):
    system_role = "developer"          # "system" or "developer"
    reasoning = true                   # accepts reasoning_effort
    max_tokens_field = "max_completion_tokens"   # or "max_tokens"
    stream_usage = true                # accepts stream_options.include_usage
    vision = true                      # accepts image content parts
    parallel_tool_calls = true         # accepts the parallel_tool_calls field

The key lives in ``credentials.json`` like an ``api_key`` account's, never here. Errors raise
:class:`~shunt_lib.errors.ConfigError` naming ``accounts[i].KEY``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from typing import Any

from .capabilities import Capabilities
from .errors import ConfigError
from .providers import PRESETS

#: The keys an ``openai`` account may have besides ``name`` and ``kind``.
OPENAI_KEYS = ("provider", "base_url", "models") + Capabilities.FIELDS
_CHOICES = {"system_role": ("system", "developer"), "max_tokens_field": ("max_tokens", "max_completion_tokens")}
_MODEL_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # visible ASCII, no spaces


def check_base_url(v: Any) -> str:
    """An ``http(s)://host[:port][/path]`` URL without query or fragment, returned without a trailing ``/``.

    :raises ValueError: saying what is wrong.
    """
    if not isinstance(v, str) or not re.match(r"^https?://[^/\s]+", v):
        raise ValueError("must be an http(s) URL like https://api.openai.com/v1")
    try:
        parts = urllib.parse.urlsplit(v)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"must be an http(s) URL with a valid host and port ({exc})") from None
    if not parts.hostname or any(c.isspace() for c in v):
        raise ValueError("must be an http(s) URL with a host and no spaces")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, a fragment or credentials (the key goes in credentials.json)")
    return v.rstrip("/")


def check_models(v: Any) -> tuple[str, ...]:
    """A list of model ids or fnmatch patterns (``*``, ``?``, ``[...]``): visible ASCII, 1-200 characters
    each. :raises ValueError: saying what is wrong."""
    if not isinstance(v, list) or not all(isinstance(m, str) for m in v):
        raise ValueError('must be a list of model ids or patterns, e.g. ["gpt-5", "deepseek-*"]')
    for m in v:
        if not _MODEL_RE.match(m):
            raise ValueError(f"has {m!r}: a model id or pattern is 1-200 visible characters without spaces")
    return tuple(v)


def _capability(key: str, v: Any) -> Any:
    if key in _CHOICES:
        if v not in _CHOICES[key]:
            raise ValueError("must be " + " or ".join(f'"{c}"' for c in _CHOICES[key]))
        return v
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def parse_openai_account(where: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Validate the openai-specific keys of one ``[[accounts]]`` entry (``name``/``kind`` are the caller's).

    :param where: how errors name the entry, e.g. ``accounts[2]``.
    :returns: ``{"provider", "base_url", "models", "capabilities"}`` for :class:`~shunt_lib.config.AccountConfig`.
    :raises ConfigError: an unknown key, an unknown preset, a missing or bad ``base_url``, bad ``models``
        or a bad flag, naming ``where.KEY``.
    """
    for key in entry:
        if key not in ("name", "kind") + OPENAI_KEYS:
            raise ConfigError(f"config.toml: unknown key {where}.{key} (an openai account takes "
                              f"{', '.join(OPENAI_KEYS)})")
    provider = entry.get("provider", "")
    if provider != "" and provider not in PRESETS:
        raise ConfigError(f"config.toml: {where}.provider must be one of {', '.join(PRESETS)} (got {provider!r})")
    preset = PRESETS.get(provider)
    try:
        raw_url = entry.get("base_url", preset.base_url if preset else None)
        if raw_url is None:
            raise ValueError("is required (or give a provider preset that has one)")
        base_url = check_base_url(raw_url)
    except ValueError as exc:
        raise ConfigError(f"config.toml: {where}.base_url {exc}") from None
    try:
        models = check_models(entry.get("models", []))
    except ValueError as exc:
        raise ConfigError(f"config.toml: {where}.models {exc}") from None
    flags: dict[str, Any] = {}
    for key in Capabilities.FIELDS:
        if key in entry:
            try:
                flags[key] = _capability(key, entry[key])
            except ValueError as exc:
                raise ConfigError(f"config.toml: {where}.{key} {exc} (got {entry[key]!r})") from None
    caps = dataclasses.replace(preset.capabilities if preset else Capabilities(), **flags)
    return {"provider": provider, "base_url": base_url, "models": models, "capabilities": caps}


def account_block(name: str, *, provider: str = "", base_url: str = "", models: tuple[str, ...] = ()) -> str:
    """The ``[[accounts]]`` TOML block ``add-account --openai`` appends (only the keys given; the
    preset supplies the rest). Values are written as JSON strings, which are valid TOML strings."""
    lines = ["[[accounts]]", f"name = {json.dumps(name)}", 'kind = "openai"']
    if provider:
        lines.append(f"provider = {json.dumps(provider)}")
    if base_url:
        lines.append(f"base_url = {json.dumps(base_url)}")
    if models:
        lines.append(f"models = {json.dumps(list(models))}")
    return "\n".join(lines) + "\n"


def toml_lines(account: Any) -> list[str]:
    """The TOML lines of an openai :class:`~shunt_lib.config.AccountConfig` after ``name`` and ``kind``:
    ``provider`` (if any), ``base_url``, ``models`` and every capability flag (for generated homes)."""
    lines = [f"provider = {json.dumps(account.provider)}"] if account.provider else []
    lines += [f"base_url = {json.dumps(account.base_url)}", f"models = {json.dumps(list(account.models))}"]
    caps = account.capabilities or Capabilities()
    lines += [f"{k} = {json.dumps(getattr(caps, k))}" for k in Capabilities.FIELDS]  # JSON true/false/"x" are TOML
    return lines


def readme_rows() -> list[str]:
    """The README config table's rows for the keys of an openai account."""
    d = Capabilities()
    return [
        "| `accounts[].provider` | — | `kind = \"openai\"` only: a preset (see \"OpenAI-compatible providers\") "
        "giving `base_url` and the flags below |",
        "| `accounts[].base_url` | the preset's | `kind = \"openai\"` only: the provider's OpenAI-compatible base "
        "URL (`/chat/completions` is appended); required without a preset |",
        "| `accounts[].models` | `[]` | `kind = \"openai\"` only: model ids or glob patterns (`*`, `?`, `[...]`) "
        "the account serves |",
        f"| `accounts[].system_role` | `{d.system_role}` | `kind = \"openai\"` only: role of system instructions, "
        "`system` or `developer` (default: the preset's) |",
        f"| `accounts[].reasoning` | `{str(d.reasoning).lower()}` | `kind = \"openai\"` only: accepts "
        "`reasoning_effort` |",
        f"| `accounts[].max_tokens_field` | `{d.max_tokens_field}` | `kind = \"openai\"` only: `max_tokens` or "
        "`max_completion_tokens` |",
        f"| `accounts[].stream_usage` | `{str(d.stream_usage).lower()}` | `kind = \"openai\"` only: accepts "
        "`stream_options.include_usage` |",
        f"| `accounts[].vision` | `{str(d.vision).lower()}` | `kind = \"openai\"` only: accepts image content parts |",
        f"| `accounts[].parallel_tool_calls` | `{str(d.parallel_tool_calls).lower()}` | `kind = \"openai\"` only: "
        "accepts the `parallel_tool_calls` field |",
    ]
