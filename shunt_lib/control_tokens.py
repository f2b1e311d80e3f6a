"""The client tokens' control API, behind the admin key (or a tokenless request from loopback):

* ``POST /admin/tokens`` with the fields of :mod:`shunt_lib.token_input` (``{"label": "ci", "ttl": "30d",
  "rpm": 60, "models": ["claude-sonnet-*"]}``): creates a token and answers it once, ``{"token":
  "shunt_...", "id", "label", ...}``;
* ``GET /admin/tokens``: ``{"tokens": [...]}``, every token without its secret (:func:`~shunt_lib.token_store.record_doc`)
  with its ``usage`` (:meth:`~shunt_lib.token_usage.TokenUsage.as_dict`; None before its first request since shunt started);
* ``DELETE /admin/tokens/ID``: revokes it, ``{"revoked": {...}}``;
* ``POST /admin/tokens/ID/rotate``: a new secret for the same id, answered once; the old one stops at once.

Each writes ``tokens.db`` through its own connection, then reloads the server's index, so the answer
holds for the next request (other processes see it within a second, by ``PRAGMA data_version``); in a
cluster the server's ``token_mirror`` then shares the change (:mod:`shunt_lib.cluster_tokens`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING

from .errors import BadRequest, MethodNotAllowed, NotFound
from .token_format import valid_id
from .token_input import spec_from_fields
from .token_store import TokenError, TokenStore, UnknownToken, record_doc

if TYPE_CHECKING:
    from .serving import ControlServer

log = logging.getLogger("shunt.server")
PREFIX = "/admin/tokens"


def is_tokens_path(route: str) -> bool:
    """Whether ``route`` is one of this module's paths."""
    return route == PREFIX or route.startswith(PREFIX + "/")


def _json(body: bytes) -> dict:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise BadRequest('body must be a JSON object: {"label": "...", "ttl": "30d", "rpm": 60, ...}')
    return data


def answer(server: "ControlServer", method: str, route: str, body: bytes) -> bytes:
    """The JSON body of the 200 answer. :raises NotFound: an unknown id or path.
    :raises MethodNotAllowed: / :raises BadRequest: bad input, a duplicate label, a revoked token."""
    parts = route[len(PREFIX):].strip("/").split("/") if route != PREFIX else []
    now = server.clock.time()
    path = server.paths.tokens_db
    if not parts:
        if method in ("GET", "HEAD"):
            if not os.path.exists(path):
                return b'{"tokens": []}'
            server.client_tokens.flush_used()
            with TokenStore(path) as store:
                used = server.meter.usage(now)  # today, this month, the last minute, in flight
                return json.dumps({"tokens": [dict(record_doc(r, now), usage=used[r.id].as_dict() if r.id in used else None)
                                              for r in store.list()]}).encode()
        if method != "POST":
            raise MethodNotAllowed(f"{PREFIX} answers GET, HEAD, POST, not {method}", headers={"allow": "GET, HEAD, POST"})
        try:
            spec = spec_from_fields(_json(body))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        with TokenStore(path, mirror=server.token_mirror) as store:
            try:
                record, token = store.create(spec, now)
            except TokenError as exc:
                raise BadRequest(str(exc)) from None
        server.client_tokens.refresh()
        log.info("client token %s (%s) created", record.id, record.label)
        return json.dumps({"token": token, **record_doc(record, now)}).encode()
    token_id = parts[0]
    if not valid_id(token_id) or len(parts) > 2 or (len(parts) == 2 and parts[1] != "rotate"):
        raise NotFound(f"{method} {route} is not served by shunt; see {PREFIX}")
    if not os.path.exists(path):
        raise NotFound(f"no client token has the id {token_id!r}")
    with TokenStore(path, mirror=server.token_mirror) as store:
        try:
            if len(parts) == 2:
                if method != "POST":
                    raise MethodNotAllowed(f"{route} answers POST, not {method}", headers={"allow": "POST"})
                record, token = store.rotate(token_id, now)
                result = {"token": token, **record_doc(record, now)}
                done = "rotated"
            else:
                if method != "DELETE":
                    raise MethodNotAllowed(f"{route} answers DELETE, not {method}", headers={"allow": "DELETE"})
                record = store.revoke(token_id, now)
                result = {"revoked": record_doc(record, now)}
                done = "revoked"
        except UnknownToken as exc:
            raise NotFound(str(exc)) from None
        except TokenError as exc:
            raise BadRequest(str(exc)) from None
    server.client_tokens.refresh()
    log.info("client token %s (%s) %s", record.id, record.label, done)
    return json.dumps(result).encode()
