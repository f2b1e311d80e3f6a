"""Usage history, the pure part: the rows a finished request becomes, minute rollups, pruning cut-offs,
and the ``--since`` durations. No I/O; time is always an argument.

A request is one raw row (:data:`RAW_COLUMNS`) and counts into the minute rollup of its account,
model and client (:data:`ROLLUP_COUNTERS`). A request answered by no account is rolled up under
account ``""``; a raw row without a client (written before clients were named) under client ``local``.
"""

from __future__ import annotations

import re
from typing import Iterable

from .record import RequestRecord

DAY_S = 86400
#: The client of rollups of requests whose client was never named (rows from before shunt named
#: clients, when every request was its user's own): counted as ``local``.
UNNAMED_CLIENT = "local"
MINUTE_S = 60

#: The raw ``requests`` table's columns, in order: epoch s, account (None: no account answered),
#: model ('' if unknown), status the client got (499: it left), token counts (``cache_write_tokens``:
#: every cache write, ``cache_write_1h_tokens``: those of them with the 1-hour TTL, priced higher),
#: milliseconds, attempts and ``client`` (who sent it, :mod:`shunt_lib.clients`; None in rows written before clients were named).
RAW_COLUMNS = ("ts_s", "account", "model", "status", "input_tokens", "output_tokens", "cache_read_tokens",
               "cache_write_tokens", "cache_write_1h_tokens", "duration_ms", "held_ms", "attempts", "client")

#: The counters of one minute rollup row: requests, ``errors`` (status >= 400, 499 included), ``held``
#: (requests that waited for an account), token sums, and the sums of ``duration_ms`` and ``held_ms``.
ROLLUP_COUNTERS = ("requests", "errors", "held", "input_tokens", "output_tokens", "cache_read_tokens",
                   "cache_write_tokens", "cache_write_1h_tokens", "duration_ms", "held_ms")


def raw_row(r: RequestRecord) -> tuple:
    """The raw row (:data:`RAW_COLUMNS`) of a finished request."""
    return (r["ts_s"], r["account"], r["model"] or "", r["status"], r["input_tokens"], r["output_tokens"],
            r["cache_read_tokens"], r["cache_creation_tokens"], r.get("cache_write_1h_tokens", 0), r["duration_ms"],
            r["held_ms"], r["attempts"], r.get("client"))


def minute_of(ts_s: float) -> int:
    """The start (epoch s) of the minute holding ``ts_s``."""
    return int(ts_s) // MINUTE_S * MINUTE_S


def rollup(rows: Iterable[tuple]) -> dict[tuple[int, str, str, str], list[int]]:
    """Minute rollups of raw rows: ``(minute_s, account or "", model, client)`` → counters in
    :data:`ROLLUP_COUNTERS` order (to be added to any already stored)."""
    out: dict[tuple[int, str, str, str], list[int]] = {}
    for ts, account, model, status, i, o, cr, cw, cw1h, dur, held_ms, _attempts, client in rows:
        c = out.setdefault((minute_of(ts), account or "", model, client or UNNAMED_CLIENT), [0] * len(ROLLUP_COUNTERS))
        for k, v in enumerate((1, int(status >= 400), int(held_ms > 0), i, o, cr, cw, cw1h, dur, held_ms)):
            c[k] += v
    return out


def cutoffs(now_s: float, raw_days: int, rollup_days: int) -> tuple[int, int]:
    """``(raw_before_s, rollup_before_s)``: raw rows older than ``raw_days`` and rollups older than
    ``rollup_days`` (before ``now_s``) are pruned."""
    return int(now_s) - raw_days * DAY_S, minute_of(now_s - rollup_days * DAY_S)


_DURATION_RE = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": DAY_S, "w": 7 * DAY_S}


def parse_duration_s(text: str) -> int:
    """``"24h"``, ``"7d"``, ``"30d"``, ``"90m"``, ``"2w"`` as seconds (a positive whole number).

    :raises ValueError: anything else.
    """
    m = _DURATION_RE.match(text)
    if m is None or int(m[1]) == 0:
        raise ValueError(f"{text!r} is not a duration like 24h, 7d or 30d")
    return int(m[1]) * _UNIT_S[m[2]]


def bucket_start(minute_s: int, since_s: int, step_s: int) -> int:
    """The start of the ``step_s``-wide bucket (counted from ``since_s``) that holds ``minute_s``."""
    return since_s + (minute_s - since_s) // step_s * step_s
