"""Time as a seam: every read of the clock on the request path, and every wait, goes through a :class:`Clock`.

The proxy takes its clock as an argument (:func:`~shunt_lib.server.make_server`), so tests can hold
a request, ping it and release it in virtual time, in milliseconds of real time.
"""

from __future__ import annotations

import threading
from time import monotonic as _monotonic
from time import time as _time


class Clock:
    """The system clock. Subclass it (or pass any object with these three methods) to fake time.

    Any thread may call any method.
    """

    #: Epoch seconds (wall clock): for everything that leaves the process (resets, cooldowns).
    #: (The built-in itself, not a method around it: it is read several times per request.)
    time = staticmethod(_time)
    #: Seconds on a clock that never jumps: for durations (request time, time held).
    monotonic = staticmethod(_monotonic)

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """Block until ``event`` is set or ``timeout_s`` seconds pass. :returns: whether it is set."""
        return event.wait(timeout_s)


#: The one real clock; the default everywhere.
SYSTEM = Clock()
