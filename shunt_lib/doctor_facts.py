"""What ``shunt doctor`` looked at: plain frozen records, filled by :mod:`shunt_lib.doctor_probe` and
read by :mod:`shunt_lib.doctor` (and by tests, which build them by hand)."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from .config import Config
from .credentials import Credential


@dataclasses.dataclass(frozen=True)
class FileFacts:
    """``os.stat`` of one path: ``mode`` (permission bits) and ``uid``, both None if it does not exist;
    ``error`` if it could not be examined."""

    path: str
    mode: int | None = None
    uid: int | None = None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Answer:
    """An HTTP answer (``status``, parsed JSON ``body`` or None), or ``error`` when none came."""

    status: int = 0
    body: object = None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class UpstreamFacts:
    """How far a connection to the upstream got. ``failed_stage`` is '' (all went well) or ``dns``,
    ``tcp``, ``tls``, ``http``; ``tls_version`` is '' for a plain-http upstream; ``date_s`` is the
    answer's ``Date`` header and ``local_s`` the local clock when it arrived (epoch seconds)."""

    host: str
    port: int
    scheme: str
    failed_stage: str = ""
    error: str = ""
    address: str = ""
    tls_version: str = ""
    date_s: float | None = None
    local_s: float | None = None


@dataclasses.dataclass(frozen=True)
class PortFacts:
    """What answers on shunt's port: ``state`` ``shunt`` (``GET /health`` says ``{"status": "ok"}``),
    ``free`` (connection refused), ``other`` (something else) or ``unknown``; ``detail`` says more."""

    host: str
    port: int
    state: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ServiceFacts:
    """The installed service: ``unit_path`` ('' if none is installed), ``manager`` (``systemd --user``,
    ``systemd``, ``launchd``), ``active`` (what the manager says: ``active``, ``inactive``, ``failed``...;
    '' if it could not be asked) and ``error``."""

    unit_path: str = ""
    manager: str = ""
    active: str = ""
    error: str = ""
    restart: str = "shunt service restart"


@dataclasses.dataclass(frozen=True)
class SettingsFacts:
    """Claude Code's user settings file: its parsed JSON ``data`` (None if missing or unreadable) and
    ``error`` (why it could not be read or parsed)."""

    path: str
    exists: bool = False
    data: object = None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class ClaudeFacts:
    """``claude`` on PATH: ``path`` ('' if not found), the first line ``version`` of ``claude --version``, ``error``."""

    path: str = ""
    version: str = ""
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Facts:
    """Everything doctor looked at. ``config`` is None when ``config_error`` says why it is invalid;
    ``flags`` is ``state.json``'s ``reauth_required`` / ``disabled`` per account; ``identity`` holds the
    answer of the identity call per account (absent: not made); ``upstream`` and ``port`` are None when
    not examined (no valid config)."""

    home: FileFacts
    config_path: str
    config_exists: bool
    config: Config | None
    config_error: str
    uid: int
    credentials: FileFacts
    state: FileFacts
    creds: Mapping[str, Credential] = dataclasses.field(default_factory=dict)
    unusable: Mapping[str, str] = dataclasses.field(default_factory=dict)
    creds_error: str = ""
    flags: Mapping[str, Mapping[str, bool]] = dataclasses.field(default_factory=dict)
    identity: Mapping[str, Answer] = dataclasses.field(default_factory=dict)
    upstream: UpstreamFacts | None = None
    proxy_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    port: PortFacts | None = None
    service: ServiceFacts = ServiceFacts()
    settings: SettingsFacts | None = None
    env_base_url: str | None = None
    claude: ClaudeFacts = ClaudeFacts()
