"""Stopping with requests in flight: the two stages the relay sees, and the requests it may interrupt.

:meth:`ShuntServer.close <shunt_lib.server.ShuntServer.close>` stops accepting, then calls
:meth:`Drain.begin`: requests in progress go on (for up to ``drain_timeout_s``), and a new request
on a kept-alive connection is answered at once with :class:`~shunt_lib.errors.ShuttingDown` (529
``overloaded_error``, which clients retry: the retry reaches the next process). If requests are still
in progress when the time is up, :meth:`Drain.stop` interrupts each one: a stream ends with an SSE
``error`` event, an answer not begun gets the same 529, and each is recorded with the usage seen so
far, before ``state.json`` is flushed.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("shunt.relay")


class Drain:
    """The stop stages and the interrupt callbacks of the requests in progress. Any thread."""

    __slots__ = ("_lock", "_active", "_next", "draining", "stopping")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, Callable[[], None]] = {}  # guarded by _lock
        self._next = 0
        self.draining = threading.Event()  # set: no new request is served
        self.stopping = threading.Event()  # set: requests still in progress must end now

    def enter(self, interrupt: Callable[[], None]) -> int:
        """A request starts; ``interrupt`` (which must not block) unblocks it if :meth:`stop` is called.
        :returns: the token to pass to :meth:`leave`."""
        with self._lock:
            self._next += 1
            self._active[self._next] = interrupt
            return self._next

    def leave(self, token: int) -> None:
        """The request of ``token`` is done."""
        with self._lock:
            self._active.pop(token, None)

    def begin(self) -> None:
        """Stage one: serve what is in progress, nothing new."""
        self.draining.set()

    def stop(self) -> int:
        """Stage two: interrupt every request still in progress. :returns: how many there were."""
        self.draining.set()
        self.stopping.set()
        with self._lock:
            callbacks = list(self._active.values())
        for cb in callbacks:
            try:
                cb()
            except Exception:  # one request's trouble must not keep the others running
                log.exception("interrupting a request failed")
        return len(callbacks)
