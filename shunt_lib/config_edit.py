"""Editing a user's ``config.toml`` in place, keeping the rest of the text: setting one ``[server]``
key, appending an ``openai`` account's block."""

from __future__ import annotations

import json
import re
import tomllib

from .config import ACCOUNT_NAME_RE, Paths, load_config, parse_config
from .errors import ConfigError
from .fsutil import atomic_write_bytes
from .openai_config import account_block

_TABLE = re.compile(r"^\s*\[")


def set_server_value(paths: Paths, key: str, value: str | int | float | bool) -> bool:
    """Set ``server.KEY = value`` in ``config.toml`` (created from the template if missing): the key's
    own line if it has one, else a new line under ``[server]`` (a ``[server]`` table is added at the
    top if there is none). Comments and every other line stay as they are.

    :returns: False if the key already had that value, set or by default (nothing written), True if written.
    :raises ConfigError: the value is invalid for the key, or the file does not validate (nothing written).
    """
    if getattr(load_config(paths).server, key) == value:
        return False
    text = _read(paths)
    line = f"{key} = {json.dumps(value)}\n"  # JSON strings, numbers and booleans are valid TOML
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.strip() == "[server]"), None)
    if start is None:
        lines[:0] = ["[server]\n", line, "\n"]
    else:
        end = next((i for i in range(start + 1, len(lines)) if _TABLE.match(lines[i])), len(lines))
        own = next((i for i in range(start + 1, end) if re.match(rf"\s*{re.escape(key)}\s*=", lines[i])), None)
        if own is not None:
            lines[own] = line
        else:
            lines.insert(start + 1, line)
    new = "".join(lines)
    parse_config(tomllib.loads(new))
    atomic_write_bytes(paths.config, new.encode(), mode=0o600)
    return True


def _read(paths: Paths) -> str:
    with open(paths.config, encoding="utf-8") as f:
        return f.read()


def openai_account_text(paths: Paths, name: str, *, provider: str = "", base_url: str = "",
                        models: tuple[str, ...] = ()) -> str | None:
    """The ``config.toml`` text with an ``[[accounts]]`` block of ``kind = "openai"`` for ``name``
    appended (the file's other lines unchanged), validated but not written.

    :returns: the new text, or None if ``name`` is already an openai account and nothing given differs.
    :raises ConfigError: ``name`` exists with another kind or other settings (edit config.toml to change
        them), or the block does not validate (an unknown preset, no or a bad ``base_url``, bad ``models``).
    """
    if not ACCOUNT_NAME_RE.match(name):
        raise ConfigError(f"account name must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})")
    for acct in load_config(paths).accounts:
        if acct.name != name:
            continue
        if acct.kind != "openai":
            raise ConfigError(f"account {name!r} already exists with kind {acct.kind!r}")
        given = {"provider": provider, "base_url": base_url.rstrip("/"), "models": models}
        differ = [k for k, v in given.items() if v and getattr(acct, k) != v]
        if differ:
            raise ConfigError(f"account {name!r} is already configured with another {', '.join(differ)}: edit "
                              f"its [[accounts]] block in {paths.config} to change it")
        return None
    text = _read(paths)
    if text and not text.endswith("\n"):
        text += "\n"
    text += "\n" + account_block(name, provider=provider, base_url=base_url, models=models)
    parse_config(tomllib.loads(text))
    return text


def write_config_text(paths: Paths, text: str) -> None:
    """Replace ``config.toml`` with ``text`` (already validated) atomically, mode 0600."""
    atomic_write_bytes(paths.config, text.encode(), mode=0o600)
