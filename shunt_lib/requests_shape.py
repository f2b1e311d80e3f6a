"""The two requests of a relayed exchange: the one a client sent and the one sent upstream for an attempt.

They live apart from :mod:`shunt_lib.dialect` so that the exchanges that build them (and the dialect
that picks an exchange) import them without importing each other.
"""

from __future__ import annotations

from typing import NamedTuple

from .clients import LOCAL, Client
from .wire import Headers


class ProxyRequest(NamedTuple):
    """A client request to forward: ``target`` is the path and query string as sent; ``body`` bytes;
    ``client`` who sent it (:mod:`shunt_lib.clients`)."""

    method: str
    target: str
    headers: Headers
    body: bytes
    client: Client = LOCAL


class UpstreamRequest(NamedTuple):
    """What is sent upstream for one attempt; ``body`` None means no body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None
