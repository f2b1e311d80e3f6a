"""The two requests of a relayed exchange (the one a client sent and the one sent upstream for an
attempt) and the base class of an exchange.

They live apart from :mod:`shunt_lib.dialect` so that the exchanges that build them (and the dialect
that picks an exchange) import them without importing each other.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

from .clients import LOCAL, Client
from .forwarding import ResponseHead
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


class Exchange:
    """One attempt's translation: ``request`` is what goes up; the hooks turn the account's answer into
    the client's. The base class of every exchange; it holds the defaults of the optional attributes,
    which the relay and :mod:`~shunt_lib.finish` read as plain attributes:

    ``base_url``: the upstream the request goes to (None: the server's ``upstream_url``);
    ``long_head``: whether the head comes only with the whole answer (None: the relay decides from
    the request, :func:`~shunt_lib.relay.head_comes_late`); ``local_answer``: ``(head, body)`` when
    shunt answers itself and nothing goes up (None); ``translated``: usage is read from the body the
    client gets rather than the upstream's (False); ``usage_tap``: the class reading the answer's usage
    (None: Anthropic's :class:`~shunt_lib.usage.UsageTap`); ``served_model``: the model recorded for
    the request when it differs from what the client asked (None); ``broken_event``: a method giving
    the last event of a stream that broke off, from its message (None: the dialect's error event).
    """

    __slots__ = ()

    request: UpstreamRequest
    base_url: str | None = None
    long_head: bool | None = None
    local_answer: tuple[ResponseHead, bytes] | None = None
    translated = False
    usage_tap: type | None = None
    served_model: str | None = None
    broken_event: Callable[[str], bytes] | None = None

    def client_head(self, head: ResponseHead) -> ResponseHead:
        """The head of a successful answer as the client gets it (its framing is shunt's)."""
        raise NotImplementedError

    def client_body(self, head: ResponseHead, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """The successful answer's body pieces as the client gets them (raw upstream pieces in)."""
        raise NotImplementedError

    def client_error(self, head: ResponseHead, body: bytes) -> tuple[ResponseHead, bytes]:
        """An upstream error answer as the client gets it."""
        raise NotImplementedError
