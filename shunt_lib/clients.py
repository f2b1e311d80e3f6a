"""Who sent a request: a client token's holder, the admin key's holder, or the user's own machine.

Every request carries one :class:`Client` from the moment it is authenticated (the handler) to its
record (the access line, ``/status``, the usage history, ``/metrics``). ``name`` is what people see:
a client token's label, :data:`LOCAL` for a tokenless request from a loopback address, :data:`ADMIN`
for one made with the admin key. ``token_id`` is set only for a client token; limits, budgets,
bindings and per-token overrides hang on it.
"""

from __future__ import annotations

from typing import NamedTuple


class Client(NamedTuple):
    """``name``: the label shown (a token's label, ``local`` or ``admin``); ``token_id``: the client
    token's id, or None when the request used no token."""

    name: str
    token_id: str | None = None


#: A request with no token from the user's own machine (``[gateway] require_token = "remote"``).
LOCAL = Client("local")
#: A request made with the admin key.
ADMIN = Client("admin")
