"""OAuth access/refresh tokens of the pool's accounts: lookup, single-flight refresh, backoff, revocation.

Refresh request (``docs/protocol.md`` §1.6–1.8): ``POST <oauth_token_url>`` with JSON
``{"grant_type":"refresh_token","refresh_token":...,"client_id":...}``; the answer has
``access_token``, usually a rotated ``refresh_token`` (keep the old one if absent) and ``expires_in``
in seconds. Refresh tokens are single-use, so a refresh is single flight per account across threads
and processes (:class:`~shunt_lib.refresh_lock.AccountLocks`: a lock and an ``flock`` per account,
held over the network call; other accounts refresh in parallel). Inside the lock the stored
credential is re-read and the refresh skipped if another holder already rotated it. The rotated pair
is saved atomically **before** the lock is released and before :meth:`TokenManager.get` hands the
new token out (if the save fails, the pair is kept in memory and saved again later: the old refresh
token is spent, so the new pair must never be lost).

Failures: ``invalid_grant`` means a new login is needed. Network errors, timeouts and 5xx back off
exponentially (30 s, doubling, at most 10 min) and never mark the account broken; a 429 from the
token endpoint waits for its ``retry-after``. While an account whose token is expired (or was just
refused) backs off, it is cooled until the next try, with the failure as its reason, so requests go
elsewhere. A refresh that timed out after it was sent may have rotated the token at the server with
the answer lost: the account is "maybe rotated"; the next try re-reads ``credentials.json`` first
and, if the old refresh token is then refused, says so in the ``reauth_required`` message.

Where the refresh is coordinated is a seam (:attr:`TokenManager.coordinator`): by default
:class:`LocalCoordinator` (this machine alone: the lock above and ``credentials.json``); a cluster puts
:class:`~shunt_lib.cluster_creds.ClusterCredentials` there (a Redis-wide lock and the shared credential).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import threading
import time
from typing import Callable

import requests

from .config import ServerConfig
from .credentials import Credential, CredentialStore
from .errors import ConfigError
from .httpclient import new_session
from .numbers import MAX_AHEAD_S, finite
from .ratelimit import parse_retry_after_s
from .refresh_lock import AccountLocks

log = logging.getLogger("shunt.oauth")
events_log = logging.getLogger("shunt.events")

CLIENT_ID: str = ServerConfig.oauth_client_id  # Claude Code's public client: the config default
REFRESH_TIMEOUT_S = 20.0
BACKOFF_FIRST_S = 30.0
BACKOFF_MAX_S = 600.0


class RefreshStatus(enum.StrEnum):
    """How a refresh ended."""

    OK = "ok"  # the credential is current (refreshed now, or already fresh)
    INVALID_GRANT = "invalid_grant"  # a new login is needed
    ERROR = "error"  # transient: network, 5xx, 429, or backing off; try again later
    COPY_ONLY = "copy_only"  # imported never to be refreshed


@dataclasses.dataclass(frozen=True)
class RefreshResult:
    """``status`` (:class:`RefreshStatus`), the current ``credential`` when OK, and a ``message``
    saying why otherwise (never containing a secret)."""

    status: RefreshStatus
    credential: Credential | None = None
    message: str = ""
    retry_after_s: float | None = None  # a 429 from the token endpoint: wait this long
    maybe_rotated: bool = False  # sent, but no answer arrived in time: the server may have rotated the token


class LocalCoordinator:
    """How a refresh is coordinated on this machine alone (the default :attr:`TokenManager.coordinator`).

    A coordinator has five methods, all called by :class:`TokenManager`:
    ``run(name, failed_access_token, body)`` runs ``body()`` (the refresh, returning a
    :class:`RefreshResult`) single flight for ``name`` and returns its result (or an earlier one, if the
    coordinator learnt the refresh is not needed); inside ``body``, ``current(name)`` is the credential
    stored now, ``before_call(name)`` may return a result that stops the call to the token endpoint,
    ``after_call(name, result, sent)`` sees the endpoint's answer to the refresh token of ``sent`` (the
    credential ``current`` returned) before the new pair is used (and returns the result to go on with); ``logged_in(name, cred, replaced)`` is told of a new login or key seen by a
    reload (``replaced``: it replaced a credential held until then).
    Here: the account's lock (:class:`~shunt_lib.refresh_lock.AccountLocks`) and ``credentials.json``.
    """

    def __init__(self, store: CredentialStore, locks: AccountLocks):
        self.store = store
        self.locks = locks

    def run(self, name: str, failed_access_token: str | None, body: Callable[[], "RefreshResult"]) -> "RefreshResult":
        """``body()`` holding ``name``'s lock. :raises OSError: the lock file cannot be opened safely."""
        del failed_access_token
        with self.locks.hold(name):
            return body()

    def current(self, name: str) -> Credential | None:
        """``name``'s credential in ``credentials.json`` (re-read: another process may have rotated it)."""
        return self.store.load().get(name)

    def before_call(self, name: str) -> "RefreshResult | None":
        """Nothing stops a call here."""
        del name
        return None

    def after_call(self, name: str, result: "RefreshResult", sent: Credential) -> "RefreshResult":
        """The answer as it is."""
        del name, sent
        return result

    def logged_in(self, name: str, cred: Credential, replaced: bool) -> None:
        """Nothing to tell."""


class TokenManager:
    """Holds each account's current credential and refreshes OAuth tokens, one refresh per account at a time.

    :param store: where credentials live; refresh locks live beside it (``refresh-<name>.lock``).
    :param token_url: the OAuth token endpoint.
    :param http: the session for token calls (from :func:`~shunt_lib.httpclient.new_session`; its
        owner closes it). None: the manager makes its own and :meth:`close` closes it.
    :param clock: epoch seconds.
    :param cool: ``cool(name, until_s, reason)``, called (outside every lock) when a transient failure
        leaves an account without a working token until ``until_s``: the pool's
        :meth:`~shunt_lib.state.Pool.cool`. None: nothing is told.
    Any thread may call any method.
    """

    def __init__(self, store: CredentialStore, creds: dict[str, Credential], *, token_url: str,
                 client_id: str = CLIENT_ID, http: requests.Session | None = None,
                 clock: Callable[[], float] = time.time, cool: Callable[[str, float, str], None] | None = None):
        self.store = store
        self.token_url = token_url
        self.client_id = client_id
        self._own_http = http is None
        self.http = new_session() if http is None else http
        self.clock = clock
        self.cool = cool
        self._creds = dict(creds)
        self._locks = AccountLocks(os.path.dirname(os.path.abspath(store.path)))
        #: where refreshes are coordinated (see :class:`LocalCoordinator`; a cluster replaces it)
        self.coordinator = LocalCoordinator(store, self._locks)
        self._backoff_s: dict[str, float] = {}  # name -> current backoff step, seconds
        self._blocked_until: dict[str, float] = {}  # name -> epoch s before which no call is made
        self._last_error: dict[str, str] = {}  # name -> why its last refresh failed (transient)
        self._maybe_rotated: set[str] = set()  # names whose last refresh timed out after being sent
        self._unsaved: dict[str, Credential] = {}  # rotated pairs whose save failed (disk full...)
        #: called as ``listener(name, result)`` after each refresh that reached the token endpoint (from
        #: the refreshing thread, with the account's refresh lock held: it must be quick and do no I/O)
        self.listeners: list[Callable[[str, RefreshResult], None]] = []

    def get(self, name: str) -> Credential | None:
        """The current credential of ``name``."""
        return self._creds.get(name)

    def set(self, name: str, cred: Credential | None, *, login: bool = False) -> None:
        """Replace (or drop, with None) an account's in-memory credential (after a reload).

        :param login: ``cred`` is a new login or key (a reload saw a new or changed secret): the
            coordinator is told, and whether it replaced a credential held until now.
        """
        if cred is None:
            self._creds.pop(name, None)
        else:
            replaced = name in self._creds
            self._creds[name] = cred
            if login:
                self.coordinator.logged_in(name, cred, replaced)

    def adopt(self, name: str, cred: Credential, *,
              when: Callable[[Credential | None], bool] | None = None) -> bool:
        """Use ``cred``, rotated by another holder: in memory first, then in ``credentials.json`` (the
        offline copy), under the credentials lock, so a reload never takes the file change for a new
        login. A failed save is logged; the refresh state of ``name`` (back-off) is cleared.

        :param when: ``when(current)`` decides, under the same lock as a refresh's own save, whether to
            adopt over the credential held now (``current``, None if none): a decision and the adoption
            it allows are one step, so a rotation saved meanwhile is never reverted. It must be quick.
        :returns: whether ``cred`` was adopted.
        """
        with self.store.lock():
            if when is not None and not when(self._creds.get(name)):
                return False
            self._creds[name] = cred
            try:
                self.store.put(name, cred)
            except (OSError, ConfigError) as exc:
                log.error("could not save the token of %s taken from another holder (%s)", name, exc)
        self._backoff_s.pop(name, None)
        self._blocked_until.pop(name, None)
        self._last_error.pop(name, None)
        self._maybe_rotated.discard(name)
        return True

    def names(self) -> list[str]:
        """The accounts that have a credential."""
        return list(self._creds)

    def blocked_until(self, name: str) -> float:
        """Epoch s before which no refresh of ``name`` is attempted (0 = none)."""
        return self._blocked_until.get(name, 0.0)

    def clear_backoff(self, name: str) -> None:
        """Forget ``name``'s back-off, so its next refresh is tried at once (``shunt reset``)."""
        self._backoff_s.pop(name, None)  # single dict operations: atomic, no lock (a refresh may hold it for 20 s)
        self._blocked_until.pop(name, None)

    def _lock_for(self, name: str) -> threading.Lock:
        return self._locks.thread_lock(name)

    def refresh(self, name: str, failed_access_token: str | None = None, *, force: bool = False,
                margin_s: float | None = None) -> RefreshResult:
        """Refresh ``name``'s OAuth token, single flight per account across threads and processes.

        :param failed_access_token: the token the caller saw fail (401); if the stored token already
            differs, another holder refreshed it and that token is returned without a network call.
        :param force: refresh even if nothing says the token is stale (recovery of reauth_required).
        :param margin_s: proactive refresh: skip if the stored token is valid for longer than this.
        A transient failure while the token is expired or refused cools the account (see ``cool``).
        """
        try:
            result = self.coordinator.run(name, failed_access_token,
                                          lambda: self._refresh_locked(name, failed_access_token, force, margin_s))
        except OSError as exc:  # the lock file cannot be opened safely (a symlink, a full disk)
            log.error("cannot lock %s for a token refresh: %s", self._locks.path(name), exc)
            result = RefreshResult(RefreshStatus.ERROR, message=f"cannot take the refresh lock ({exc.strerror or exc})")
        if result.status is RefreshStatus.ERROR and self.cool is not None:
            now = self.clock()
            cred = self._creds.get(name)
            until = self._blocked_until.get(name, 0.0)
            expired = cred is not None and cred.expires_at_ms and cred.expires_at_ms <= now * 1000
            if until > now and (failed_access_token is not None or expired):
                self.cool(name, until, f"token refresh failed: {self._last_error.get(name) or result.message}")
        return result

    def _refresh_locked(self, name: str, failed_access_token: str | None, force: bool,
                        margin_s: float | None) -> RefreshResult:
        """The body of :meth:`refresh`, run while holding ``name``'s lock."""
        mine = self._creds.get(name)
        stored = self.coordinator.current(name)  # re-read inside the lock: another process may have rotated it
        if stored is None or stored.kind != "oauth":
            return RefreshResult(RefreshStatus.INVALID_GRANT, message="no OAuth credential stored")
        if name in self._unsaved:
            return RefreshResult(RefreshStatus.OK, mine, "rotated; saving is pending")
        if mine is None or stored.access_token != mine.access_token:
            self._creds[name] = stored  # another thread or process rotated it already
            self._maybe_rotated.discard(name)
            return RefreshResult(RefreshStatus.OK, stored, "already refreshed elsewhere")
        if failed_access_token is not None and stored.access_token != failed_access_token:
            return RefreshResult(RefreshStatus.OK, stored)
        if margin_s is not None and not force and stored.expires_at_ms > (self.clock() + margin_s) * 1000:
            return RefreshResult(RefreshStatus.OK, stored, "not due")
        if stored.copy_only:
            return RefreshResult(RefreshStatus.COPY_ONLY, stored, "imported with --copy-only: never refreshed")
        if not stored.refresh_token:
            return RefreshResult(RefreshStatus.INVALID_GRANT, message="no refresh token stored")
        now = self.clock()
        if not force and self._blocked_until.get(name, 0.0) > now:
            return RefreshResult(RefreshStatus.ERROR,
                                 message=f"backing off for {int(self._blocked_until[name] - now)} s")
        stop = self.coordinator.before_call(name)
        if stop is not None:
            return stop
        result = self.coordinator.after_call(name, self._call(stored), stored)
        for listener in self.listeners:
            listener(name, result)
        if result.status is RefreshStatus.OK and result.credential is not None:
            self._keep(name, result.credential)
        elif result.status is RefreshStatus.ERROR:
            step = result.retry_after_s  # a 429's retry-after wins over the exponential step
            if step is None:
                step = min(BACKOFF_MAX_S, self._backoff_s.get(name, BACKOFF_FIRST_S / 2) * 2)
                self._backoff_s[name] = step
            self._blocked_until[name] = now + step
            self._last_error[name] = result.message
            if result.maybe_rotated:
                self._maybe_rotated.add(name)
            log.warning("token refresh for %s failed (%s); next try in %d s", name, result.message, step)
        else:
            if result.status is RefreshStatus.INVALID_GRANT and name in self._maybe_rotated:
                self._maybe_rotated.discard(name)
                result = dataclasses.replace(result, message=(
                    f"{result.message}; an earlier refresh timed out after it was sent, so the token server "
                    "probably rotated the token and its answer was lost"))
            log.warning("token refresh for %s failed: %s", name, result.message)
        return result

    def _keep(self, name: str, new: Credential) -> None:
        """Save a freshly rotated pair (under the credentials lock, so a reload sees both or neither) and use it."""
        with self.store.lock():
            try:
                self.store.put(name, new)  # on disk before the lock is released or the token handed out
            except OSError as exc:
                self._unsaved[name] = new  # the old refresh token is spent: never lose the new pair
                log.error("could not save the rotated token of %s (%s); it is kept in memory and saved "
                          "again shortly", name, exc)
            self._creds[name] = new
        self._backoff_s.pop(name, None)
        self._blocked_until.pop(name, None)
        self._last_error.pop(name, None)
        self._maybe_rotated.discard(name)
        events_log.info("refreshed the OAuth token of %s (valid until %s)", name,
                        time.strftime("%Y-%m-%d %H:%M", time.localtime(new.expires_at_ms / 1000)),
                        extra={"event": "token_refreshed", "account": name})

    def _call(self, cred: Credential) -> RefreshResult:
        try:
            resp = self.http.post(
                self.token_url,
                json={"grant_type": "refresh_token", "refresh_token": cred.refresh_token, "client_id": self.client_id},
                headers={"accept": "application/json"},
                timeout=REFRESH_TIMEOUT_S,
            )
        except requests.ReadTimeout:  # sent, unanswered: the server may have rotated the token anyway
            return RefreshResult(RefreshStatus.ERROR, maybe_rotated=True,
                                 message=f"token endpoint did not answer within {REFRESH_TIMEOUT_S:g} s")
        except requests.RequestException as exc:
            return RefreshResult(RefreshStatus.ERROR, message=f"token endpoint unreachable ({type(exc).__name__})")
        return parse_token_response(resp, cred, self.clock())

    def set_identity(self, name: str, *, email: str = "", plan: str = "") -> None:
        """Record ``name``'s email and plan (as the profile endpoint reports them) on its credential,
        in memory and in ``credentials.json``; nothing is written when nothing changed. Empty values
        keep what is known."""
        with self._lock_for(name), self.store.lock():
            cur = self._creds.get(name)
            if cur is None:
                return
            new = dataclasses.replace(cur, email=email or cur.email, plan=plan or cur.plan)
            if new == cur:
                return
            stored = self.store.load().get(name)
            if stored is not None and stored.secret == cur.secret and name not in self._unsaved:
                try:
                    self.store.put(name, new)
                except OSError as exc:
                    log.warning("could not save the identity of %s: %s", name, exc)
            self._creds[name] = new

    def close(self) -> None:
        """Close the HTTP session if this manager made it."""
        if self._own_http:
            self.http.close()

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


def revoke_refresh_token(http: requests.Session, revoke_url: str, client_id: str, cred: Credential) -> bool:
    """Best-effort revocation of ``cred``'s refresh token, RFC 7009 shape (the endpoint is unconfirmed:
    ``docs/protocol.md`` §1.9). :returns: True on a 2xx answer; False otherwise or if unreachable."""
    if cred.kind != "oauth" or not cred.refresh_token:
        return False
    try:
        resp = http.post(revoke_url, json={"token": cred.refresh_token, "token_type_hint": "refresh_token",
                                           "client_id": client_id}, timeout=REFRESH_TIMEOUT_S)
    except requests.RequestException:
        return False
    return 200 <= resp.status_code < 300


def parse_token_response(resp: requests.Response, old: Credential | None, now_s: float) -> RefreshResult:
    """Interpret a token-endpoint answer (refresh or code exchange, ``docs/protocol.md`` §1.5, §1.8).

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
        expires_in = finite(data.get("expires_in"), 1.0, MAX_AHEAD_S) or 3600  # inf or 1e308 would overflow
        account = data.get("account") if isinstance(data.get("account"), dict) else {}
        cred = Credential(
            kind="oauth",
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token") or (old.refresh_token if old else ""),
            expires_at_ms=int((now_s + expires_in) * 1000),
            email=str(account.get("email_address") or (old.email if old else "")),
            plan=old.plan if old else "",
        )
        problem = cred.problem()  # never stored nor sent upstream: it could not go in a header
        if problem is not None:
            return RefreshResult(RefreshStatus.ERROR, message=f"the token endpoint answered with an unusable token: its {problem}")
        return RefreshResult(RefreshStatus.OK, cred)
    err = str(data.get("error") or "")
    if err in ("invalid_grant", "invalid_client", "unauthorized_client") or (resp.status_code in (400, 401) and not err):
        return RefreshResult(RefreshStatus.INVALID_GRANT, message=f"{err or resp.status_code}: {data.get('error_description') or ''}".strip(": "))
    retry_after_s = None
    if resp.status_code == 429:
        retry = parse_retry_after_s(resp.headers, now_s)
        retry_after_s = min(max(retry if retry is not None else BACKOFF_FIRST_S, 1.0), BACKOFF_MAX_S)
    return RefreshResult(RefreshStatus.ERROR, message=f"token endpoint answered {resp.status_code} {err}".strip(),
                         retry_after_s=retry_after_s)
