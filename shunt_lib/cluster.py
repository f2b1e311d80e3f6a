"""Several shunts, one pool: what a server shares through Redis when ``[cluster] redis_url`` is set.

:func:`attach_cluster` gives a built :class:`~shunt_lib.server.ShuntServer` its
:class:`Cluster`: the :class:`~shunt_lib.cluster_link.Link` to Redis and the parts that share one
item each over it. Each part keeps this instance's memory as the place decisions are read from and
applies the other instances' changes as their notices arrive; see each module for what it shares,
which of its writes are synchronous, and how it merges when Redis comes back.

Without ``[cluster]`` nothing here is imported (the server imports this module only when a Redis
is configured), and shunt runs alone exactly as before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from .cluster_accounts import share_pool
from .cluster_config import ClusterConfig, check_security
from .cluster_creds import ClusterCredentials
from .cluster_limits import SharedLimits
from .cluster_link import Link, instance_id
from .cluster_tokens import SharedTokens
from .cluster_usage import SharedUsage

if TYPE_CHECKING:
    from .serving import ClusterHost

log = logging.getLogger("shunt.cluster")

class Part(Protocol):
    """One shared item's keeper. ``stop()`` is called when the server closes, before the link stops."""

    def stop(self) -> None:
        """Stop sharing: end its threads, give back the seams it took (the server is closing)."""
        ...


class Cluster:
    """A server's membership of a cluster: ``link`` and the ``parts`` sharing items over it."""

    def __init__(self, link: Link, parts: list[Any] | None = None):
        self.link = link
        self.parts: list[Any] = list(parts or [])

    @property
    def healthy(self) -> bool:
        """Whether Redis answers (False: ``degraded``, each instance serves from its own state)."""
        return self.link.healthy

    def start(self) -> None:
        """Connect (waiting briefly, so the instance starts with the cluster's state) and start listening."""
        self.link.start()

    def stop(self) -> None:
        """Stop every part, then the link (queued writes are flushed while Redis answers)."""
        for part in reversed(self.parts):
            part.stop()
        self.link.stop()

    def status(self) -> dict:
        """The ``cluster`` entry of ``/status`` (:meth:`Link.status <shunt_lib.cluster_link.Link.status>`)."""
        return self.link.status()


def attach_cluster(srv: "ClusterHost", cfg: ClusterConfig, *, client=None) -> Cluster:
    """Make ``srv`` a member of the cluster ``cfg`` names (not started: :meth:`Cluster.start`).

    :param client: a ready Redis client (tests pass fakeredis); None: made from ``cfg``.
    :raises ConfigError: the ``redis`` package is missing, or a Redis beyond this machine has no password.
    """
    for warning in check_security(cfg):
        log.warning("cluster %s: %s", cfg.cluster_name, warning)
    link = Link(cfg, instance_id(srv.paths.home), client=client, clock=srv.clock.time, home=srv.paths.home,
                describe=lambda: {"url": f"http://{srv.server_address[0]}:{srv.port}"})
    cluster = Cluster(link)
    cluster.parts.extend(share_pool(link, srv))  # accounts, pin and overrides, sessions
    cluster.parts.append(ClusterCredentials.attach(link, srv))
    cluster.parts += [SharedTokens.attach(link, srv), SharedLimits.attach(link, srv), SharedUsage.attach(link, srv)]
    return cluster
