"""The thread that turns what happens in the pool into alerts (:mod:`shunt_lib.alert_rules`) and hands
them to the sender (:mod:`shunt_lib.alert_send`).

Every ``poll_s`` it looks at the pool (:meth:`~shunt_lib.state.Pool.views`, a copy made under the
pool's lock) and compares it with the previous look; token refresh results arrive through
:meth:`AlertWatcher.refresh_result`, a :attr:`~shunt_lib.oauth.TokenManager.listeners` entry. Each
alert let through is logged to ``shunt.events`` (event ``alert``, at info level) and, unless alerts
are muted, queued for delivery; one held back by the interval is logged at debug level
(``alert_held``). Nothing here runs on the request path.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .alert_mute import MuteFlag
from .alert_rules import Seen, due, refresh_alerts, transitions
from .alert_send import AlertSender
from .loop import Loop
from .oauth import RefreshResult, RefreshStatus
from .state import Pool

events_log = logging.getLogger("shunt.events")


class AlertWatcher(Loop):
    """``shunt-alerts``: decides the alerts once per ``poll_s`` seconds.

    :param interval_s: returns ``[server] alert_interval_s`` (read at each look, so a reload applies).
    :param clock: epoch seconds.
    """

    def __init__(self, pool: Pool, mute: MuteFlag, sender: AlertSender, *, interval_s: Callable[[], float],
                 clock: Callable[[], float] = time.time, poll_s: float = 1.0):
        super().__init__("shunt-alerts")
        self.pool, self.mute, self.sender, self.interval_s, self.clock = pool, mute, sender, interval_s, clock
        self.poll_s = poll_s
        self._seen: dict[str, Seen] | None = None
        self._last_sent: dict[tuple[str, str], float] = {}
        self._failures: dict[str, tuple[int, str]] = {}  # account → (refreshes failed in a row, last message)
        self._failures_lock = threading.Lock()
        self._failures_seen: dict[str, tuple[int, str]] = {}  # ``_failures`` at the previous look
        self.looked = threading.Event()  # set after each look at the pool

    def refresh_result(self, name: str, result: RefreshResult) -> None:
        """Count a token refresh that reached the token endpoint (any thread; does not block)."""
        with self._failures_lock:
            if result.status is RefreshStatus.ERROR:
                count = self._failures.get(name, (0, ""))[0] + 1
                self._failures[name] = (count, result.message)
            else:
                self._failures.pop(name, None)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.safe_tick()
            self.stopping.wait(self.poll_s)

    def tick(self) -> None:
        now = self.clock()
        alerts, self._seen = transitions(self._seen, self.pool.views(now), now)
        with self._failures_lock:
            failures = dict(self._failures)
        fresh = {n: f for n, f in failures.items() if f != self._failures_seen.get(n)}  # failed again since
        self._failures_seen = failures
        alerts += refresh_alerts(fresh)
        send, held, self._last_sent = due(alerts, self._last_sent, now, self.interval_s())
        for a in held:
            events_log.debug("alert %s%s not sent again within alert_interval_s", a.kind,
                             f" for {a.account}" if a.account else "",
                             extra={"event": "alert_held", "kind": a.kind, "account": a.account})
        muted = self.mute.muted
        for a in send:
            events_log.info("alert%s: %s. %s", " (muted)" if muted else "", a.title.removeprefix("shunt: "), a.body,
                            extra={"event": "alert", "kind": a.kind, "account": a.account, "muted": muted,
                                   "reset_at_s": a.reset_at_s})
            if not muted:
                self.sender.send(a)
        self.looked.set()
