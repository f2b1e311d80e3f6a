"""One finished request, as the pool counts it, ``/status`` lists it and the access log prints it."""

from __future__ import annotations

import re
from typing import TypedDict

from .usage import UsageTap

_MODEL_RE = re.compile(rb'(?<!\\)"model"\s*:\s*"([^"\\]{1,200})"')
MODEL_SCAN_BYTES = 65536  # how much of a request body is searched for its model when the answer did not say


class RequestRecord(TypedDict):
    """A finished request (answered, failed or dropped).

    ``ts_s``: epoch seconds when it finished; ``account``: the account whose answer was relayed (None
    if none was); ``status``: the status the client got (499: the client left first); token counts from
    the answer's usage; ``duration_ms`` in total, ``held_ms`` of it spent waiting for an account;
    ``attempts``: upstream attempts made; ``broke``: the upstream body broke off after the status
    was relayed (the client got a truncated body or an SSE ``error`` event, whatever ``status`` says).
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
    duration_ms: int
    attempts: int
    held_ms: int
    broke: bool


def request_record(method: str, target: str, body: bytes, account: str | None, status: int, tap: UsageTap | None, *,
                   ts_s: float, duration_s: float, held_s: float, attempts: int, broke: bool = False) -> RequestRecord:
    """The record of a finished request: its usage and model from the answer's ``tap`` (the model from
    the request body when the answer did not say), durations in whole milliseconds; ``broke`` as in
    :class:`RequestRecord`."""
    usage = tap.usage if tap is not None else {}
    return {
        "ts_s": int(ts_s),
        "account": account,
        "method": method,
        "path": target.split("?", 1)[0],
        "model": tap.model if tap is not None and tap.model else model_of_request(body),
        "status": status,
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "cache_read_tokens": usage.get("cache_read_tokens", 0),
        "cache_creation_tokens": usage.get("cache_creation_tokens", 0),
        "duration_ms": int(duration_s * 1000),
        "attempts": attempts,
        "held_ms": int(held_s * 1000),
        "broke": broke,
    }


def model_of_request(body: bytes) -> str:
    """The ``model`` named in the first 64 KiB of a request body ('' if none): a regex, no JSON parse."""
    m = _MODEL_RE.search(body, 0, MODEL_SCAN_BYTES)
    return m.group(1).decode(errors="replace") if m else ""


def access_line(r: RequestRecord) -> str:
    """The access log's line for ``r``: method, path, account, model, status, tokens, duration, then
    ``attempts=N`` if more than one and ``stream=broken`` if the upstream body broke off."""
    return (f"{r['method']} {r['path']} account={r['account'] or '-'} model={r['model'] or '-'} status={r['status']} "
            f"in={r['input_tokens']} out={r['output_tokens']} cache_read={r['cache_read_tokens']} "
            f"cache_write={r['cache_creation_tokens']} {r['duration_ms']}ms"
            + (f" attempts={r['attempts']}" if r["attempts"] > 1 else "") + (" stream=broken" if r.get("broke") else ""))
