"""One finished request, as the pool counts it, ``/status`` lists it and the access log prints it."""

from __future__ import annotations

import json
import re
from typing import TypedDict

from .clients import LOCAL, Client
from .logfmt import ids_text
from .numbers import count
from .usage import UsageTap

_MODEL_RE = re.compile(rb'(?<!\\)"model"\s*:\s*"([^"\\]{1,200})"')
MODEL_SCAN_BYTES = 65536  # how much of a request body is searched for its model when the answer did not say


class RequestRecord(TypedDict):
    """A finished request (answered, failed or dropped).

    ``ts_s``: epoch seconds when it finished; ``account``: the account whose answer was relayed (None
    if none was); ``status``: the status the client got (499: the client left first); token counts from
    the answer's usage (``cache_creation_tokens``: every cache write; ``cache_write_5m_tokens`` and
    ``cache_write_1h_tokens``: the split by TTL when the answer gave one, else 0); ``duration_ms`` in total, ``held_ms`` of it spent waiting for an account;
    ``attempts``: upstream attempts made; ``broke``: the upstream body broke off after the status
    was relayed (the client got a truncated body or an SSE ``error`` event, whatever ``status`` says);
    ``request_id``: shunt's id for the request (in its log lines); ``upstream_request_id``: the
    ``request-id`` header of the upstream answer relayed, if any; ``client``: who sent it (a client
    token's label, ``local`` or ``admin``, :mod:`shunt_lib.clients`); ``token_id``: its client token's
    id, or None.
    """

    ts_s: int
    account: str | None
    method: str
    path: str
    model: str
    status: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    duration_ms: int
    attempts: int
    held_ms: int
    broke: bool
    request_id: str | None
    upstream_request_id: str | None
    client: str
    token_id: str | None


def request_record(method: str, target: str, body: bytes, account: str | None, status: int, tap: UsageTap | None, *,
                   ts_s: float, duration_s: float, held_s: float, attempts: int, broke: bool = False,
                   request_id: str | None = None, upstream_request_id: str | None = None,
                   served_model: str | None = None, client: Client = LOCAL) -> RequestRecord:
    """The record of a finished request: its usage and model from the answer's ``tap`` (the model from
    the request body when the answer did not say; ``served_model`` before either: the model a translating
    exchange asked the account for, as its answer to the client names the client's), durations in whole milliseconds; ``broke`` as in
    :class:`RequestRecord`."""
    usage = tap.usage if tap is not None else {}
    return {
        "ts_s": int(ts_s),
        "account": account,
        "method": method,
        "path": target.split("?", 1)[0],
        "model": served_model or (tap.model if tap is not None and tap.model else model_of_request(body)),
        "status": status,
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "cache_read_tokens": usage.get("cache_read_tokens", 0),
        "cache_creation_tokens": usage.get("cache_creation_tokens", 0),
        "cache_write_5m_tokens": usage.get("cache_write_5m_tokens", 0),
        "cache_write_1h_tokens": usage.get("cache_write_1h_tokens", 0),
        "duration_ms": int(duration_s * 1000),
        "attempts": attempts,
        "held_ms": int(held_s * 1000),
        "broke": broke,
        "request_id": request_id,
        "upstream_request_id": upstream_request_id,
        "client": client.name,
        "token_id": client.token_id,
    }


def model_of_request(body: bytes) -> str:
    """The ``model`` named in the first 64 KiB of a request body ('' if none): a regex, no JSON parse."""
    m = _MODEL_RE.search(body, 0, MODEL_SCAN_BYTES)
    return m.group(1).decode(errors="replace") if m else ""


def access_line(r: RequestRecord) -> str:
    """The access log's line for ``r``: method, path, account, model, status, tokens, duration, the
    client (``client=NAME``: a client token's label, ``local`` or ``admin``), then ``attempts=N`` if
    more than one, ``stream=broken`` if the upstream body broke off, and the ids."""
    ids = ids_text(r.get("request_id"), r.get("upstream_request_id"))
    return (f"{r['method']} {r['path']} account={r['account'] or '-'} model={r['model'] or '-'} status={r['status']} "
            f"in={r['input_tokens']} out={r['output_tokens']} cache_read={r['cache_read_tokens']} "
            f"cache_write={r['cache_creation_tokens']} {r['duration_ms']}ms client={_token(r.get('client') or 'local')}"
            + (f" attempts={r['attempts']}" if r["attempts"] > 1 else "") + (" stream=broken" if r.get("broke") else "")
            + (f" {ids}" if ids else ""))


def _token(text: str) -> str:
    """``text`` as one whitespace-free token of a log line (a client token's label is the user's text)."""
    return text if text.isprintable() and " " not in text else json.dumps(text)


class AccessLine:
    """The message of a request's access-log record: :func:`access_line` of its record, built only
    when a handler formats it (``logger.info(AccessLine(r), extra={"request_record": r, ...})``)."""

    __slots__ = ("record",)

    def __init__(self, record: RequestRecord):
        self.record = record

    def __str__(self) -> str:
        return access_line(self.record)


_INT_FIELDS = ("ts_s", "status", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
               "duration_ms", "attempts", "held_ms")


def record_from_json(d: object) -> RequestRecord | None:
    """A :class:`RequestRecord` restored from ``state.json``, or None if any field is missing, of the
    wrong type or out of bounds (counters are non-negative integers, strings at most 64 KiB)."""
    if not isinstance(d, dict):
        return None
    if any(count(d.get(k)) is None for k in _INT_FIELDS):
        return None
    if not all(isinstance(d.get(k), str) and len(d[k]) <= 65536 for k in ("method", "path", "model")):
        return None
    account = d.get("account")
    if account is not None and not (isinstance(account, str) and len(account) <= 65536):
        return None
    later = {k: d.get(k) for k in ("request_id", "upstream_request_id", "token_id")}  # absent from older state files
    later["client"] = d.get("client", "local")
    split = {k: count(d.get(k, 0)) for k in ("cache_write_5m_tokens", "cache_write_1h_tokens")}  # likewise
    if any(v is None for v in split.values()):
        return None
    if not all(v is None or (isinstance(v, str) and len(v) <= 256) for v in later.values()) or later["client"] is None:
        return None
    if not isinstance(d.get("broke", False), bool):
        return None
    later["broke"] = d.get("broke", False)
    later.update(split)
    return {**{k: d[k] for k in RequestRecord.__annotations__ if k not in later}, **later}  # type: ignore[typeddict-item]
