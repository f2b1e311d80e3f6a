"""The ``[models]`` table of ``config.toml``: which accounts may take a request for a model, under
which upstream model id, and the fallbacks the user configured (pure).

Shape (keys are exact model ids or fnmatch patterns; a target is ``ACCOUNT`` or ``ACCOUNT:MODEL``)::

    [models]
    "claude-sonnet-*" = "openrouter:anthropic/claude-sonnet-4.5"   # one target
    "fast" = "local:qwen3-coder:30b"                                # an alias (the model may contain ':')

    [models."claude-opus-*"]
    to = ["work", "ci"]                                   # optional: a target or a list; absent = as without [models]
    fallback = ["openrouter:anthropic/claude-opus-4.1"]   # optional: tried, in order, after every `to` target

``ACCOUNT:MODEL`` sends the request to ``ACCOUNT`` with its model rewritten to ``MODEL`` (the user's
own configuration; the relay logs and shows it); ``ACCOUNT`` alone keeps the request's model. The
first key that equals the model wins, else the first pattern that matches it, in file order.
Without a matching key, an ``openai`` account takes the models its ``models`` list matches, and an
Anthropic account (``oauth``/``api_key``) takes ``claude*`` models and every model no ``openai``
account takes (as before there were other kinds). Subscription (``oauth``) accounts only ever take
Anthropic-dialect traffic: for a request translated from the OpenAI dialect they are left out.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Iterable, NamedTuple, Protocol, Sequence

from .errors import ConfigError

MAX_TARGETS = 32


class Target(NamedTuple):
    """One destination: ``account`` (a configured name) and ``model`` (the upstream model id, or ""
    to keep the request's)."""

    account: str
    model: str = ""


@dataclasses.dataclass(frozen=True)
class Route:
    """One ``[models]`` entry: ``to`` (empty: the accounts that would take the model without the entry)
    and ``fallback`` (tried after ``to``, in order)."""

    to: tuple[Target, ...] = ()
    fallback: tuple[Target, ...] = ()


@dataclasses.dataclass(frozen=True)
class ModelMap:
    """The whole ``[models]`` table: ``routes`` as ``(key, Route)`` pairs in file order."""

    routes: tuple[tuple[str, Route], ...] = ()

    def route_for(self, model: str) -> Route | None:
        """The entry for ``model``: the key equal to it, else the first pattern matching it (case-sensitive), else None."""
        for key, route in self.routes:
            if key == model:
                return route
        for key, route in self.routes:
            if fnmatch.fnmatchcase(model, key):
                return route
        return None


class Candidate(NamedTuple):
    """An account that may take a request: ``account`` (name), ``upstream_model`` (the model id sent to
    it) and ``is_fallback`` (a configured fallback, used only once every other candidate is out)."""

    account: str
    upstream_model: str
    is_fallback: bool = False


class _Account(Protocol):
    name: str
    kind: str
    models: tuple[str, ...]


def parse_target(text: Any) -> Target:
    """``"ACCOUNT"`` or ``"ACCOUNT:MODEL"`` (split at the first ``:``). :raises ValueError: if malformed."""
    if not isinstance(text, str) or not text:
        raise ValueError('a target is a string "ACCOUNT" or "ACCOUNT:MODEL"')
    account, sep, model = text.partition(":")
    if not account or (sep and not model) or any(c.isspace() for c in text) or len(text) > 300:
        raise ValueError(f'{text!r} is not "ACCOUNT" or "ACCOUNT:MODEL" (no spaces)')
    return Target(account, model)


def _targets(v: Any, where: str, names: set[str]) -> tuple[Target, ...]:
    items = v if isinstance(v, list) else [v]
    if not items or len(items) > MAX_TARGETS:
        raise ConfigError(f"config.toml: {where} must name 1-{MAX_TARGETS} targets")
    out = []
    for item in items:
        try:
            t = parse_target(item)
        except ValueError as exc:
            raise ConfigError(f"config.toml: {where}: {exc}") from None
        if t.account not in names:
            raise ConfigError(f"config.toml: {where} names account {t.account!r}, which is not in [[accounts]]")
        out.append(t)
    return tuple(out)


def parse_models(raw: Any, account_names: Iterable[str]) -> ModelMap:
    """Validate the ``[models]`` table against the configured account names.

    :raises ConfigError: naming ``models."KEY"``: not a table, an empty or over-long key, an unknown
        key in an entry, a malformed target, or a target naming an account that is not configured.
    """
    if not isinstance(raw, dict):
        raise ConfigError('config.toml: [models] must be a table of "model-or-pattern" = "ACCOUNT[:MODEL]"')
    names = set(account_names)
    routes = []
    for key, v in raw.items():
        where = f"models.{key!r}"
        if not key or len(key) > 200:
            raise ConfigError(f"config.toml: {where}: the model id or pattern must be 1-200 characters")
        if isinstance(v, dict):
            for k in v:
                if k not in ("to", "fallback"):
                    raise ConfigError(f"config.toml: unknown key {where}.{k} (known: to, fallback)")
            if not v:
                raise ConfigError(f"config.toml: {where} needs `to` or `fallback`")
            to = _targets(v["to"], f"{where}.to", names) if "to" in v else ()
            if "fallback" in v and not isinstance(v["fallback"], list):
                raise ConfigError(f"config.toml: {where}.fallback must be a list of targets")
            fallback = _targets(v["fallback"], f"{where}.fallback", names) if "fallback" in v else ()
            routes.append((key, Route(to, fallback)))
        else:
            routes.append((key, Route(_targets(v, where, names))))
    return ModelMap(tuple(routes))


def takes(account: _Account, model: str, accounts: Sequence[_Account]) -> bool:
    """Whether ``account`` takes ``model`` when no ``[models]`` entry matches (see the module docstring)."""
    if account.kind == "openai":
        return any(fnmatch.fnmatchcase(model, p) for p in account.models)
    if model.startswith("claude"):
        return True
    return not any(a.kind == "openai" and takes(a, model, accounts) for a in accounts)


def candidates(model: str, accounts: Sequence[_Account], model_map: ModelMap, *,
               dialect: str = "anthropic") -> list[Candidate]:
    """The accounts that may take a request for ``model``, in order: the primary ones (as config
    lists them, or as the entry's ``to`` does), then the entry's fallbacks, each once.

    :param accounts: the configured accounts (``name``, ``kind``, ``models``), in config order.
    :param dialect: ``anthropic`` (sent unchanged) or ``openai`` (translated: ``oauth`` accounts are
        left out, as subscription accounts serve only what Anthropic clients send).
    :returns: a list of :class:`Candidate`; empty when no account may take it.
    """
    by_name = {a.name: a for a in accounts}
    route = model_map.route_for(model)
    primary = route.to if route and route.to else tuple(Target(a.name) for a in accounts if takes(a, model, accounts))
    out: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    for targets, is_fallback in ((primary, False), (route.fallback if route else (), True)):
        for t in targets:
            acct = by_name.get(t.account)
            if acct is None or (dialect == "openai" and acct.kind == "oauth"):
                continue
            key = (t.account, t.model or model)
            if key not in seen:
                seen.add(key)
                out.append(Candidate(t.account, t.model or model, is_fallback))
    return out
