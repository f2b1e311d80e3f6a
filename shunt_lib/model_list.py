"""The body of ``GET /v1/models`` in either dialect.

Anthropic (https://platform.claude.com/docs/en/api/models/list, ``docs/protocol.md`` §5.1)::

    {"data": [{"type": "model", "id", "display_name", "created_at": RFC 3339}], "has_more", "first_id", "last_id"}

OpenAI (https://platform.openai.com/docs/api-reference/models/list)::

    {"object": "list", "data": [{"id", "object": "model", "created": epoch seconds, "owned_by"}]}
"""

from __future__ import annotations

import datetime


def rfc3339(epoch_s: float) -> str:
    """Epoch seconds → ``2025-02-19T00:00:00Z`` (UTC, whole seconds)."""
    return datetime.datetime.fromtimestamp(int(epoch_s), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def models_list(models: list[tuple[str, str, int]], anthropic: bool, owned_by: str = "anthropic") -> dict:
    """``models`` as ``(id, display name, created_at epoch seconds)``, in the order to list them →
    Anthropic's page (``anthropic=True``: the whole list as one page, ``has_more`` false) or OpenAI's
    list (``owned_by`` on every entry)."""
    if anthropic:
        data = [{"type": "model", "id": mid, "display_name": name, "created_at": rfc3339(created)}
                for mid, name, created in models]
        return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
    return {"object": "list", "data": [{"id": mid, "object": "model", "created": int(created), "owned_by": owned_by}
                                       for mid, _name, created in models]}
