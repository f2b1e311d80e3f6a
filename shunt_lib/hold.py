"""Holding a request while every account it may use is cooling, instead of answering 429.

A held request waits until an account recovers (or a reload or another request frees one). A held
streaming request is kept alive: its ``200`` and SSE head go out with the first ping, ``first_ping_s``
after it arrived, then a ping every ``ping_interval_s``. Time and waiting come from a
:class:`~shunt_lib.clock.Clock`, so tests hold in virtual time.
"""

from __future__ import annotations

import json
import threading
from typing import Callable

from .client import ClientStream
from .clock import Clock

#: How long one wait lasts at most, seconds: an account freed early (a reload, another request's
#: success after a reset) is noticed within this.
MAX_WAIT_STEP_S = 1.0


class Hold:
    """The holds of one request (a request may be held again after a failed attempt).

    :param started_s: when the request arrived (monotonic seconds; the first ping is timed from it).
    :param body: the request body: a top-level ``"stream": true`` makes it a held stream (parsed once,
        and only if the request is ever held).
    :attr held_s: time spent held so far, seconds.
    """

    __slots__ = ("clock", "body", "first_ping_s", "ping_interval_s", "held_s", "next_ping", "_is_stream")

    def __init__(self, clock: Clock, started_s: float, body: bytes, *, first_ping_s: float, ping_interval_s: float):
        self.clock, self.body = clock, body
        self.first_ping_s, self.ping_interval_s = first_ping_s, ping_interval_s
        self.held_s = 0.0
        self.next_ping = started_s + first_ping_s  # monotonic s of the next ping
        self._is_stream: bool | None = None

    @property
    def is_stream(self) -> bool:
        if self._is_stream is None:
            self._is_stream = wants_stream(self.body)
        return self._is_stream

    def wait(self, client: ClientStream, ping: bytes, free: Callable[[float], bool],
             recovery: Callable[[float], tuple[float, str] | None], deadline_s: float,
             stop: threading.Event | None = None) -> bool:
        """Wait until ``free(now_s)``, until nothing recovers before ``deadline_s``, or until ``stop`` is
        set (noticed within :data:`MAX_WAIT_STEP_S`), pinging a stream.

        :param free: whether an account this request may use is usable at ``now_s`` (epoch s).
        :param recovery: the soonest recovery, ``(epoch_s, name)``, or None.
        :param ping: the keep-alive event of the client's dialect.
        :returns: False if the client left (:attr:`~ClientStream.gone`); True to route again.
        :raises ClientGone: if a ping cannot be written.
        """
        clock = self.clock
        since = clock.monotonic()
        try:
            while True:
                now = clock.time()
                if free(now) or (stop is not None and stop.is_set()):
                    return True
                rec = recovery(now)
                if rec is None or rec[0] > deadline_s:
                    return True  # nothing in time: the caller answers
                wait = rec[0] - now
                if self.is_stream:
                    mono = clock.monotonic()
                    if mono >= self.next_ping:
                        client.ping(ping)
                        self.next_ping = mono + self.ping_interval_s
                    wait = min(wait, self.next_ping - mono)
                if clock.wait(client.gone, max(0.0, min(wait, MAX_WAIT_STEP_S)) + 0.001):
                    return False
        finally:
            self.held_s += clock.monotonic() - since


def wants_stream(body: bytes) -> bool:
    """Whether a request body asks for SSE: its top-level ``stream`` field is ``true``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("stream") is True
