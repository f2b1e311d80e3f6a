"""The control API on shunt's port: ``GET /health``, ``GET /status``, ``POST /use``, ``POST /reset``,
``POST /reload``, ``POST /strategy``, ``POST /alerts``, ``POST /alerts/test``, ``GET``/``POST /overrides``, ``GET /history``,
``GET /recent``, ``GET /metrics``, and ``/admin/tokens`` (:mod:`shunt_lib.control_tokens`).

Each endpoint is a function of the server and the request body that returns the JSON body of its 200
answer (or an :class:`Answer`: a body of another content type), or raises a
:class:`~shunt_lib.errors.ShuntError`. :func:`answer` picks the endpoint: ``HEAD`` is answered as
``GET`` (the handler leaves the body out), a known path with another method is a 405 with ``allow``
(RFC 9110 §15.5.6), and a ``POST`` must be ``application/json`` (:func:`~shunt_lib.guard.require_json`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import urllib.parse
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple

from . import control_tokens
from .alert_rules import trial_alert
from .config import STRATEGIES
from .config_edit import set_server_value
from .errors import BadRequest, ConfigError, MethodNotAllowed, NotFound
from .guard import require_json
from .history import db_path
from .history_query import buckets
from .metrics_text import CONTENT_TYPE as METRICS_CONTENT_TYPE, render as render_metrics

if TYPE_CHECKING:
    from .serving import ControlServer

log = logging.getLogger("shunt.server")


class Answer(NamedTuple):
    """A 200 answer that is not JSON: its ``body`` and its ``content_type``."""

    body: bytes
    content_type: str


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


def _json_object(body: bytes, shape: str) -> dict:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise BadRequest(f"body must be JSON: {shape}")
    return data


def strategy(server: "ControlServer", body: bytes) -> bytes:
    """``{"strategy": NAME}``: route with another strategy from now on, saved as ``[server] strategy`` in
    ``config.toml`` so that a reload or restart keeps it. :returns: ``{"strategy": NAME}``.
    :raises BadRequest: an unknown strategy, or config.toml cannot be written (nothing changed then)."""
    shape = "{\"strategy\": " + " | ".join(f'\"{s}\"' for s in STRATEGIES) + "}"
    name = _json_object(body, shape).get("strategy")
    if name not in STRATEGIES:
        raise BadRequest(f"body must be {shape}")
    try:
        set_server_value(server.paths, "strategy", name)
    except (OSError, ConfigError) as exc:
        raise BadRequest(f"cannot save the strategy in config.toml, nothing changed: {exc}") from None
    server.pool.set_strategy(name)
    log.info("routing strategy set to %s", name)
    return json.dumps({"strategy": name}).encode()


def alerts(server: "ControlServer", body: bytes) -> bytes:
    """``{"muted": true|false}``: mute or unmute alerts (kept across restarts, see
    :mod:`shunt_lib.alert_mute`). :returns: ``{"muted": bool}``."""
    muted = _json_object(body, '{"muted": true | false}').get("muted")
    if not isinstance(muted, bool):
        raise BadRequest('body must be {"muted": true | false}')
    try:
        server.mute.set(muted, server.clock.time())
    except OSError as exc:
        raise BadRequest(f"cannot save the mute in {server.mute.path}: {exc}") from None
    log.info("alerts %s", "muted" if muted else "unmuted")
    return json.dumps({"muted": muted}).encode()


def overrides_get(server: "ControlServer", body: bytes) -> bytes:
    """``GET /overrides``: ``{"global": {field: value}, "tokens": {id: {field: value}}}`` (only what is set)."""
    return json.dumps(server.overrides.doc()).encode()


def overrides_set(server: "ControlServer", body: bytes) -> bytes:
    """``POST /overrides`` ``{"model"?, "fallback"?, "effort"?, "token"?}``: set the fields given (null
    or ``"clear"``: clear; ``fallback`` ``"off"``: none), globally or for the client token ``token``;
    kept in ``overrides.json`` (see :mod:`shunt_lib.overrides`). :returns: the ``GET /overrides`` document."""
    data = _json_object(body, '{"model"?, "fallback"?, "effort"?, "token"?}')
    fields = {k: v for k, v in data.items() if k != "token"}
    if not fields:
        raise BadRequest('body must name an override: {"model" | "fallback" | "effort": VALUE | null, "token"?: ID}')
    try:
        doc = server.overrides.set(fields, data.get("token"))
    except OSError as exc:
        raise BadRequest(f"cannot save the overrides in {server.overrides.path}, nothing changed: {exc}") from None
    return json.dumps(doc).encode()


def alerts_test(server: "ControlServer", body: bytes) -> bytes:
    """Send a test alert through every channel now, even when muted (so the set-up can be checked),
    and wait for the results (each channel times out after a few seconds).
    :returns: ``{"muted": bool, "channels": [{"channel", "result": "sent"|"failed"|"off", "detail"}]}``."""
    results = server.alert_channels.deliver(trial_alert(server.clock.time()))
    log.info("test alert: %s", ", ".join(f"{r['channel']} {r['result']}" for r in results))
    return json.dumps({"muted": server.mute.muted, "channels": results}).encode()


def recent(server: "ControlServer", query: Mapping[str, str]) -> bytes:
    """``GET /recent?after=SEQ&limit=N``: the last finished requests (default 50, at most 200) numbered
    above ``after`` (see :meth:`~shunt_lib.recent.RecentRequests.after` for the shape)."""
    try:
        after = int(query.get("after") or 0)
        limit = min(int(query.get("limit") or 50), 200)
    except ValueError:
        raise BadRequest("after and limit must be whole numbers") from None
    return json.dumps(server.recent.after(after, limit)).encode()


HISTORY_DEFAULT_SPAN_S = 86400
HISTORY_DEFAULT_STEP_S = 3600


def history(server: "ControlServer", query: Mapping[str, str]) -> bytes:
    """``GET /history?since_s=&until_s=&step_s=&by=account|model|client``: usage totals per bucket and key
    from ``usage.db`` (:func:`~shunt_lib.history_query.buckets`). Defaults: the last 24 h (``until_s``
    now), ``step_s`` 3600, ``by`` account; times are epoch seconds, ``since_s`` rounded down to a minute.

    :returns: ``{"since_s", "until_s", "step_s", "by", "buckets": [{"start_s", "key", "requests",
        "errors", "held", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
        "duration_ms", "held_ms"}, ...]}``. :raises BadRequest: a parameter that is not valid.
    """
    try:
        until_s = int(query.get("until_s") or server.clock.time())
        since_s = int(query.get("since_s") or until_s - HISTORY_DEFAULT_SPAN_S) // 60 * 60
        step_s = int(query.get("step_s") or HISTORY_DEFAULT_STEP_S)
    except ValueError:
        raise BadRequest("since_s, until_s and step_s must be whole numbers of seconds") from None
    by = query.get("by") or "account"
    try:
        rows = buckets(db_path(server.paths.home), since_s, until_s, step_s, by)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    except sqlite3.Error as exc:
        log.warning("GET /history: cannot read the usage history: %s", exc)
        rows = []
    return json.dumps({"since_s": since_s, "until_s": until_s, "step_s": step_s, "by": by, "buckets": rows}).encode()


def metrics(server: "ControlServer", body: bytes) -> Answer:
    """``GET /metrics``: Prometheus text format 0.0.4 (:func:`~shunt_lib.metrics_text.render`) from the
    server's counters, one pool snapshot (the pool's lock is held only to copy it) and the requests in flight."""
    now = server.clock.time()
    cluster = server.cluster.status() if server.cluster is not None else None
    page = render_metrics(server.metrics.counts(), server.pool.snapshot(now), now, server.inflight_requests(), cluster)
    return Answer(page.encode(), METRICS_CONTENT_TYPE)


#: (method, path) → a GET endpoint that reads the query string (name → last value) instead of a body.
QUERY_ROUTES: dict[tuple[str, str], Callable[["ControlServer", Mapping[str, str]], bytes]] = {
    ("GET", "/history"): history,
    ("GET", "/recent"): recent,
}

#: (method, path) → the endpoint that answers it.
ROUTES: dict[tuple[str, str], Callable[["ControlServer", bytes], bytes | Answer]] = {
    ("GET", "/health"): health,  # also answered before the key check (see Handler._dispatch)
    ("GET", "/status"): status,
    ("POST", "/use"): use,
    ("POST", "/reset"): reset,
    ("POST", "/reload"): reload,
    ("POST", "/strategy"): strategy,
    ("POST", "/alerts"): alerts,
    ("POST", "/alerts/test"): alerts_test,
    ("GET", "/overrides"): overrides_get,
    ("POST", "/overrides"): overrides_set,
    ("GET", "/metrics"): metrics,  # without the key when server.metrics_public (see Handler._dispatch)
}


#: The control paths: a client token may not use them (the admin key, or a tokenless request from
#: loopback under ``require_token`` ``remote`` / ``never``, may). ``/health`` is open to all.
CONTROL_PATHS = frozenset(path for _, path in [*ROUTES, *QUERY_ROUTES]) - {"/health"}


def is_control_path(route: str) -> bool:
    """Whether ``route`` belongs to the control API (see :data:`CONTROL_PATHS`, and ``/admin/...``)."""
    return route in CONTROL_PATHS or route == "/admin" or route.startswith("/admin/")


def answer(server: "ControlServer", method: str, route: str, headers: Mapping[str, str], body: bytes,
           query: str = "") -> bytes | Answer:
    """The JSON body of the 200 answer to a control request, or an :class:`Answer` of another type.

    :param headers: lower-case name → value. :param route: the path without the query string;
        :param query: the query string (read by :data:`QUERY_ROUTES` only).
    :raises NotFound: not a control path. :raises MethodNotAllowed: a control path, another method
        (``allow`` in its headers). :raises UnsupportedMediaType: a ``POST`` that is not JSON.
    :raises BadRequest: the endpoint's own refusals.
    """
    key = ("GET" if method == "HEAD" else method, route)
    if control_tokens.is_tokens_path(route):
        if method == "POST":
            require_json(method, route, headers)
        return control_tokens.answer(server, method, route, body)
    if key in QUERY_ROUTES:
        return QUERY_ROUTES[key](server, dict(urllib.parse.parse_qsl(query)))
    endpoint = ROUTES.get(key)
    if endpoint is None:
        allowed = ", ".join(m + (", HEAD" if m == "GET" else "") for m, path in [*ROUTES, *QUERY_ROUTES]
                            if path == route)
        if allowed:
            raise MethodNotAllowed(f"{route} answers {allowed}, not {method}", headers={"allow": allowed})
        raise NotFound(f"{method} {route} is not served by shunt; the API lives under /v1/")
    if method == "POST":
        require_json(method, route, headers)
    return endpoint(server, body)
