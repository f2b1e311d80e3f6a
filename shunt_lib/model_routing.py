"""Which accounts may take one request, decided by the model it names (pure, once per request).

A ``POST /v1/messages`` or ``/v1/messages/count_tokens`` names a ``model``; the ``[models]`` table and
each ``openai`` account's ``models`` list decide which accounts take it and under which upstream model
id (:func:`shunt_lib.model_map.candidates`). :func:`plan_request` parses the body once (only when the
answer can differ from "every Anthropic account": an ``openai`` account or a ``[models]`` table is
configured) and gives the relay a :class:`RoutePlan`: the primary accounts, the fallbacks the user
configured (tried only when no primary account can take the request), and each account's
:class:`Routed` (what its exchange needs: the parsed body, the model asked for and the one to send).
"""

from __future__ import annotations

import json
from typing import Iterable, NamedTuple, Sequence

from .config import AccountConfig
from .errors import ShuntError
from .model_map import Candidate, ModelMap, candidates
from .json_body import body_bytes

#: The paths whose body names the model that decides the route.
ROUTED_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
#: Response headers naming the upstream model when ``[models]`` changed it, and a fallback taken.
MODEL_HEADER = "x-shunt-model"
FALLBACK_HEADER = "x-shunt-fallback"


class NoAccountForModel(ShuntError):
    """404 not_found_error: no configured account takes the model the request names."""

    status = 404
    error_type = "not_found_error"


class Routed(NamedTuple):
    """What one account's exchange needs: ``body`` (the client's parsed JSON object; not to be
    modified), ``model`` (as the client asked), ``upstream_model`` (sent to the account; differs when
    ``[models]`` rewrites it), ``is_fallback`` (a configured fallback)."""

    body: dict
    model: str
    upstream_model: str
    is_fallback: bool

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The response headers that show the route: :data:`MODEL_HEADER` when the model was rewritten,
        :data:`FALLBACK_HEADER` when a fallback answers (both name the upstream model)."""
        out = []
        if self.upstream_model != self.model:
            out.append((MODEL_HEADER, self.upstream_model))
        if self.is_fallback:
            out.append((FALLBACK_HEADER, self.upstream_model))
        return out


class RoutePlan(NamedTuple):
    """The accounts that may take a request: ``primary`` names, then ``fallback`` names (tried only
    when no primary account can take it), and each one's :class:`Routed` in ``routes``."""

    model: str
    primary: frozenset[str]
    fallback: frozenset[str]
    routes: dict[str, Routed]

    @property
    def every(self) -> frozenset[str]:
        """Every account the request may go to (for holding: whichever recovers first)."""
        return self.primary | self.fallback


def routing_matters(accounts: Sequence[AccountConfig], model_map: ModelMap) -> bool:
    """Whether a request's model can change where it goes: an ``openai`` account or a ``[models]``
    entry is configured. Without either, every Anthropic account takes every model, so the body is
    not parsed at all (the pass-through path costs what it did)."""
    return bool(model_map.routes) or any(a.kind == "openai" for a in accounts)


def plan_request(method: str, target: str, body: bytes, accounts: Sequence[AccountConfig], model_map: ModelMap,
                 *, dialect: str = "anthropic") -> RoutePlan | None:
    """The :class:`RoutePlan` of one request, or None when its model does not decide the route (not a
    routed path, a body that is not a JSON object with a string ``model``, or :func:`routing_matters`
    is false): then the relay routes as it always did, to Anthropic accounts only.

    :raises NoAccountForModel: no configured account takes the model.
    """
    if method != "POST" or target.split("?", 1)[0] not in ROUTED_PATHS or not routing_matters(accounts, model_map):
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    model = parsed.get("model") if isinstance(parsed, dict) else None
    if not isinstance(model, str) or not model:
        return None
    plan = route_plan(parsed, model, candidates(model, accounts, model_map, dialect=dialect))
    if plan is None:
        raise NoAccountForModel(f"no configured account serves model {model!r}: add it to an account's `models` "
                                f"or to the [models] table in config.toml")
    return plan


def route_plan(body: dict, model: str, found: Iterable[Candidate]) -> RoutePlan | None:
    """The :class:`RoutePlan` of a request (``body`` parsed, naming ``model``) that the candidates
    ``found`` (:func:`shunt_lib.model_map.candidates`, in order) may serve; None when there are none.
    An account named twice (a primary target and a fallback) keeps its first route."""
    primary: set[str] = set()
    fallback: set[str] = set()
    routes: dict[str, Routed] = {}
    for c in found:
        if c.account in routes:
            continue
        routes[c.account] = Routed(body, model, c.upstream_model, c.is_fallback)
        (fallback if c.is_fallback else primary).add(c.account)
    return RoutePlan(model, frozenset(primary), frozenset(fallback), routes) if routes else None


def with_model(body: dict, model: str) -> bytes:
    """``body`` (a parsed request) as JSON bytes with its ``model`` set to ``model`` (the ``[models]``
    rewrite the user configured; the only change made to a pass-through body)."""
    return body_bytes({**body, "model": model})
