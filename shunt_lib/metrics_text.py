"""The ``GET /metrics`` page: Prometheus text exposition format 0.0.4, written from snapshots (pure).

The format (https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format): per
metric family a ``# HELP`` line (backslash and newline escaped), a ``# TYPE`` line, then one line per
sample, ``name{label="value",...} value``, label values escaped (backslash, double quote, newline).
A histogram's samples are ``_bucket{le="..."}`` (cumulative, ending with ``le="+Inf"``), ``_sum`` and
``_count``. Counter names end in ``_total``.

:func:`render` builds the page from what :class:`~shunt_lib.metrics.Metrics` counted, the pool's
snapshot (account gauges: utilization, time to reset, status) and the number of requests in flight.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

from .metrics import TOKEN_KINDS, Counts, HistogramCounts
from .router import AccountStatus
from .state import PoolSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOWS = ("5h", "7d")  # the rate-limit windows shown (the ones /status shows)

Labels = tuple[tuple[str, str], ...]


class Family(NamedTuple):
    """One metric family: ``name`` (a counter's ends in ``_total``), ``type`` (``counter``, ``gauge``
    or ``histogram``), ``help`` and its ``samples``: ``(name suffix, labels, value)``."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, Labels, float]]


def escape_label(value: str) -> str:
    """A label value as written between double quotes: ``\\`` → ``\\\\``, ``"`` → ``\\"``, newline → ``\\n``."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A ``# HELP`` text: ``\\`` → ``\\\\``, newline → ``\\n``."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value or ``le`` bound: an integer as digits, a float as Python's shortest repr,
    ``+Inf``, ``-Inf`` and ``NaN`` as Prometheus spells them."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def family_text(fam: Family) -> str:
    """One family's lines, each ending in a newline."""
    lines = [f"# HELP {fam.name} {escape_help(fam.help)}", f"# TYPE {fam.name} {fam.type}"]
    for suffix, labels, value in fam.samples:
        inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
        labels = f"{{{inner}}}" if inner else ""
        lines.append(f"{fam.name}{suffix}{labels} {number(value)}")
    return "\n".join(lines) + "\n"


def exposition(families: Iterable[Family]) -> str:
    """The whole page: every family's lines, in order."""
    return "".join(family_text(f) for f in families)


def histogram_samples(h: HistogramCounts, labels: Labels = ()) -> list[tuple[str, Labels, float]]:
    """A histogram's samples: cumulative ``_bucket`` counts per ``le`` up to ``+Inf``, ``_sum``, ``_count``."""
    out: list[tuple[str, Labels, float]] = []
    running = 0
    for bound, n in zip((*h.bounds, math.inf), h.buckets):
        running += n
        out.append(("_bucket", (*labels, ("le", number(float(bound)))), running))
    out += [("_sum", labels, float(h.sum)), ("_count", labels, h.count)]
    return out


def _labelled(names: tuple[str, ...], counts: dict) -> list[tuple[str, Labels, float]]:
    return [("", tuple(zip(names, key if isinstance(key, tuple) else (key,))), v) for key, v in sorted(counts.items())]


def request_families(c: Counts) -> list[Family]:
    """The families counted by :class:`~shunt_lib.metrics.Metrics` since shunt started."""
    return [
        Family("shunt_requests_total", "counter", "Finished requests by the account that answered (- for none), "
               "model, the status the client got (499: it left first) and the client (a client token's label, "
               "local or admin).",
               _labelled(("account", "model", "status", "client"), c.requests)),
        Family("shunt_tokens_total", "counter", "Tokens of finished requests by account, model, kind ("
               + ", ".join(k for k, _ in TOKEN_KINDS) + ") and client.",
               _labelled(("account", "model", "kind", "client"), c.tokens)),
        Family("shunt_failovers_total", "counter", "Requests moved to another account, by what the account they "
               "left did (exhausted, throttle, overloaded, server_error, auth, forbidden, connect_error).",
               _labelled(("reason",), c.failovers)),
        Family("shunt_holds_total", "counter", "Requests held while every account was busy.", [("", (), c.holds)]),
        Family("shunt_held_seconds", "histogram", "Time held requests waited for an account, seconds.",
               histogram_samples(c.held)),
        Family("shunt_upstream_duration_seconds", "histogram", "Time from a request's arrival to its end, less the "
               "time it was held, for requests an account answered, seconds.", histogram_samples(c.upstream)),
        Family("shunt_token_refreshes_total", "counter", "Calls to the OAuth token endpoint by account and result "
               "(ok, invalid_grant, error).", _labelled(("account", "result"), c.refreshes)),
    ]


def account_families(pool: PoolSnapshot, now_s: float) -> list[Family]:
    """Gauges about each account at ``now_s`` (epoch s), from the pool's snapshot, and the savings."""
    util, reset, status = [], [], []
    savings = 0.0
    for a in pool.accounts:
        v = a.view
        name = v.name
        for window in WINDOWS:
            w = v.windows.get(window)
            if w is None:
                continue
            if w.utilization is not None:
                util.append(("", (("account", name), ("window", window)), float(w.utilization)))
            if w.reset_at_s is not None:
                reset.append(("", (("account", name), ("window", window)), float(max(0.0, w.reset_at_s - now_s))))
        current = v.status(now_s)
        status += [("", (("account", name), ("status", str(s))), 1 if s is current else 0) for s in AccountStatus]
        if a.savings is not None:
            savings += a.savings.all_usd
    return [
        Family("shunt_account_utilization", "gauge", "Share of the account's rate-limit window used, 0 to 1, as "
               "the upstream last reported it.", util),
        Family("shunt_account_reset_seconds", "gauge", "Seconds from now until the account's rate-limit window "
               "resets (0 once the reset time has passed).", reset),
        Family("shunt_account_status", "gauge", "1 for the account's current status, 0 for the others.", status),
        Family("shunt_savings_usd_total", "counter", "What the pool's requests would have cost at API list prices, "
               "USD, all time (requests of unpriced models not included).", [("", (), float(savings))]),
    ]


def cluster_families(cluster: dict | None) -> list[Family]:
    """``shunt_cluster_up`` (1: Redis answers; 0: ``degraded``, this instance serves from its own state)
    and ``shunt_cluster_instances``, from ``/status``'s ``cluster`` entry; none without a cluster."""
    if not cluster or cluster.get("state") not in ("ok", "degraded"):
        return []
    labels = (("cluster", str(cluster.get("name", ""))),)
    return [Family("shunt_cluster_up", "gauge", "Whether the cluster's Redis answers (0: degraded).",
                   [("", labels, 1 if cluster["state"] == "ok" else 0)]),
            Family("shunt_cluster_instances", "gauge", "Instances of the cluster heard from in the last 30 s.",
                   [("", labels, cluster.get("instances", 1))])]


def render(counts: Counts, pool: PoolSnapshot, now_s: float, inflight: int, cluster: dict | None = None) -> str:
    """The ``GET /metrics`` page.

    :param counts: :meth:`Metrics.counts <shunt_lib.metrics.Metrics.counts>`; :param pool: the
        pool's snapshot at ``now_s`` (epoch s); :param inflight: proxied requests in progress;
        :param cluster: ``/status``'s ``cluster`` entry (:func:`cluster_families`), or None.
    """
    return exposition([
        *request_families(counts),
        Family("shunt_inflight_requests", "gauge", "Proxied requests in progress.", [("", (), inflight)]),
        *account_families(pool, now_s),
        *cluster_families(cluster),
    ])
