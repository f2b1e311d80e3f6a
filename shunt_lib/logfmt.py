"""How shunt's log reads: times with a date unless they are today, and the request behind each line.

Every proxied request gets a short random id (:func:`new_request_id`); while its thread serves it,
the id and the upstream's ``request-id`` response header (on every Anthropic response: ``docs/protocol.md``,
https://platform.claude.com/docs/en/api/errors) are held in context variables
(:func:`request_context`). :class:`RequestContextFilter`, installed on :data:`CONTEXT_LOGGERS`,
copies them onto every record logged meanwhile as ``request_id`` and ``upstream_request_id``,
whichever module logs it: an account going into cooldown because of a request is logged with that
request's ids.

Lines are text (:class:`LogFormatter`) or JSON (:class:`JsonFormatter`, ``server.log_format``). A
request's access line carries its :class:`~shunt_lib.record.RequestRecord` as the record attribute
``request_record``; either formatter builds its line from it only when the record is emitted.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import time

#: The ids of the request this thread serves: ``[request_id, upstream_request_id, client]``, one list
#: per request (one context variable to set and reset, and the upstream id filled in place); ``client``
#: is who sent it (:mod:`shunt_lib.clients`: a client token's label, ``local`` or ``admin``).
_IDS: contextvars.ContextVar[list | None] = contextvars.ContextVar("shunt_request_ids", default=None)

#: The loggers whose records carry the request's ids (events, access lines, and the relay's and token
#: manager's own warnings, which a request's thread logs too).
CONTEXT_LOGGERS = ("shunt.events", "shunt.access", "shunt.relay", "shunt.oauth")


def new_request_id() -> str:
    """A fresh request id: 8 random hex digits (unique enough to find one request in a day's log; not a
    secret, so the fast non-cryptographic generator will do)."""
    return f"{random.getrandbits(32):08x}"


class request_context:  # noqa: N801 - used like a function: ``with request_context(rid):``
    """Within the block, records of :data:`CONTEXT_LOGGERS` logged by this thread carry ``request_id``
    (and ``client``, the name of who sent the request, when given).

    A class rather than a ``contextlib.contextmanager``: it is entered once per proxied request, and a
    generator-based manager costs a few microseconds more."""

    __slots__ = ("request_id", "client", "_token")

    def __init__(self, request_id: str, client: str | None = None):
        self.request_id = request_id
        self.client = client

    def __enter__(self) -> None:
        self._token = _IDS.set([self.request_id, None, self.client])

    def __exit__(self, *exc) -> None:
        _IDS.reset(self._token)


def set_upstream_request_id(value: str | None) -> None:
    """The upstream's ``request-id`` for the attempt being served (None: the attempt had none); no-op
    outside a :class:`request_context`."""
    ids = _IDS.get()
    if ids is not None:
        ids[1] = value or None


def current_request_id() -> str | None:
    """The id of the request this thread is serving, if any."""
    ids = _IDS.get()
    return ids[0] if ids is not None else None


def upstream_request_id() -> str | None:
    """The current request's upstream ``request-id``, if an answer carried one."""
    ids = _IDS.get()
    return ids[1] if ids is not None else None


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` and ``upstream_request_id`` (None outside a request) to every record it sees,
    and ``client`` inside a request whose client was named; values a caller passed in ``extra`` are
    kept. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _IDS.get() or (None, None, None)
        if getattr(record, "request_id", None) is None:
            record.request_id = ids[0]
        if getattr(record, "upstream_request_id", None) is None:
            record.upstream_request_id = ids[1]
        if ids[2] is not None and getattr(record, "client", None) is None:
            record.client = ids[2]
        return True


_FILTER = RequestContextFilter()


def install_request_context() -> None:
    """Put :class:`RequestContextFilter` on :data:`CONTEXT_LOGGERS` (idempotent)."""
    for name in CONTEXT_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def ids_text(request_id: str | None, upstream_id: str | None) -> str:
    """``"id=ab12cd34 upstream_id=req_..."`` for the ids there are ('' if none)."""
    return " ".join(f"{k}={v}" for k, v in (("id", request_id), ("upstream_id", upstream_id)) if v)


def clock_text(at_s: float, now_s: float) -> str:
    """A local time of day for ``at_s`` (epoch s): ``HH:MM:SS`` when it falls on ``now_s``'s local date,
    ``YYYY-MM-DD HH:MM:SS`` otherwise (a weekly window's reset is often days away)."""
    at, now = time.localtime(at_s), time.localtime(now_s)
    same_day = (at.tm_year, at.tm_yday) == (now.tm_year, now.tm_yday)
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", at)


#: syslog priorities by level name, as a line on the journal's stream may begin with them ("<4>...":
#: https://www.freedesktop.org/software/systemd/man/latest/sd-daemon.html).
_JOURNAL_PRIORITY = {"DEBUG": "<7>", "INFO": "<6>", "WARNING": "<4>", "ERROR": "<3>", "CRITICAL": "<2>"}


class LogFormatter(logging.Formatter):
    """``2026-12-03 14:02:11 INFO    shunt.events: message [id=ab12cd34 upstream_id=req_...]``.

    Every line starts with the full local date and time (a log is read after the day it was written).
    A record that carries request ids and does not show them in its message (events; the access line
    already does) gets them appended in brackets, with the request's client (``client=NAME``) if known.

    :param journal: the line goes to the systemd journal, which stamps it itself: no date and time,
        and a ``<N>`` syslog priority prefix instead, which the journal turns into the entry's priority
        (``journalctl -p warning`` then works).
    """

    def __init__(self, *, journal: bool = False) -> None:
        self.journal = journal
        fmt = "%(levelname)-7s %(name)s: %(message)s" if journal else "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
        super().__init__(fmt, "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if getattr(record, "event", None) != "request":
            ids = ids_text(getattr(record, "request_id", None), getattr(record, "upstream_request_id", None))
            client = getattr(record, "client", None)
            if ids and client:
                ids += f" client={client}"
            if ids:
                line += f" [{ids}]"
        if self.journal:  # each line of a traceback is an entry of its own
            prefix = _JOURNAL_PRIORITY.get(record.levelname, "<6>")
            line = prefix + line.replace("\n", "\n" + prefix)
        return line


#: Attributes every LogRecord has (and the two its formatting adds): the rest came from ``extra``.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
#: Attributes :class:`JsonFormatter` writes itself or leaves out (``ts_s`` duplicates ``ts``).
_OWN_ATTRS = _STANDARD_ATTRS | {"event", "request_record", "request_id", "upstream_request_id", "client", "ts_s"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors and ``jq``.

    Always ``ts`` (epoch s, float, ms precision), ``level``, ``event`` (null for plain messages),
    ``logger`` and ``message``. Then every ``extra`` field the record was logged with (``account``,
    ``reason``, ``until_s``, ...); for a request's access line (``event`` = ``"request"``) the fields
    of its :class:`~shunt_lib.record.RequestRecord` (``account``, ``model``, ``status``,
    ``input_tokens``, ``output_tokens``, ``cache_read_tokens``, ``cache_creation_tokens``,
    ``duration_ms``, ``attempts``, ``held_ms``, ``broke``, ``method``, ``path``, ``token_id``); then
    ``request_id``, ``upstream_request_id`` (the upstream's ``request-id`` header, what Anthropic
    support asks for) and ``client`` (who sent the request: a client token's label, ``local`` or
    ``admin``) when there are, and ``exc`` with a traceback. Values JSON cannot hold are
    written as their ``str()``. Nothing shunt logs holds a token or key, and neither does this.

    :param journal: as for :class:`LogFormatter`: a ``<N>`` priority prefix, which the journal strips.
    """

    def __init__(self, *, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "event": getattr(record, "event", None),
               "logger": record.name, "message": record.getMessage()}
        fields = record.__dict__
        request = fields.get("request_record")
        if request is not None:
            out.update((k, v) for k, v in request.items() if k not in _OWN_ATTRS)
        out.update((k, v) for k, v in fields.items() if k not in _OWN_ATTRS)
        for key in ("request_id", "upstream_request_id", "client"):
            value = fields.get(key) or (request.get(key) if request is not None else None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(out, ensure_ascii=False, default=str)
        return _JOURNAL_PRIORITY.get(record.levelname, "<6>") + line if self.journal else line
