"""The ``[gateway]`` table of ``config.toml``: who must present a client token, and how much the
proxy takes on at once.

- ``require_token``: ``remote`` (default: a request from a loopback address of the user's own
  machine needs no token; any other needs a client token or the admin key), ``always`` or ``never``.
- ``admin_key``: the key of the control API and of every path (what ``server.remote_key`` was; that
  name is still read, with a deprecation warning). Required before shunt listens beyond loopback.
- ``max_inflight``: requests relayed at once (0: unlimited); past it, a request waits at most
  ``max_queue_s`` for a place, then gets 429 with ``retry-after``.

Unknown keys and bad values raise :class:`~shunt_lib.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ConfigError

REQUIRE_TOKEN = ("remote", "always", "never")
MAX_INFLIGHT = 100_000
MAX_QUEUE_S = 3600.0


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """The ``[gateway]`` table (see the module docstring); ``admin_key`` "" means none."""

    require_token: str = "remote"
    admin_key: str = ""
    max_inflight: int = 0
    max_queue_s: float = 30.0


#: key → help (the README table and the template are derived from it).
HELP = {
    "require_token": "who needs a client token: `remote` (any client but the user's own machine over loopback), "
                     "`always` or `never`",
    "admin_key": "the admin key: the control API (`/status`, `/admin/tokens`, ...) from anywhere but loopback, "
                 "and any path; needed to listen beyond loopback; at least 16 visible ASCII characters",
    "max_inflight": "requests relayed at once (0: unlimited); past it a request waits up to `max_queue_s`, then 429",
    "max_queue_s": "longest a request waits for a place under `max_inflight`, seconds",
}
_SECRET = frozenset({"admin_key"})


def _check(key: str, v: Any, key_check) -> Any:
    if key == "require_token":
        if v not in REQUIRE_TOKEN:
            raise ValueError("must be one of " + ", ".join(f"{s!r}" for s in REQUIRE_TOKEN))
        return v
    if key == "admin_key":
        return key_check(v)
    if key == "max_inflight":
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_INFLIGHT:
            raise ValueError(f"must be a whole number between 0 and {MAX_INFLIGHT}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_QUEUE_S:
        raise ValueError(f"must be a number of seconds between 0 and {MAX_QUEUE_S:g}")
    return float(v)


def parse_gateway(raw: Any, key_check) -> GatewayConfig:
    """Validate the ``[gateway]`` table; ``key_check(value) -> str`` validates the admin key (raising
    ValueError without quoting it), as ``server.remote_key`` is validated.

    :raises ConfigError: not a table, an unknown key, or a bad value (never quoting ``admin_key``).
    """
    if not isinstance(raw, dict):
        raise ConfigError("config.toml: [gateway] must be a table")
    values: dict[str, Any] = {}
    for key, v in raw.items():
        if key not in HELP:
            raise ConfigError(f"config.toml: unknown key gateway.{key}")
        try:
            values[key] = _check(key, v, key_check)
        except ValueError as exc:
            got = "" if key in _SECRET else f" (got {v!r})"
            raise ConfigError(f"config.toml: gateway.{key} {exc}{got}") from None
    return GatewayConfig(**values)


def readme_rows() -> list[str]:
    """The README table's rows for ``[gateway]``."""
    return [f"| `gateway.{f.name}` | `{f.default!r}` | {HELP[f.name]} |".replace("`''`", '`""`').replace("`'remote'`", '`"remote"`')
            for f in dataclasses.fields(GatewayConfig)]


def template_lines() -> list[str]:
    """The commented ``[gateway]`` block of the template ``config.toml``."""
    lines = ["", "[gateway]"]
    for f in dataclasses.fields(GatewayConfig):
        if f.name in _SECRET:
            lines += [f"# {HELP[f.name]}", f'# {f.name} = "..."']
        else:
            default = f'"{f.default}"' if isinstance(f.default, str) else f.default
            lines += [f"# {HELP[f.name]}", f"# {f.name} = {default}"]
    return lines
