"""Who a request is, and whether it may go on: the gateway's authentication, a pure decision.

:func:`decide` takes the credential a request offers (:func:`credential`: ``x-api-key``, else
``Authorization: Bearer``), whether its peer address is loopback (:func:`is_loopback_peer`, a seam
the tests replace), ``[gateway] require_token``, the admin key and the client-token check
(:meth:`~shunt_lib.token_index.ClientTokens.check`):

* the admin key (compared in constant time) → :data:`~shunt_lib.clients.ADMIN`, every path;
* a credential shaped like a client token (``shunt_...``) must be a live one, whatever the mode →
  ``Client(label, id, record)``, the API paths only (a control path is 403 ``permission_error``);
  a malformed, unknown, expired or revoked one is refused (401 ``authentication_error``);
* anything else (none, or another key such as a placeholder a local tool sends) is tokenless: allowed
  as :data:`~shunt_lib.clients.LOCAL` under ``never``, and under ``remote`` from a loopback peer;
  then the control paths too, but only from loopback. Otherwise refused: ``missing`` when nothing was
  sent, ``not a client token`` when something else was.

A refusal names which of these it was and never echoes what was sent; :func:`refusal` shapes it for
the endpoint's dialect (Anthropic's envelope, or OpenAI's for the OpenAI routes).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from typing import Callable, Mapping, NamedTuple

from .clients import ADMIN, LOCAL, Client, TokenRecord
from .errors import PermissionDenied, Unauthorized
from .openai_errors import openai_error_body
from .token_format import looks_like_token
from .token_index import EXPIRED, MALFORMED, REVOKED, UNKNOWN

MISSING = "missing"
NOT_A_TOKEN = "not_a_token"

#: reason → the 401's message (what the client is told; never the credential itself).
MESSAGES = {
    MISSING: "no client token: send a shunt client token (or the admin key) as x-api-key or Authorization: Bearer",
    NOT_A_TOKEN: "the key sent is neither a shunt client token (shunt_...) nor the admin key",
    MALFORMED: "the client token sent is malformed (a token is shunt_ + 12 hex characters + _ + 43 characters)",
    UNKNOWN: "unknown client token: no live token has that id and secret (see `shunt token list`)",
    EXPIRED: "the client token has expired; ask for a new one (`shunt token create`)",
    REVOKED: "the client token has been revoked",
}
#: reason → the words of the server's warning line (``refused POST /v1/messages from ADDR: ...``).
LOG_WORDS = {
    MISSING: "no shunt key",
    NOT_A_TOKEN: "a wrong shunt key",
    MALFORMED: "a malformed client token",
    UNKNOWN: "an unknown client token",
    EXPIRED: "an expired client token",
    REVOKED: "a revoked client token",
}


class Decision(NamedTuple):
    """``client`` who it is (None: refused, ``reason`` says why: a key of :data:`MESSAGES`);
    ``control``: whether it may use the control API; ``token_id``: the id of the token offered, when
    one was well-formed (for the log line; public)."""

    client: Client | None
    control: bool = False
    reason: str | None = None
    token_id: str | None = None


def credential(headers: Mapping[str, str]) -> str:
    """What the request offers: ``x-api-key``, else the ``Authorization: Bearer`` value; "" for none."""
    given = headers.get("x-api-key") or ""
    if not given:
        auth = headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
    return given


@functools.lru_cache(maxsize=1024)
def is_loopback_peer(address: str) -> bool:
    """Whether a peer address is loopback (127.0.0.0/8, ``::1``, an IPv4-mapped loopback)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def decide(given: str, loopback: bool, require_token: str, admin_key: str,
           check: Callable[[str, float], TokenRecord | str], now_s: float) -> Decision:
    """The gateway's decision for one request (see the module docstring)."""
    if given and admin_key and hmac.compare_digest(given.encode(), admin_key.encode()):
        return Decision(ADMIN, control=True)
    if given and looks_like_token(given):
        result = check(given, now_s)
        token_id = given[6:18] if result != MALFORMED else None
        if isinstance(result, str):
            return Decision(None, reason=result, token_id=token_id)
        return Decision(Client(result.label, result.id, result), token_id=result.id)
    if require_token == "never" or (require_token == "remote" and loopback):
        return Decision(LOCAL, control=loopback)
    return Decision(None, reason=NOT_A_TOKEN if given else MISSING)


class OpenAIUnauthorized(Unauthorized):
    """A 401 in OpenAI's envelope (``authentication_error``, code ``invalid_api_key``), for the OpenAI routes."""

    def body(self) -> bytes:
        return openai_error_body(self.status, self.message, "authentication_error", None, "invalid_api_key")


def refusal(reason: str, *, openai: bool) -> Unauthorized:
    """The 401 for a refused request, in the endpoint's dialect."""
    return (OpenAIUnauthorized if openai else Unauthorized)(MESSAGES[reason])


def control_refused() -> PermissionDenied:
    """The 403 for a client token on a control path."""
    return PermissionDenied("a client token cannot use shunt's control API; it needs the admin key "
                            "(or a request from this machine without a token)")
