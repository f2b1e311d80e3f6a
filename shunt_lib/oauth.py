"""OAuth access/refresh tokens of the pool's accounts: lookup and single-flight refresh.

Refresh request (anthropic-protocol.md §1.6): ``POST <oauth_token_url>`` with JSON
``{"grant_type":"refresh_token","refresh_token":...,"client_id":...}``; the answer has
``access_token``, usually a rotated ``refresh_token`` (keep the old one if absent) and ``expires_in``
in seconds. Refresh tokens are single-use, so the rotated pair is saved atomically **before** the
new access token is used, and only one refresh per account runs at a time: concurrent callers wait
for it and reuse its result.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

import requests

from .credentials import Credential, CredentialStore

log = logging.getLogger("shunt.oauth")

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"  # Claude Code's public client (reference §1.1)
REFRESH_TIMEOUT_S = 20.0


@dataclasses.dataclass(frozen=True)
class RefreshResult:
    """``status``: ``ok`` (``credential`` is the new one), ``invalid_grant`` (a new login is needed) or
    ``error`` (transient: network, 5xx, 429; ``message`` says which)."""

    status: str
    credential: Credential | None = None
    message: str = ""


class TokenManager:
    """Holds each account's current credential and refreshes OAuth tokens, one refresh per account at a time.

    :param store: where rotated tokens are saved.
    :param token_url: the OAuth token endpoint.
    :param http: a ``requests.Session`` (a test seam; ``responses`` patches it).
    """

    def __init__(self, store: CredentialStore, creds: dict[str, Credential], *, token_url: str,
                 client_id: str = CLIENT_ID, http: requests.Session | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.token_url = token_url
        self.client_id = client_id
        self.http = http or requests.Session()
        self.http.trust_env = False  # never send tokens through an environment proxy
        self.clock = clock
        self._creds = dict(creds)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.refresh_calls = 0

    def get(self, name: str) -> Credential | None:
        """The current credential of ``name`` (any thread)."""
        return self._creds.get(name)

    def set(self, name: str, cred: Credential | None) -> None:
        """Replace (or drop, with None) an account's in-memory credential (after a reload)."""
        if cred is None:
            self._creds.pop(name, None)
        else:
            self._creds[name] = cred

    def _lock_for(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def refresh(self, name: str, failed_access_token: str | None = None) -> RefreshResult:
        """Refresh ``name``'s OAuth token, single flight.

        :param failed_access_token: the token the caller saw fail; if the stored token already
            differs, another thread refreshed it and that result is returned without a network call.
        """
        with self._lock_for(name):
            cred = self._creds.get(name)
            if cred is None or cred.kind != "oauth":
                return RefreshResult("invalid_grant", message="no OAuth credential")
            if failed_access_token is not None and cred.access_token != failed_access_token:
                return RefreshResult("ok", cred)
            if not cred.refresh_token:
                return RefreshResult("invalid_grant", message="no refresh token stored")
            result = self._call(cred)
            if result.status == "ok" and result.credential is not None:
                new = result.credential
                self.store.put(name, new)  # persist the rotated pair before anyone uses it
                self._creds[name] = new
                log.info("refreshed the OAuth token of %s (expires %s)", name,
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(new.expires_at_ms / 1000)))
            else:
                log.warning("token refresh for %s failed: %s", name, result.message)
            return result

    def _call(self, cred: Credential) -> RefreshResult:
        self.refresh_calls += 1
        try:
            resp = self.http.post(
                self.token_url,
                json={"grant_type": "refresh_token", "refresh_token": cred.refresh_token, "client_id": self.client_id},
                headers={"accept": "application/json"},
                timeout=REFRESH_TIMEOUT_S,
            )
        except requests.RequestException as exc:
            return RefreshResult("error", message=f"token endpoint unreachable ({type(exc).__name__})")
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if resp.status_code == 200 and isinstance(data.get("access_token"), str):
            expires_in = data.get("expires_in")
            expires_in = expires_in if isinstance(expires_in, (int, float)) and expires_in > 0 else 3600
            return RefreshResult("ok", Credential(
                kind="oauth",
                access_token=data["access_token"],
                refresh_token=data.get("refresh_token") or cred.refresh_token,
                expires_at_ms=int((self.clock() + expires_in) * 1000),
                email=((data.get("account") or {}).get("email_address") if isinstance(data.get("account"), dict) else None)
                or cred.email,
                plan=cred.plan,
            ))
        err = str(data.get("error") or "")
        if err == "invalid_grant" or (resp.status_code in (400, 401) and err in ("invalid_grant", "unauthorized_client", "invalid_client")):
            return RefreshResult("invalid_grant", message=f"{err}: {data.get('error_description') or ''}".strip(": "))
        return RefreshResult("error", message=f"token endpoint answered {resp.status_code} {err}".strip())

    def expiring(self, within_s: float) -> list[str]:
        """OAuth accounts whose access token expires within ``within_s`` seconds (and can be refreshed)."""
        deadline_ms = (self.clock() + within_s) * 1000
        return [n for n, c in list(self._creds.items())
                if c.kind == "oauth" and c.refresh_token and c.expires_at_ms and c.expires_at_ms <= deadline_ms]
