"""``config.toml``: one typed table of ``[server]`` keys plus ``[[accounts]]``, validated eagerly.

Files live in shunt's home, ``$SHUNT_HOME`` or ``~/.config/shunt``. Unknown keys, bad values and
duplicate account names raise :class:`~shunt_lib.errors.ConfigError` naming the key; nothing is
silently defaulted. Each ``[server]`` key is declared once, as a field of :class:`ServerConfig` with
its default, converter and help; the loader, the commented template written on first use
(:func:`template`) and the README's table (:func:`readme_table`) are derived from those fields.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import re
import tomllib
import urllib.parse
from typing import Any, Callable

from .capabilities import Capabilities
from .credentials import secret_problem
from .errors import ConfigError
from .pricing_config import parse_pricing
from .fsutil import atomic_write_bytes, mtime_ns
from . import cluster_config, gateway_config
from .cluster_config import ClusterConfig, parse_cluster
from .gateway_config import GatewayConfig, parse_gateway
from .history_config import HistoryConfig, parse_history, readme_rows, template_lines
from .model_map import ModelMap, parse_models
from . import openai_config

STRATEGIES = ("least-utilization", "round-robin", "fill-first", "reset-first")
ACCOUNT_KINDS = ("oauth", "api_key", "openai")
ACCOUNT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


def _url(v: Any) -> str:
    v = _str(v)
    if not re.match(r"^https?://[^/\s]+", v):
        raise ValueError("must be an http(s) URL")
    try:
        parts = urllib.parse.urlsplit(v)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"must be an http(s) URL with a valid host and port ({exc})") from None
    if not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    return v.rstrip("/")


_HOST_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*$")


def _host_name(v: Any) -> str:
    """A host name or IP literal as a ``Host`` header names it, without a port; lower-cased, IPv6 unbracketed."""
    v = _str(v).strip().lower()
    bare = v[1:-1] if v.startswith("[") and v.endswith("]") else v
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if not _HOST_NAME_RE.match(bare) or len(bare) > 253:
        raise ValueError(f"{v!r} is not a host name or IP address")
    return bare


def _host_entry(v: Any) -> str:
    """An ``allowed_hosts`` entry: a host name or IP literal, optionally with ``:port`` (a port forwarded
    to shunt's, as by an SSH tunnel); returned lower-cased, an IPv6 address bracketed only with a port."""
    v = _str(v).strip().lower()
    try:
        return str(ipaddress.ip_address(v))  # a bare IPv6 address has colons but no port
    except ValueError:
        pass
    m = re.fullmatch(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?", v)
    if m is None or (m[2] is not None and not 0 < int(m[2]) <= 65535):
        raise ValueError(f"{v!r} is not a host name or IP address with an optional :port (give no scheme)")
    name = _host_name(m[1])
    if m[2] is None:
        return name
    return f"[{name}]:{int(m[2])}" if ":" in name else f"{name}:{int(m[2])}"


def _origin(v: Any) -> str:
    """A web origin, ``http(s)://host[:port]`` without a path (https://www.rfc-editor.org/rfc/rfc6454)."""
    v = _str(v).strip().lower().rstrip("/")
    m = re.match(r"^(https?)://(\[[0-9a-f:.]+\]|[^/:\[\]]+)(?::(\d{1,5}))?$", v)
    if m is None or (m[3] is not None and int(m[3]) > 65535):
        raise ValueError(f"{v!r} is not an origin like http://localhost:3000 (scheme, host and port; no path)")
    _host_name(m[2])
    return v


def _list_of(conv: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def convert(v: Any) -> tuple:
        if not isinstance(v, list):
            raise ValueError("must be a list of strings")
        return tuple(conv(item) for item in v)

    return convert


def _bind_host(v: Any) -> str:
    v = _str(v).strip()
    return v[1:-1] if v.startswith("[") and v.endswith("]") else v  # "[::1]" is ::1


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("must be an integer")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return v

    return conv


REMOTE_KEY_MIN_CHARS = 16


def _remote_key(v: Any) -> str:
    """``""`` (no key) or a key of at least :data:`REMOTE_KEY_MIN_CHARS` visible ASCII characters.
    The error never quotes the value."""
    v = _str(v)
    if v == "":
        return v
    problem = secret_problem(v)
    if problem is not None:
        raise ValueError(problem + " (clients send it in a header: visible ASCII only, no spaces)")
    if len(v) < REMOTE_KEY_MIN_CHARS:
        raise ValueError(f"is too short: use at least {REMOTE_KEY_MIN_CHARS} characters, e.g. from "
                         "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return v


def _seconds_range(lo: float, hi: float) -> Callable[[Any], float]:
    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("must be a number of seconds")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}")
        return float(v)

    return conv


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _optional_url(v: Any) -> str:
    return "" if _str(v) == "" else _url(v)


def _one_of(*choices: str) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if _str(v) not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return v

    return conv


def _key(default: Any, conv: Callable[[Any], Any], help_text: str, *, live: bool = False, secret: bool = False) -> Any:
    """One ``[server]`` key: its default, the converter that validates a TOML value (raising
    ``ValueError``), its help text (with the unit), and whether a running shunt applies a change on
    reload (``live``; otherwise the change waits for a restart). A ``secret`` key's value is never
    quoted in an error. The template, the loader and the README table are all derived from these fields."""
    return dataclasses.field(default=default, metadata={"conv": conv, "help": help_text, "live": live, "secret": secret})


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """The ``[server]`` table: one field per key, each with its default, converter and help."""

    host: str = _key("127.0.0.1", _bind_host, "bind address (IPv4 or IPv6, e.g. `::1`); a non-loopback address needs `gateway.admin_key` or shunt refuses to start")
    port: int = _key(8082, _int_range(0, 65535), "the one TCP port for the API and the control endpoints")
    upstream_url: str = _key("https://api.anthropic.com", _url, "where requests go")
    oauth_token_url: str = _key("https://platform.claude.com/v1/oauth/token", _url,
                                "OAuth token endpoint used for refreshes")
    strategy: str = _key("least-utilization", _one_of(*STRATEGIES),
                         "how new sessions pick an account: " + ", ".join(f"`{s}`" for s in STRATEGIES), live=True)
    session_ttl_s: int = _key(3600, _int_range(1, 30 * 86400), "sliding stickiness of a session to its account, seconds",
                              live=True)
    max_sessions: int = _key(20000, _int_range(1, 1_000_000),
                             "most sessions kept bound to an account; beyond it the least recently used is forgotten")
    max_wait_s: int = _key(300, _int_range(0, 86400),
                           "longest a request is held while every account cools, seconds (0: answer 429 at once)", live=True)
    max_body_bytes: int = _key(32 * 1024 * 1024, _int_range(1024, 1 << 31),
                               "largest request body, bytes; larger ones get 413 `request_too_large`", live=True)
    remote_key: str = _key("", _remote_key, "deprecated: read as `gateway.admin_key`, with `gateway.require_token` "
                                            "`always` unless set (every endpoint but `/health`, and `/metrics` with "
                                            "`metrics_public`, then requires it or a client token, as `x-api-key` or "
                                            "`Authorization: Bearer`); at least 16 visible ASCII characters, no "
                                            "spaces", live=True, secret=True)
    metrics_public: bool = _key(False, _bool, "serve `GET /metrics` (Prometheus) without `remote_key`; the `Host` "
                                "check still applies", live=True)
    allowed_hosts: tuple = _key((), _list_of(_host_entry),
                                "more names shunt answers to in the `Host` header, besides localhost, loopback "
                                "addresses and `host`; `name:port` for a port forwarded to shunt's (an SSH "
                                "tunnel); a request with `remote_key` may use any", live=True)
    allowed_origins: tuple = _key((), _list_of(_origin),
                                  "web origins (`http://host:port`) whose pages may call shunt from a browser; "
                                  "shunt's own origin always may", live=True)
    max_connections: int = _key(1000, _int_range(1, 65536),
                                "client connections served at once; past it, the one waiting longest for a request "
                                "gets 408 to make room once the new one's request head is in (a new one without its "
                                "head within 0.25 s, or with every one busy, gets 503 and is closed)")
    header_timeout_s: float = _key(10.0, _seconds_range(0.1, 3600),
                                   "time for a request line and headers, seconds, from the connection's accept or "
                                   "the request's first byte (a total, not per read); also the grace of a body; "
                                   "slower clients get 408")
    min_body_rate_bytes_s: int = _key(4096, _int_range(0, 1 << 30),
                                      "least average rate of a request body after its `header_timeout_s` of grace, "
                                      "bytes/s; slower uploads get 408 (`0`: no minimum)")
    oauth_authorize_url: str = _key("https://claude.ai/oauth/authorize", _url,
                                    "PKCE authorize page for `add-account --paste`", live=True)
    oauth_redirect_uri: str = _key("https://platform.claude.com/oauth/code/callback", _url,
                                   "redirect that shows `CODE#STATE`", live=True)
    oauth_client_id: str = _key("9d1c250a-e61b-44d9-88ed-5944d1962f5e", _str,
                                "Claude Code's public OAuth client (docs/protocol.md §1.1)")
    oauth_revoke_url: str = _key("https://platform.claude.com/v1/oauth/revoke", _url,
                                 "where `logout` revokes the refresh token", live=True)
    recovery_interval_s: int = _key(120, _int_range(1, 86400), "how often `reauth_required` accounts are retried, seconds")
    upstream_first_byte_timeout_s: float = _key(
        120, _seconds_range(0.001, 3600), "longest wait for the upstream's response head once a request is sent, seconds "
        "(a non-streaming `/v1/messages` call, whose head comes with its whole answer, waits at least 600)")
    upstream_idle_timeout_s: float = _key(300, _seconds_range(0.001, 3600),
                                          "longest silence from the upstream while a body streams, seconds")
    drain_timeout_s: float = _key(30, _seconds_range(0.001, 3600),
                                  "on stop, how long requests in progress may finish, seconds; streams still open "
                                  "then end with an `error` event (keep it under the service's stop timeout)")
    usage_poll_s: int = _key(600, _int_range(0, 86400),
                             "how often `/api/oauth/usage` and `/api/oauth/profile` are read, seconds; `0` = off")
    log_format: str = _key("text", _one_of("text", "json"), "`text`: dated lines; `json`: one JSON object per line "
                           "(`ts`, `level`, `event`, `logger`, `message`, and each request's account, model, status, "
                           "tokens, timings and ids)")
    log_file: str = _key("", _str, "a file to log to instead of stderr (relative to shunt's home; `~` expanded); empty: "
                         "stderr (the journal under systemd)")
    log_rotate: str = _key("size", _one_of("size", "external"), "`size`: shunt rotates `log_file` at `log_max_bytes`, "
                           "keeping `log_backups` old files; `external`: logrotate does, and shunt reopens the file "
                           "when it is moved")
    log_max_bytes: int = _key(10 * 1024 * 1024, _int_range(4096, 1 << 40), "size at which `log_file` is rotated, bytes")
    log_backups: int = _key(5, _int_range(1, 1000), "rotated files kept (`log_file.1` ...)")
    alert_interval_s: int = _key(1800, _int_range(1, 7 * 86400), "each alert (kind and account) is sent at most once "
                                 "per this many seconds", live=True)
    alert_desktop: bool = _key(True, _bool, "show alerts on the desktop: `notify-send` on Linux (with a session bus), "
                               "`osascript` on macOS", live=True)
    alert_webhook_url: str = _key("", _optional_url, "a URL that gets each alert as a JSON POST (Slack-compatible "
                                  "`text`, ntfy-templatable `title`/`message`; see \"Alerts\"); empty: none",
                                  live=True, secret=True)

    def __repr__(self) -> str:  # never show the key or another secret (a webhook URL)
        fields = ", ".join(
            f"{f.name}={'***' if f.metadata['secret'] and getattr(self, f.name) else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"ServerConfig({fields})"


SERVER_KEYS: tuple[dataclasses.Field, ...] = dataclasses.fields(ServerConfig)
#: ``[server]`` keys a running shunt applies on reload; the others need a restart.
LIVE_KEYS: frozenset[str] = frozenset(f.name for f in SERVER_KEYS if f.metadata["live"])


def server_changes(running: ServerConfig, new: ServerConfig) -> tuple[list[str], list[str]]:
    """Which ``[server]`` keys differ between the file a running shunt applied and the file now.

    :returns: ``(live, restart)``: names of changed keys it applies now, and of changed keys that
        need a restart (in declaration order).
    """
    changed = [f.name for f in SERVER_KEYS if getattr(running, f.name) != getattr(new, f.name)]
    return [k for k in changed if k in LIVE_KEYS], [k for k in changed if k not in LIVE_KEYS]


def _toml_value(v: Any) -> str:
    return json.dumps(list(v) if isinstance(v, tuple) else v)  # a JSON string, integer or list of strings is valid TOML


def _restart_note(f: dataclasses.Field) -> str:
    return "" if f.metadata["live"] else " (a change needs a restart)"


def template() -> str:
    """The commented ``config.toml`` shunt writes on first use: every ``[server]`` key at its default."""
    lines = ["# shunt configuration. Every key is optional; the values shown are the defaults.", "[server]"]
    for f in SERVER_KEYS:
        lines += [f"# {f.metadata['help']}{_restart_note(f)}", f"# {f.name} = {_toml_value(f.default)}"]
    lines += template_lines()
    lines += gateway_config.template_lines()
    lines += cluster_config.template_lines()
    lines += ["", "# Accounts are added by `shunt import` and `shunt add-account`; their secrets live in",
              "# credentials.json, never here. Each one is a block like:", "# [[accounts]]", '# name = "work"',
              '# kind = "oauth"      # or "api_key", or "openai" (see the README: OpenAI-compatible providers)', ""]
    return "\n".join(lines)


def readme_table() -> str:
    """The README's table of ``config.toml`` keys (a test keeps the README equal to it)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in SERVER_KEYS:
        plain = isinstance(f.default, bool) or (isinstance(f.default, (str, tuple)) and not f.default)
        default = _toml_value(f.default) if plain else f.default
        rows.append(f"| `server.{f.name}` | `{default}` | {f.metadata['help']}{_restart_note(f)} |")
    rows += readme_rows()
    rows += gateway_config.readme_rows()
    rows += cluster_config.readme_rows()
    rows += ["| `accounts[].name` | — | unique; letters, digits, `.`, `_`, `-` |",
             "| `accounts[].kind` | `oauth` | `oauth`, `api_key` or `openai` |"]
    rows += openai_config.readme_rows()
    rows += ['| `models."MODEL"` | — | `"ACCOUNT"` or `"ACCOUNT:MODEL"`, or a table with `to` and `fallback` (see '
             '"OpenAI-compatible providers") |']
    return "\n".join(rows)


@dataclasses.dataclass(frozen=True)
class AccountConfig:
    """One ``[[accounts]]`` entry: ``name`` (unique) and ``kind`` (``oauth``, ``api_key`` or ``openai``);
    an ``openai`` account also has ``provider`` (a preset name or ""), ``base_url``, ``models`` (ids or
    patterns) and ``capabilities`` (see :mod:`shunt_lib.openai_config`); the others leave them empty."""

    name: str
    kind: str = "oauth"
    base_url: str = ""
    models: tuple[str, ...] = ()
    capabilities: Capabilities | None = None
    provider: str = ""


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole ``config.toml``."""

    server: ServerConfig
    accounts: tuple[AccountConfig, ...]
    history: HistoryConfig = HistoryConfig()
    gateway: GatewayConfig = GatewayConfig()
    cluster: ClusterConfig = ClusterConfig()  # the [cluster] table: off unless redis_url is set
    pricing: dict = dataclasses.field(default_factory=dict)  # {prefix: pricing.Price}, see pricing_config
    models: ModelMap = ModelMap()  # the [models] table, see model_map


def shunt_home() -> str:
    """shunt's home directory: ``$SHUNT_HOME`` or ``~/.config/shunt`` (not created here)."""
    return os.environ.get("SHUNT_HOME") or os.path.join(os.path.expanduser("~"), ".config", "shunt")


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where shunt keeps its files."""

    home: str

    @property
    def config(self) -> str:
        """``config.toml``."""
        return os.path.join(self.home, "config.toml")

    @property
    def credentials(self) -> str:
        """``credentials.json`` (secrets, 0600)."""
        return os.path.join(self.home, "credentials.json")

    @property
    def state(self) -> str:
        """``state.json`` (runtime state, 0600)."""
        return os.path.join(self.home, "state.json")

    @property
    def tokens_db(self) -> str:
        """``tokens.db``: client tokens (only hashes of their secrets) and their budgets' usage (SQLite, 0600)."""
        return os.path.join(self.home, "tokens.db")

    def login_dir(self, name: str) -> str:
        """The CLAUDE_CONFIG_DIR of the Claude Code login that belongs to shunt's account ``name``."""
        return os.path.join(self.home, "logins", name)

    def mtime_ns(self) -> int:
        """Modification time of config.toml in ns (0 if missing)."""
        return mtime_ns(self.config)

    def writable_by_others(self) -> bool:
        """Whether the home directory (if it exists) is writable by its group or by anyone: then
        another user can replace the files in it, credentials.json included."""
        try:
            return bool(os.stat(self.home).st_mode & 0o022)
        except OSError:
            return False

    def ensure(self) -> None:
        """Create the home (mode 0700) if missing."""
        os.makedirs(self.home, mode=0o700, exist_ok=True)


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document into a :class:`Config`.

    :raises ConfigError: naming the offending key, for unknown keys, bad values or duplicate names.
    """
    unknown = set(data) - {"server", "accounts", "history", "pricing", "models", "gateway", "cluster"}
    if unknown:
        raise ConfigError(f"config.toml: unknown top-level key {sorted(unknown)[0]!r}")
    server_raw = data.get("server", {})
    if not isinstance(server_raw, dict):
        raise ConfigError("config.toml: [server] must be a table")
    known = {f.name: f.metadata["conv"] for f in SERVER_KEYS}
    secret = {f.name for f in SERVER_KEYS if f.metadata["secret"]}
    values: dict[str, Any] = {}
    for key, raw in server_raw.items():
        if key not in known:
            raise ConfigError(f"config.toml: unknown key server.{key}")
        try:
            values[key] = known[key](raw)
        except ValueError as exc:
            got = "" if key in secret else f" (got {raw!r})"
            raise ConfigError(f"config.toml: server.{key} {exc}{got}") from None
    server = ServerConfig(**values)
    accounts_raw = data.get("accounts", [])
    if not isinstance(accounts_raw, list):
        raise ConfigError("config.toml: accounts must be an array of tables ([[accounts]])")
    accounts: list[AccountConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(accounts_raw):
        if not isinstance(entry, dict):
            raise ConfigError(f"config.toml: accounts[{i}] must be a table")
        kind = entry.get("kind", "oauth")
        for key in entry:
            if key not in ("name", "kind") and kind != "openai":
                raise ConfigError(f"config.toml: unknown key accounts[{i}].{key}")
        name = entry.get("name")
        if not isinstance(name, str) or not ACCOUNT_NAME_RE.match(name):
            raise ConfigError(
                f"config.toml: accounts[{i}].name must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})"
            )
        if name in seen:
            raise ConfigError(f"config.toml: duplicate account name {name!r} (accounts[{i}].name)")
        seen.add(name)
        if kind not in ACCOUNT_KINDS:
            raise ConfigError(f"config.toml: accounts[{i}].kind must be 'oauth', 'api_key' or 'openai' (got {kind!r})")
        extra = openai_config.parse_openai_account(f"accounts[{i}]", entry) if kind == "openai" else {}
        accounts.append(AccountConfig(name=name, kind=kind, **extra))
    return Config(
        server=server,
        accounts=tuple(accounts),
        history=parse_history(data.get("history", {})),
        gateway=_gateway_with_remote_key(data.get("gateway", {}), server.remote_key),
        cluster=parse_cluster(data.get("cluster", {})),
        pricing=parse_pricing(data.get("pricing", {})),
        models=parse_models(data.get("models", {}), seen),
    )


_warned_remote_key = False


def _gateway_with_remote_key(raw: Any, remote_key: str) -> GatewayConfig:
    """The ``[gateway]`` table, with the old ``server.remote_key`` read as the admin key (a deprecation
    warning in the log, once per process). A ``remote_key`` used to guard every request, loopback ones
    too: unless ``require_token`` is set, it keeps doing so (``always``).

    :raises ConfigError: both ``remote_key`` and a different ``gateway.admin_key``.
    """
    global _warned_remote_key
    gateway = parse_gateway(raw, _remote_key)
    if not remote_key:
        return gateway
    if gateway.admin_key and gateway.admin_key != remote_key:
        raise ConfigError("config.toml: server.remote_key and gateway.admin_key differ; keep only gateway.admin_key")
    if not _warned_remote_key:
        _warned_remote_key = True
        logging.getLogger("shunt").warning(
            "config.toml: server.remote_key is deprecated; it is read as gateway.admin_key (move it to [gateway] "
            "admin_key; with it, set gateway.require_token, which stays \"always\" while remote_key is used)")
    explicit = isinstance(raw, dict) and "require_token" in raw
    return dataclasses.replace(gateway, admin_key=remote_key,
                               require_token=gateway.require_token if explicit else "always")


def load_config(paths: Paths, *, create: bool = True) -> Config:
    """Read and validate ``config.toml``, writing the template first if it is missing.

    :raises ConfigError: for TOML syntax errors or invalid keys.
    """
    if not os.path.exists(paths.config):
        if not create:
            return Config(server=ServerConfig(), accounts=())
        paths.ensure()
        atomic_write_bytes(paths.config, template().encode(), mode=0o600)
    try:
        with open(paths.config, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config.toml: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {paths.config}: {exc.strerror or exc}") from None
    return parse_config(data)


def check_bind(server: ServerConfig, admin_key: str = "") -> None:
    """Refuse a non-loopback ``host`` unless the admin key (``gateway.admin_key``, formerly
    ``server.remote_key``) is set.

    :raises ConfigError: with the fix in the message.
    """
    host = server.host
    if host in ("localhost",):
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not (admin_key or server.remote_key):
        raise ConfigError(
            f"refusing to listen on {host!r} without a key: set gateway.admin_key (formerly server.remote_key) "
            "in config.toml "
            "(clients then send it as x-api-key or Authorization: Bearer), or bind to 127.0.0.1"
        )


def write_config(paths: Paths, server: dict[str, Any], accounts: list[AccountConfig],
                 models: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None) -> Config:
    """Write a whole ``config.toml`` (no comments) from ``[server]`` keys, accounts and a ``[models]``
    table (``{"MODEL": "ACCOUNT[:MODEL]" | {"to": [...], "fallback": [...]}}``) and a
    ``[cluster]`` table, atomically.

    For generated homes (the demo, tests, the benchmark); users' files are edited block by block
    instead, keeping their comments. :raises ConfigError: if the result would not validate (nothing written).
    """
    lines = ["[server]"] + [f"{k} = {json.dumps(v)}" for k, v in server.items()]  # JSON str/int are valid TOML
    if cluster:
        lines += ["", "[cluster]"] + [f"{k} = {json.dumps(v)}" for k, v in cluster.items()]
    for a in accounts:
        lines += ["", "[[accounts]]", f"name = {json.dumps(a.name)}", f"kind = {json.dumps(a.kind)}"]
        lines += openai_config.toml_lines(a) if a.kind == "openai" else []
    if models:
        lines += ["", "[models]"]
        for key, v in models.items():  # JSON strings and lists of strings are valid TOML
            value = ("{" + ", ".join(f"{k} = {json.dumps(t)}" for k, t in v.items()) + "}") if isinstance(v, dict) \
                else json.dumps(v)
            lines.append(f"{json.dumps(key)} = {value}")
    text = "\n".join(lines) + "\n"
    config = parse_config(tomllib.loads(text))
    paths.ensure()
    atomic_write_bytes(paths.config, text.encode(), mode=0o600)
    return config


def _account_blocks(text: str) -> list[tuple[int, int, str | None]]:
    """Return ``(start, end, name)`` line spans of each ``[[accounts]]`` block in ``text``."""
    lines = text.splitlines(keepends=True)
    blocks: list[tuple[int, int, str | None]] = []
    start = None
    for i, line in enumerate(lines + ["[end]\n"]):
        stripped = line.strip()
        if stripped.startswith("["):
            if start is not None:
                chunk = "".join(lines[start:i])
                try:
                    name = tomllib.loads(chunk).get("accounts", [{}])[0].get("name")
                except (tomllib.TOMLDecodeError, IndexError, AttributeError):
                    name = None
                blocks.append((start, i, name))
                start = None
            if stripped.replace(" ", "") == "[[accounts]]":
                start = i
    return blocks


def add_account_to_config(paths: Paths, name: str, kind: str) -> bool:
    """Append an ``[[accounts]]`` block for ``name`` unless one exists; keeps the user's comments.

    :returns: True if a block was added, False if the account was already configured.
    :raises ConfigError: if ``name`` or ``kind`` is invalid, or the result would not validate.
    """
    if not ACCOUNT_NAME_RE.match(name):
        raise ConfigError(f"account name must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})")
    if kind not in ACCOUNT_KINDS:
        raise ConfigError(f"account kind must be one of {', '.join(ACCOUNT_KINDS)} (got {kind!r})")
    config = load_config(paths)
    for acct in config.accounts:
        if acct.name == name:
            if acct.kind != kind:
                raise ConfigError(f"account {name!r} already exists with kind {acct.kind!r}")
            return False
    with open(paths.config, encoding="utf-8") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text += "\n"
    text += f'\n[[accounts]]\nname = "{name}"\nkind = "{kind}"\n'
    parse_config(tomllib.loads(text))
    atomic_write_bytes(paths.config, text.encode(), mode=0o600)
    return True


def remove_account_from_config(paths: Paths, name: str) -> bool:
    """Delete the ``[[accounts]]`` block named ``name``. :returns: True if one was removed."""
    if not os.path.exists(paths.config):
        return False
    with open(paths.config, encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    for start, end, block_name in _account_blocks(text):
        if block_name == name:
            while start > 0 and lines[start - 1].strip() == "":
                start -= 1
            new_text = "".join(lines[:start] + lines[end:])
            atomic_write_bytes(paths.config, new_text.encode(), mode=0o600)
            return True
    return False
