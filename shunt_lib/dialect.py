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

from typing import Iterator, Protocol, Sequence

from . import sse
from .config import AccountConfig
from .requests_shape import Exchange, ProxyRequest, UpstreamRequest  # noqa: F401  (re-exported for the relay)
from .errors import ShuntError
from .forwarding import ResponseHead, upstream_headers
from .model_map import ModelMap
from .model_routing import RoutePlan, plan_request, with_model


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

    def plan(self, request: ProxyRequest, accounts: Sequence[AccountConfig], model_map: ModelMap) -> RoutePlan | None:
        """Which accounts may take ``request``, decided by its model (:mod:`~shunt_lib.model_routing`):
        primaries, then the configured fallbacks; None: every account of :attr:`account_kinds` may.
        :raises ShuntError: no configured account serves the model (answered in the client's shape)."""

    def exchange(self, request: ProxyRequest, account: AccountConfig, secret: str, routed=None) -> Exchange:
        """The exchange of one attempt through ``account`` (its ``kind`` among :attr:`account_kinds`)
        holding ``secret``; ``routed``: the request's :class:`~shunt_lib.model_routing.Routed` for this
        account when its model decided the route (None otherwise)."""

    def error_body(self, err: ShuntError) -> bytes:
        """The body of an error shunt answers itself, in the client's API shape."""


class PassThrough(Exchange):
    """An exchange that sends ``request`` and gives the client the answer unchanged (``extra``: response
    headers added, e.g. ``x-shunt-model`` after a ``[models]`` rewrite; ``base_url``, ``long_head`` and
    ``usage_tap`` as in :class:`Exchange`, e.g. OpenAI's usage for an ``openai`` account)."""

    __slots__ = ("request", "base_url", "extra", "long_head", "usage_tap")

    def __init__(self, request: UpstreamRequest, base_url: str | None = None, extra: list[tuple[str, str]] | None = None,
                 long_head: bool | None = None, usage_tap: type | None = None):
        self.request = request
        self.base_url = base_url
        self.extra = extra
        self.long_head = long_head
        self.usage_tap = usage_tap

    def client_head(self, head: ResponseHead) -> ResponseHead:
        return ResponseHead.from_items(head.status, head.reason, head.items + self.extra) if self.extra else head

    def client_body(self, head: ResponseHead, pieces: Iterator[bytes]) -> Iterator[bytes]:
        return pieces

    def client_error(self, head: ResponseHead, body: bytes) -> tuple[ResponseHead, bytes]:
        return self.client_head(head), body


class AnthropicPassthrough:
    """Anthropic clients: to Anthropic accounts everything is forwarded unchanged but the credential
    (and the model, where the user's ``[models]`` table rewrites it); to an ``openai`` account the
    request is translated (:mod:`~shunt_lib.anthropic_on_openai`).

    ``account_kinds``: the kinds that serve a request whose model does not decide its route (an openai
    account's key must never go to Anthropic); ``routed_kinds``: the kinds that may serve a request
    whose model routed it (:mod:`~shunt_lib.model_routing`): an ``openai`` account gets only those.
    """

    name = "anthropic"
    account_kinds = frozenset({"oauth", "api_key"})
    routed_kinds = frozenset({"oauth", "api_key", "openai"})
    excluded_accounts: frozenset[str] = frozenset()
    ping = sse.PING

    def plan(self, request: ProxyRequest, accounts: Sequence[AccountConfig], model_map: ModelMap) -> RoutePlan | None:
        # None whenever routing_matters is false: the relay, which knows that from its configuration,
        # then skips this call (the pass-through path of most setups)
        return plan_request(request.method, request.target, request.body, accounts, model_map, dialect=self.name)

    def exchange(self, request: ProxyRequest, account: AccountConfig, secret: str, routed=None) -> Exchange:
        if account.kind == "openai":
            if routed is None:  # the router never sends unrouted traffic here (account_kinds)
                raise ValueError("an openai account takes only requests routed to it by model")
            from . import anthropic_on_openai  # imported on first use: the pass-through path does not need it
            return anthropic_on_openai.exchange(request, account, secret, routed)
        headers = upstream_headers(request.headers.items(), account.kind, secret)
        if routed is None:  # the plain pass-through
            body = request.body if request.body or request.method != "GET" else None
            return PassThrough(UpstreamRequest(request.method, request.target, headers, body))
        body = with_model(routed.body, routed.upstream_model) if routed.upstream_model != routed.model else request.body
        return PassThrough(UpstreamRequest(request.method, request.target, headers, body), extra=routed.headers)

    def error_body(self, err: ShuntError) -> bytes:
        return err.body()


#: The dialect of every ``/v1/`` path today.
ANTHROPIC = AnthropicPassthrough()
