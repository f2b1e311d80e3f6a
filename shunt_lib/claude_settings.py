"""Claude Code's user settings file: where its ``env.ANTHROPIC_BASE_URL`` points.

Claude Code reads ``settings.json`` in its config directory (``$CLAUDE_CONFIG_DIR``, default
``~/.claude``) and applies its ``env`` object to every session; ``ANTHROPIC_BASE_URL`` there sends its
API requests to shunt (https://code.claude.com/docs/en/settings, https://code.claude.com/docs/en/env-vars;
``docs/protocol.md``).

The decisions (:func:`plan_set`, :func:`plan_unset`) are pure over the parsed document; the edges
(:func:`read_settings`, :func:`write_settings`) read and write the file. A write keeps every other key
and the key order, keeps the file's mode, replaces it atomically, and keeps a one-time backup of the
original beside it. A file that is not valid JSON is never written: :class:`SettingsError` names it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import stat
import urllib.parse
from typing import Mapping

from .errors import ConfigError
from .fsutil import atomic_write_bytes

ENV_KEY = "ANTHROPIC_BASE_URL"
BACKUP_SUFFIX = ".shunt-backup"


class SettingsError(ConfigError):
    """The settings file cannot be read or is not a JSON object; the message names the file and why."""


def settings_path(env: Mapping[str, str] | None = None) -> str:
    """``$CLAUDE_CONFIG_DIR/settings.json``, else ``$HOME/.claude/settings.json`` (of ``env``, default
    the process's environment)."""
    env = os.environ if env is None else env
    base = env.get("CLAUDE_CONFIG_DIR") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".claude")
    return os.path.join(base, "settings.json")


def proxy_base_url(port: int) -> str:
    """The value setup writes: ``http://127.0.0.1:PORT``."""
    return f"http://127.0.0.1:{port}"


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (``localhost`` or a loopback address): a local proxy's, not a
    remote gateway's."""
    try:
        host = urllib.parse.urlsplit(url.strip()).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_settings(path: str) -> dict | None:
    """The parsed settings object, or None if the file does not exist.

    :raises SettingsError: unreadable, not JSON, or not a JSON object (the file is left as it is).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8-sig")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise SettingsError(f"{path} is not valid JSON ({exc}); fix or move it, then run this again "
                            "(shunt never overwrites it)") from None
    if not isinstance(doc, dict):
        raise SettingsError(f"{path} is not a JSON object; fix or move it, then run this again")
    return doc


def base_url(doc: dict | None) -> str | None:
    """``env.ANTHROPIC_BASE_URL`` of a parsed settings document, if set (a string)."""
    env = (doc or {}).get("env")
    value = env.get(ENV_KEY) if isinstance(env, dict) else None
    return value if isinstance(value, str) else None


@dataclasses.dataclass(frozen=True)
class SettingsEdit:
    """What setup changed in the settings file, kept in shunt's home so that undo reverses exactly it.

    ``value``: what was written; ``previous``: the value it replaced (None: there was none);
    ``created_env``: the ``env`` object was added; ``created_file``: the file did not exist.
    """

    path: str
    value: str
    previous: str | None = None
    created_env: bool = False
    created_file: bool = False

    def to_json(self) -> dict:
        """As stored in ``setup.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: object) -> "SettingsEdit | None":
        """From ``setup.json`` (None if absent or malformed)."""
        if not isinstance(d, dict) or not isinstance(d.get("path"), str) or not isinstance(d.get("value"), str):
            return None
        prev = d.get("previous")
        return cls(d["path"], d["value"], prev if isinstance(prev, str) else None, d.get("created_env") is True,
                   d.get("created_file") is True)


class RemoteBaseUrl(ConfigError):
    """The settings already send Claude Code to a non-loopback URL (the user's own gateway)."""


def plan_set(doc: dict | None, url: str, *, force: bool = False) -> tuple[dict, bool, str | None, bool]:
    """The document with ``env.ANTHROPIC_BASE_URL = url`` (pure; ``doc`` is not changed).

    Key order is kept; a new ``env`` goes last, a new key last within ``env``.

    :returns: ``(new document, changed, previous value, created env)``.
    :raises RemoteBaseUrl: the key holds a non-loopback URL and ``force`` is false.
    :raises SettingsError: ``env`` is there but not an object.
    """
    new = dict(doc or {})
    env = new.get("env")
    if env is not None and not isinstance(env, dict):
        raise SettingsError("the settings' \"env\" is not a JSON object; fix it, then run this again")
    previous = base_url(new)
    if previous == url:
        return new, False, previous, False
    if previous is not None and not is_loopback_url(previous) and not force:
        raise RemoteBaseUrl(f"Claude Code's settings send it to {previous} (env.{ENV_KEY}), not a local "
                            "proxy; shunt left them as they are (add --yes to point Claude Code at shunt instead)")
    new["env"] = {**(env or {}), ENV_KEY: url}
    return new, True, previous, env is None


def plan_unset(doc: dict | None, edit: SettingsEdit) -> tuple[dict | None, bool]:
    """The document without what ``edit`` added (pure): the key only if it still holds ``edit.value``
    (else the user changed it since, and it stays); a value it replaced comes back; an ``env`` object
    that setup created and that is now empty goes too.

    :returns: ``(new document, changed)``.
    """
    if doc is None or base_url(doc) != edit.value:
        return doc, False
    new = dict(doc)
    env = dict(new["env"])
    if edit.previous is not None:
        env[ENV_KEY] = edit.previous
    else:
        del env[ENV_KEY]
    if not env and edit.created_env:
        del new["env"]
    else:
        new["env"] = env
    return new, True


def write_settings(path: str, doc: dict) -> str | None:
    """Write ``doc`` to ``path`` atomically (2-space JSON, as Claude Code writes it), with the file's
    own mode (0600 for a new file), after copying the original to ``path`` + :data:`BACKUP_SUFFIX` once
    (an existing backup, the true original, is never overwritten).

    :returns: the backup's path if one was made now, else None.
    :raises OSError: if the file cannot be written (the old one is kept).
    """
    backup = None
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if not os.path.exists(path + BACKUP_SUFFIX):
            with open(path, "rb") as f:
                atomic_write_bytes(path + BACKUP_SUFFIX, f.read(), mode)
            backup = path + BACKUP_SUFFIX
    except FileNotFoundError:
        mode = 0o600
    atomic_write_bytes(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), mode)
    return backup
