"""OAuth access/refresh tokens of the pool's accounts: lookup, single-flight refresh, backoff, revocation.

Refresh request (anthropic-protocol.md §1.6): ``POST <oauth_token_url>`` with JSON
``{"grant_type":"refresh_token","refresh_token":...,"client_id":...}``; the answer has
``access_token``, usually a rotated ``refresh_token`` (keep the old one if absent) and ``expires_in``
in seconds. Refresh tokens are single-use, so a refresh is single flight per account across threads
(a lock per account) and across processes (:meth:`CredentialStore.lock`, an ``flock``). Inside the
lock the stored credential is re-read and the refresh skipped if another holder already rotated it.
The rotated pair is saved atomically **before** the lock is released and the new token is used.

Failures: ``invalid_grant`` means a new login is needed. Network errors and 5xx back off
exponentially (30 s, doubling, at most 10 min) and never mark the account broken; a 429 from the
token endpoint waits for its ``retry-after``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

import requests

from .credentials import Credential, CredentialStore
from .ratelimit import parse_retry_after_s

log = logging.getLogger("shunt.oauth")

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"  # Claude Code's public client (reference §1.1)
REFRESH_TIMEOUT_S = 20.0
BACKOFF_FIRST_S = 30.0
BACKOFF_MAX_S = 600.0


@dataclasses.dataclass(frozen=True)
class RefreshResult:
    """``status``: ``ok`` (``credential`` is the current one), ``invalid_grant`` (a new login is needed),
    ``error`` (transient: network, 5xx, 429, or backing off; ``message`` says which) or ``copy_only``
    (the credential was imported never to be refreshed)."""

    status: str
    credential: Credential | None = None
    message: str = ""
    retry_after_s: float | None = None  # a 429 from the token endpoint: wait this long


class TokenManager:
    """Holds each account's current credential and refreshes OAuth tokens, one refresh per account at a time.

    :param store: where credentials live; its lock makes refresh single-flight across processes.
    :param token_url: the OAuth token endpoint.
    :param http: a ``requests.Session`` (a test seam; ``responses`` patches it).
    Any thread may call any method.
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
        self._backoff_s: dict[str, float] = {}  # name -> current backoff step, seconds
        self._blocked_until: dict[str, float] = {}  # name -> epoch s before which no call is made
        self._unsaved: dict[str, Credential] = {}  # rotated pairs whose save failed (disk full...)

    def get(self, name: str) -> Credential | None:
        """The current credential of ``name``."""
        return self._creds.get(name)

    def set(self, name: str, cred: Credential | None) -> None:
        """Replace (or drop, with None) an account's in-memory credential (after a reload)."""
        if cred is None:
            self._creds.pop(name, None)
        else:
            self._creds[name] = cred

    def names(self) -> list[str]:
        return list(self._creds)

    def blocked_until(self, name: str) -> float:
        """Epoch s before which no refresh of ``name`` is attempted (0 = none)."""
        return self._blocked_until.get(name, 0.0)

    def _lock_for(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def refresh(self, name: str, failed_access_token: str | None = None, *, force: bool = False,
                margin_s: float | None = None) -> RefreshResult:
        """Refresh ``name``'s OAuth token, single flight across threads and processes.

        :param failed_access_token: the token the caller saw fail (401); if the stored token already
            differs, another holder refreshed it and that token is returned without a network call.
        :param force: refresh even if nothing says the token is stale (recovery of reauth_required).
        :param margin_s: proactive refresh: skip if the stored token is valid for longer than this.
        """
        with self._lock_for(name), self.store.lock():
            mine = self._creds.get(name)
            stored = self.store.load().get(name)  # re-read inside the lock
            if stored is None or stored.kind != "oauth":
                return RefreshResult("invalid_grant", message="no OAuth credential stored")
            if name in self._unsaved:
                return RefreshResult("ok", mine, "rotated; saving is pending")
            if mine is None or stored.access_token != mine.access_token:
                self._creds[name] = stored  # another thread or process rotated it already
                return RefreshResult("ok", stored, "already refreshed elsewhere")
            if failed_access_token is not None and stored.access_token != failed_access_token:
                return RefreshResult("ok", stored)
            if margin_s is not None and not force and stored.expires_at_ms > (self.clock() + margin_s) * 1000:
                return RefreshResult("ok", stored, "not due")
            if stored.copy_only:
                return RefreshResult("copy_only", stored, "imported with --copy-only: never refreshed")
            if not stored.refresh_token:
                return RefreshResult("invalid_grant", message="no refresh token stored")
            now = self.clock()
            if not force and self._blocked_until.get(name, 0.0) > now:
                return RefreshResult("error", message=f"backing off for {int(self._blocked_until[name] - now)} s")
            result = self._call(stored)
            if result.status == "ok" and result.credential is not None:
                self._creds[name] = result.credential  # the old refresh token is spent: never lose the new pair
                try:
                    self.store.put(name, result.credential)  # on disk before the lock is released or the token used
                except OSError as exc:
                    self._unsaved[name] = result.credential
                    log.error("could not save the rotated token of %s (%s); it is kept in memory and saved "
                              "again shortly", name, exc)
                self._backoff_s.pop(name, None)
                self._blocked_until.pop(name, None)
                log.info("refreshed the OAuth token of %s (valid until %s)", name,
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(result.credential.expires_at_ms / 1000)))
            elif result.status == "error":
                step = result.retry_after_s  # a 429's retry-after wins over the exponential step
                if step is None:
                    step = min(BACKOFF_MAX_S, self._backoff_s.get(name, BACKOFF_FIRST_S / 2) * 2)
                    self._backoff_s[name] = step
                self._blocked_until[name] = now + step
                log.warning("token refresh for %s failed (%s); next try in %d s", name, result.message, step)
            else:
                log.warning("token refresh for %s failed: %s", name, result.message)
            return result

    def _call(self, cred: Credential) -> RefreshResult:
        try:
            resp = self.http.post(
                self.token_url,
                json={"grant_type": "refresh_token", "refresh_token": cred.refresh_token, "client_id": self.client_id},
                headers={"accept": "application/json"},
                timeout=REFRESH_TIMEOUT_S,
            )
        except requests.RequestException as exc:
            return RefreshResult("error", message=f"token endpoint unreachable ({type(exc).__name__})")
        return token_response(resp, cred, self.clock())

    def revoke(self, cred: Credential, revoke_url: str) -> bool:
        """Best-effort revocation of ``cred``'s refresh token (RFC 7009 shape). :returns: True on 2xx."""
        if cred.kind != "oauth" or not cred.refresh_token:
            return False
        try:
            resp = self.http.post(revoke_url, json={"token": cred.refresh_token, "token_type_hint": "refresh_token",
                                                    "client_id": self.client_id}, timeout=REFRESH_TIMEOUT_S)
        except requests.RequestException:
            return False
        return 200 <= resp.status_code < 300

    def save_unsaved(self) -> None:
        """Retry saving rotated pairs whose first save failed (called by the refresher thread)."""
        for name, cred in list(self._unsaved.items()):
            with self._lock_for(name), self.store.lock():
                if self._creds.get(name) is not cred:
                    self._unsaved.pop(name, None)
                    continue
                try:
                    self.store.put(name, cred)
                except OSError as exc:
                    log.error("still cannot save the rotated token of %s: %s", name, exc)
                    continue
                self._unsaved.pop(name, None)
                log.info("saved the rotated token of %s", name)

    def expiring(self, within_s: float) -> list[str]:
        """OAuth accounts whose access token expires within ``within_s`` seconds (and can be refreshed)."""
        deadline_ms = (self.clock() + within_s) * 1000
        return [n for n, c in list(self._creds.items())
                if c.kind == "oauth" and c.refresh_token and not c.copy_only and c.expires_at_ms
                and c.expires_at_ms <= deadline_ms]


def token_response(resp: requests.Response, old: Credential | None, now_s: float) -> RefreshResult:
    """Interpret a token-endpoint answer (refresh or code exchange, reference §1.5).

    :param old: the credential being refreshed (its refresh token, email and plan are kept when the
        answer omits them), or None for a first login.
    """
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if resp.status_code == 200 and isinstance(data.get("access_token"), str):
        expires_in = data.get("expires_in")
        expires_in = expires_in if isinstance(expires_in, (int, float)) and expires_in > 0 else 3600
        account = data.get("account") if isinstance(data.get("account"), dict) else {}
        return RefreshResult("ok", Credential(
            kind="oauth",
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token") or (old.refresh_token if old else ""),
            expires_at_ms=int((now_s + expires_in) * 1000),
            email=str(account.get("email_address") or (old.email if old else "")),
            plan=old.plan if old else "",
        ))
    err = str(data.get("error") or "")
    if err in ("invalid_grant", "invalid_client", "unauthorized_client") or (resp.status_code in (400, 401) and not err):
        return RefreshResult("invalid_grant", message=f"{err or resp.status_code}: {data.get('error_description') or ''}".strip(": "))
    retry_after_s = None
    if resp.status_code == 429:
        retry = parse_retry_after_s(resp.headers, now_s)
        retry_after_s = min(max(retry if retry is not None else BACKOFF_FIRST_S, 1.0), BACKOFF_MAX_S)
    return RefreshResult("error", message=f"token endpoint answered {resp.status_code} {err}".strip(),
                         retry_after_s=retry_after_s)
