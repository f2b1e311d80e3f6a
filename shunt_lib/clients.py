"""Who sent a request: a client token's holder, the admin key's holder, or the user's own machine.

Every request carries one :class:`Client` from the moment it is authenticated (the handler) to its
record (the access line, ``/status``, the usage history, ``/metrics``). ``name`` is what people see:
a client token's label, :data:`LOCAL` for a tokenless request from a loopback address, :data:`ADMIN`
for one made with the admin key. ``token_id`` is set only for a client token; limits, budgets,
bindings and per-token overrides hang on it.
"""

from __future__ import annotations

from typing import NamedTuple


class TokenLimits(NamedTuple):
    """A client token's limits; None: unlimited. ``rpm`` requests and ``tpm`` tokens (input + output +
    cache writes) per minute, ``daily_tokens`` per UTC day, ``monthly_usd`` API-equivalent dollars per
    UTC calendar month, ``max_concurrent`` requests in flight at once."""

    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    monthly_usd: float | None = None
    max_concurrent: int | None = None


class TokenBinding(NamedTuple):
    """What a client token may reach; empty: no restriction. ``accounts`` names, ``kinds`` account
    kinds (``oauth``, ``api_key``, ``openai``), ``models`` fnmatch patterns of the model asked for."""

    accounts: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    models: tuple[str, ...] = ()


class TokenRecord(NamedTuple):
    """A client token as stored (never its secret): ``id`` (public, in the token itself), ``label``,
    epoch seconds ``created_s``, ``expires_s`` (None: never), ``revoked_s`` (None: live),
    ``last_used_s`` (None: never), its :class:`TokenLimits` and :class:`TokenBinding`."""

    id: str
    label: str
    created_s: float
    expires_s: float | None = None
    revoked_s: float | None = None
    last_used_s: float | None = None
    limits: TokenLimits = TokenLimits()
    binding: TokenBinding = TokenBinding()


class Client(NamedTuple):
    """``name``: the label shown (a token's label, ``local`` or ``admin``); ``token_id``: the client
    token's id, or None when the request used no token; ``token``: its record (limits, binding)."""

    name: str
    token_id: str | None = None
    token: TokenRecord | None = None


#: A request with no token from the user's own machine (``[gateway] require_token = "remote"``).
LOCAL = Client("local")
#: A request made with the admin key.
ADMIN = Client("admin")
