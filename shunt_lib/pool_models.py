"""``GET /v1/models`` answered by shunt: the models the pool serves, in the client's dialect (pure).

Which requests shunt answers itself (:func:`answers_locally`): every one without ``anthropic-version``
(an OpenAI client: OpenAI's list), and Anthropic clients' (``anthropic-version`` set: Anthropic's page)
once an ``openai`` account is configured, since Anthropic's own list would not name its models.
With only Claude accounts an Anthropic client's ``GET /v1/models`` is forwarded upstream as before
(the upstream's list is the accurate one).

What is listed, in this order, each id once:

- Claude models, when an account may serve them to this client (OpenAI clients: an Anthropic
  ``api_key`` account; Anthropic clients: any Claude account): the model ids of the list-price table
  (:data:`shunt_lib.pricing.PRICES`, ``docs/protocol.md`` §8), without the shorter spelling of a
  ``-0`` alias (``claude-opus-4`` beside ``claude-opus-4-0``). Their creation dates are not known to
  shunt: ``created`` is 0 (``1970-01-01T00:00:00Z``).
- each ``openai`` account's ``models`` entries that are ids, not glob patterns (``owned_by``: the
  account's provider preset, else its name);
- the ``[models]`` table's keys that are ids (aliases), when some account may take them.

Shapes: :func:`shunt_lib.model_list.models_list`.
"""

from __future__ import annotations

import json
from typing import Sequence

from .config import AccountConfig
from .model_list import models_list
from .model_map import ModelMap, candidates
from .pricing import PRICES

MODELS_ROUTES = frozenset({"/v1/models", "/models"})


def is_glob(model: str) -> bool:
    """Whether a ``models`` entry or ``[models]`` key is an fnmatch pattern rather than one id."""
    return any(c in model for c in "*?[")


def display_name(model_id: str) -> str:
    """``claude-opus-4-5`` → ``Claude Opus 4.5``; ``claude-3-7-sonnet`` → ``Claude Sonnet 3.7``; other ids unchanged."""
    parts = model_id.split("-")
    if parts[0] != "claude" or len(parts) < 2:
        return model_id
    words = [p.capitalize() for p in parts[1:] if not p.isdigit()]
    version = ".".join(p for p in parts[1:] if p.isdigit())
    version = version[:-2] if version.endswith(".0") else version
    return " ".join(["Claude"] + words + ([version] if version else []))


def claude_models() -> list[str]:
    """The Claude model ids listed (see the module docstring)."""
    return [m for m in PRICES if m.startswith("claude") and m + "-0" not in PRICES]


def answers_locally(route: str, anthropic_version: bool, accounts: Sequence[AccountConfig]) -> bool:
    """Whether shunt answers ``GET route`` itself (see the module docstring) rather than forwarding it."""
    if route not in MODELS_ROUTES:
        return False
    if route == "/v1/models" and anthropic_version:
        return any(a.kind == "openai" for a in accounts)
    return True


def models_body(accounts: Sequence[AccountConfig], model_map: ModelMap, *, anthropic: bool) -> bytes:
    """The ``GET /v1/models`` body: Anthropic's page (``anthropic``) or OpenAI's list, as JSON bytes."""
    dialect = "anthropic" if anthropic else "openai"
    claude_kinds = {"oauth", "api_key"} if anthropic else {"api_key"}
    groups: list[tuple[str, list[str]]] = []
    if any(a.kind in claude_kinds for a in accounts):
        groups.append(("anthropic", claude_models()))
    for a in accounts:
        if a.kind == "openai":
            groups.append((a.provider or a.name, [m for m in a.models if not is_glob(m)]))
    groups.append(("shunt", [key for key, _route in model_map.routes
                             if not is_glob(key) and candidates(key, accounts, model_map, dialect=dialect)]))
    seen: set[str] = set()
    rows: list[dict] = []
    for owner, ids in groups:
        fresh = [m for m in ids if m not in seen]
        seen.update(fresh)
        listed = models_list([(m, display_name(m), 0) for m in fresh], anthropic, owner)
        rows += listed["data"]
    if anthropic:
        return json.dumps({"data": rows, "has_more": False, "first_id": rows[0]["id"] if rows else None,
                           "last_id": rows[-1]["id"] if rows else None}).encode()
    return json.dumps({"object": "list", "data": rows}).encode()
