"""One proxied request's trip through the relay: what it asked, where it stands, and how to wake it.

:class:`RequestState` is shared by the loop that decides (:class:`~shunt_lib.relay.Relay`) and the
code that ends the request (:class:`~shunt_lib.finish.Finish`); it is owned by the request's thread,
except :meth:`RequestState.interrupt`, which any thread may call.
"""

from __future__ import annotations

from .attempts import Attempts
from .client import ClientStream
from .dialect import Dialect, Exchange, ProxyRequest
from .hold import Hold
from .model_routing import RoutePlan
from .router import is_quota_free
from .upstream import Cancel, UpstreamResponse
from .usage import UsageTap
from .watch import ClientWatch

_NO_ATTEMPTS = Attempts()  # immutable, so every request can start from the same one


class RequestState:
    """One request's trip through :meth:`~shunt_lib.relay.Relay.handle`.

    :param session: the session key the router keeps the request's conversation on (or None).
    :param deadline_s: epoch s past which a held request is answered instead.
    :param started: when the request arrived, monotonic s.
    """

    __slots__ = ("request", "dialect", "client", "session", "attempts", "deadline_s", "started", "hold", "active",
                 "account", "tap", "recorded", "cancel", "quota_free", "left",
                 "exchange", "plan", "kinds", "bound", "ticket", "override")

    def __init__(self, request: ProxyRequest, dialect: Dialect, client: ClientStream, session: str | None,
                 deadline_s: float, started: float):
        self.request = request
        self.dialect = dialect
        self.client = client
        self.session = session
        self.attempts = _NO_ATTEMPTS
        self.deadline_s = deadline_s
        self.started = started
        self.hold: Hold | None = None  # made the first time the request is held
        self.active: UpstreamResponse | None = None  # the upstream answer being read, if any
        self.account: str | None = None  # the account whose answer is being relayed
        self.tap: UsageTap | None = None  # its usage tap, so a cancelled stream is still counted
        self.recorded = False  # the finished request was counted and logged
        self.cancel: Cancel | None = None  # aborts the attempt waiting for its response head
        self.quota_free = is_quota_free(request.method, request.target)  # any working credential may serve it
        #: the account the last attempt failed on, its status (None: no answer) and why it failed (an
        #: :class:`~shunt_lib.outcome.Action` value or ``connect_error``), for the failover event
        self.left: tuple[str, int | None, str] | None = None
        self.exchange: Exchange | None = None  # the last attempt's: how its answer reaches the client
        #: the accounts the request's model routes it to (:mod:`~shunt_lib.model_routing`), or None
        self.plan: RoutePlan | None = None
        #: the account kinds that may serve it: the dialect's ``account_kinds``, or its ``routed_kinds`` once a plan routes it
        self.kinds: frozenset[str] | None = dialect.account_kinds
        #: the only accounts its client token may reach (:mod:`~shunt_lib.client_gate`), or None: any
        self.bound: frozenset[str] | None = None
        #: its place under its client token's limits (:class:`~shunt_lib.client_meter.Ticket`), or None
        self.ticket = None

    def allowed(self, names: frozenset[str] | None) -> frozenset[str] | None:
        """``names`` (None: any account) narrowed to the accounts the request's client token may reach."""
        if self.bound is None:
            return names
        return self.bound if names is None else names & self.bound
        #: what the runtime overrides did to it (:class:`~shunt_lib.overrides.Applied`), or None
        self.override = None

    def interrupt(self) -> None:
        """Unblock this request's thread if it waits on the upstream (for the head, or for body
        bytes). Any thread; never blocks."""
        resp, cancel = self.active, self.cancel
        if resp is not None:
            resp.interrupt()
        if cancel is not None:
            cancel.cancel()

    def watch_client(self, watcher: ClientWatch) -> None:
        """Notice at once if the client hangs up (``watcher`` sets :attr:`ClientStream.gone
        <shunt_lib.client.ClientStream.gone>` and calls :meth:`interrupt`): wake a hold, unblock an
        upstream read. Idempotent."""
        self.client.watch(watcher, self.interrupt)
