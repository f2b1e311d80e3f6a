"""What a client token's request must pass before anything goes upstream: its binding, then its limits.

* Models: a token bound to model globs (:class:`~shunt_lib.clients.TokenBinding` ``models``,
  ``fnmatch`` patterns, case-sensitive) may ask only for a model one of them matches: the body's
  ``model`` (Anthropic or OpenAI), and each ``params.model`` of a message batch. Any other is a 403
  ``permission_error`` naming the model. A body naming no model passes (``GET /v1/models``, ...).
* Accounts: a token bound to accounts and/or account kinds may reach only the accounts named (and of
  the kinds listed). Every other account joins the request's excluded ones (:attr:`RequestState.bound
  <shunt_lib.request_state.RequestState.bound>`), so routing, holding and shunt's own 429 / 503 see
  only the accounts the token may use. A request none of whose possible accounts the token may use is
  a 403 saying so.
* Limits: :meth:`ClientMeter.admit <shunt_lib.client_meter.ClientMeter.admit>` (429 with
  ``retry-after``), last, so a request refused for its binding takes no place under the limits.

Requests without a client token (local, admin) are not looked at.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Iterable, Sequence

from .client_meter import ClientMeter
from .clients import Client, TokenBinding
from .config import AccountConfig
from .errors import PermissionDenied
from .request_state import RequestState


def asked_models(body: bytes) -> list[str]:
    """The models a request body asks for: its top-level ``model``, or each ``params.model`` of a
    message batch's ``requests``; [] if the body is not a JSON object or names none."""
    try:
        doc = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return []
    if not isinstance(doc, dict):
        return []
    out = [doc["model"]] if isinstance(doc.get("model"), str) else []
    requests = doc.get("requests")
    if isinstance(requests, list):
        for r in requests:
            params = r.get("params") if isinstance(r, dict) else None
            if isinstance(params, dict) and isinstance(params.get("model"), str):
                out.append(params["model"])
    return out


def model_allowed(patterns: Iterable[str], model: str) -> bool:
    """Whether ``model`` matches one of ``patterns`` (fnmatch globs, case-sensitive)."""
    return any(fnmatch.fnmatchcase(model, p) for p in patterns)


def check_model(client: Client, body: bytes) -> None:
    """:raises PermissionDenied: the token is bound to models and the body asks for another."""
    binding = client.token.binding if client.token is not None else None
    if binding is None or not binding.models:
        return
    for model in asked_models(body):
        if not model_allowed(binding.models, model):
            raise PermissionDenied(f"client token {client.name} may not use model {model!r} "
                                   f"(it may use: {', '.join(binding.models)})")


def bound_accounts(binding: TokenBinding, accounts: Sequence[AccountConfig]) -> frozenset[str] | None:
    """The names of ``accounts`` a token with ``binding`` may reach, or None: any."""
    if not binding.accounts and not binding.kinds:
        return None
    return frozenset(a.name for a in accounts if (not binding.accounts or a.name in binding.accounts)
                     and (not binding.kinds or a.kind in binding.kinds))


def _binding_text(binding: TokenBinding) -> str:
    parts = []
    if binding.accounts:
        parts.append("accounts " + ", ".join(binding.accounts))
    if binding.kinds:
        parts.append("account kinds " + ", ".join(binding.kinds))
    return " and ".join(parts)


def admit(meter: ClientMeter, st: RequestState, accounts: Sequence[AccountConfig]) -> None:
    """Bind ``st`` to the accounts its client token may use, then admit it under the token's limits
    (``st.ticket``); a request without a client token passes untouched.

    :raises PermissionDenied: the binding leaves no account able to serve the request.
    :raises ClientLimited: over one of the token's limits.
    """
    client = st.request.client
    if client.token is None:
        return
    binding = client.token.binding
    bound = bound_accounts(binding, accounts)
    if bound is not None:
        possible = [a for a in accounts if a.name in bound and a.name not in st.dialect.excluded_accounts
                    and (st.kinds is None or a.kind in st.kinds) and (st.plan is None or a.name in st.plan.every)]
        if not possible:
            raise PermissionDenied(f"client token {client.name} may use only {_binding_text(binding)}, "
                                   "and none of them can serve this request")
        st.bound = bound
    st.ticket = meter.admit(client)
