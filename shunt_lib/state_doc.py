"""The ``state.json`` document's top level, built and read as pure functions.

:func:`state_document` builds it and :func:`saved_state` reads it; each part's entries are shaped by
their owner (:class:`~shunt_lib.account_state.AccountRecord`, :class:`~shunt_lib.sessions.SessionTable`,
:func:`~shunt_lib.record.record_from_json`), and :class:`~shunt_lib.state.Pool` assembles them under its
lock. The file itself is :mod:`shunt_lib.state_file`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Container, Iterable, Mapping, NamedTuple

from .record import RequestRecord, record_from_json

if TYPE_CHECKING:
    from .account_state import AccountRecord

STATE_VERSION = 2  # 2: session keys are hashed (sessions.id_key); a version-1 file's keys are migrated on load


def state_document(now_s: float, pinned: str | None, accounts: Mapping[str, "AccountRecord"], sessions: dict,
                   recent: Iterable[RequestRecord]) -> dict:
    """The ``state.json`` document: ``{"version": STATE_VERSION, "saved_at_s": now_s, "pinned_account",
    "accounts": {name: entry}, "sessions": {key: binding}, "recent_requests": [record, ...]}``.

    :param sessions: the bindings as :meth:`~shunt_lib.sessions.SessionTable.to_json` gives them.
    """
    return {
        "version": STATE_VERSION,
        "saved_at_s": now_s,
        "pinned_account": pinned,
        "accounts": {n: r.to_json() for n, r in accounts.items()},
        "sessions": sessions,
        "recent_requests": list(recent),
    }


class SavedState(NamedTuple):
    """The parts of a saved ``state.json`` document, as :func:`saved_state` found them.

    ``accounts``: (name, entry) of each known account whose entry is an object, for
    :meth:`~shunt_lib.account_state.AccountRecord.load_json`; ``sessions``: the bindings as found,
    for :meth:`~shunt_lib.sessions.SessionTable.load_json`; ``hashed_keys``: the file is version 2 or
    later (else its session keys need migrating); ``pinned``: the pin if it names a known account;
    ``recent``: the recent requests that are well-formed, oldest first.
    """

    accounts: list[tuple[str, dict]]
    sessions: object
    hashed_keys: bool
    pinned: str | None
    recent: list[RequestRecord]


def saved_state(data: object, names: Container[str], max_recent: int) -> SavedState | None:
    """Read a ``state.json`` document written by :func:`state_document` (pure). Parts of the wrong
    shape, accounts not in ``names`` and malformed requests are dropped, never raised; only the last
    ``max_recent`` requests are read. :returns: None if ``data`` is not an object."""
    if not isinstance(data, dict):
        return None
    accounts = data.get("accounts")
    known = [(n, d) for n, d in (accounts.items() if isinstance(accounts, dict) else ())
             if n in names and isinstance(d, dict)]
    version = data.get("version")
    pinned = data.get("pinned_account")
    recent = data.get("recent_requests")
    records = [record_from_json(e) for e in (recent[-max_recent:] if isinstance(recent, list) else ())]
    return SavedState(known, data.get("sessions"), isinstance(version, int) and version >= 2,
                      pinned if isinstance(pinned, str) and pinned in names else None,
                      [r for r in records if r is not None])
