"""What a connection's handler and the control routes need of the server that runs them.

:class:`~shunt_lib.server.ShuntServer` provides both; the handler and the control routes are typed
against these protocols, so they depend on what they use rather than on the server module (which
imports them).
"""

from __future__ import annotations

from typing import Any, ContextManager, Protocol

from .alert_mute import MuteFlag
from .overrides import Overrides
from .alert_send import Channels
from .client_meter import ClientMeter
from .client_usage import ClientUsage
from .clock import Clock
from .config import Config, Paths
from .connections import ConnectionTable
from .guard import Policy
from .metrics import Metrics
from .oauth import TokenManager
from .recent import RecentRequests
from .relay import Relay
from .state import Pool
from .token_index import ClientTokens


class ControlServer(Protocol):
    """The server as the control routes (``/status``, ``/use``, ``/reset``, ``/reload``) see it."""

    pool: Pool
    tokens: TokenManager
    paths: Paths  # shunt's home (``usage.db`` for ``/history``)
    clock: Clock
    recent: RecentRequests  # the last finished requests (``/recent``)
    mute: MuteFlag  # whether alerts are muted (``/alerts``)
    overrides: Overrides  # the runtime overrides (``/overrides``)
    metrics: Metrics  # the counters ``/metrics`` shows
    alert_channels: Channels  # where alerts go (``/alerts/test``)
    client_tokens: ClientTokens  # the client tokens' index (authentication, ``/admin/tokens``)
    meter: ClientMeter  # the client tokens' use against their limits (``/admin/tokens``)
    token_mirror: Any  # with [cluster]: shares a client token's change (``/admin/tokens``), else None
    cluster: Any  # the shared pool (shunt_lib.cluster.Cluster) with [cluster], else None (``/status``, ``/metrics``)

    def status(self) -> dict:
        """The ``/status`` document."""
        ...

    def reload(self) -> dict[str, list[str]]:
        """Re-read config and credentials now; what was applied and what needs a restart."""
        ...

    def inflight_requests(self) -> int:
        """Proxied requests in progress now (``/metrics``)."""
        ...


class HandlerServer(ControlServer, Protocol):
    """The server as one connection's handler sees it."""

    config: Config
    guard: Policy
    idle_timeout_s: float
    relay: Relay
    connections: ConnectionTable
    client_usage: ClientUsage  # per-client usage today (``/status``): counts requests in flight per client

    def request_in_flight(self) -> ContextManager[object]:
        """Counts a proxied request as in flight for the drain while the block runs."""
        ...


class ClusterHost(HandlerServer, Protocol):
    """The server as a cluster's parts see it (:mod:`shunt_lib.cluster`): its state, files and seams,
    and where it listens (each instance's heartbeat names its URL)."""

    server_address: tuple

    @property
    def port(self) -> int:
        """The port bound."""
        ...
