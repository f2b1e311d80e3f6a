"""How long a client may take to send a request, and how many connections shunt serves at once.

Pure decisions over times (monotonic seconds) and counts; the sockets they govern are
:mod:`shunt_lib.connections`'. The rules:

* **Request line and headers** must arrive within ``header_timeout_s`` of the connection's accept (or,
  on a kept-alive connection, of the next request's first byte): a total deadline, not a per-read
  timeout, so a client dripping a byte at a time cannot hold a connection. Past it: 408, then close.
* **An idle kept-alive connection** waits up to ``idle_timeout_s`` for its next request's first byte,
  then gets a 408 and is closed (RFC 9110 §15.5.9 lets a server send 408 on an idle connection).
* **A body** gets ``header_timeout_s`` of grace, then must have averaged at least
  ``min_body_rate_bytes_s`` since it started (the rule of Kestrel's ``MinRequestBodyDataRate``,
  https://learn.microsoft.com/aspnet/core/fundamentals/servers/kestrel/options#minimum-request-body-data-rate).
  Past it: 408, then close.
* **At most** ``max_connections`` connections are served. A new one past that takes the place of
  the connection that has waited longest for a request (idle, or still sending its head), which
  gets a 408, once its own request head is in (until then it is held without a thread,
  :mod:`shunt_lib.head_wait`, and gets a fast 503 if its head is late); if every connection is busy
  with a request, the new one gets a fast 503 and is closed, with no thread started for it.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Limits(NamedTuple):
    """The connection limits (the ``[server]`` keys of the same names; ``idle_timeout_s`` is
    :func:`~shunt_lib.server.make_server`'s).

    ``header_timeout_s``: seconds for a request line and headers (and the grace of a body);
    ``idle_timeout_s``: seconds a kept-alive connection may wait for its next request;
    ``min_body_rate_bytes_s``: the least average rate of a body after its grace, bytes/s (0: no minimum);
    ``max_connections``: connections served at once.
    """

    header_timeout_s: float = 10.0
    idle_timeout_s: float = 120.0
    min_body_rate_bytes_s: int = 4096
    max_connections: int = 1000


def body_deadline_s(start_s: float, received: int, limits: Limits) -> float | None:
    """When a body that started at ``start_s`` (monotonic s) and has delivered ``received`` bytes so
    far is too slow: its grace plus the time ``received`` bytes take at the minimum rate.

    :returns: a monotonic deadline, seconds; None when there is no minimum rate.
    """
    if limits.min_body_rate_bytes_s <= 0:
        return None
    return start_s + limits.header_timeout_s + received / limits.min_body_rate_bytes_s


class Admission(enum.Enum):
    """What happens to a newly accepted connection."""

    ACCEPT = "accept"  # below the cap: served
    EVICT = "evict"  # at the cap: served in place of the connection waiting longest for a request
    REJECT = "reject"  # at the cap with every connection busy: a fast 503
    WAIT = "wait"  # at the cap, its head not in yet: held without a thread until it is (then EVICT)


def admission(open_count: int, waiting_count: int, max_connections: int, head_in: bool = True) -> Admission:
    """The fate of a new connection when ``open_count`` connections are served, ``waiting_count`` of
    them waiting for a request (idle or sending their head), and the new one has (``head_in``) or has
    not yet sent its whole request head. A connection takes a waiter's place only with its head in:
    otherwise a client reconnecting as fast as it is evicted would keep shunt starting and ending a
    thread per connection, and new clients would queue behind its connections."""
    if open_count < max_connections:
        return Admission.ACCEPT
    if not waiting_count:
        return Admission.REJECT
    return Admission.EVICT if head_in else Admission.WAIT
