"""What a new client token is asked to be, validated: the same rules for ``shunt token create`` and
``POST /admin/tokens``.

:func:`spec_from_fields` takes a plain mapping (the JSON body, or the CLI's options turned into one):
``label`` (required), ``ttl`` (``"30d"``, ``"12h"``, ``"90m"``; or ``ttl_s`` seconds), ``accounts`` or
``kinds`` (not both), ``models`` (a list, or one comma-separated string), ``rpm``, ``tpm``,
``daily_tokens``, ``monthly_usd``, ``max_concurrent``. Every problem is a :class:`ValueError` whose
message names the field.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple

from .clients import TokenBinding, TokenLimits
from .history_rollup import parse_duration_s

LABEL_MAX = 64
_LABEL_RE = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,62}[\x21-\x7e])?\Z")  # visible ASCII, inner spaces allowed
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # an account name (config.ACCOUNT_NAME_RE)
KINDS = ("oauth", "api_key", "openai")
INT_FIELDS = ("rpm", "tpm", "daily_tokens", "max_concurrent")
MAX_INT = 10 ** 15
MAX_USD = 1e9
MAX_TTL_S = 10 * 366 * 86400
FIELDS = frozenset({"label", "ttl", "ttl_s", "accounts", "kinds", "models", *INT_FIELDS, "monthly_usd"})


class TokenSpec(NamedTuple):
    """A token to create: its ``label``, ``ttl_s`` (None: never expires), limits and binding."""

    label: str
    ttl_s: int | None = None
    limits: TokenLimits = TokenLimits()
    binding: TokenBinding = TokenBinding()


def check_label(label: Any) -> str:
    """:returns: ``label`` if it is 1-64 visible ASCII characters (spaces inside allowed). :raises ValueError:"""
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise ValueError("label must be 1-64 visible ASCII characters (spaces only between words)")
    return label


def parse_ttl(text: Any) -> int:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"``, ``"45s"`` as seconds. :raises ValueError:"""
    if not isinstance(text, str):
        raise ValueError("ttl must be a duration like 30d, 12h or 90m")
    try:
        seconds = parse_duration_s(text)
    except ValueError:
        raise ValueError(f"ttl {text[:40]!r} is not a duration like 30d, 12h or 90m") from None
    if seconds > MAX_TTL_S:
        raise ValueError("ttl is longer than 10 years; leave it out for a token that never expires")
    return seconds


def _names(field: str, value: Any, pattern: re.Pattern | None = None, choices: tuple[str, ...] = ()) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{field} must be a list of names (or one comma-separated string)")
    items = tuple(v for v in value if v)
    if not items:
        raise ValueError(f"{field} is empty; leave it out for no restriction")
    for v in items:
        if choices and v not in choices:
            raise ValueError(f"{field}: {v[:40]!r} is not one of {', '.join(choices)}")
        if pattern is not None and not pattern.match(v):
            raise ValueError(f"{field}: {v[:40]!r} is not a valid name")
        if not choices and pattern is None and (len(v) > 200 or not v.isprintable() or " " in v):
            raise ValueError(f"{field}: {v[:40]!r} is not a model name or pattern")
    return tuple(dict.fromkeys(items))


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_INT:
        raise ValueError(f"{field} must be a positive whole number")
    return value


def _positive_usd(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError("monthly_usd must be a positive number of dollars") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_USD:
        raise ValueError("monthly_usd must be a positive number of dollars")
    return float(value)


def spec_from_fields(fields: Mapping[str, Any]) -> TokenSpec:
    """Validate a request for a new token (see the module docstring; a None value means "not given").

    :raises ValueError: an unknown field or a bad value, the message naming the field.
    """
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0][:40]!r}; known: {', '.join(sorted(FIELDS))}")
    given = {k: v for k, v in fields.items() if v is not None}
    label = check_label(given.get("label"))
    ttl_s = None
    if "ttl" in given and "ttl_s" in given:
        raise ValueError("give ttl or ttl_s, not both")
    if "ttl" in given:
        ttl_s = parse_ttl(given["ttl"])
    elif "ttl_s" in given:
        ttl_s = _positive_int("ttl_s", given["ttl_s"])
        if ttl_s > MAX_TTL_S:
            raise ValueError("ttl_s is longer than 10 years; leave it out for a token that never expires")
    if "accounts" in given and "kinds" in given:
        raise ValueError("bind a token to accounts or to account kinds, not both")
    binding = TokenBinding(
        accounts=_names("accounts", given["accounts"], _NAME_RE) if "accounts" in given else (),
        kinds=_names("kinds", given["kinds"], choices=KINDS) if "kinds" in given else (),
        models=_names("models", given["models"]) if "models" in given else ())
    limits = TokenLimits(**{k: _positive_int(k, given[k]) for k in INT_FIELDS if k in given},
                         monthly_usd=_positive_usd(given["monthly_usd"]) if "monthly_usd" in given else None)
    return TokenSpec(label, ttl_s, limits, binding)
