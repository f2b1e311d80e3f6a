"""What ``shunt monitor`` draws, as pure functions of what the running shunt reported.

The inputs are the control API's documents: ``GET /status`` (:func:`~shunt_lib.status.status_document`
plus ``alerts``), the rows of ``GET /recent`` (:meth:`~shunt_lib.recent.RecentRequests.after`) and a
``GET /history?by=account`` answer (:func:`~shunt_lib.control.history`). The output is a frame: a list
of lines, each a list of ``(text, role)`` segments, never wider than the terminal and never more lines
than it has. A role names what a piece of text is (``ok``, ``warn``, ``bad``, ``acct0`` ...); the
curses layer (:mod:`shunt_lib.monitor`) turns roles into colours, or into nothing under ``NO_COLOR``.
Nothing here does I/O or reads the clock: time is an argument.
"""

from __future__ import annotations

import dataclasses
import math
import time

from .client_view import client_rows, shows_clients
from .status_view import duration_text, savings_text, tokens_text, until_text

Segment = tuple[str, str]
Line = list[Segment]

#: Every role a segment may have: ``""`` plain, ``title``, ``dim``, ``ok``, ``warn``, ``bad``, ``select``
#: (the picker's chosen row) and ``acct0`` ... ``acct5`` (an account's colour in the chart, cycling).
ACCOUNT_COLOURS = 6
ROLES = ("", "title", "dim", "ok", "warn", "bad", "select") + tuple(f"acct{i}" for i in range(ACCOUNT_COLOURS))

#: The chart's ranges (key ``1``, ``2``, ``3``) and their spans, seconds.
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
RANGE_KEYS = {"1": "1h", "2": "24h", "3": "7d"}
#: Bucket widths the chart may use (``GET /history`` wants a multiple of 60 s): the smallest that fits.
STEPS_S = (60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

#: Bar cells: filled and empty, Unicode blocks or ASCII.
BAR_CELLS = {True: ("█", "░"), False: ("#", "-")}
CHART_LABEL_W = 6  # the chart's y-axis label, left of its columns

KEYS_HELP = (
    ("q", "quit"),
    ("?", "this help (any key closes it)"),
    ("p", "pin all traffic to one account: its number, or arrows and Enter"),
    ("a", "back to automatic routing"),
    ("s", "next routing strategy"),
    ("m", "mute or unmute alerts"),
    ("1 2 3", "chart range: 1 hour, 24 hours, 7 days"),
)
STATUS_ROLES = {"available": "ok", "cooling": "warn", "exhausted": "bad", "reauth_required": "bad", "disabled": "bad"}
SHORT_STATUS = {"reauth_required": "reauth"}


@dataclasses.dataclass
class MonitorData:
    """What the monitor knows: ``status`` the last ``/status`` document (None before the first
    answer); ``feed`` the ``/recent`` rows seen, oldest first; ``history`` the last ``/history`` answer
    for the chart (None: none yet); ``range_name`` a key of :data:`RANGES`; ``error`` why the last poll
    failed (None: it worked); ``message`` and ``message_role`` the outcome of the last key pressed."""

    url: str = ""
    status: dict | None = None
    feed: list[dict] = dataclasses.field(default_factory=list)
    history: dict | None = None
    range_name: str = "24h"
    error: str | None = None
    message: str | None = None
    message_role: str = ""


def chart_query(range_name: str, cols: int, now_s: float) -> dict:
    """The ``GET /history`` query for a chart ``cols`` columns wide over ``range_name`` ending now:
    ``{"since_s", "until_s", "step_s"}`` (epoch s), with the smallest step of :data:`STEPS_S` that
    fits the span in ``cols`` columns, ``until_s`` the end of the bucket holding ``now_s``."""
    span = RANGES[range_name]
    step = next((s for s in STEPS_S if math.ceil(span / s) <= max(1, cols)), STEPS_S[-1])
    until = (int(now_s) // step + 1) * step
    return {"since_s": until - math.ceil(span / step) * step, "until_s": until, "step_s": step}


def fit(line: Line, width: int) -> Line:
    """``line`` cut to at most ``width`` characters (segments past it dropped, the last one shortened)."""
    out: Line = []
    left = max(0, width)
    for text, role in line:
        if left <= 0:
            break
        out.append((text[:left], role))
        left -= len(out[-1][0])
    return out


def line_text(line: Line) -> str:
    """The plain text of a line."""
    return "".join(text for text, _ in line)


def bar(fraction: float | None, cells: int, unicode: bool) -> str:
    """``fraction`` (0–1, clamped; None counts as 0) as ``cells`` characters, filled from the left."""
    full, empty = BAR_CELLS[unicode]
    filled = round(min(1.0, max(0.0, fraction or 0.0)) * cells)
    return full * filled + empty * (cells - filled)


def level_role(fraction: float | None) -> str:
    """A utilization's role: under 70 % ``ok``, under 90 % ``warn``, else ``bad`` (unknown: ``dim``)."""
    if fraction is None:
        return "dim"
    return "ok" if fraction < 0.7 else "warn" if fraction < 0.9 else "bad"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{min(999, round(v * 100))}%"


def _tokens_of(row: dict) -> int:
    """Every token of a request or bucket: input, output, cache reads and cache writes."""
    return sum(int(row.get(k) or 0) for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                               "cache_creation_tokens", "cache_write_tokens"))


def _widest_fitting(variants: list[Line], width: int) -> Line:
    """The first of ``variants`` (most to least detailed) that fits ``width``, else the last one cut."""
    for line in variants:
        if len(line_text(line)) <= width:
            return line
    return fit(variants[-1], width)


def header_lines(data: MonitorData, width: int) -> list[Line]:
    """Two lines: version, strategy, pin, mute and URL; then savings, or why shunt cannot be reached.
    On a narrow terminal the URL, the version and the savings' wording go first, not the facts."""
    doc = data.status or {}
    pin = doc.get("pinned_account")
    muted = (doc.get("alerts") or {}).get("muted")
    facts: Line = [(" · strategy ", ""), (doc.get("strategy", "?"), "title"),
                   (" · ", ""), (f"pinned to {pin}", "warn") if pin else ("routing automatically", "ok"),
                   (" · ", ""), ("alerts muted", "warn") if muted else ("alerts on", "")]
    first = _widest_fitting([[(f"shunt {doc.get('version', '?')}", "title"), *facts, (" · " + data.url, "dim")],
                             [(f"shunt {doc.get('version', '?')}", "title"), *facts],
                             [("shunt", "title"), *facts]], width)
    if data.error:
        second = fit([(data.error, "bad")], width)
    else:
        text = savings_text(doc.get("savings")) or "no savings yet"
        short = text.replace("saved (API list prices) ", "saved ")
        ov = overrides_text(doc.get("overrides") or {})
        if ov:  # the overrides first: they change what is sent
            second = _widest_fitting([[(ov, "warn"), (" · " + text, "dim")], [(ov, "warn"), (" · " + short, "dim")],
                                      [(ov, "warn")]], width)
        else:
            second = _widest_fitting([[(text, "dim")], [(short, "dim")]], width)
    return [first, second]


def overrides_text(doc: dict) -> str:
    """The runtime overrides in a few words (``/status`` ``overrides``): the global ones, and how many
    client tokens have their own; '' when none is set."""
    parts = [f"{f}={v}" for f, v in (doc.get("global") or {}).items()]
    n = len(doc.get("tokens") or {})
    if n:
        parts.append(f"{n} token{'s' if n > 1 else ''} with their own")
    return ("override " + " ".join(parts)) if parts else ""


def _name_width(names: list[str]) -> int:
    return min(16, max([7, *map(len, names)]))


def account_lines(doc: dict, width: int, now_s: float, unicode: bool) -> list[Line]:
    """The accounts' table: a header, one row per account (status, 5h and 7d bars with percent and time
    to reset, cooldown, active sessions, requests, tokens), then a line per account needing attention."""
    accounts = doc.get("accounts", [])
    nw = _name_width([a["name"] for a in accounts])
    bw = max(4, min(24, (width - nw - 63) // 2))
    lines: list[Line] = [fit([("ACCOUNT".ljust(nw) + " " + "STATUS".ljust(9) + " " + "5H".ljust(bw + 13) + "7D".ljust(bw + 13)
                           + "COOLDOWN" + " " + "SESS".rjust(4) + " " + "REQS".rjust(5) + " "
                           + "TOKENS".rjust(6), "dim")], width)]
    for a in accounts:
        status = a.get("status", "?")
        row: Line = [(a["name"][:nw].ljust(nw) + " ", ""),
                     (SHORT_STATUS.get(status, status).ljust(9), STATUS_ROLES.get(status, "")), (" ", "")]
        for w in ("5h", "7d"):
            u = a.get(f"utilization_{w}")
            row += [(bar(u, bw, unicode), level_role(u)), (" " + _pct(u).rjust(4), level_role(u)),
                    (" " + until_text(a.get(f"reset_{w}_at_s"), now_s).rjust(6) + " ", "dim")]
        cool = until_text(a.get("cooldown_until_s"), now_s)
        row += [(cool.rjust(8), STATUS_ROLES.get(status, "warn")),
                (" " + str(a.get("active_sessions", 0)).rjust(4) + " " + str(a.get("requests", 0)).rjust(5) + " "
                 + tokens_text(_tokens_of(a)).rjust(6), "")]
        lines.append(fit(row, width))
    for a in accounts:
        if a.get("action"):
            lines.append(fit([(f"! {a['name']}: {a['action']}", "bad")], width))
        elif a.get("cooldown_reason"):
            lines.append(fit([(f"~ {a['name']}: {a['status']} ({a['cooldown_reason']})", "warn")], width))
    return lines


def _clock(ts_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts_s))


def _status_role(code) -> str:
    if not isinstance(code, int):
        return "bad"
    return "ok" if code < 300 else "warn" if code < 500 and code != 429 else "bad"


def feed_lines(feed: list[dict], names: list[str], width: int, rows: int) -> list[Line]:
    """The request feed: a header and the newest ``rows`` requests, newest first (time, account, model,
    status, tokens, duration, and ``held Ns`` / ``moved`` (failover, with its attempts) / ``broken``)."""
    nw = _name_width(names)
    mw = max(8, min(30, width - nw - 56))
    head = "TIME".ljust(9) + "ACCOUNT".ljust(nw + 1) + "MODEL".ljust(mw + 1) + "ST " + "TOKENS".rjust(6) + "  " + "TOOK".rjust(6)
    lines: list[Line] = [fit([(head, "dim")], width)]
    if not feed and rows > 0:
        lines.append([("no requests yet", "dim")])
    for r in reversed(feed[-rows:] if rows > 0 else []):
        line: Line = [(_clock(r.get("ts_s") or 0) + " ", "dim"), (str(r.get("account") or "-")[:nw].ljust(nw) + " ", ""),
                      (str(r.get("model") or "-")[:mw].ljust(mw) + " ", ""),
                      (str(r.get("status", "?")).rjust(3), _status_role(r.get("status"))),
                      (" " + tokens_text(_tokens_of(r)).rjust(6) + "  " + duration_ms_text(r.get("duration_ms")).rjust(6), "")]
        if r.get("held"):
            line.append((f" held {duration_ms_text(r.get('held_ms'))}", "warn"))
        if r.get("moved"):
            line.append((f" moved ({r.get('attempts')} tries)", "warn"))
        if r.get("broke"):
            line.append((" broken", "bad"))
        if r.get("client") not in (None, "local"):
            line.append((f" by {r['client']}", "dim"))
        lines.append(fit(line, width))
    return lines


def client_lines(doc: dict, width: int, rows: int) -> list[Line]:
    """The clients of today (``/status`` ``clients``, most active first): a header and at most ``rows``
    clients (requests, in flight, tokens, cost, limits); nothing when only ``local`` sent requests."""
    clients = doc.get("clients") or []
    if not shows_clients(clients) or rows < 1:
        return []
    table = client_rows(clients[:rows])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    return [fit([(text[0], "dim")], width)] + [fit([(t, "")], width) for t in text[1:]]


def duration_ms_text(ms) -> str:
    """A duration given in milliseconds: ``850ms``, ``4.2s``, or :func:`duration_text` from a minute."""
    ms = max(0, int(ms or 0))
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    return duration_text(ms / 1000)


def account_marks(names: list[str], colour: bool, unicode: bool) -> dict[str, tuple[str, str]]:
    """Each chart key's ``(cell, role)``: a coloured block, or without colour a letter of its own
    (its first letter if free, else the next free one of A–Z, then digits)."""
    out: dict[str, tuple[str, str]] = {}
    used: set[str] = set()
    spare = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    for i, name in enumerate(names):
        first = next((c.upper() for c in name if c.isalnum()), "")
        letter = first if first and first not in used else next((c for c in spare if c not in used), "?")
        used.add(letter)
        cell = BAR_CELLS[unicode][0] if colour and unicode else letter
        out[name] = (cell, f"acct{i % ACCOUNT_COLOURS}" if colour else "")
    return out


def chart_lines(history: dict | None, names: list[str], range_name: str, width: int, rows: int, *,
                colour: bool, unicode: bool) -> list[Line]:
    """The tokens-per-account chart: a title with the legend, ``rows`` rows of stacked columns (one
    per ``step_s`` bucket of ``history``, each account's share of its height in its own colour or
    letter; the top left label is the tallest column's tokens) and a time axis. ``names``: the
    accounts in order; other keys of the history (a removed account, ``""``: no account) follow."""
    title: Line = [(f"tokens per account, last {range_name}", "title"), (" (1 1h · 2 24h · 3 7d)", "dim")]
    buckets = (history or {}).get("buckets") or []
    keys = list(names) + sorted({b["key"] for b in buckets} - set(names))
    marks = account_marks(keys, colour, unicode)
    legend: Line = [("  ", "")]
    for k in keys:
        cell, role = marks[k]
        legend += [(cell, role), (f"{'=' if not colour or not unicode else ' '}{k or 'none'} ", "")]
    lines: list[Line] = [fit(title + legend, width)]
    if history is None:
        return lines + [[("loading...", "dim")]]
    since, until, step = history["since_s"], history["until_s"], history["step_s"]
    ncols = max(1, min(width - CHART_LABEL_W - 1, (until - since) // step))
    cols: list[dict[str, int]] = [{} for _ in range(ncols)]
    for b in buckets:
        c = (b["start_s"] - since) // step
        if 0 <= c < ncols:
            cols[c][b["key"]] = cols[c].get(b["key"], 0) + _tokens_of(b)
    peak = max((sum(c.values()) for c in cols), default=0)
    if peak == 0:
        return lines + [[(f"no requests recorded in the last {range_name}", "dim")]]
    stacks = [_stack(c, keys, peak, rows) for c in cols]
    for r in range(rows):
        level = rows - r  # 1 is the bottom row
        label = tokens_text(peak) if r == 0 else "0" if r == rows - 1 else ""
        line: Line = [(label.rjust(CHART_LABEL_W) + " ", "dim")]
        for stack in stacks:
            key = stack[level - 1] if level <= len(stack) else None
            line.append(marks[key] if key is not None else (" ", ""))
        lines.append(fit(_merge(line), width))
    left, right = f"-{range_name}", "now"
    axis = " " * (CHART_LABEL_W + 1) + left + " " * max(1, ncols - len(left) - len(right)) + right
    return lines + [fit([(axis, "dim")], width)]


def _stack(col: dict[str, int], keys: list[str], peak: int, rows: int) -> list[str]:
    """A column's cells from the bottom: its height in proportion to ``peak`` (at least one cell when
    it has any tokens), shared among the keys in proportion to their tokens (cumulative rounding)."""
    total = sum(col.values())
    if total <= 0:
        return []
    height = max(1, round(total / peak * rows))
    cells: list[str] = []
    cum = 0
    for k in keys:
        if col.get(k):
            cum += col[k]
            cells += [k] * (round(cum / total * height) - len(cells))
    return cells


def _merge(line: Line) -> Line:
    """Adjacent segments of one role joined (fewer curses calls)."""
    out: Line = []
    for text, role in line:
        if out and out[-1][1] == role:
            out[-1] = (out[-1][0] + text, role)
        else:
            out.append((text, role))
    return out


def footer_line(data: MonitorData, width: int) -> Line:
    """The last line: the last key's outcome, or the keys."""
    if data.message:
        return fit([(data.message, data.message_role)], width)
    return fit([("q quit · ? help · p pin · a auto · s strategy · m mute · 1/2/3 range", "dim")], width)


def help_lines(width: int) -> list[Line]:
    """The help overlay: one line per key."""
    return [fit([("keys", "title")], width)] + [fit([(f"  {k:<6}", "title"), (what, "")], width) for k, what in KEYS_HELP]


def picker_lines(doc: dict, selected: int, width: int, now_s: float) -> list[Line]:
    """The pin picker: every account numbered, with its status; ``selected`` shown as ``select``."""
    lines: list[Line] = [fit([("pin all traffic to which account? number, or arrows and Enter; Esc cancels", "title")], width)]
    for i, a in enumerate(doc.get("accounts", [])):
        status = a.get("status", "?")
        text = f"  {i + 1}  {a['name']}  {status}" + (f" {until_text(a.get('cooldown_until_s'), now_s)}"
                                                     if a.get("cooldown_until_s") else "")
        lines.append(fit([(text.ljust(width), "select" if i == selected else STATUS_ROLES.get(status, ""))], width))
    return lines


def render(data: MonitorData, width: int, height: int, now_s: float, *, colour: bool = True, unicode: bool = True,
           help: bool = False, picker: int | None = None) -> list[Line]:
    """The whole frame for a ``width`` × ``height`` terminal: header, accounts, clients (when more than
    ``local`` sent requests today: at most 5, and a quarter of the room), chart and feed (or the
    help or the picker instead of chart and feed), and the footer on the last line. The chart takes
    about a quarter of the room left under the accounts (3 to 12 rows; left out when under 8 lines
    are left), the feed the rest, so a taller terminal shows more of both.

    :returns: at most ``height`` lines, none longer than ``width``; ``height`` lines when it fits.
    """
    if width < 1 or height < 1:
        return []
    doc = data.status or {}
    names = [a["name"] for a in doc.get("accounts", [])]
    top = header_lines(data, width) + account_lines(doc, width, now_s, unicode)
    top += client_lines(doc, width, min(5, (height - len(top) - 1) // 4))
    room = height - len(top) - 1
    if help:
        body = help_lines(width)
    elif picker is not None:
        body = picker_lines(doc, picker, width, now_s)
    else:
        body = []
        chart_rows = max(3, min(12, room // 4)) if room >= 8 else 0
        if chart_rows:
            body = chart_lines(data.history, names, data.range_name, width, chart_rows, colour=colour, unicode=unicode)
        body += feed_lines(data.feed, names, width, room - len(body) - 1)
    lines = (top + body)[:max(0, height - 1)]
    lines += [[]] * (height - 1 - len(lines))
    return lines + [footer_line(data, width)]
