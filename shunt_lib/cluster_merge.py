"""One account's shared state as the instances of a cluster see it, and how their views merge (pure).

Each instance keeps its view of an account in its own field of ``Keys.account(name)``
(:mod:`shunt_lib.cluster_keys`) as a :class:`SharedDoc`: the fields routing reads (cooldown,
exhaustion, rate-limit windows, the flags) plus stamps, epoch seconds of the instance that made the
change, which make merging independent of the order views arrive in:

- ``cooldown_set_s`` / ``exhausted_set_s``: when the mark was set (or moved later);
- ``cooldown_cleared_s`` / ``exhausted_cleared_s``: when a mark still ahead was cleared (``shunt
  reset`` clears both; fresh usage showing room clears the exhaustion only, hence two stamps);
- ``flags_s``: when ``disabled`` / ``reauth_required`` last changed.

:func:`advance` turns an instance's previous view and its account's current local fields into its
next view (what changed locally is stamped ``now_s``); :func:`merge` combines the views of all
instances. Merge rules (issue 12): the later cooldown / exhaustion wins unless a clear came after it
was set; per window the later reset wins (equal resets: the higher utilization); the flags: the last
writer wins (a tie, e.g. two views loaded from disk and stamped 0, clears them: a flag that is still
true comes back, stamped, at the next failure).

:func:`merge` is a function of the SET of views (commutative and idempotent, and merging its result
again changes nothing), not a pairwise fold: each view carries one mark, so folding pairwise could
drop a shorter mark set after a clear that killed a longer, older one. The caller therefore keeps
every instance's latest view and merges them all (:mod:`shunt_lib.cluster_accounts`).

Stamps from different machines are compared as they are: clocks are assumed in step within the
time between two changes of one account (NTP keeps them within milliseconds).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from .numbers import epoch_s
from .ratelimit import Window

#: The fields of an account's local record that are shared (``AccountRecord.shared_fields``).
LOCAL_FIELDS = ("cooldown_until_s", "cooldown_reason", "exhausted_until_s", "exhausted_advice", "windows",
                "rate_limits_at_s", "disabled", "reauth_required")


@dataclasses.dataclass(frozen=True)
class SharedDoc:
    """One instance's view of one account (all times epoch seconds; 0: none). ``windows``: window
    name → :class:`~shunt_lib.ratelimit.Window`."""

    cooldown_until_s: float = 0.0
    cooldown_reason: str = ""
    cooldown_set_s: float = 0.0
    cooldown_cleared_s: float = 0.0
    exhausted_until_s: float = 0.0
    exhausted_advice: str = ""
    exhausted_set_s: float = 0.0
    exhausted_cleared_s: float = 0.0
    windows: Mapping[str, Window] = dataclasses.field(default_factory=dict)
    rate_limits_at_s: float = 0.0
    disabled: bool = False
    reauth_required: bool = False
    flags_s: float = 0.0

    def local(self, now_s: float) -> dict:
        """The account's local fields this view implies at ``now_s`` (a mark already over is dropped),
        shaped as :data:`LOCAL_FIELDS`."""
        cooling = self.cooldown_until_s > now_s
        exhausted = self.exhausted_until_s > now_s
        return {"cooldown_until_s": self.cooldown_until_s if cooling else 0.0,
                "cooldown_reason": self.cooldown_reason if cooling else "",
                "exhausted_until_s": self.exhausted_until_s if exhausted else 0.0,
                "exhausted_advice": self.exhausted_advice if exhausted else "",
                "windows": dict(self.windows), "rate_limits_at_s": self.rate_limits_at_s,
                "disabled": self.disabled, "reauth_required": self.reauth_required}

    def to_json(self) -> dict:
        """As kept in Redis and sent in notices."""
        d = dataclasses.asdict(self)
        d["windows"] = {k: w.to_json() for k, w in self.windows.items()}
        return d

    @classmethod
    def from_json(cls, d: object, now_s: float) -> "SharedDoc | None":
        """From :meth:`to_json`'s shape; None if ``d`` is not a dict. A value of the wrong type or out of
        bounds (an instant not within a year from ``now_s``) takes its default."""
        if not isinstance(d, dict):
            return None
        values: dict = {}
        for f in dataclasses.fields(cls):
            v = d.get(f.name)
            if f.name == "windows":
                values[f.name] = {k: Window.from_json(w, now_s) for k, w in v.items()
                                  if isinstance(k, str) and len(k) <= 64 and isinstance(w, dict)} \
                    if isinstance(v, dict) else {}
            elif f.type == "bool":
                values[f.name] = v is True
            elif f.type == "str":
                values[f.name] = v[:500] if isinstance(v, str) else ""
            else:
                values[f.name] = epoch_s(v, now_s) or 0.0
        return cls(**values)


EMPTY = SharedDoc()


def _mark(prev_until: float, prev_text: str, prev_set_s: float, prev_cleared_s: float,
          until: float, text: str, now_s: float) -> tuple[float, str, float, float]:
    """(until, text, set_s, cleared_s) of one mark after the local value became ``until``."""
    if until > prev_until:  # set, or moved later, here
        return until, text, now_s, prev_cleared_s
    if until == prev_until:
        return prev_until, prev_text, prev_set_s, prev_cleared_s
    if prev_until > now_s:  # a mark still ahead went away here: cleared (a reset, or usage with room)
        if until > now_s:  # shortened but still ahead (a local record never does that): a fresh mark
            return until, text, now_s, prev_cleared_s
        return 0.0, "", 0.0, now_s
    return (until, text, prev_set_s, prev_cleared_s) if until else (0.0, "", 0.0, prev_cleared_s)  # it ran out


def advance(prev: SharedDoc | None, local: Mapping, now_s: float) -> SharedDoc:
    """This instance's next view of an account, from its previous view ``prev`` (None: none yet; what
    the instance holds then counts as known before anything shared: stamped 0) and the account's local
    fields ``local`` (:data:`LOCAL_FIELDS`) at ``now_s``: a mark that grew is set now, a mark still ahead
    that vanished is cleared now, changed flags are stamped now; the windows are the local ones."""
    if prev is None:
        prev, now_s = EMPTY, 0.0
    c_until, c_reason, c_set, c_cleared = _mark(prev.cooldown_until_s, prev.cooldown_reason, prev.cooldown_set_s,
                                                prev.cooldown_cleared_s, float(local["cooldown_until_s"]),
                                                local["cooldown_reason"], now_s)
    e_until, e_advice, e_set, e_cleared = _mark(prev.exhausted_until_s, prev.exhausted_advice, prev.exhausted_set_s,
                                                prev.exhausted_cleared_s, float(local["exhausted_until_s"]),
                                                local["exhausted_advice"], now_s)
    disabled, reauth = bool(local["disabled"]), bool(local["reauth_required"])
    flags_s = prev.flags_s if (disabled, reauth) == (prev.disabled, prev.reauth_required) else now_s
    return SharedDoc(c_until, c_reason, c_set, c_cleared, e_until, e_advice, e_set, e_cleared,
                     dict(local["windows"]), float(local["rate_limits_at_s"]), disabled, reauth, flags_s)


def _winning_mark(marks: list[tuple[float, str, float]], cleared_s: float) -> tuple[float, str, float]:
    """The latest-ending mark ``(until, text, set_s)`` not set before ``cleared_s``, or none."""
    alive = [m for m in marks if m[0] > 0 and m[2] >= cleared_s]
    return max(alive) if alive else (0.0, "", 0.0)


def _window_key(w: Window) -> tuple:
    return (w.reset_at_s or 0.0, -1.0 if w.utilization is None else w.utilization, w.status)


def merge(docs: Iterable[SharedDoc]) -> SharedDoc:
    """The account as the views ``docs`` (one per instance, in any order, repeats allowed) together
    say it is (see the module docstring for the rules). An empty ``docs`` gives the empty view."""
    docs = list(docs)
    if not docs:
        return EMPTY
    c_cleared = max(d.cooldown_cleared_s for d in docs)
    e_cleared = max(d.exhausted_cleared_s for d in docs)
    c_until, c_reason, c_set = _winning_mark([(d.cooldown_until_s, d.cooldown_reason, d.cooldown_set_s)
                                              for d in docs], c_cleared)
    e_until, e_advice, e_set = _winning_mark([(d.exhausted_until_s, d.exhausted_advice, d.exhausted_set_s)
                                              for d in docs], e_cleared)
    windows: dict[str, Window] = {}
    for d in docs:
        for name, w in d.windows.items():
            have = windows.get(name)
            if have is None or _window_key(w) > _window_key(have):
                windows[name] = w
    flags = max(docs, key=lambda d: (d.flags_s, not d.disabled, not d.reauth_required))
    return SharedDoc(c_until, c_reason, c_set, c_cleared, e_until, e_advice, e_set, e_cleared,
                     dict(sorted(windows.items())), max(d.rate_limits_at_s for d in docs),
                     flags.disabled, flags.reauth_required, flags.flags_s)
