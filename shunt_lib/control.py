"""The control API on shunt's port: ``GET /health``, ``GET /status``, ``POST /use``, ``POST /reset``,
``POST /reload``.

Each endpoint is a function of the server and the request body that returns the JSON body of its 200
answer, or raises a :class:`~shunt_lib.errors.ShuntError`. :func:`answer` picks the endpoint: ``HEAD``
is answered as ``GET`` (the handler leaves the body out), a known path with another method is a 405
with ``allow`` (RFC 9110 §15.5.6), and a ``POST`` must be ``application/json``
(:func:`~shunt_lib.guard.require_json`).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Callable, Mapping

from .errors import BadRequest, ConfigError, MethodNotAllowed, NotFound
from .guard import require_json

if TYPE_CHECKING:
    from .serving import ControlServer

log = logging.getLogger("shunt.server")


def health(server: "ControlServer", body: bytes) -> bytes:
    """``{"status":"ok"}``: shunt is up (needs no key and is exempt from the Host check)."""
    return b'{"status":"ok"}'


def status(server: "ControlServer", body: bytes) -> bytes:
    """The ``/status`` document (:meth:`~shunt_lib.serving.ControlServer.status`)."""
    return json.dumps(server.status()).encode()


def use(server: "ControlServer", body: bytes) -> bytes:
    """Pin every request to one account (``{"account": NAME}``) or route again (``"auto"``)."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: arrays nested deeper than the interpreter's stack
        raise BadRequest("body must be JSON: {\"account\": NAME | \"auto\"}") from None
    name = data.get("account") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("body must be {\"account\": NAME | \"auto\"}")
    pool = server.pool
    try:
        pool.set_pin(None if name == "auto" else name)
    except KeyError:
        raise BadRequest(f"unknown account {name!r}; known: {', '.join(pool.names()) or 'none'}") from None
    log.info("routing %s", "automatic" if name == "auto" else f"pinned to {name}")
    return json.dumps({"pinned_account": pool.pinned}).encode()


def reset(server: "ControlServer", body: bytes) -> bytes:
    """``{"account": NAME}`` or ``{"all": true}``: clear exhaustion and cooldowns (``shunt reset``), not
    the flags a human must fix (``reauth_required``, ``disabled``). :returns: ``{"reset": [names cleared]}``."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        data = None
    name = data.get("account") if isinstance(data, dict) else None
    everyone = isinstance(data, dict) and data.get("all") is True
    if everyone == (isinstance(name, str) and bool(name)):
        raise BadRequest("body must be {\"account\": NAME} or {\"all\": true}")
    pool = server.pool
    try:
        cleared = pool.reset(None if everyone else name)
    except KeyError:
        raise BadRequest(f"unknown account {name!r}; known: {', '.join(pool.names()) or 'none'}") from None
    for n in pool.names() if everyone else [name]:
        server.tokens.clear_backoff(n)  # a reset account's token refresh is tried again at once
    return json.dumps({"reset": cleared}).encode()


def reload(server: "ControlServer", body: bytes) -> bytes:
    """Re-read the files now (:meth:`~shunt_lib.serving.ControlServer.reload`)."""
    try:
        change = server.reload()
    except ConfigError as exc:
        raise BadRequest(f"reload failed, nothing changed: {exc}") from None
    return json.dumps(change).encode()


#: (method, path) → the endpoint that answers it.
ROUTES: dict[tuple[str, str], Callable[["ControlServer", bytes], bytes]] = {
    ("GET", "/health"): health,  # also answered before the key check (see Handler._dispatch)
    ("GET", "/status"): status,
    ("POST", "/use"): use,
    ("POST", "/reset"): reset,
    ("POST", "/reload"): reload,
}


def answer(server: "ControlServer", method: str, route: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """The JSON body of the 200 answer to a control request.

    :param headers: lower-case name → value. :param route: the path without the query string.
    :raises NotFound: not a control path. :raises MethodNotAllowed: a control path, another method
        (``allow`` in its headers). :raises UnsupportedMediaType: a ``POST`` that is not JSON.
    :raises BadRequest: the endpoint's own refusals.
    """
    endpoint = ROUTES.get(("GET" if method == "HEAD" else method, route))
    if endpoint is None:
        allowed = ", ".join(m + (", HEAD" if m == "GET" else "") for m, path in ROUTES if path == route)
        if allowed:
            raise MethodNotAllowed(f"{route} answers {allowed}, not {method}", headers={"allow": allowed})
        raise NotFound(f"{method} {route} is not served by shunt; the API lives under /v1/")
    if method == "POST":
        require_json(method, route, headers)
    return endpoint(server, body)
