"""``state.json`` on disk: loading it at start, the thread that writes it, and edits by commands.

The document's shape is :mod:`shunt_lib.state_doc`'s.

``state.json`` is written only here: by :class:`StateWriter` while shunt runs, and by
:func:`edit_saved_state` for a command that changes an account while shunt may be stopped. Every
write is atomic and 0600 (:mod:`shunt_lib.fsutil`). A file that is not a JSON object is kept as
``state.json.corrupt-<epoch s>`` for a human to look at, and state starts fresh.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING

from .clock import SYSTEM, Clock
from .fsutil import atomic_write_bytes, atomic_write_json, read_json
from .loop import Loop

if TYPE_CHECKING:
    from .state import Pool

log = logging.getLogger("shunt.state")

WRITE_BUDGET_BYTES_PER_S = 2_000_000  # state.json bytes serialised and written per second, at most, on average
FAILURE_LOG_EVERY_S = 60.0  # a write that keeps failing is logged once a minute, not on every try
RETRY_AFTER_FAILURE_S = 1.0


def next_write_delay_s(size_bytes: int, interval_s: float, budget_bytes_per_s: float = WRITE_BUDGET_BYTES_PER_S) -> float:
    """How long after writing a ``size_bytes`` document the next write may start, seconds: ``interval_s``
    for a small file, more for a large one so that writing stays within ``budget_bytes_per_s`` (a full
    session table, about 1.6 MB, is written at most about once a second instead of ten times)."""
    return max(interval_s, size_bytes / budget_bytes_per_s)


def report_due(last_report_s: float | None, now_s: float, every_s: float = FAILURE_LOG_EVERY_S) -> bool:
    """Whether a repeating failure should be logged now: the first time, then once per ``every_s``
    (times in seconds on one clock; ``last_report_s`` None: never reported)."""
    return last_report_s is None or now_s - last_report_s >= every_s


class StateWriter(Loop):
    """Writes ``state.json`` atomically when the pool changed, at most every ``interval_s`` (100 ms)
    and, for a large document, no more often than :func:`next_write_delay_s` allows.

    It polls :attr:`Pool.version` instead of being woken per change, so a request costs no wake-up.
    :meth:`stop` writes a final copy. The file is valid JSON at every instant (atomic rename). A
    failing write (read-only disk, disk full) is retried every second and logged once a minute.
    """

    def __init__(self, pool: "Pool", path: str, *, interval_s: float = 0.1, clock: Clock = SYSTEM):
        super().__init__("shunt-state-writer")
        self.pool, self.path, self.interval_s, self.clock = pool, path, interval_s, clock
        self._written_version = -1
        self._not_before = float("-inf")  # monotonic s before which tick() does not write
        self._last_failure_log: float | None = None  # monotonic s of the last failure logged
        self._failures = 0  # failed writes since the last success

    def flush(self) -> None:
        """Write the current state now (any thread)."""
        version = self.pool.version
        now = self.clock.monotonic()
        try:
            data = json.dumps(self.pool.to_json(self.clock.time()), separators=(",", ":")).encode()
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            self._failures += 1
            self._not_before = now + RETRY_AFTER_FAILURE_S
            if report_due(self._last_failure_log, now):
                self._last_failure_log = now
                log.error("could not write %s: %s (%d failed tries; retrying every %g s, logged once a minute)",
                          self.path, exc, self._failures, RETRY_AFTER_FAILURE_S)
            return
        if self._failures:
            log.info("%s written again after %d failed tries", self.path, self._failures)
            self._failures, self._last_failure_log = 0, None
        self._written_version = version
        self._not_before = now + next_write_delay_s(len(data), self.interval_s)

    def tick(self) -> None:
        if self.pool.version != self._written_version and self.clock.monotonic() >= self._not_before:
            self.flush()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.safe_tick()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, then write a final copy."""
        super().stop(timeout_s)
        self.flush()


def load_state(pool: "Pool", path: str, now_s: float) -> None:
    """Load ``state.json`` into ``pool``. A file that is not a JSON object is moved aside to
    ``<path>.corrupt-<int(now_s)>`` (logged) and state starts fresh; an unreadable one is logged and ignored."""
    try:
        data = read_json(path, default={})
    except OSError as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep for the parser
        data, why = None, f"not valid JSON ({type(exc).__name__}: {str(exc)[:200]})"
    else:
        why = "not a JSON object"
    if not isinstance(data, dict):
        aside = f"{path}.corrupt-{int(now_s)}"
        try:
            os.replace(path, aside)
            log.warning("%s is %s: kept as %s; starting with fresh state", path, why, aside)
        except OSError as exc:
            log.warning("%s is %s and could not be moved aside (%s); starting with fresh state", path, why, exc)
        return
    pool.load_json(data, now_s)


def edit_saved_state(path: str, name: str, *, forget: bool) -> None:
    """Change ``state.json`` for account ``name`` from a command, while shunt may be stopped.

    ``forget``: drop the account, its sessions and its pin (``shunt remove``); otherwise clear its
    ``reauth_required`` / ``disabled`` flags (a new login or key). A missing or unreadable file is
    left alone. A running proxy applies the same change itself on reload.
    """
    try:
        state = read_json(path, default=None)
    except (ValueError, RecursionError, OSError):
        return
    if not isinstance(state, dict) or not isinstance(state.get("accounts"), dict):
        return
    if not forget:
        entry = state["accounts"].get(name)
        if isinstance(entry, dict) and (entry.get("reauth_required") or entry.get("disabled")):
            entry["reauth_required"] = entry["disabled"] = False
            atomic_write_json(path, state)
        return
    state["accounts"].pop(name, None)
    sessions = state.get("sessions")
    state["sessions"] = {k: v for k, v in (sessions.items() if isinstance(sessions, dict) else ())
                         if not (isinstance(v, dict) and v.get("account") == name)}
    if state.get("pinned_account") == name:
        state["pinned_account"] = None
    atomic_write_json(path, state)


def reset_saved_state(path: str, name: str | None) -> bool:
    """Clear the exhaustion and cooldown of account ``name`` (None: every account) in ``state.json``,
    as :meth:`~shunt_lib.state.Pool.reset` does in a running proxy (``shunt reset`` while shunt is
    stopped). A missing or unreadable file is left alone. :returns: whether the file was changed."""
    try:
        state = read_json(path, default=None)
    except (ValueError, RecursionError, OSError):
        return False
    accounts = state.get("accounts") if isinstance(state, dict) else None
    if not isinstance(accounts, dict):
        return False
    changed = False
    for n, entry in accounts.items():
        if (name is None or n == name) and isinstance(entry, dict) and (
                entry.get("exhausted_until_s") or entry.get("cooldown_until_s")):
            entry.update(exhausted_until_s=0.0, cooldown_until_s=0.0, cooldown_reason="", exhausted_advice="")
            changed = True
    if changed:
        atomic_write_json(path, state)
    return changed
