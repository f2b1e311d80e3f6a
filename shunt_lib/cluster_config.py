"""The ``[cluster]`` table of ``config.toml``: several shunts sharing one pool through Redis.

- ``redis_url``: ``redis://[:password@]host:port/db``, ``rediss://`` for TLS, or ``unix:///path``.
  Empty (the default): no cluster, shunt runs alone exactly as it always has and never imports the
  Redis client. The password may be in the URL or in the ``REDIS_PASSWORD`` environment variable.
- ``cluster_name``: the prefix of every key and of the events channel, so several pools can share
  one Redis.
- ``refresh_lock_ttl_s``: how long the cluster-wide refresh lock of an account outlives a holder that
  died (a live holder releases it at once).
- ``timeout_s``: the longest one Redis operation may take before the instance counts Redis as down
  (``degraded``) and carries on from its own state.

Unknown keys and bad values raise :class:`~shunt_lib.errors.ConfigError` naming the key (the URL,
which may hold a password, is never quoted). :func:`connection_facts` says whether a URL reaches
Redis over loopback, with a password and over TLS; :func:`check_security` turns that into the
start-up refusal and warning.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import urllib.parse
from typing import Any, NamedTuple

from .errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SCHEMES = ("redis", "rediss", "unix")
PASSWORD_ENV = "REDIS_PASSWORD"


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """The ``[cluster]`` table (see the module docstring); ``redis_url`` "" means no cluster."""

    redis_url: str = ""
    cluster_name: str = "shunt"
    refresh_lock_ttl_s: float = 30.0
    timeout_s: float = 0.5

    @property
    def enabled(self) -> bool:
        """Whether a Redis is configured."""
        return bool(self.redis_url)


HELP = {
    "redis_url": "Redis shared by several shunts (`redis://host:6379/0`, `rediss://` for TLS, `unix:///path`); "
                 "empty: shunt runs alone. Needs `pip install 'shunt[redis]'`; the password may be in the URL "
                 "or in `REDIS_PASSWORD`",
    "cluster_name": "prefix of every Redis key and of the events channel, so several pools can share one Redis",
    "refresh_lock_ttl_s": "how long an account's cluster-wide token-refresh lock outlives a holder that died, seconds",
    "timeout_s": "longest one Redis operation may take before this shunt counts Redis as down and serves "
                 "from its own state, seconds",
}
_SECRET = frozenset({"redis_url"})  # may carry a password


def _check(key: str, v: Any) -> Any:
    if key == "redis_url":
        if not isinstance(v, str):
            raise ValueError("must be a string")
        if v:
            parts = urllib.parse.urlsplit(v)
            if parts.scheme not in SCHEMES:
                raise ValueError("must start with redis://, rediss:// or unix://")
            if parts.scheme != "unix" and not parts.hostname:
                raise ValueError("must name a host, like redis://127.0.0.1:6379/0")
            if parts.scheme == "unix" and not parts.path:
                raise ValueError("must name a socket path, like unix:///run/redis.sock")
            try:
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                raise ValueError("has a bad port") from None
        return v
    if key == "cluster_name":
        if not isinstance(v, str) or not NAME_RE.match(v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a number of seconds")
    low, high = (1.0, 600.0) if key == "refresh_lock_ttl_s" else (0.01, 10.0)
    if not low <= v <= high:
        raise ValueError(f"must be between {low:g} and {high:g} seconds")
    return float(v)


def parse_cluster(raw: Any) -> ClusterConfig:
    """Validate the ``[cluster]`` table.

    :raises ConfigError: not a table, an unknown key, or a bad value (never quoting ``redis_url``).
    """
    if not isinstance(raw, dict):
        raise ConfigError("config.toml: [cluster] must be a table")
    values: dict[str, Any] = {}
    for key, v in raw.items():
        if key not in HELP:
            raise ConfigError(f"config.toml: unknown key cluster.{key}")
        try:
            values[key] = _check(key, v)
        except ValueError as exc:
            got = "" if key in _SECRET else f" (got {v!r})"
            raise ConfigError(f"config.toml: cluster.{key} {exc}{got}") from None
    return ClusterConfig(**values)


class ConnectionFacts(NamedTuple):
    """What a ``redis_url`` says about the connection: where (``where``: host:port or the socket path,
    never the password), whether it stays on this machine, whether a password is given (in the URL,
    as ``:PASSWORD@`` or ``?password=``, or ``REDIS_PASSWORD``), and whether it uses TLS."""

    where: str
    local: bool
    password: bool
    tls: bool


def connection_facts(url: str, env: dict | None = None) -> ConnectionFacts:
    """Read :class:`ConnectionFacts` from a validated ``redis_url`` (``env``: the environment, default
    ``os.environ``)."""
    env = os.environ if env is None else env
    parts = urllib.parse.urlsplit(url)
    in_query = any(urllib.parse.parse_qs(parts.query).get("password", []))  # redis-py takes ?password= too
    password = bool(parts.password) or in_query or bool(env.get(PASSWORD_ENV))
    if parts.scheme == "unix":
        return ConnectionFacts(parts.path, True, password, False)
    host = parts.hostname or ""
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    where = f"[{host}]:{parts.port or 6379}" if ":" in host else f"{host}:{parts.port or 6379}"
    return ConnectionFacts(where, local, password, parts.scheme == "rediss")


def check_security(cfg: ClusterConfig, env: dict | None = None) -> list[str]:
    """Refuse a Redis beyond this machine without a password; :returns: warnings to log (no TLS
    beyond this machine). Credentials live in that Redis, as secret as ``credentials.json``.

    :raises ConfigError: a non-loopback Redis without a password.
    """
    if not cfg.enabled:
        return []
    facts = connection_facts(cfg.redis_url, env)
    if facts.local:
        return []
    if not facts.password:
        raise ConfigError(f"cluster.redis_url: refusing the Redis at {facts.where} without a password: the pool's "
                          f"credentials are kept there. Put one in the URL (redis://:PASSWORD@host:port/0) or in "
                          f"{PASSWORD_ENV}")
    if not facts.tls:
        return [f"the Redis at {facts.where} is reached without TLS: the pool's credentials cross the network in "
                "the clear (use rediss://)"]
    return []


def readme_rows() -> list[str]:
    """The README table's rows for ``[cluster]``."""
    rows = []
    for f in dataclasses.fields(ClusterConfig):
        default = f'"{f.default}"' if isinstance(f.default, str) else f"{f.default:g}"
        rows.append(f"| `cluster.{f.name}` | `{default}` | {HELP[f.name]} |")
    return rows


def template_lines() -> list[str]:
    """The commented ``[cluster]`` block of the template ``config.toml``."""
    lines = ["", "[cluster]"]
    for f in dataclasses.fields(ClusterConfig):
        default = f'"{f.default}"' if isinstance(f.default, str) else f"{f.default:g}"
        lines += [f"# {HELP[f.name]}", f"# {f.name} = {default}"]
    return lines
