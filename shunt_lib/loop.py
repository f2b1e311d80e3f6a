"""The base of shunt's background threads: a named daemon thread that ticks until it is stopped."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("shunt.background")


class Loop(threading.Thread):
    """A named daemon thread. Subclasses implement :meth:`run` (usually around :meth:`safe_tick`) and
    wait on :attr:`stopping` between ticks, so :meth:`stop` ends them at once.

    :param name: the thread's name (``shunt-...``), shown in logs and thread dumps.
    """

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()  #: set by :meth:`stop`

    def tick(self):
        """One round of work (override)."""
        raise NotImplementedError

    def safe_tick(self):
        """Run :meth:`tick`; an unexpected error is logged and the thread lives on (returns None then)."""
        try:
            return self.tick()
        except Exception:
            log.exception("%s: tick failed", self.name)
            return None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to end and wait up to ``timeout_s`` for it (any thread but this one)."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout_s)
