"""API dialects: how a client's request becomes an upstream request, and the answer a client response.

The relay's loop (route, attempt, fail over, hold) knows nothing of request or response shapes; it
asks a :class:`Dialect` (the client's API) for an :class:`Exchange` per attempt: the request to send
through that account and how its answer reaches the client. :data:`ANTHROPIC` is the pass-through
dialect of Anthropic clients: the request goes up unchanged but for its credential headers
(:func:`~shunt_lib.forwarding.upstream_headers`) and the answer comes back unchanged. A translating
exchange (an Anthropic client on an OpenAI-compatible account, an OpenAI client on an Anthropic
account) plugs in by implementing the same hooks, with no change to the relay.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Protocol

from . import sse
from .config import AccountConfig
from .errors import ShuntError
from .forwarding import ResponseHead, upstream_headers
from .wire import Headers


class ProxyRequest(NamedTuple):
    """A client request to forward: ``target`` is the path and query string as sent; ``body`` bytes."""

    method: str
    target: str
    headers: Headers
    body: bytes


class UpstreamRequest(NamedTuple):
    """What is sent upstream for one attempt; ``body`` None means no body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None


class Exchange(Protocol):
    """One attempt's translation: ``request`` is what goes up; ``base_url`` the upstream it goes to
    (None: the server's ``upstream_url``); the hooks turn the account's answer into the client's."""

    request: UpstreamRequest
    base_url: str | None

    def client_head(self, head: ResponseHead) -> ResponseHead:
        """The head of a successful answer as the client gets it (its framing is shunt's)."""

    def client_body(self, head: ResponseHead, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """The successful answer's body pieces as the client gets them (raw upstream pieces in)."""

    def client_error(self, head: ResponseHead, body: bytes) -> tuple[ResponseHead, bytes]:
        """An upstream error answer as the client gets it."""


class Dialect(Protocol):
    """A client API: which accounts may serve it, and the :class:`Exchange` of each attempt.

    ``account_kinds``: the account kinds that may serve this dialect's traffic (None: every kind);
    ``excluded_accounts``: accounts that may not serve it whatever their kind (a request's model
    decides, e.g. :mod:`shunt_lib.openai_front`); ``ping``: the keep-alive event sent while a
    streaming request is held.
    """

    name: str
    account_kinds: frozenset[str] | None
    excluded_accounts: frozenset[str]
    ping: bytes

    def exchange(self, request: ProxyRequest, account: AccountConfig, secret: str) -> Exchange:
        """The exchange of one attempt through ``account`` (its ``kind`` among :attr:`account_kinds`)
        holding ``secret``."""

    def error_body(self, err: ShuntError) -> bytes:
        """The body of an error shunt answers itself, in the client's API shape."""


class PassThrough:
    """An exchange that sends ``request`` and gives the client the answer unchanged."""

    __slots__ = ("request", "base_url")

    def __init__(self, request: UpstreamRequest, base_url: str | None = None):
        self.request = request
        self.base_url = base_url

    def client_head(self, head: ResponseHead) -> ResponseHead:
        return head

    def client_body(self, head: ResponseHead, pieces: Iterator[bytes]) -> Iterator[bytes]:
        return pieces

    def client_error(self, head: ResponseHead, body: bytes) -> tuple[ResponseHead, bytes]:
        return head, body


class AnthropicPassthrough:
    """Anthropic clients to Anthropic upstreams: everything forwarded unchanged but the credential."""

    name = "anthropic"
    account_kinds = frozenset({"oauth", "api_key"})  # never an openai account: its key must not go to Anthropic
    excluded_accounts: frozenset[str] = frozenset()
    ping = sse.PING

    def exchange(self, request: ProxyRequest, account: AccountConfig, secret: str) -> Exchange:
        body = request.body if request.body or request.method != "GET" else None
        return PassThrough(UpstreamRequest(request.method, request.target,
                                           upstream_headers(request.headers.items(), account.kind, secret), body))

    def error_body(self, err: ShuntError) -> bytes:
        return err.body()


#: The dialect of every ``/v1/`` path today.
ANTHROPIC = AnthropicPassthrough()
