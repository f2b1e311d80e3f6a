"""Background threads of a running proxy. None of them spends quota.

* :class:`CooldownWatcher` (``shunt-cooldowns``): clears cooldowns and exhausted windows whose time
  has passed, sleeping exactly until the next one (at most ``max_sleep_s``).
* :class:`TokenRefresher` (``shunt-refresh``): refreshes each OAuth token ``margin_s`` (5 min) before
  it expires; a failed refresh is retried after ``retry_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .oauth import TokenManager
from .state import Pool

log = logging.getLogger("shunt.background")


class _Loop(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()
        if self.is_alive():
            self.join(5)



class CooldownWatcher(_Loop):
    def __init__(self, pool: Pool, *, clock: Callable[[], float] = time.time, max_sleep_s: float = 5.0):
        super().__init__("shunt-cooldowns")
        self.pool, self.clock, self.max_sleep_s = pool, clock, max_sleep_s

    def run(self) -> None:
        while not self._stop_evt.is_set():
            now = self.clock()
            _, nxt = self.pool.clear_expired(now)
            sleep = self.max_sleep_s if nxt is None else min(self.max_sleep_s, max(0.01, nxt - now + 0.01))
            self._stop_evt.wait(sleep)


class TokenRefresher(_Loop):
    def __init__(self, pool: Pool, tokens: TokenManager, *, margin_s: float = 300.0, retry_s: float = 30.0,
                 poll_s: float = 15.0, clock: Callable[[], float] = time.time):
        super().__init__("shunt-refresh")
        self.pool, self.tokens, self.margin_s, self.retry_s, self.poll_s, self.clock = pool, tokens, margin_s, retry_s, poll_s, clock
        self._next_try: dict[str, float] = {}

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.tick()
            self._stop_evt.wait(self.poll_s)

    def tick(self) -> None:
        """Refresh every token inside its last ``margin_s`` (callable directly by tests)."""
        now = self.clock()
        for name in self.tokens.expiring(self.margin_s):
            if self._next_try.get(name, 0) > now or self._stop_evt.is_set():
                continue
            cred = self.tokens.get(name)
            result = self.tokens.refresh(name, failed_access_token=cred.access_token if cred else None)
            if result.status == "ok":
                self._next_try.pop(name, None)
                self.pool.set_flag(name, reauth_required=False)
            elif result.status == "invalid_grant":
                self.pool.set_flag(name, reauth_required=True)
                self._next_try[name] = now + 3600
            else:
                self._next_try[name] = now + self.retry_s
