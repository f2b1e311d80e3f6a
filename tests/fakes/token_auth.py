"""A stand-in for the client-token authentication (issue 11, the token store's part): the handler's
requests get the :class:`~shunt_lib.clients.Client` their ``x-api-key`` (or bearer token) names in a
table, by wrapping the ``ProxyRequest`` the handler builds. For tests of the limits and bindings only.

``python -m tests.fakes.token_auth serve --port 0`` runs ``shunt`` with the table read from the JSON of
``SHUNT_TEST_TOKENS`` (``{"key": {"label", "id", "limits": {...}, "binding": {...}}}``).
"""

from __future__ import annotations

import json
import os
import sys

from shunt_lib import handler
from shunt_lib.clients import LOCAL, Client, TokenBinding, TokenLimits, TokenRecord
from shunt_lib.requests_shape import ProxyRequest


def client(label: str, token_id: str | None = None, *, binding: TokenBinding = TokenBinding(), **limits) -> Client:
    """A client token's :class:`Client` with these limits and binding."""
    token_id = token_id or "id-" + label
    return Client(label, token_id, TokenRecord(token_id, label, 0.0, limits=TokenLimits(**limits), binding=binding))


def install(tokens: dict[str, Client], setattr_=None) -> None:
    """Make the handler's requests carry ``tokens[key]`` for the key they send (LOCAL otherwise)."""

    def make(method, target, headers, body, client_=LOCAL):
        key = headers.by_name.get("x-api-key") or ""
        auth = headers.by_name.get("authorization") or ""
        if not key and auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        return ProxyRequest(method, target, headers, body, tokens.get(key, client_))

    (setattr_ or setattr)(handler, "ProxyRequest", make)


def _from_env() -> dict[str, Client]:
    out = {}
    for key, d in json.loads(os.environ.get("SHUNT_TEST_TOKENS", "{}")).items():
        b = d.get("binding", {})
        out[key] = client(d["label"], d.get("id"), binding=TokenBinding(**{k: tuple(v) for k, v in b.items()}),
                          **d.get("limits", {}))
    return out


if __name__ == "__main__":
    install(_from_env())
    from shunt_lib.cli import main

    sys.exit(main(sys.argv[1:]))
