"""The ``[history]`` table of ``config.toml``: how long the usage history keeps its rows.

``raw_days``: raw rows (one per request), default 7; ``rollup_days``: minute rollups per account and
model, default 90. Unknown keys and bad values raise :class:`~shunt_lib.errors.ConfigError` naming
the key. A change needs a restart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ConfigError

MAX_DAYS = 36500


@dataclasses.dataclass(frozen=True)
class HistoryConfig:
    """The ``[history]`` table: ``raw_days`` and ``rollup_days`` (whole days, 1..36500)."""

    raw_days: int = 7
    rollup_days: int = 90


#: key → help (the README table and the template are derived from it).
HELP = {
    "raw_days": "days the usage history keeps one row per request (`usage.db`)",
    "rollup_days": "days the usage history keeps per-minute totals per account and model",
}


def parse_history(raw: Any) -> HistoryConfig:
    """Validate the ``[history]`` table.

    :raises ConfigError: not a table, an unknown key, or a value that is not a whole number of days.
    """
    if not isinstance(raw, dict):
        raise ConfigError("config.toml: [history] must be a table")
    values: dict[str, int] = {}
    for key, v in raw.items():
        if key not in HELP:
            raise ConfigError(f"config.toml: unknown key history.{key}")
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_DAYS:
            raise ConfigError(f"config.toml: history.{key} must be a whole number of days between 1 and {MAX_DAYS} "
                              f"(got {v!r})")
        values[key] = v
    return HistoryConfig(**values)


def readme_rows() -> list[str]:
    """The README table's rows for ``[history]``."""
    return [f"| `history.{f.name}` | `{f.default}` | {HELP[f.name]} (a change needs a restart) |"
            for f in dataclasses.fields(HistoryConfig)]


def template_lines() -> list[str]:
    """The commented ``[history]`` block of the template ``config.toml``."""
    lines = ["", "[history]"]
    for f in dataclasses.fields(HistoryConfig):
        lines += [f"# {HELP[f.name]} (a change needs a restart)", f"# {f.name} = {f.default}"]
    return lines
