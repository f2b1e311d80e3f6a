"""The ``GET /status`` document, built from a snapshot of the pool and the accounts' credentials (pure).

Times are epoch seconds; utilization a 0–1 fraction. Identity (email, plan) and token expiry come
from the credentials, their one home; everything else from :meth:`~shunt_lib.state.Pool.snapshot`.
"""

from __future__ import annotations

from typing import Mapping

from .advice import action_for
from .credentials import Credential
from .router import AccountStatus
from .account_state import AccountSnapshot
from .savings import Ledger, savings_summary
from .state import PoolSnapshot


def status_document(snapshot: PoolSnapshot, credentials: Mapping[str, Credential | None], now_s: float, *,
                    version: str, started_at_s: float, strategy: str) -> dict:
    """The whole ``/status`` document.

    :param credentials: each account's current credential (None or absent: it has none).
    :returns: ``{"version", "started_at_s", "strategy", "pinned_account", "savings", "accounts": [...],
        "recent_requests": [...]}``; see :func:`account_status` for an account's keys and
        :func:`~shunt_lib.savings.savings_summary` for ``savings`` (the pool's, all accounts summed).
    """
    return {
        "version": version,
        "started_at_s": int(started_at_s),
        "strategy": strategy,
        "pinned_account": snapshot.pinned,
        "savings": savings_summary([a.savings or Ledger() for a in snapshot.accounts], now_s),
        "accounts": [account_status(a, credentials.get(a.view.name), now_s) for a in snapshot.accounts],
        "recent_requests": snapshot.recent,
    }


def account_status(a: AccountSnapshot, cred: Credential | None, now_s: float) -> dict:
    """One account's entry: name, kind, email, plan, status, 5h/7d utilization and resets, cooldown
    (while cooling or exhausted), every window, counters, its ``savings``, live sessions, the fix if one is needed
    (``action``) and the OAuth token's expiry."""
    v = a.view
    status = v.status(now_s)
    w5, w7 = v.windows.get("5h"), v.windows.get("7d")
    blocked = status in (AccountStatus.COOLING, AccountStatus.EXHAUSTED)
    return {
        "name": v.name,
        "kind": v.kind,
        "email": (cred.email if cred else "") or None,
        "plan": (cred.plan if cred else "") or None,
        "status": str(status),
        "utilization_5h": w5.utilization if w5 else None,
        "utilization_7d": w7.utilization if w7 else None,
        "reset_5h_at_s": _int_or_none(w5.reset_at_s if w5 else None),
        "reset_7d_at_s": _int_or_none(w7.reset_at_s if w7 else None),
        "cooldown_until_s": _int_or_none(max(v.cooldown_until_s, v.exhausted_until_s)) if blocked else None,
        "cooldown_reason": (a.cooldown_reason or None) if status is AccountStatus.COOLING else None,
        "windows": {k: w.to_json() for k, w in v.windows.items()},
        "requests": a.requests,
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "cache_read_tokens": a.cache_read_tokens,
        "cache_creation_tokens": a.cache_creation_tokens,
        "savings": savings_summary([a.savings or Ledger()], now_s),
        "active_sessions": v.active_sessions,
        "action": action_for(v.name, v.kind, status)
        or (a.exhausted_advice or None if status is AccountStatus.EXHAUSTED else None),
        "token_expires_at_s": int(cred.expires_at_ms / 1000)
        if cred is not None and cred.kind == "oauth" and cred.expires_at_ms else None,
    }


def _int_or_none(v: float | None) -> int | None:
    return int(v) if v else None
