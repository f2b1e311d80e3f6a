"""The OpenAI front door: ``POST /v1/chat/completions`` and ``POST /v1/responses`` (also without the
``/v1`` prefix, for SDKs configured with a base URL that lacks it) served by the pool.

Which accounts may serve a request is decided from its model before the relay starts
(:func:`select`): ``model_map.candidates(model, ..., dialect="openai")`` (``[models]``, else an
``openai`` account whose ``models`` match, else Anthropic accounts for ``claude*`` models), keeping
only API-key accounts: ``openai`` (Chat Completions, passed through) and Anthropic ``api_key``
(translated). Subscription (``oauth``) accounts never serve OpenAI-dialect traffic. The Responses API
is translated to Messages only, so it needs an Anthropic ``api_key`` account.

Errors shunt answers itself on this door are OpenAI's envelope (:mod:`shunt_lib.openai_errors`);
bad input is a 400 naming the field (``param``), and a request no account may take is a 4xx saying
why. Each attempt's exchange is :mod:`shunt_lib.openai_exchange`.
"""

from __future__ import annotations

import json
import secrets
from typing import Iterable, NamedTuple, Sequence

from . import from_chat, responses_api
from .chat_stream import KEEPALIVE
from .config import AccountConfig
from .dialect import Exchange, ProxyRequest
from .errors import InvalidOpenAIRequest, ShuntError
from .model_map import Candidate, ModelMap, candidates
from .model_routing import RoutePlan, Routed, route_plan
from .openai_errors import TYPE_FROM_ANTHROPIC, openai_error_body
from .openai_exchange import ToAnthropic, anthropic_request, passthrough

CHAT_ROUTES = frozenset({"/v1/chat/completions", "/chat/completions"})
RESPONSES_ROUTES = frozenset({"/v1/responses", "/responses"})
#: The account kinds each OpenAI API may be served by.
API_KINDS = {"chat": frozenset({"openai", "api_key"}), "responses": frozenset({"api_key"})}


def api_for(method: str, route: str) -> str | None:
    """``chat`` or ``responses`` for a request this door serves (POST on one of its paths), else None."""
    if method != "POST":
        return None
    if route in CHAT_ROUTES:
        return "chat"
    if route in RESPONSES_ROUTES:
        return "responses"
    return None


class FrontError(ShuntError):
    """An error on the OpenAI front door that is not about one field: OpenAI's envelope with ``code``."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code

    def body(self) -> bytes:
        return openai_error_body(self.status, self.message, None, None, self.code)


NO_API_KEY_ACCOUNT = ("shunt has no account that may serve OpenAI-dialect requests: traffic shunt translates "
                      "goes only to API-key accounts (an Anthropic api_key account, `shunt add-account NAME "
                      "--api-key`, or an OpenAI-compatible one, `shunt add-account NAME --openai`), never to "
                      "subscription (OAuth) accounts")
RESPONSES_NEED_API_KEY = ("the Responses API needs an Anthropic api_key account (shunt translates it to the "
                          "Messages API; it does not pass it through to openai accounts)")


class Selection(NamedTuple):
    """The accounts that may serve one request: ``found`` the candidates (:class:`~shunt_lib.model_map.Candidate`:
    name, the model id it is sent (``[models]`` may rewrite it), whether it is a configured fallback), in
    order; ``kinds`` the account kinds among them."""

    found: tuple[Candidate, ...]
    kinds: frozenset[str]

    @property
    def targets(self) -> dict[str, str]:
        """Each account's name → the model id it is sent (its first candidate), in order."""
        out: dict[str, str] = {}
        for c in self.found:
            out.setdefault(c.account, c.upstream_model)
        return out


def select(api: str, model: str, accounts: Sequence[AccountConfig], model_map: ModelMap) -> Selection:
    """The accounts that may serve an ``api`` request for ``model`` (pure).

    :raises FrontError: 400 when no account of a kind ``api`` may use is configured (saying that
        translated traffic goes only to API-key accounts), 400 for the Responses API when only
        ``openai`` accounts take ``model``, 404 ``model_not_found`` when such accounts exist but none takes ``model``.
    """
    kinds = API_KINDS[api]
    usable = [a for a in accounts if a.kind in kinds]
    if not usable:
        if api == "responses" and any(a.kind == "openai" for a in accounts):
            raise FrontError(400, RESPONSES_NEED_API_KEY, "no_api_key_account")
        raise FrontError(400, NO_API_KEY_ACCOUNT, "no_api_key_account")
    by_name = {a.name: a for a in accounts}
    found = candidates(model, accounts, model_map, dialect="openai")
    usable_found = tuple(c for c in found if by_name[c.account].kind in kinds)
    if not usable_found and api == "responses" and found:
        raise FrontError(400, RESPONSES_NEED_API_KEY + f"; the model {model!r} is served by openai accounts only",
                         "no_api_key_account")
    if not usable_found:
        raise FrontError(404, f"no API-key account of this shunt serves the model {model!r} (see the `models` "
                              "of its openai accounts and the [models] table)", "model_not_found")
    return Selection(usable_found, frozenset(by_name[c.account].kind for c in usable_found))


def _json_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidOpenAIRequest("the request body is not valid JSON", None) from None
    if not isinstance(body, dict):
        raise InvalidOpenAIRequest("the request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidOpenAIRequest("model is required", "model")
    return body


class OpenAIDialect:
    """The dialect of one OpenAI-dialect request (see :class:`~shunt_lib.dialect.Dialect`): made by
    :func:`prepare` once the request was read, so its model has picked the accounts.

    ``account_kinds`` the kinds among them; ``excluded_accounts`` every other configured account;
    ``route`` the :class:`~shunt_lib.model_routing.RoutePlan` (primaries, then the configured fallbacks,
    as on the Anthropic door); ``ping`` an SSE comment (OpenAI clients skip comments); :meth:`error_body`
    OpenAI's envelope.
    """

    name = "openai"
    ping = KEEPALIVE

    def __init__(self, api: str, body: dict, selection: Selection, all_accounts: Iterable[str],
                 translated: tuple[dict, list[str]] | None, now_s: float):
        self.api, self.model = api, body["model"]
        self.route = route_plan(body, self.model, selection.found)
        self.account_kinds = selection.kinds
        self.excluded_accounts = frozenset(n for n in all_accounts if n not in self.route.routes)
        self.translated = translated
        self.include_usage = from_chat.include_usage(body)
        self.stream = body.get("stream") is True
        self.created_s = int(now_s)

    def plan(self, request: ProxyRequest, accounts: Sequence[AccountConfig], model_map: ModelMap) -> RoutePlan:
        """The plan :func:`prepare` made (its arguments are those of :meth:`~shunt_lib.dialect.Dialect.plan`)."""
        return self.route

    def for_request(self, request: ProxyRequest, accounts: Sequence[AccountConfig], model_map: ModelMap) -> "OpenAIDialect":
        """The dialect of ``request`` (this one's body with another model: the fallback override), made
        as :func:`prepare` makes it. :raises ShuntError: no account may serve it."""
        return prepare(self.api, request, accounts, model_map, self.created_s)

    def exchange(self, request: ProxyRequest, account: AccountConfig, secret: str,
                 routed: Routed | None = None) -> Exchange:
        routed = routed or self.route.routes[account.name]
        upstream_model, extra = routed.upstream_model, routed.headers
        if account.kind == "openai":
            return passthrough(request, account.base_url, secret, upstream_model, self.model, self.stream,
                               extra=extra)
        assert self.translated is not None  # an api_key account is a target only once the request translated
        body, degraded = self.translated
        if upstream_model != body["model"]:
            body = dict(body, model=upstream_model)
        return ToAnthropic(anthropic_request(request, body, secret), api=self.api, model=self.model,
                           degraded=degraded, include_usage=self.include_usage, created_s=self.created_s,
                           stream_id="chatcmpl-" + secrets.token_hex(12), extra=extra)

    def error_body(self, err: ShuntError) -> bytes:
        return front_error_body(err)


def prepare(api: str, request: ProxyRequest, accounts: Sequence[AccountConfig], model_map: ModelMap,
            now_s: float) -> OpenAIDialect:
    """Read an OpenAI-dialect request and decide who may serve it (no I/O).

    The body is translated once for Anthropic ``api_key`` accounts (:func:`shunt_lib.from_chat.messages_request`
    or :func:`shunt_lib.responses_api.messages_request`). A request that cannot be translated but may
    also go to an ``openai`` account is left to those; otherwise its 400 stands.

    :raises InvalidOpenAIRequest: bad JSON, no ``model``, or a field that cannot be translated.
    :raises FrontError: no account may serve it (see :func:`select`).
    """
    body = _json_body(request.body)
    selection = select(api, body["model"], accounts, model_map)
    kinds = {a.name: a.kind for a in accounts}
    translated = None
    if "api_key" in selection.kinds:
        translate = from_chat.messages_request if api == "chat" else responses_api.messages_request
        try:
            translated = translate(body)
        except InvalidOpenAIRequest:
            if "openai" not in selection.kinds:
                raise
            selection = Selection(tuple(c for c in selection.found if kinds[c.account] == "openai"),
                                  frozenset({"openai"}))
    return OpenAIDialect(api, body, selection, list(kinds), translated, now_s)


def front_error_body(err: ShuntError) -> bytes:
    """Any :class:`ShuntError` in OpenAI's envelope (the door's answer before the relay takes over)."""
    if isinstance(err, (InvalidOpenAIRequest, FrontError)):
        return err.body()
    type_, code = TYPE_FROM_ANTHROPIC.get(err.error_type, (None, None))
    return openai_error_body(err.status, err.message, type_, None, code)


def has_openai_accounts(accounts: Iterable[AccountConfig]) -> bool:
    """Whether any ``openai`` account is configured."""
    return any(a.kind == "openai" for a in accounts)

