"""What the user should do about an account that needs a human: one sentence naming the command."""

from __future__ import annotations


def action_for(name: str, kind: str, status: str) -> str | None:
    """The fix for account ``name`` (of ``kind``) in ``status``, or None if it needs nothing."""
    if kind == "openai" and status in ("reauth_required", "disabled"):
        return f"Its provider rejected the key: run `shunt add-account {name} --openai` with a valid key."
    if status == "reauth_required":
        if kind == "api_key":
            return f"Its API key is missing or was rejected: run `shunt add-account {name} --api-key`."
        return f"Its login expired or was revoked: run `shunt add-account {name}` to log in again."
    if status == "disabled":
        return f"Its API key was rejected: run `shunt add-account {name} --api-key` with a valid key."
    return None
