"""``shunt monitor``: a live full-screen view of a running shunt (standard library ``curses``).

It polls the control API (``GET /status``, ``GET /recent?after=``, ``GET /history``) every
``interval_s`` and draws :func:`~shunt_lib.monitor_view.render`'s frame; every key's action is a
control call too (``POST /use``, ``POST /strategy``, ``POST /alerts``), so it works the same against a
remote shunt (``--url``, ``$SHUNT_REMOTE_KEY``). When curses cannot run (not a terminal, ``TERM=dumb``,
a terminal curses does not know) it prints ``shunt status`` once instead. ``NO_COLOR``
(https://no-color.org/) turns colours off.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
from typing import Callable, Mapping

from .config import STRATEGIES, Paths, load_config
from .control_client import Unreachable, call, remote_key
from .errors import ConfigError
from .instance import proxy_url
from .monitor_view import RANGE_KEYS, CHART_LABEL_W, MonitorData, chart_query, render
from .status_view import render_status

HISTORY_EVERY_S = 10.0  # the chart's data changes by the minute: fetched at most this often (and on a new range or width)
MESSAGE_S = 5.0  # how long the outcome of a key stays in the footer
FEED_KEEP = 500  # feed rows kept (a terminal shows far fewer)
POLL_TIMEOUT_S = 3.0

Caller = Callable[[str, str, "dict | None"], dict]


def curses_possible(isatty: bool, env: Mapping[str, str]) -> bool:
    """Whether to try curses at all: output to a terminal whose ``TERM`` is set and not ``dumb``."""
    return isatty and env.get("TERM", "") not in ("", "dumb")


def key_action(key: str, *, picker: int | None, help_shown: bool, accounts: list[str], strategy: str | None,
               muted: bool | None) -> tuple | None:
    """What a key does (pure). ``key``: the character, or ``up``, ``down``, ``enter``, ``esc``;
    ``picker``: the picker's selected row when it is open.

    :returns: ``("quit",)``, ``("help", bool)``, ``("picker", index | None)`` (open, move or close),
        ``("use", NAME | "auto")``, ``("strategy", NAME)`` (the next of :data:`~shunt_lib.config.STRATEGIES`),
        ``("mute", bool)``, ``("range", NAME)``, or None (nothing).
    """
    if help_shown:
        return ("quit",) if key == "q" else ("help", False)
    if picker is not None:
        if key in ("esc", "q", "p"):
            return ("picker", None)
        if key in ("up", "k"):
            return ("picker", max(0, picker - 1))
        if key in ("down", "j"):
            return ("picker", min(max(0, len(accounts) - 1), picker + 1))
        if key == "enter" and accounts:
            return ("use", accounts[min(picker, len(accounts) - 1)])
        if key.isdigit() and 1 <= int(key) <= len(accounts):
            return ("use", accounts[int(key) - 1])
        return None
    if key == "q":
        return ("quit",)
    if key == "?":
        return ("help", True)
    if key == "p" and accounts:
        return ("picker", 0)
    if key == "a":
        return ("use", "auto")
    if key == "s" and strategy is not None:
        i = STRATEGIES.index(strategy) if strategy in STRATEGIES else -1
        return ("strategy", STRATEGIES[(i + 1) % len(STRATEGIES)])
    if key == "m" and muted is not None:
        return ("mute", not muted)
    if key in RANGE_KEYS:
        return ("range", RANGE_KEYS[key])
    return None


class Monitor:
    """The monitor's state and its calls to shunt, without the terminal: :meth:`poll` refreshes
    :attr:`data`, :meth:`act` carries out a :func:`key_action`. ``caller(method, path, body)`` is one
    control call (:func:`~shunt_lib.control_client.call` bound to the URL and key); ``/history`` is
    fetched every ``history_every_s``."""

    def __init__(self, url: str, caller: Caller, clock: Callable[[], float] = time.time,
                 history_every_s: float = HISTORY_EVERY_S):
        self.caller = caller
        self.history_every_s = history_every_s
        self.clock = clock
        self.data = MonitorData(url=url)
        self.seq = 0
        self.picker: int | None = None
        self.help = False
        self._history_key: tuple | None = None
        self._history_at = 0.0
        self._message_until = 0.0

    def poll(self, chart_cols: int) -> None:
        """Fetch ``/status``, the requests after the last seen one and, when due, ``/history`` for a
        chart ``chart_cols`` wide. A failure is kept in ``data.error`` (the last good data stays)."""
        now = self.clock()
        try:
            status = self.caller("GET", "/status", None)
            recent = self.caller("GET", f"/recent?after={self.seq}&limit=200", None)
        except Unreachable as exc:
            self.data.error = f"cannot reach shunt at {self.data.url}: {exc.reason} (retrying)"
            return
        except ConfigError as exc:
            self.data.error = f"shunt at {self.data.url} answered: {exc}"
            return
        self.data.status, self.data.error = status, None
        if recent.get("last_seq", 0) < self.seq:  # shunt restarted: its numbering started again
            self.seq, self.data.feed = 0, []
        else:
            self.data.feed = (self.data.feed + recent.get("requests", []))[-FEED_KEEP:]
            self.seq = recent.get("last_seq", self.seq)
        key = (self.data.range_name, chart_cols)
        if key != self._history_key or now - self._history_at >= self.history_every_s:
            q = chart_query(self.data.range_name, chart_cols, now)
            try:
                self.data.history = self.caller("GET", "/history?" + urllib.parse.urlencode(dict(q, by="account")), None)
                self._history_key, self._history_at = key, now
            except ConfigError:
                pass  # a shunt without usage history: the chart says "loading"; the rest works
        if now >= self._message_until:
            self.data.message = None

    def say(self, text: str, role: str = "") -> None:
        """Show ``text`` in the footer for :data:`MESSAGE_S`."""
        self.data.message, self.data.message_role = text, role
        self._message_until = self.clock() + MESSAGE_S

    def act(self, action: tuple) -> bool:
        """Carry out ``action``. :returns: False for quit. A refused call is said in the footer."""
        kind = action[0]
        if kind == "quit":
            return False
        if kind == "help":
            self.help = action[1]
        elif kind == "picker":
            self.picker = action[1]
        elif kind == "range":
            self.data.range_name = action[1]
            self._history_key = None
        else:
            self.picker = None
            try:
                if kind == "use":
                    pinned = self.caller("POST", "/use", {"account": action[1]}).get("pinned_account")
                    self.say(f"pinned all traffic to {pinned}" if pinned else "routing automatically", "ok")
                elif kind == "strategy":
                    self.say(f"strategy {self.caller('POST', '/strategy', {'strategy': action[1]})['strategy']}", "ok")
                elif kind == "mute":
                    muted = self.caller("POST", "/alerts", {"muted": action[1]})["muted"]
                    self.say("alerts muted" if muted else "alerts unmuted", "ok")
            except ConfigError as exc:
                self.say(str(exc), "bad")
        return True

    def key(self, key: str) -> bool:
        """Handle one key (see :func:`key_action`). :returns: False to quit."""
        doc = self.data.status or {}
        action = key_action(key, picker=self.picker, help_shown=self.help,
                            accounts=[a["name"] for a in doc.get("accounts", [])], strategy=doc.get("strategy"),
                            muted=(doc.get("alerts") or {}).get("muted"))
        return True if action is None else self.act(action)


def _key_name(code: int, curses) -> str | None:
    names = {curses.KEY_UP: "up", curses.KEY_DOWN: "down", curses.KEY_ENTER: "enter", 10: "enter", 13: "enter",
             27: "esc", curses.KEY_RESIZE: "resize"}
    if code in names:
        return names[code]
    return chr(code) if 0 <= code < 256 else None


def _attrs(curses, colour: bool) -> dict[str, int]:
    """Each role's curses attribute: colour pairs when ``colour``, else bold/dim/reverse only."""
    plain = {"": 0, "title": curses.A_BOLD, "dim": curses.A_DIM, "bad": curses.A_BOLD, "select": curses.A_REVERSE}
    if not colour or not curses.has_colors():
        return {**plain, "ok": 0, "warn": 0, **{f"acct{i}": 0 for i in range(6)}}
    curses.start_color()
    try:
        curses.use_default_colors()
        background = -1
    except curses.error:
        background = curses.COLOR_BLACK
    colours = {"ok": curses.COLOR_GREEN, "warn": curses.COLOR_YELLOW, "bad": curses.COLOR_RED, "title": curses.COLOR_CYAN,
               "acct0": curses.COLOR_CYAN, "acct1": curses.COLOR_MAGENTA, "acct2": curses.COLOR_BLUE,
               "acct3": curses.COLOR_GREEN, "acct4": curses.COLOR_YELLOW, "acct5": curses.COLOR_RED}
    out = dict(plain)
    for n, (role, fg) in enumerate(colours.items(), start=1):
        curses.init_pair(n, fg, background)
        out[role] = curses.color_pair(n) | plain.get(role, 0)
    return out


def _loop(screen, monitor: Monitor, interval_s: float, colour: bool, unicode: bool) -> int:
    import curses

    try:
        curses.curs_set(0)
    except curses.error:  # a terminal that cannot hide its cursor
        pass
    screen.keypad(True)
    attrs = _attrs(curses, colour)
    next_poll = 0.0
    while True:
        height, width = screen.getmaxyx()
        if time.monotonic() >= next_poll:
            monitor.poll(max(1, width - CHART_LABEL_W - 1))
            next_poll = time.monotonic() + interval_s
        frame = render(monitor.data, width, height, monitor.clock(), colour=colour, unicode=unicode,
                       help=monitor.help, picker=monitor.picker)
        screen.erase()
        for y, line in enumerate(frame):
            x = 0
            for text, role in line:
                try:
                    screen.addstr(y, x, text, attrs.get(role, 0))
                except curses.error:  # the bottom-right cell: written, but curses cannot move past it
                    pass
                x += len(text)
        screen.refresh()
        screen.timeout(max(20, int((next_poll - time.monotonic()) * 1000)))
        code = screen.getch()
        if code == -1:
            continue
        name = _key_name(code, curses)
        if name == "resize":
            curses.update_lines_cols()
            continue
        if name is not None:
            acted = monitor.picker is not None or name in ("p", "a", "s", "m")
            if not monitor.key(name):
                return 0
            if acted:
                next_poll = 0.0  # show the change at once


def run_monitor(paths: Paths, url: str | None, interval_s: float, *, out=None,
                env: Mapping[str, str] | None = None, isatty: bool | None = None) -> int:
    """Run the monitor until ``q``. :param url: ``--url`` (None: as ``shunt status`` finds shunt).
    :param interval_s: seconds between polls. :returns: 0.
    :raises ConfigError: a bad URL; or, when curses cannot run, shunt cannot be reached for ``shunt status``.
    """
    out = sys.stdout if out is None else out
    env = os.environ if env is None else env
    base = proxy_url(paths, url)
    key = remote_key(load_config(paths, create=False))

    def caller(method: str, path: str, body: dict | None) -> dict:
        return call(base, key, method, path, body, timeout=POLL_TIMEOUT_S)

    def fallback() -> int:
        print(render_status(caller("GET", "/status", None)), file=out)
        return 0

    if not curses_possible(out.isatty() if isatty is None else isatty, env):
        return fallback()
    try:
        import curses
    except ImportError:  # a Python built without curses
        return fallback()
    import locale

    try:
        locale.setlocale(locale.LC_ALL, "")
    except locale.Error:
        pass
    unicode = locale.getpreferredencoding(False).lower().replace("-", "") == "utf8"
    os.environ.setdefault("ESCDELAY", "25")  # Esc closes the picker without curses' one-second wait
    monitor = Monitor(base, caller, history_every_s=min(HISTORY_EVERY_S, max(1.0, 5 * interval_s)))
    try:
        return curses.wrapper(_loop, monitor, interval_s, not env.get("NO_COLOR"), unicode)
    except curses.error:
        return fallback()
