"""Background threads of a running proxy. None of them spends quota.

* :class:`CooldownWatcher` (``shunt-cooldowns``): clears cooldowns and exhausted windows whose time
  has passed, sleeping exactly until the next one (at most ``max_sleep_s``).
* :class:`TokenRefresher` (``shunt-refresh``): refreshes each OAuth token when it enters its last
  ``margin_s`` (5 min) plus a per-account jitter of up to 30 s, so accounts do not refresh together.
* :class:`RecoveryWatcher` (``shunt-recovery``): retries ``reauth_required`` accounts every
  ``recovery_interval_s`` (a transient failure misread as a revocation comes back).
* :class:`UsagePoller` (``shunt-usage-poll``): reads ``/api/oauth/usage`` and ``/api/oauth/profile``
  of every OAuth account at start and every ``usage_poll_s``, so routing has data before traffic.
* :class:`Reloader` (``shunt-reload``): notices changes to ``config.toml``/``credentials.json`` (mtime)
  and reloads the accounts without disturbing requests in flight.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable

import requests

from .account_info import fetch_profile, fetch_usage
from .errors import ConfigError
from .loop import Loop
from .oauth import RefreshStatus, TokenManager
from .state import Pool

log = logging.getLogger("shunt.background")
events_log = logging.getLogger("shunt.events")


class CooldownWatcher(Loop):
    """Clears expired cooldowns and exhaustion (logging each recovery), sleeping until the next expiry."""

    def __init__(self, pool: Pool, *, clock: Callable[[], float] = time.time, max_sleep_s: float = 5.0):
        super().__init__("shunt-cooldowns")
        self.pool, self.clock, self.max_sleep_s = pool, clock, max_sleep_s

    def tick(self):
        return self.pool.clear_expired(self.clock())

    def run(self) -> None:
        while not self.stopping.is_set():
            now = self.clock()
            _, nxt = self.safe_tick() or (None, None)
            sleep = self.max_sleep_s if nxt is None else min(self.max_sleep_s, max(0.01, nxt - now + 0.01))
            self.stopping.wait(sleep)


class TokenRefresher(Loop):
    """Proactive refresh. :param margin_s: refresh this long before expiry (plus up to ``jitter_s``), seconds."""

    def __init__(self, pool: Pool, tokens: TokenManager, *, margin_s: float = 300.0, jitter_s: float = 30.0,
                 poll_s: float = 15.0, clock: Callable[[], float] = time.time):
        super().__init__("shunt-refresh")
        self.pool, self.tokens, self.margin_s, self.poll_s, self.clock = pool, tokens, margin_s, poll_s, clock
        self.jitter_s = jitter_s
        self._jitter: dict[str, float] = {}

    def run(self) -> None:
        while not self.stopping.is_set():
            nxt = self.safe_tick()
            wait = self.poll_s if nxt is None else min(self.poll_s, max(0.05, nxt - self.clock()))
            self.stopping.wait(wait)

    def tick(self) -> float | None:
        """Refresh every token that is due. :returns: epoch s when the next one falls due, or None."""
        now = self.clock()
        next_due = None
        self.tokens.save_unsaved()
        for name in self.tokens.names():
            cred = self.tokens.get(name)
            if cred is None or not cred.refreshable or not cred.expires_at_ms:
                continue
            if self.pool.needs_login(name):
                continue  # the recovery thread owns it
            lead_s = self.margin_s + self._jitter.setdefault(name, random.uniform(0, self.jitter_s))
            due = max(cred.expires_at_ms / 1000 - lead_s, self.tokens.blocked_until(name))
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            if self.stopping.is_set():
                break
            result = self.tokens.refresh(name, margin_s=lead_s)
            if result.status is RefreshStatus.INVALID_GRANT:
                self.pool.set_flag(name, reauth_required=True)
        return next_due


class RecoveryWatcher(Loop):
    """Every ``interval_s`` seconds, tries a forced refresh of each ``reauth_required`` OAuth account."""

    def __init__(self, pool: Pool, tokens: TokenManager, *, interval_s: float = 120.0):
        super().__init__("shunt-recovery")
        self.pool, self.tokens, self.interval_s = pool, tokens, interval_s

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.safe_tick()

    def tick(self) -> list[str]:
        """Try to bring back every reauth_required OAuth account. :returns: the names that came back."""
        back = []
        for name in self.pool.names():
            cred = self.tokens.get(name)
            if cred is None or not cred.refreshable or not self.pool.needs_login(name):
                continue
            result = self.tokens.refresh(name, force=True)
            if result.status is RefreshStatus.OK:
                self.pool.set_flag(name, reauth_required=False)
                back.append(name)
                events_log.info("account %s is logged in again (token refreshed)", name,
                                extra={"event": "reauth_recovered", "account": name})
        return back


class UsagePoller(Loop):
    """Reads every OAuth account's usage windows and profile at start and every ``interval_s`` seconds.

    :param http: the session to call with (its owner closes it).
    """

    def __init__(self, pool: Pool, tokens: TokenManager, base_url: str, http: requests.Session, *,
                 interval_s: float = 600.0, clock: Callable[[], float] = time.time):
        super().__init__("shunt-usage-poll")
        self.pool, self.tokens, self.base_url, self.interval_s, self.clock = pool, tokens, base_url, interval_s, clock
        self.http = http
        self.polled = threading.Event()  # set after each full round

    def run(self) -> None:
        while not self.stopping.is_set():
            self.safe_tick()
            if self.stopping.wait(self.interval_s):
                break

    def tick(self) -> None:
        for name in self.pool.names():
            cred = self.tokens.get(name)
            if cred is None or cred.kind != "oauth" or self.pool.needs_login(name) or self.stopping.is_set():
                continue
            windows = fetch_usage(self.http, self.base_url, cred.access_token, self.clock())
            if windows:
                self.pool.record_usage(name, windows, self.clock())
            profile = fetch_profile(self.http, self.base_url, cred.access_token)
            if profile is not None:
                self.tokens.set_identity(name, email=profile[0], plan=profile[1])
        self.polled.set()


class Reloader(Loop):
    """Calls ``reload()`` when config.toml or credentials.json changes (checked every ``interval_s`` seconds)."""

    def __init__(self, reload: Callable[[], object], mtimes: Callable[[], tuple], *, interval_s: float = 0.5):
        super().__init__("shunt-reload")
        self.reload, self.mtimes, self.interval_s = reload, mtimes, interval_s
        self._last = mtimes()

    def tick(self) -> None:
        now = self.mtimes()
        if now != self._last:
            self._last = now
            try:
                self.reload()
            except ConfigError as exc:  # a bad edit: say why, keep serving with what was loaded
                log.warning("not reloaded (nothing changed): %s", exc)

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.safe_tick()
