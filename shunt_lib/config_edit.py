"""Setting one ``[server]`` key in a user's ``config.toml`` in place, keeping the rest of the text."""

from __future__ import annotations

import json
import re
import tomllib

from .config import Paths, load_config, parse_config
from .fsutil import atomic_write_bytes

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
