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
import logging
import secrets
from typing import Iterable, NamedTuple, Sequence

from . import from_chat, responses_api
from .chat_stream import KEEPALIVE
from .config import AccountConfig
from .dialect import Exchange, ProxyRequest
from .errors import InvalidOpenAIRequest, ShuntError
from .model_map import ModelMap, candidates
from .openai_errors import TYPE_FROM_ANTHROPIC, openai_error_body
from .openai_exchange import ToAnthropic, anthropic_request, passthrough

log = logging.getLogger("shunt.relay")

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
    """The accounts that may serve one request: ``targets`` maps each name to the model id it is sent
    (``[models]`` may rewrite it), in candidate order; ``kinds`` the account kinds among them."""

    targets: dict[str, str]
    kinds: frozenset[str]


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
    targets = {c.account: c.upstream_model for c in found if by_name[c.account].kind in kinds}
    if not targets and api == "responses" and found:
        raise FrontError(400, RESPONSES_NEED_API_KEY + f"; the model {model!r} is served by openai accounts only",
                         "no_api_key_account")
    if not targets:
        raise FrontError(404, f"no API-key account of this shunt serves the model {model!r} (see the `models` "
                              "of its openai accounts and the [models] table)", "model_not_found")
    return Selection(targets, frozenset(by_name[n].kind for n in targets))


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
    ``ping`` an SSE comment (OpenAI clients skip comments); :meth:`error_body` OpenAI's envelope.
    """

    name = "openai"
    ping = KEEPALIVE

    def __init__(self, api: str, body: dict, selection: Selection, all_accounts: Iterable[str],
                 translated: tuple[dict, list[str]] | None, now_s: float):
        self.api, self.model = api, body["model"]
        self.targets = selection.targets
        self.account_kinds = selection.kinds
        self.excluded_accounts = frozenset(n for n in all_accounts if n not in selection.targets)
        self.translated = translated
        self.include_usage = from_chat.include_usage(body)
        self.stream = body.get("stream") is True
        self.created_s = int(now_s)

    def exchange(self, request: ProxyRequest, account: AccountConfig, secret: str) -> Exchange:
        upstream_model = self.targets.get(account.name, self.model)
        if upstream_model != self.model:
            log.info("model %s sent to %s as %s ([models])", self.model, account.name, upstream_model)
        if account.kind == "openai":
            return passthrough(request, account.base_url, secret, upstream_model, self.model, self.stream)
        assert self.translated is not None  # an api_key account is a target only once the request translated
        body, degraded = self.translated
        if upstream_model != body["model"]:
            body = dict(body, model=upstream_model)
        return ToAnthropic(anthropic_request(request, body, secret), api=self.api, model=self.model,
                           degraded=degraded, include_usage=self.include_usage, created_s=self.created_s,
                           stream_id="chatcmpl-" + secrets.token_hex(12))

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
            targets = {n: m for n, m in selection.targets.items() if kinds[n] == "openai"}
            selection = Selection(targets, frozenset({"openai"}))
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

