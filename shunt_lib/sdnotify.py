"""The systemd notify protocol, for ``Type=notify`` units: ``READY=1``, ``STOPPING=1`` and watchdog pings.

A datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or an
abstract name written with a leading ``@``); ``$WATCHDOG_USEC`` asks for ``WATCHDOG=1`` at least that
often, for the process ``$WATCHDOG_PID`` (when set). Without ``$NOTIFY_SOCKET`` everything here is a
no-op. Protocol: https://www.freedesktop.org/software/systemd/man/sd_notify.html and
https://www.freedesktop.org/software/systemd/man/sd_watchdog_enabled.html.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping

from .loop import Loop

log = logging.getLogger("shunt.sdnotify")


def notify_address(env: Mapping[str, str] | None = None) -> str | bytes | None:
    """The address ``$NOTIFY_SOCKET`` names: a path (str), an abstract name (bytes starting with NUL),
    or None when it is unset or not an AF_UNIX address (e.g. ``vsock:``, which shunt does not speak)."""
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to the service manager.

    :returns: True if it was sent; False without ``$NOTIFY_SOCKET`` or when sending failed (logged at
        debug: a lost notification must never stop shunt).
    """
    address = notify_address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("could not notify the service manager (%s): %s", message, exc)
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``, seconds: half of ``$WATCHDOG_USEC`` (as sd_watchdog_enabled(3)
    advises), or None when no watchdog is asked for, or it is asked of another process (``$WATCHDOG_PID``)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    wanted_pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (wanted_pid and wanted_pid != str(os.getpid() if pid is None else pid)):
        return None
    return usec / 2_000_000


class Watchdog(Loop):
    """Sends ``WATCHDOG=1`` every ``interval_s`` while ``alive()`` says the accept loop is turning.

    ``alive`` is evidence, not a timer: :class:`~shunt_lib.server.ShuntServer` stamps
    ``last_turn_s`` on every turn of its accept loop, and the caller passes a check of that stamp's
    age. A stuck loop stops the pings, and systemd restarts the service after ``WatchdogSec``.

    :param interval_s: seconds between pings (:func:`watchdog_interval_s`).
    :param alive: True while the loop turns; called once per ping.
    :param send: sends one message (default :func:`notify`; a test seam).
    """

    def __init__(self, interval_s: float, alive: Callable[[], bool], send: Callable[[str], bool] = notify):
        super().__init__("shunt-watchdog")
        self.interval_s = interval_s
        self._alive = alive
        self._send = send

    def tick(self) -> bool:
        """Ping if the loop is alive. :returns: whether a ping was sent."""
        if not self._alive():
            log.warning("the accept loop has not turned for %.0f s: not pinging the watchdog", self.interval_s)
            return False
        return self._send("WATCHDOG=1")

    def run(self) -> None:
        while not self.stopping.is_set():
            self.safe_tick()
            self.stopping.wait(self.interval_s)


def loop_alive(last_turn: Callable[[], float], max_age_s: float, now: Callable[[], float] = time.monotonic
               ) -> Callable[[], bool]:
    """A check for :class:`Watchdog`: True while ``last_turn()`` (monotonic seconds) is at most
    ``max_age_s`` old."""
    return lambda: now() - last_turn() <= max_age_s


class ServeNotifier:
    """What ``shunt serve`` tells the service manager: :meth:`ready` once it listens (and the watchdog
    starts, when one is asked for), :meth:`stopping` when the accept loop has ended. No-ops outside
    a ``Type=notify`` unit.

    :param last_turn: the accept loop's last turn, monotonic seconds (``ShuntServer.last_turn_s``).
    :param env: the environment (default ``os.environ``; a test seam).
    """

    def __init__(self, last_turn: Callable[[], float], env: Mapping[str, str] | None = None):
        self._env = dict(os.environ if env is None else env)
        self._last_turn = last_turn
        self.watchdog: Watchdog | None = None

    def _send(self, message: str) -> bool:
        return notify(message, self._env)

    def ready(self, status: str = "") -> None:
        """Send ``READY=1`` (with ``STATUS=status``) and start the watchdog thread if ``$WATCHDOG_USEC`` asks."""
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))
        interval_s = watchdog_interval_s(self._env)
        if interval_s is not None and notify_address(self._env) is not None:
            self.watchdog = Watchdog(interval_s, loop_alive(self._last_turn, interval_s), self._send)
            self.watchdog.start()

    def stopping(self) -> None:
        """Stop the watchdog thread and send ``STOPPING=1`` (idempotent)."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        self._send("STOPPING=1")
