"""``[gateway] max_inflight``: how many proxied requests are relayed at once, and how long others wait.

``with gate:`` around a request's relaying takes a place; past ``max_inflight`` the request's thread
waits (on a condition, woken as places free up, first come not guaranteed) at most ``max_queue_s``,
then gets :class:`GatewayBusy`: a 429 ``rate_limit_error`` with ``retry-after: 1``. Nothing piles up
without bound: a waiting request holds only its own connection's thread (which ``max_connections``
already bounds) and for a bounded time. ``max_inflight = 0`` (the default) never waits and takes no lock.
"""

from __future__ import annotations

import math
import threading
import time

from .errors import ShuntError

RETRY_AFTER_S = 1  # a place frees whenever any request ends: the client may try again at once


class GatewayBusy(ShuntError):
    """Every place under ``max_inflight`` stayed taken for ``max_queue_s``: 429 with ``retry-after``."""

    status = 429
    error_type = "rate_limit_error"


class InflightGate:
    """Places for ``limit`` requests at once (0: unlimited); a request waits up to ``max_queue_s`` for one.

    A reusable context manager (one object for every request): ``__enter__`` raises
    :class:`GatewayBusy` when the wait runs out, and then ``__exit__`` is not called.
    """

    __slots__ = ("limit", "max_queue_s", "_cond", "_taken", "waiting", "refused")

    def __init__(self, limit: int = 0, max_queue_s: float = 30.0):
        self.limit = limit
        self.max_queue_s = max_queue_s
        self._cond = threading.Condition()
        self._taken = 0  # guarded by _cond
        self.waiting = 0  #: requests waiting for a place now
        self.refused = 0  #: requests refused after waiting max_queue_s, since start

    @property
    def taken(self) -> int:
        """Places taken now."""
        return self._taken

    def __enter__(self) -> None:
        if not self.limit:
            return
        with self._cond:
            if self._taken >= self.limit:
                self.waiting += 1
                try:
                    deadline = time.monotonic() + self.max_queue_s
                    while self._taken >= self.limit:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            self.refused += 1
                            raise GatewayBusy(
                                f"shunt is relaying its limit of {self.limit} requests at once ([gateway] max_inflight) "
                                f"and none finished within {_seconds(self.max_queue_s)}; retry the request",
                                headers={"retry-after": str(RETRY_AFTER_S), "x-should-retry": "true"})
                        self._cond.wait(left)
                finally:
                    self.waiting -= 1
            self._taken += 1

    def __exit__(self, *exc) -> None:
        if not self.limit:
            return
        with self._cond:
            self._taken -= 1
            self._cond.notify()


def _seconds(s: float) -> str:
    return f"{math.ceil(s)} s" if s >= 1 else f"{s:g} s"
