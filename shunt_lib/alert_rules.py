"""Which alerts to send: pure decisions over the pool's accounts at two instants, the token refresh
failures counted so far, and when each alert was last sent. Time is an argument; nothing here does I/O.

Kinds (:attr:`Alert.kind`) and when each is raised:

* ``exhausted``: an account became ``exhausted`` (out of quota); ``reset_at_s`` says when it comes back.
* ``all_busy``: no account can take a request any more (new requests are held, or answered 429);
  ``reset_at_s`` is when the first one recovers by itself (None if none does). ``account`` is ``""``.
* ``reauth_required`` / ``disabled``: an account needs a human; the body is the sentence of
  :func:`~shunt_lib.advice.action_for`, with the command to run (``shunt add-account NAME``).
* ``recovered``: an account that was ``exhausted``, ``reauth_required`` or ``disabled`` is available again.
* ``refresh_failing``: :data:`REFRESH_FAILURES` or more token refreshes of an account failed in a row
  (network, 5xx, 429); raised again every interval while it goes on.
* ``weekly_high``: a 7-day window (``7d``, ``7d_<model>``) passed :data:`WEEKLY_HIGH` utilization.
* ``test``: ``shunt alerts test``.

The first look at the pool (after a start) and an account seen for the first time (after a reload)
only set the baseline: a state is reported when it begins, not because shunt restarted. :func:`due`
lets each (kind, account) through at most once per interval.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Sequence

from .advice import action_for
from .logfmt import clock_text
from .router import AccountStatus, AccountView
from .status_view import duration_text

WEEKLY_HIGH = 0.9  #: a 7-day window's utilization (0–1) at or past which ``weekly_high`` is raised
REFRESH_FAILURES = 3  #: failed token refreshes in a row that raise ``refresh_failing``
NEEDS_HUMAN = (AccountStatus.REAUTH_REQUIRED, AccountStatus.DISABLED)
WAS_DOWN = (AccountStatus.EXHAUSTED, *NEEDS_HUMAN)  # states whose end is worth a ``recovered``


class Alert(NamedTuple):
    """One alert: ``kind`` (see the module), the ``account`` it is about (``""``: the pool), a one-line
    ``title``, a ``body`` of a sentence or two, and ``reset_at_s`` (epoch s) when a time matters."""

    kind: str
    account: str
    title: str
    body: str
    reset_at_s: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What :func:`due` limits: one alert per (kind, account) per interval."""
        return self.kind, self.account


class Seen(NamedTuple):
    """What the rules remember of one account between two looks: its status and its highest 7-day
    utilization (0–1; 0 when unknown or its window has reset)."""

    status: AccountStatus
    weekly: float


def weekly_utilization(view: AccountView, now_s: float) -> tuple[float, str, float | None]:
    """The highest utilization among ``view``'s 7-day windows whose reset is still ahead (a window
    past its reset counts as 0). :returns: (utilization 0–1, window name, its reset epoch s)."""
    best: tuple[float, str, float | None] = (0.0, "", None)
    for name, w in view.windows.items():
        if not name.startswith("7d") or w.utilization is None:
            continue
        if w.reset_at_s is not None and w.reset_at_s <= now_s:
            continue
        if w.utilization > best[0]:
            best = (w.utilization, name, w.reset_at_s)
    return best


def _when(at_s: float, now_s: float) -> str:
    return f"{clock_text(at_s, now_s)} (in {duration_text(at_s - now_s)})"


def _account_alerts(view: AccountView, before: Seen, now: Seen, now_s: float) -> list[Alert]:
    name, out = view.name, []
    if now.status != before.status:
        if now.status is AccountStatus.EXHAUSTED:
            out.append(Alert("exhausted", name, f"shunt: account {name} is out of quota",
                             f"{name} is out of quota until {_when(view.exhausted_until_s, now_s)}; "
                             "requests go to the other accounts.", view.exhausted_until_s))
        elif now.status in NEEDS_HUMAN:
            what = "needs a new login" if now.status is AccountStatus.REAUTH_REQUIRED else "is disabled"
            out.append(Alert(str(now.status), name, f"shunt: account {name} {what}",
                             f"{name}: {action_for(name, view.kind, now.status)}"))
        elif now.status is AccountStatus.AVAILABLE and before.status in WAS_DOWN:
            out.append(Alert("recovered", name, f"shunt: account {name} is available again",
                             f"{name} can take requests again."))
    if now.weekly >= WEEKLY_HIGH > before.weekly:
        util, window, reset = weekly_utilization(view, now_s)
        resets = f"; it resets at {_when(reset, now_s)}" if reset is not None else ""
        out.append(Alert("weekly_high", name, f"shunt: account {name} is past {WEEKLY_HIGH:.0%} of its week",
                         f"{name} has used {util:.0%} of its 7-day window ({window}){resets}.", reset))
    return out


def transitions(before: Mapping[str, Seen] | None, views: Sequence[AccountView], now_s: float
                ) -> tuple[list[Alert], dict[str, Seen]]:
    """The alerts the change from ``before`` to ``views`` (the pool at ``now_s``, epoch s) raises.

    :param before: what the previous call returned, or None on the first look (baseline: no alerts).
    :returns: (the alerts, in account order with ``all_busy`` last; what to pass as ``before`` next time).
    """
    now = {v.name: Seen(v.status(now_s), weekly_utilization(v, now_s)[0]) for v in views}
    if before is None:
        return [], now
    out: list[Alert] = []
    for v in views:
        if v.name in before:
            out += _account_alerts(v, before[v.name], now[v.name], now_s)
    was_usable = any(s.status is AccountStatus.AVAILABLE for n, s in before.items() if n in now)
    if views and was_usable and not any(s.status is AccountStatus.AVAILABLE for s in now.values()):
        out.append(all_busy(views, now_s))
    return out, now


def all_busy(views: Sequence[AccountView], now_s: float) -> Alert:
    """The ``all_busy`` alert for a pool where no account in ``views`` is usable at ``now_s``."""
    ahead = [(at, v.name) for v in views if (at := v.available_at_s(now_s)) is not None]
    if not ahead:
        return Alert("all_busy", "", "shunt: no account can take requests",
                     "Every account needs a new login or key; requests are refused until one is fixed "
                     "(`shunt status` says how).")
    at, name = min(ahead)
    return Alert("all_busy", "", "shunt: every account is busy",
                 f"New requests wait (up to max_wait_s) or get a 429 until {name} is available again at "
                 f"{_when(at, now_s)}.", at)


def refresh_alerts(failures: Mapping[str, tuple[int, str]]) -> list[Alert]:
    """``refresh_failing`` for each account whose token refresh failed :data:`REFRESH_FAILURES` or more
    times in a row. :param failures: account → (failures in a row, the last failure's message, which
    names no secret: :class:`~shunt_lib.oauth.RefreshResult`)."""
    return [Alert("refresh_failing", name, f"shunt: token refresh failing for {name}",
                  f"The last {count} token refreshes of {name} failed (last: {message}); shunt keeps "
                  f"retrying. If it goes on, check the network or run `shunt add-account {name}`.")
            for name, (count, message) in failures.items() if count >= REFRESH_FAILURES]


def due(alerts: Iterable[Alert], last_sent: Mapping[tuple[str, str], float], now_s: float, interval_s: float
        ) -> tuple[list[Alert], list[Alert], dict[tuple[str, str], float]]:
    """Let each (kind, account) through at most once per ``interval_s`` seconds.

    :param last_sent: (kind, account) → epoch s it was last let through.
    :returns: (the alerts to send, the alerts held back, the new ``last_sent``, without entries older
        than the interval).
    """
    sent = {k: t for k, t in last_sent.items() if now_s - t < interval_s}
    send, held = [], []
    for a in alerts:
        if a.key in sent:
            held.append(a)
        else:
            sent[a.key] = now_s
            send.append(a)
    return send, held, sent


def trial_alert(now_s: float) -> Alert:
    """The alert ``shunt alerts test`` sends."""
    return Alert("test", "", "shunt: test alert",
                 f"Alerts from shunt reach you here (sent at {clock_text(now_s, now_s)}).")
