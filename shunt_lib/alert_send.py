"""Delivering alerts: to the desktop and to a webhook, off the request path, with short timeouts.

* Desktop (``[server] alert_desktop``): on Linux ``notify-send TITLE BODY`` (libnotify), only when a
  session bus is there (``DBUS_SESSION_BUS_ADDRESS`` set) and ``notify-send`` is on ``PATH``; on macOS
  ``osascript`` with a ``display notification`` script that reads the title and body from its
  arguments (https://developer.apple.com/library/archive/documentation/AppleScript/Conceptual/AppleScriptLangGuide/reference/ASLR_cmds.html),
  so no text is ever quoted into a script or a shell. Elsewhere there is no desktop channel.
* Webhook (``[server] alert_webhook_url``): a JSON ``POST`` of :func:`webhook_payload`: ``text`` for
  Slack-compatible receivers (https://api.slack.com/messaging/webhooks), ``title`` and ``message``
  for ntfy's templates (https://docs.ntfy.sh/publish/#message-templating), and the fields as data.

Each command and each ``POST`` has :data:`DELIVERY_TIMEOUT_S`. A failure is logged (a warning the
first time a channel fails, then at debug level until it works again), never raised. The webhook
URL may hold a secret (Slack's do), so only its host is ever logged or answered.
"""

from __future__ import annotations

import logging
import os
import platform
import queue
import shutil
import subprocess
import urllib.parse
from typing import Callable, Mapping, Protocol

import requests

from .alert_rules import Alert
from .loop import Loop

log = logging.getLogger("shunt.alerts")

DELIVERY_TIMEOUT_S = 5.0
QUEUE_MAX = 100  # alerts waiting for delivery; beyond it new ones are dropped (and logged)

_OSASCRIPT = ["-e", "on run argv", "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
              "-e", "end run"]


class AlertSettings(Protocol):
    """The ``[server]`` keys delivery reads (a :class:`~shunt_lib.config.ServerConfig`)."""

    alert_desktop: bool
    alert_webhook_url: str


def desktop_command(alert: Alert, *, system: str, env: Mapping[str, str],
                    which: Callable[[str], str | None] = shutil.which) -> tuple[list[str] | None, str]:
    """The command that shows ``alert`` on this desktop, or None with the reason there is none.

    :param system: ``platform.system()`` (``Linux``, ``Darwin``, ...). :param env: the environment.
    :param which: finds a program on ``PATH`` (``shutil.which``).
    """
    if system == "Darwin":
        exe = which("osascript")
        return ([exe, *_OSASCRIPT, alert.title, alert.body], "") if exe else (None, "osascript not found")
    if system != "Linux":
        return None, f"no desktop notifications on {system or 'this system'}"
    if not env.get("DBUS_SESSION_BUS_ADDRESS"):
        return None, "no desktop session bus (DBUS_SESSION_BUS_ADDRESS is not set)"
    exe = which("notify-send")
    if not exe:
        return None, "notify-send not found (Debian: apt-get install libnotify-bin)"
    return [exe, "--app-name=shunt", alert.title, alert.body], ""


def webhook_payload(alert: Alert) -> dict:
    """The JSON the webhook receives: ``text`` (title and body, for Slack-compatible receivers),
    ``title``, ``message``, ``event`` (the alert's kind), ``account`` (``""`` for the pool) and
    ``reset_at_s`` (epoch s, or null)."""
    return {"text": f"{alert.title}\n{alert.body}", "title": alert.title, "message": alert.body,
            "event": alert.kind, "account": alert.account, "reset_at_s": alert.reset_at_s}


def url_host(url: str) -> str:
    """The host of ``url``: what may be shown of a webhook URL."""
    return urllib.parse.urlsplit(url).hostname or "?"


class Channels:
    """Delivers one alert to every configured channel, synchronously (call it off the request path).

    :param settings: returns the current ``[server]`` keys (read at each delivery, so a reload applies).
    :param http: the session for the webhook (its owner closes it).
    :param run: ``subprocess.run`` (test seam). :param system: / :param env: see :func:`desktop_command`.
    Any thread may call :meth:`deliver`.
    """

    def __init__(self, settings: Callable[[], AlertSettings], http: requests.Session, *,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run, system: str | None = None,
                 env: Mapping[str, str] | None = None):
        self.settings, self.http, self.run = settings, http, run
        self.system = platform.system() if system is None else system
        self.env = os.environ if env is None else env
        self._failing: set[str] = set()  # channels whose last delivery failed (logged once)

    def deliver(self, alert: Alert) -> list[dict]:
        """Send ``alert`` through each channel. :returns: one ``{"channel", "result", "detail"}`` per
        channel, ``result`` being ``sent``, ``failed`` or ``off`` (not configured, or not available here)."""
        cfg = self.settings()
        out = []
        if not cfg.alert_desktop:
            out.append(_result("desktop", "off", "alert_desktop = false"))
        else:
            cmd, why = desktop_command(alert, system=self.system, env=self.env)
            out.append(_result("desktop", "off", why) if cmd is None else self._desktop(cmd))
        if not cfg.alert_webhook_url:
            out.append(_result("webhook", "off", "alert_webhook_url is not set"))
        else:
            out.append(self._webhook(cfg.alert_webhook_url, alert))
        return out

    def _desktop(self, cmd: list[str]) -> dict:
        name = os.path.basename(cmd[0])
        try:
            done = self.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=DELIVERY_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return self._failed("desktop", f"{name} did not finish within {DELIVERY_TIMEOUT_S:g} s")
        except OSError as exc:
            return self._failed("desktop", f"cannot run {name}: {exc.strerror or exc}")
        if done.returncode != 0:
            err = (done.stderr or b"").decode(errors="replace").strip().splitlines()
            return self._failed("desktop", f"{name} exited with {done.returncode}" + (f": {err[-1][:200]}" if err else ""))
        return self._sent("desktop", name)

    def _webhook(self, url: str, alert: Alert) -> dict:
        host = url_host(url)
        try:
            resp = self.http.post(url, json=webhook_payload(alert), timeout=DELIVERY_TIMEOUT_S)
            resp.close()
        except requests.RequestException as exc:
            return self._failed("webhook", f"{host} unreachable ({type(exc).__name__})")
        if not 200 <= resp.status_code < 300:
            return self._failed("webhook", f"{host} answered {resp.status_code}")
        return self._sent("webhook", host)

    def _sent(self, channel: str, detail: str) -> dict:
        if channel in self._failing:
            self._failing.discard(channel)
            log.info("alerts: the %s channel works again", channel)
        return _result(channel, "sent", detail)

    def _failed(self, channel: str, detail: str) -> dict:
        level = logging.DEBUG if channel in self._failing else logging.WARNING
        self._failing.add(channel)
        log.log(level, "alerts: %s delivery failed: %s", channel, detail)
        return _result(channel, "failed", detail)


def _result(channel: str, result: str, detail: str) -> dict:
    return {"channel": channel, "result": result, "detail": detail}


class AlertSender(Loop):
    """The thread (``shunt-alerts-send``) that delivers queued alerts one after another, so neither
    the request path nor the watcher waits for a slow command or receiver.

    :param channels: where alerts go.
    """

    def __init__(self, channels: Channels, *, maxsize: int = QUEUE_MAX):
        super().__init__("shunt-alerts-send")
        self.channels = channels
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize)

    def send(self, alert: Alert) -> bool:
        """Queue ``alert`` for delivery without waiting. :returns: False if the queue was full (dropped)."""
        try:
            self._queue.put_nowait(alert)
            return True
        except queue.Full:
            log.warning("alerts: %d alerts are waiting for delivery; dropped %s", self._queue.qsize(), alert.kind)
            return False

    def tick(self) -> None:
        alert = self._queue.get()
        if alert is not None and not self.stopping.is_set():
            self.channels.deliver(alert)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.safe_tick()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the alert being delivered, if any (queued ones are dropped)."""
        self.stopping.set()
        try:
            self._queue.put_nowait(None)  # wakes the thread; if full, it checks ``stopping`` after this delivery
        except queue.Full:
            pass
        super().stop(timeout_s)
