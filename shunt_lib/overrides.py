"""Runtime overrides: ``model``, ``fallback`` and ``effort``, for every request or for one client token.

``shunt override model|fallback|effort VALUE|clear [--token ID]`` (or ``POST /overrides``) sets them;
they are kept in ``overrides.json`` in shunt's home (atomic, mode 0600) so that they survive restarts.
Their own file rather than a part of ``state.json``: the running server rewrites ``state.json`` from
memory, while this file is written only by whoever changes an override (the server when it runs, the
command line when it does not), so a stopped shunt's overrides can be changed without racing a writer
or knowing the pool's state format, and ``shunt reset`` never touches them.

* ``model``: every request's top-level ``model`` is replaced (when its body has one).
* ``effort``: ``output_config.effort`` is set on Anthropic Messages requests (``POST /v1/messages``;
  ``low``, ``medium``, ``high``, ``xhigh``, ``max``: docs/protocol.md §5.1). On the OpenAI door it is
  the API's own field, ``reasoning_effort`` (Chat Completions) or ``reasoning.effort`` (Responses),
  ``max`` sent as ``xhigh`` (OpenAI has no ``max``); translated traffic carries it on as the
  translation does any client's.
* ``fallback``: when no account able to serve the requested model can take the request now, the relay
  sends it with this model instead (once per request, only when an account can take that model now;
  otherwise the request is held as before). ``off`` disables a global fallback for one token.

A token's override wins over the global one field by field. The body edit is byte-exact outside the
edited member (:mod:`shunt_lib.json_edit`); a body that is not a JSON object is left alone (logged).
Every overridden response carries ``x-shunt-override: model=...,effort=...,fallback=...`` and the
events log has an ``override`` (and ``fallback_model``) line naming what changed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Callable, NamedTuple

from . import json_edit
from .errors import BadRequest
from .fsutil import atomic_write_bytes
from .requests_shape import ProxyRequest

log = logging.getLogger("shunt.server")
events_log = logging.getLogger("shunt.events")

FIELDS = ("model", "fallback", "effort")
#: The values ``output_config.effort`` takes (docs/protocol.md §5.1).
EFFORTS = ("low", "medium", "high", "xhigh", "max")
#: ``fallback`` set to this: no fallback for this token, whatever the global one says.
FALLBACK_OFF = "off"
HEADER = "x-shunt-override"
#: The paths whose body gets ``output_config.effort`` (Anthropic Messages).
EFFORT_PATHS = ("/v1/messages",)
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def overrides_path(home: str) -> str:
    """``overrides.json`` in shunt's home."""
    return os.path.join(home, "overrides.json")


class Override(NamedTuple):
    """One set of overrides; None: not set (the global one, or no change, applies)."""

    model: str | None = None
    fallback: str | None = None  # a model, or FALLBACK_OFF
    effort: str | None = None

    def over(self, base: "Override") -> "Override":
        """This one's fields where set, ``base``'s elsewhere."""
        return Override(*(mine if mine is not None else theirs for mine, theirs in zip(self, base)))

    def doc(self) -> dict:
        return {f: v for f, v in zip(FIELDS, self) if v is not None}


NONE = Override()
_ABSENT = object()


def check_value(field: str, value) -> str | None:
    """``value`` for ``field`` as stored (None: clear). :raises BadRequest: a value that is not valid."""
    if value is None or value == "clear":
        return None
    if field not in FIELDS:
        raise BadRequest(f"unknown override {field!r}; the overrides are {', '.join(FIELDS)}")
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string or null")
    if field == "effort":
        if value not in EFFORTS:
            raise BadRequest(f"effort must be one of {', '.join(EFFORTS)} (or null / clear)")
        return value
    if field == "fallback" and value == FALLBACK_OFF:
        return value
    if not _MODEL_RE.fullmatch(value):
        raise BadRequest(f"{field} must be a model id (letters, digits and . _ : / @ + -, at most 200)")
    return value


def check_token(token) -> str | None:
    """A token id as given (None: the global overrides). :raises BadRequest: not a token id."""
    if token is None:
        return None
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise BadRequest("token must be a client token's id")
    return token


class Applied:
    """What the overrides did to one request: ``changes`` (field, value) in the order made, shown in
    :data:`HEADER`; ``fallback`` the fallback model still available to it (None: none, or spent)."""

    __slots__ = ("changes", "fallback")

    def __init__(self, changes: list[tuple[str, str]] | None = None, fallback: str | None = None):
        self.changes = changes or []
        self.fallback = fallback

    def header_value(self) -> str:
        return ",".join(f"{f}={v}" for f, v in self.changes)

    def head_fields(self) -> bytes:
        """The response header field to add (empty when nothing changed)."""
        if not self.changes:
            return b""
        return f"{HEADER}: {self.header_value()}\r\n".encode("latin-1", "replace")


class Overrides:
    """The overrides in force: global and per client token. Thread-safe; requests read the current
    snapshot without a lock. :param path: the file they are kept in (None: memory only)."""

    def __init__(self, path: str | None = None, *, known_token: Callable[[str], bool] | None = None):
        self.path = path
        #: tells whether a token id exists (the token store's; None: any id is taken)
        self.known_token = known_token
        #: ``changes(doc)``, called after :meth:`set` changed them here (a cluster shares them)
        self.changes: Callable[[dict], None] | None = None
        self._lock = threading.Lock()
        self._global, self._tokens = NONE, {}
        if path is not None:
            self._global, self._tokens = read_file(path)

    # -- reading ----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether any override is set (a request is looked at only then)."""
        return self._global != NONE or bool(self._tokens)

    def effective(self, token_id: str | None) -> Override:
        """The overrides for a request of ``token_id`` (None: no token): its own over the global ones."""
        mine = self._tokens.get(token_id) if token_id is not None else None
        return mine.over(self._global) if mine is not None else self._global

    def doc(self) -> dict:
        """``{"global": {field: value}, "tokens": {id: {field: value}}}`` (only what is set)."""
        return {"global": self._global.doc(), "tokens": {t: o.doc() for t, o in sorted(self._tokens.items())}}

    # -- changing ---------------------------------------------------------------------------------
    def set(self, fields: dict, token: str | None = None) -> dict:
        """Set (a value) or clear (None / ``"clear"``) the ``fields`` given, globally or for ``token``;
        saved at once and logged. :returns: :meth:`doc`.
        :raises BadRequest: a bad field, value or token. :raises OSError: the file cannot be written
        (nothing changed then)."""
        token = check_token(token)
        if token is not None and self.known_token is not None and not self.known_token(token):
            raise BadRequest(f"no client token has the id {token!r} (see `shunt token list`)")
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise BadRequest(f"unknown override {unknown[0]!r}; the overrides are {', '.join(FIELDS)}")
        values = {f: check_value(f, v) for f, v in fields.items()}
        with self._lock:
            current = self._global if token is None else self._tokens.get(token, NONE)
            new = current._replace(**values)
            tokens = dict(self._tokens)
            glob = self._global
            if token is None:
                glob = new
            elif new == NONE:
                tokens.pop(token, None)
            else:
                tokens[token] = new
            if self.path is not None:
                write_file(self.path, glob, tokens)
            self._global, self._tokens = glob, tokens
        who = "global" if token is None else f"token {token}"
        for f, v in values.items():
            log.info("override %s %s: %s", f, who, v if v is not None else "cleared")
        doc = self.doc()
        if self.changes is not None:
            self.changes(doc)
        return doc

    def replace(self, doc: dict) -> None:
        """Put the overrides of ``doc`` (:meth:`doc`'s shape, e.g. as another instance of a cluster set
        them) in force and in the file; a value that is not valid is dropped. :attr:`changes` is not told.
        :raises OSError: the file cannot be written (they are in force anyway)."""
        glob, tokens = _overrides_of(doc)
        with self._lock:
            self._global, self._tokens = glob, tokens
            if self.path is not None:
                write_file(self.path, glob, tokens)

    # -- a request --------------------------------------------------------------------------------
    def apply(self, request: ProxyRequest, door: str = "anthropic") -> tuple[ProxyRequest, Applied | None]:
        """``request`` with the overrides of its client applied to its body, and what was done (None
        when no override applies to it). ``door``: ``anthropic``, ``chat`` or ``responses``."""
        if not self.active:
            return request, None
        o = self.effective(request.client.token_id)
        if o == NONE:
            return request, None
        fallback = o.fallback if o.fallback != FALLBACK_OFF else None
        applied = Applied(fallback=fallback)
        if request.method != "POST" or not request.body or (o.model is None and o.effort is None):
            return request, applied
        body, path = request.body, request.target.split("?", 1)[0]
        try:
            if o.model is not None and json_edit.get_member(body, "model", _ABSENT, strict=True) is not _ABSENT:
                body = json_edit.set_member(body, "model", o.model)
                applied.changes.append(("model", o.model))
            if o.effort is not None:
                if door == "chat":
                    body = json_edit.set_member(body, "reasoning_effort", _openai_effort(o.effort))
                elif door == "responses":
                    body = json_edit.set_inner(body, "reasoning", "effort", _openai_effort(o.effort))
                elif path in EFFORT_PATHS:
                    body = json_edit.set_inner(body, "output_config", "effort", o.effort)
                if door != "anthropic" or path in EFFORT_PATHS:
                    applied.changes.append(("effort", o.effort))
        except json_edit.NotAnObject as exc:
            events_log.warning("override not applied: the body of %s %s is not a JSON object (%s)", request.method,
                               path, exc, extra={"event": "override_skipped"})
            return request, applied
        if applied.changes:
            events_log.info("override: %s", applied.header_value(),
                            extra={"event": "override", "override": applied.header_value(),
                                   "client": request.client.name})
        return request._replace(body=body), applied


def _openai_effort(effort: str) -> str:
    return "xhigh" if effort == "max" else effort


# -- the file ---------------------------------------------------------------------------------------
def _override_from(data) -> Override:
    if not isinstance(data, dict):
        return NONE
    values = {}
    for f in FIELDS:
        try:
            values[f] = check_value(f, data.get(f))
        except BadRequest:
            values[f] = None
    return Override(**values)


def read_file(path: str) -> tuple[Override, dict[str, Override]]:
    """The global and per-token overrides kept in ``path`` (none when it is missing or unreadable;
    a value that is not valid is dropped with a warning)."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        return NONE, {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read the overrides in %s, none in force: %s", path, exc)
        return NONE, {}
    return _overrides_of(data)


def _overrides_of(data) -> tuple[Override, dict[str, Override]]:
    """The global and per-token overrides of a :meth:`Overrides.doc`-shaped ``data`` (invalid values dropped)."""
    if not isinstance(data, dict):
        return NONE, {}
    tokens = {}
    for token, fields in (data.get("tokens") or {}).items() if isinstance(data.get("tokens"), dict) else ():
        o = _override_from(fields)
        if o != NONE and isinstance(token, str) and _TOKEN_RE.fullmatch(token):
            tokens[token] = o
    return _override_from(data.get("global")), tokens


def write_file(path: str, glob: Override, tokens: dict[str, Override]) -> None:
    """Keep the overrides in ``path`` (atomic, mode 0600). :raises OSError:"""
    doc = {"global": glob.doc(), "tokens": {t: o.doc() for t, o in sorted(tokens.items())}}
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def describe(doc: dict) -> list[str]:
    """The overrides of a :meth:`Overrides.doc` as lines for people (empty when none is set)."""
    lines = []
    if doc.get("global"):
        lines.append("every request: " + ", ".join(f"{f} {v}" for f, v in doc["global"].items()))
    for token, fields in (doc.get("tokens") or {}).items():
        lines.append(f"token {token}: " + ", ".join(f"{f} {v}" for f, v in fields.items()))
    return lines


def override_header(applied: Applied | None) -> dict[str, str]:
    """``{x-shunt-override: ...}`` for an answer written outside the relay, or nothing."""
    return {HEADER: applied.header_value()} if applied is not None and applied.changes else {}


class HeadField:
    """A client connection's ``wfile`` that adds :data:`HEADER` (what ``applied`` says when the first
    response head is written: a fallback taken on the way is included) after the status line of the
    first response head written through it; the rest passes unchanged."""

    __slots__ = ("_out", "_applied", "_pending")

    def __init__(self, out, applied: Applied):
        self._out = out
        self._applied = applied
        self._pending = True

    def write(self, data: bytes) -> int:
        if self._pending and data:
            self._pending = False
            fields = self._applied.head_fields()
            if fields and data.startswith(b"HTTP/"):
                end = data.find(b"\r\n") + 2
                data = data[:end] + fields + data[end:]
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()
