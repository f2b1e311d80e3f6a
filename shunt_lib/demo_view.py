"""What ``shunt demo`` shows, as pure functions: the accounts' live block, the story lines, the terminal frame.

The demo feeds these with what the real proxy reports: its ``/status`` document (accounts, their 5-hour
window, the recent requests) and the records of the ``shunt.events`` logger. Nothing here does I/O or
reads the clock: time is an argument, so every line can be tested without sockets.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

from .status_view import duration_text

#: ANSI colours (SGR) per account status, used only when colour is allowed.
_COLOURS = {"ready": "32", "serving": "36", "cooling": "33", "exhausted": "31", "unavailable": "31"}
_RESET = "\x1b[0m"

#: Bar fill and empty cells: Unicode blocks, or ASCII where the output cannot encode them.
BAR_CELLS = {True: ("█", "░"), False: ("#", "-")}


class ViewMode(NamedTuple):
    """How the demo may draw: ``live`` (redraw the account block in place with cursor movement),
    ``colour`` (ANSI colours), ``unicode`` (block characters and symbols rather than ASCII)."""

    live: bool
    colour: bool
    unicode: bool


def view_mode(isatty: bool, env: Mapping[str, str], unicode: bool) -> ViewMode:
    """The :class:`ViewMode` for an output: live only on a terminal whose ``TERM`` is not ``dumb``;
    colour only when live and ``NO_COLOR`` is unset or empty (https://no-color.org/)."""
    live = isatty and env.get("TERM", "") != "dumb"
    return ViewMode(live, live and not env.get("NO_COLOR"), unicode)


class AccountRow(NamedTuple):
    """One account in the live block: ``utilization`` of its 5-hour window (0–1, None: not known yet),
    ``reset_in_s`` until that window resets (None: not known), ``status`` one of ``ready``, ``serving``
    (ready, with a request in flight), ``cooling``, ``exhausted``, ``unavailable``; ``until_s`` seconds
    left of a cooldown or exhaustion; ``requests`` answered so far."""

    name: str
    utilization: float | None
    reset_in_s: float | None
    status: str
    until_s: float | None
    requests: int


def rows_from_status(doc: dict, now_s: float, in_flight: Mapping[str, int]) -> list[AccountRow]:
    """The live block's rows from a ``/status`` document (:func:`~shunt_lib.status.status_document`) at
    ``now_s`` (epoch s); ``in_flight``: requests each account is answering now."""
    rows = []
    for a in doc.get("accounts", []):
        status = {"available": "ready", "cooling": "cooling", "exhausted": "exhausted"}.get(a["status"], "unavailable")
        if status == "ready" and in_flight.get(a["name"], 0) > 0:
            status = "serving"
        reset = a.get("reset_5h_at_s")
        until = a.get("cooldown_until_s")
        rows.append(AccountRow(a["name"], a.get("utilization_5h"), max(0.0, reset - now_s) if reset else None,
                               status, max(0.0, until - now_s) if until else None, a.get("requests", 0)))
    return rows


def bar(fraction: float | None, cells: int, unicode: bool) -> str:
    """``fraction`` (0–1, clamped; None counts as 0) as ``cells`` characters, filled from the left."""
    full, empty = BAR_CELLS[unicode]
    filled = round(min(1.0, max(0.0, fraction or 0.0)) * cells)
    return full * filled + empty * (cells - filled)


def render_rows(rows: list[AccountRow], width: int, mode: ViewMode) -> list[str]:
    """The live block: one line per account, each at most ``width - 1`` characters (so that a terminal
    never wraps it and the block keeps its height):
    ``alpha [██████░░░░░░]  52%  resets in 6s      exhausted 6s  4 requests``."""
    name_w = max((len(r.name) for r in rows), default=0)
    cells = max(10, min(30, width - name_w - 48))
    lines = []
    for r in rows:
        pct = "  -" if r.utilization is None else f"{min(999, round(r.utilization * 100)):>3d}"
        reset = f"resets in {duration_text(r.reset_in_s)}" if r.reset_in_s is not None else ""
        state = r.status + (f" {duration_text(r.until_s)}" if r.until_s and r.status in ("cooling", "exhausted") else "")
        head = f"  {r.name:<{name_w}} [{bar(r.utilization, cells, mode.unicode)}] {pct}%  {reset:<14} "
        line = (head + f"{state:<13} {r.requests} request{'' if r.requests == 1 else 's'}")[:max(1, width - 1)]
        at = len(head)
        if mode.colour and r.status in _COLOURS and line[at:at + len(r.status)] == r.status:
            line = f"{line[:at]}\x1b[{_COLOURS[r.status]}m{r.status}{_RESET}{line[at + len(r.status):]}"
        lines.append(line)
    return lines


def frame(previous_height: int, above: list[str], block: list[str]) -> str:
    """The text that redraws a live view: move up over the block drawn before (``previous_height``
    lines), erase it, print ``above`` (lines that stay, e.g. events), then draw ``block`` anew. The
    cursor ends on the line below the block. ANSI/VT100 sequences: CR, CUU (``ESC [ n A``), ED
    (``ESC [ J``)."""
    up = f"\r\x1b[{previous_height}A\x1b[J" if previous_height else ""
    return up + "".join(line + "\n" for line in above + block)


class Story:
    """Turns what shunt reports into the demo's story, one short line per thing that matters.

    Feed it the ``shunt.events`` records (as dicts: ``event``, ``account`` and the record's other
    fields) with :meth:`event`, and the finished requests of ``/status`` with :meth:`held`; each
    returns the lines to print (maybe none: a hold is told once per episode, when it starts, and once
    when its requests are answered). Not thread-safe; times are epoch seconds.
    """

    def __init__(self, unicode: bool):
        self.unicode = unicode
        self.marks: dict[str, str] = {}  # account -> "exhausted" / "cooling", while it is out
        self.holding = False  # a hold episode is running: its first request was told
        self.counts: dict[str, int] = {}

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def event(self, e: Mapping, now_s: float) -> list[str]:
        """Lines for one ``shunt.events`` record (``request`` records give none)."""
        kind, account = e.get("event"), e.get("account")
        if kind in (None, "request"):
            return []
        self._count(kind)
        until = e.get("until_s")
        left = duration_text(until - now_s) if until else ""
        if kind == "failover":
            why = e.get("status") or "no answer"
            return [f"request moved from {e.get('from_account') or '?'} to {account} ({why})"]
        if kind == "exhausted":
            self.marks[account] = kind
            return [f"{account} exhausted: its 5-hour window is used up" + (f" (resets in {left})" if left else "")]
        if kind == "cooling":
            self.marks[account] = kind
            return [f"{account} cooling" + (f" for {left}" if left else "") + f": {e.get('reason') or 'throttled'}"]
        if kind == "recovered":
            was = self.marks.pop(account, None)
            if was == "cooling":
                return [f"{account}'s cooldown is over: back in service"]
            return [f"{account}'s window reset: back in service"]
        if kind == "hold":
            if self.holding:
                return []
            self.holding = True
            return [f"all accounts exhausted or cooling: holding requests until {account} is back"
                    + (f" (in {left})" if left else "")]
        if kind == "overloaded":
            return [f"{account} overloaded (529): retrying on another account"]
        if kind == "server_error":
            return [f"{account} answered a server error: trying another account"]
        return [str(e.get("message") or f"{kind} {account or ''}".strip())]

    def held(self, records: list[Mapping]) -> list[str]:
        """Lines for requests that finished after a hold (``/status`` ``recent_requests`` entries with
        ``held_ms`` > 0): one line for all of them; it ends the hold episode."""
        held = [r for r in records if r.get("held_ms")]
        if not held:
            return []
        self.holding = False
        self.counts["held"] = self.counts.get("held", 0) + len(held)
        longest = max(r["held_ms"] for r in held) / 1000
        by = ", ".join(sorted({r.get("account") or "-" for r in held}))
        if len(held) == 1:
            return [f"all accounts were out: request held {longest:.1f} s, then answered by {by}"]
        return [f"all accounts were out: {len(held)} requests held up to {longest:.1f} s, then answered by {by}"]
