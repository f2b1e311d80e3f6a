"""``credentials.json``: per-account secrets, written only by shunt (atomic, mode 0600).

Shape::

    {"accounts": {
        "work": {"kind": "oauth", "access_token": "...", "refresh_token": "...",
                 "expires_at_ms": 1790000000000, "email": "...", "plan": "max"},
        "ci":   {"kind": "api_key", "api_key": "sk-ant-..."}}}

Claude Code's own file (``~/.claude/.credentials.json``, ``docs/protocol.md`` §2.2) holds
``{"claudeAiOauth": {"accessToken", "refreshToken", "expiresAt" (epoch ms), "subscriptionType", ...}}``.

An account's identity (``email``, ``plan``) lives here, with its secret, and nowhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import threading

from .errors import ConfigError
from .fsutil import atomic_write_json, mtime_ns, read_json
from .refresh_lock import open_lock_file


@dataclasses.dataclass(frozen=True)
class Credential:
    """One account's secret. ``repr`` never shows the secret.

    For ``kind == "oauth"``: ``access_token``, ``refresh_token``, ``expires_at_ms`` (epoch ms, 0 if
    unknown). For ``kind == "api_key"``: ``api_key``.
    """

    kind: str
    access_token: str = ""
    refresh_token: str = ""
    expires_at_ms: int = 0
    api_key: str = ""
    email: str = ""
    plan: str = ""
    copy_only: bool = False  # imported to be used until it expires, never refreshed

    def __repr__(self) -> str:
        return f"Credential(kind={self.kind!r}, email={self.email!r}, expires_at_ms={self.expires_at_ms})"

    @property
    def secret(self) -> str:
        """The value sent upstream: access token or API key."""
        return self.access_token if self.kind == "oauth" else self.api_key

    @property
    def refreshable(self) -> bool:
        """An OAuth credential shunt may refresh: it has a refresh token and was not imported copy-only."""
        return self.kind == "oauth" and bool(self.refresh_token) and not self.copy_only

    def to_json(self) -> dict:
        """The ``credentials.json`` entry (secrets included: write it only through :class:`CredentialStore`)."""
        if self.kind == "api_key":
            out = {"kind": "api_key", "api_key": self.api_key}
        else:
            out = {
                "kind": "oauth",
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at_ms": self.expires_at_ms,
            }
        if self.email:
            out["email"] = self.email
        if self.plan:
            out["plan"] = self.plan
        if self.copy_only:
            out["copy_only"] = True
        return out

    @classmethod
    def from_json(cls, name: str, d: object) -> "Credential":
        """:raises ConfigError: if the entry is malformed (names the account and key)."""
        if not isinstance(d, dict):
            raise ConfigError(f"credentials.json: accounts.{name} must be an object")
        kind = d.get("kind")
        if kind == "api_key":
            key = d.get("api_key")
            if not isinstance(key, str) or not key:
                raise ConfigError(f"credentials.json: accounts.{name}.api_key is missing")
            return cls(kind="api_key", api_key=key, email=str(d.get("email") or ""))
        if kind == "oauth":
            access = d.get("access_token")
            if not isinstance(access, str) or not access:
                raise ConfigError(f"credentials.json: accounts.{name}.access_token is missing")
            expires = d.get("expires_at_ms", 0)
            if isinstance(expires, bool) or not isinstance(expires, int):
                raise ConfigError(f"credentials.json: accounts.{name}.expires_at_ms must be an integer")
            return cls(
                kind="oauth",
                access_token=access,
                refresh_token=str(d.get("refresh_token") or ""),
                expires_at_ms=expires,
                email=str(d.get("email") or ""),
                plan=str(d.get("plan") or ""),
                copy_only=bool(d.get("copy_only", False)),
            )
        raise ConfigError(f"credentials.json: accounts.{name}.kind must be 'oauth' or 'api_key'")


class CredentialStore:
    """Reads and writes ``credentials.json``; every write is atomic and 0600.

    :meth:`lock` is exclusive across threads **and** processes (a thread lock plus ``fcntl.flock`` on
    ``credentials.lock`` beside the file; the credentials file itself is replaced by rename, so it
    cannot carry the lock). It is re-entrant within a process. Writers take it; a token refresh holds
    it from re-reading the stored credential until the rotated pair is on disk.
    """

    def __init__(self, path: str):
        self.path = path
        self.lock_path = os.path.join(os.path.dirname(os.path.abspath(path)), "credentials.lock")
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def lock(self):
        """Hold the credentials lock (blocks until other threads and processes release it)."""
        with self._rlock:
            if self._depth == 0:
                os.makedirs(os.path.dirname(self.lock_path), mode=0o700, exist_ok=True)
                fd = open_lock_file(self.lock_path)  # O_NOFOLLOW, 0600: a planted symlink is refused
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None

    def load(self) -> dict[str, Credential]:
        """:returns: name → Credential. :raises ConfigError: if the file is malformed."""
        try:
            data = read_json(self.path, default={"accounts": {}})
        except ValueError as exc:
            raise ConfigError(f"credentials.json is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("accounts", {}), dict):
            raise ConfigError("credentials.json: top level must be {\"accounts\": {...}}")
        return {name: Credential.from_json(name, d) for name, d in data.get("accounts", {}).items()}

    def put(self, name: str, cred: Credential) -> None:
        """Store (or replace) one account's credential atomically."""
        with self.lock():
            creds = self.load()
            creds[name] = cred
            self._write(creds)

    def remove(self, name: str) -> bool:
        """Delete one account's credential. :returns: True if it existed."""
        with self.lock():
            creds = self.load()
            if name not in creds:
                return False
            del creds[name]
            self._write(creds)
            return True

    def mtime_ns(self) -> int:
        """Modification time of the file in ns (0 if missing): cheap change detection for reloads."""
        return mtime_ns(self.path)

    def _write(self, creds: dict[str, Credential]) -> None:
        atomic_write_json(self.path, {"accounts": {n: c.to_json() for n, c in sorted(creds.items())}})


def default_claude_credentials_path() -> str:
    """Claude Code's credential file on Linux/Windows (``docs/protocol.md`` §2.1)."""
    base = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".claude")
    return os.path.join(base, ".credentials.json")


def parse_claude_code_credentials(raw: bytes | str) -> Credential:
    """Parse Claude Code's ``.credentials.json`` content into an OAuth :class:`Credential`.

    :raises ConfigError: if there is no ``claudeAiOauth.accessToken``.
    """
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError("the Claude Code credentials are not valid JSON") from None
    oauth = data.get("claudeAiOauth") if isinstance(data, dict) else None
    if not isinstance(oauth, dict) or not isinstance(oauth.get("accessToken"), str):
        raise ConfigError("the Claude Code credentials have no claudeAiOauth.accessToken (log in with `claude` first)")
    expires = oauth.get("expiresAt") or 0
    return Credential(
        kind="oauth",
        access_token=oauth["accessToken"],
        refresh_token=str(oauth.get("refreshToken") or ""),
        expires_at_ms=int(expires) if isinstance(expires, (int, float)) else 0,
        plan=str(oauth.get("subscriptionType") or ""),
    )
