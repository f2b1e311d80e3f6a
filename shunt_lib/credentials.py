"""``credentials.json``: per-account secrets, written only by shunt (atomic, mode 0600).

Shape::

    {"accounts": {
        "work": {"kind": "oauth", "access_token": "...", "refresh_token": "...",
                 "expires_at_ms": 1790000000000, "email": "...", "plan": "max"},
        "ci":   {"kind": "api_key", "api_key": "sk-ant-..."},
        "or":   {"kind": "openai", "api_key": "sk-or-..."},     # an OpenAI-compatible provider's key
        "local": {"kind": "openai", "api_key": ""}}}            # a local server that takes no key

Claude Code's own file (``~/.claude/.credentials.json``, ``docs/protocol.md`` §2.2) holds
``{"claudeAiOauth": {"accessToken", "refreshToken", "expiresAt" (epoch ms), "subscriptionType", ...}}``.

An account's identity (``email``, ``plan``) lives here, with its secret, and nowhere else.

Every secret is checked to be sendable as an HTTP header value before it is stored and when it is
loaded (:func:`secret_problem`): a token with a newline or a space would otherwise fail on its way
upstream, and the failure could echo it. A stored entry that fails the check is kept in the file as it
is but not used: its account needs a new login, and every message about it names the account and
the field, never the value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import threading

from .errors import ConfigError
from .fsutil import atomic_write_json, mtime_ns, read_json
from .refresh_lock import open_lock_file

log = logging.getLogger("shunt.credentials")

#: The fields of an entry that hold a secret, each sent upstream in a header (or a token request).
SECRET_FIELDS = ("access_token", "refresh_token", "api_key")


def secret_problem(value: str) -> str | None:
    """Why ``value`` cannot be used as a token or key, or None if it can. Never quotes the value.

    A secret must be one or more visible ASCII characters (``%x21-7E``): no space, tab, line break,
    other control character or non-ASCII character. That is RFC 9110 §5.5's ``field-vchar`` without
    ``obs-text`` (https://www.rfc-editor.org/rfc/rfc9110#section-5.5), and a superset of the
    ``b64token`` syntax of bearer tokens (RFC 6750 §2.1, https://www.rfc-editor.org/rfc/rfc6750#section-2.1).
    """
    if not value:
        return "is empty"
    if not value.isascii():
        return "contains a non-ASCII character"
    if any(c.isspace() for c in value):
        return "contains whitespace (a space, tab or line break)"
    if not value.isprintable():
        return "contains a control character"
    return None


@dataclasses.dataclass(frozen=True)
class Credential:
    """One account's secret. ``repr`` never shows the secret.

    For ``kind == "oauth"``: ``access_token``, ``refresh_token``, ``expires_at_ms`` (epoch ms, 0 if
    unknown). For ``kind == "api_key"``: ``api_key``. For ``kind == "openai"`` (an OpenAI-compatible
    provider): ``api_key``, sent as ``Authorization: Bearer``; empty for a local server that takes no key.
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

    def problem(self) -> str | None:
        """Why this credential cannot be used (a secret field fails :func:`secret_problem`), naming the
        field and never its value; None if it can be used."""
        fields = ("api_key",) if self.kind in ("api_key", "openai") else ("access_token", "refresh_token")
        for field in fields:
            value = getattr(self, field)
            if not value and (field == "refresh_token" or self.kind == "openai"):
                continue  # optional: an imported login may come without one; a local server takes no key
            why = secret_problem(value)
            if why is not None:
                return f"{field} {why}"
        return None

    def to_json(self) -> dict:
        """The ``credentials.json`` entry (secrets included: write it only through :class:`CredentialStore`)."""
        if self.kind in ("api_key", "openai"):
            out = {"kind": self.kind, "api_key": self.api_key}
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
        if kind == "openai":
            key = d.get("api_key", "")
            if not isinstance(key, str):
                raise ConfigError(f"credentials.json: accounts.{name}.api_key must be a string")
            return cls(kind="openai", api_key=key)
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
        raise ConfigError(f"credentials.json: accounts.{name}.kind must be 'oauth', 'api_key' or 'openai'")


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
        self._warned: set[tuple[str, str]] = set()  # (account, problem) already logged

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
        """:returns: name → Credential, for the entries that can be used (an unusable secret is logged
        once, naming the account, and its account is left out). :raises ConfigError: if the file is malformed."""
        creds, bad = self._read()
        for name, (raw, problem) in bad.items():
            if (name, problem) not in self._warned:
                self._warned.add((name, problem))
                log.warning("%s", unusable_message(name, problem, _kind(raw)))
        return creds

    def unusable(self) -> dict[str, str]:
        """name → why its stored credential cannot be used (never the value), for the entries :meth:`load` leaves out.

        :raises ConfigError: if the file is malformed."""
        return {name: unusable_message(name, problem, _kind(raw)) for name, (raw, problem) in self._read()[1].items()}

    def _read(self) -> tuple[dict[str, Credential], dict[str, tuple[object, str]]]:
        """The usable credentials, and the unusable entries as ``name → (raw entry, problem)``."""
        try:
            data = read_json(self.path, default={"accounts": {}})
        except ValueError as exc:
            raise ConfigError(f"credentials.json is not valid JSON: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("accounts", {}), dict):
            raise ConfigError("credentials.json: top level must be {\"accounts\": {...}}")
        creds: dict[str, Credential] = {}
        bad: dict[str, tuple[object, str]] = {}
        for name, d in data.get("accounts", {}).items():
            cred = Credential.from_json(name, d)
            problem = cred.problem()
            if problem is None:
                creds[name] = cred
            else:
                bad[name] = (d, problem)
        return creds, bad

    def put(self, name: str, cred: Credential) -> None:
        """Store (or replace) one account's credential atomically.

        :raises ConfigError: if a secret of ``cred`` cannot be used (:meth:`Credential.problem`); nothing is written.
        """
        problem = cred.problem()
        if problem is not None:
            raise ConfigError(f"the credential for account {name!r} cannot be used: its {problem}; nothing was saved")
        with self.lock():
            creds, bad = self._read()
            bad.pop(name, None)
            creds[name] = cred
            self._write(creds, bad)

    def remove(self, name: str) -> bool:
        """Delete one account's credential (usable or not). :returns: True if it existed."""
        with self.lock():
            creds, bad = self._read()
            if name not in creds and name not in bad:
                return False
            creds.pop(name, None)
            bad.pop(name, None)
            self._write(creds, bad)
            return True

    def mtime_ns(self) -> int:
        """Modification time of the file in ns (0 if missing): cheap change detection for reloads."""
        return mtime_ns(self.path)

    def _write(self, creds: dict[str, Credential], bad: dict[str, tuple[object, str]]) -> None:
        """Write every entry: the usable ones from ``creds``, the unusable ones unchanged, as they were read."""
        accounts = {n: c.to_json() for n, c in creds.items()}
        accounts.update({n: raw for n, (raw, _) in bad.items()})
        atomic_write_json(self.path, {"accounts": dict(sorted(accounts.items()))})


def _kind(raw: object) -> str:
    """The ``kind`` of a raw credentials.json entry ("" if it has none)."""
    kind = raw.get("kind") if isinstance(raw, dict) else None
    return kind if isinstance(kind, str) else ""


def unusable_message(name: str, problem: str, kind: str = "") -> str:
    """The message for an account whose stored credential cannot be used: names the account, the field
    and the fix for its ``kind`` (an ``openai`` account's key is stored again with ``--openai``), never
    the value."""
    if kind == "openai":
        fix = f"the account needs its key stored again (`shunt add-account {name} --openai`)"
    else:
        fix = (f"the account needs a new login (`shunt add-account {name}`, or "
               f"`shunt add-account {name} --api-key` for an API key)")
    return (f"credentials.json: the {problem.split(' ', 1)[0]} of account {name!r} cannot be used: it "
            f"{problem.split(' ', 1)[1]}; {fix}")


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
