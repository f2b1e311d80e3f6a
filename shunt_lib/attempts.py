"""What a request does after an attempt failed: a pure, immutable decision, as urllib3's ``Retry`` is.

:class:`Attempts` is the request's history across accounts (tried, refreshed, the failure worth
returning if nothing else works); :meth:`Attempts.after` takes one classified upstream answer and
returns the next history and the :class:`Step` the relay must take. The account effects of the same
answer (exhausted, cooling) are recorded by :meth:`~shunt_lib.state.Pool.record_outcome`.

=================  ==============================================================================
outcome            step
=================  ==============================================================================
RETURN             ANSWER with this answer, unchanged
EXHAUSTED          NEXT account; forget the failure (quota: the final answer is shunt's 429)
THROTTLE           NEXT account; forget the failure
FORBIDDEN          NEXT account; keep the answer to return if every account fails
SERVER_ERROR       NEXT account; keep the answer
OVERLOADED         BACKOFF then NEXT account, once per request; the second time ANSWER with it
AUTH               API key: DISABLE the account; OAuth: REFRESH it once, then REAUTH (a second 401)
=================  ==============================================================================

Without an answer (:meth:`Attempts.after_connect_error`): every account reaches the same upstream
host, so a failure to connect is a fact about the host, not the account. The request moves to one
other account (a transient failure, such as a pooled connection the host had closed, may pass), and
a second failure answers. A host that accepted the request and sent no head in time is not tried
again at all: another account would wait as long.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from .forwarding import ResponseHead
from .outcome import Action, Outcome


class UpstreamAnswer(NamedTuple):
    """An upstream answer read whole (an error), to forward unchanged: ``body`` is raw (maybe encoded)."""

    account: str
    head: ResponseHead
    body: bytes


class ConnectFailure(NamedTuple):
    """No answer came from ``account``'s upstream: ``message`` says why (never contains a secret);
    ``timed_out``: the request went out and no response head came within the first-byte timeout."""

    account: str
    message: str
    timed_out: bool = False


Failure = UpstreamAnswer | ConnectFailure


class Step(enum.Enum):
    """What the relay does next."""

    ANSWER = "answer"  # send this answer to the client now
    NEXT = "next"  # route again, to an account not yet tried
    BACKOFF = "backoff"  # pause briefly (the upstream is overloaded), then route again
    REFRESH = "refresh"  # refresh the account's OAuth token; if that works, retry the same account
    DISABLE = "disable"  # the API key was rejected: disable the account, route again
    REAUTH = "reauth"  # rejected right after a refresh: the account needs a new login; route again


class Attempts(NamedTuple):
    """One request's history across accounts. Immutable: every method returns a new value (a
    NamedTuple rather than a frozen dataclass: one is built per attempt, on the hot path).

    ``tried``: accounts this request must not be routed to again (until a hold clears them);
    ``refreshed``: accounts whose token this request already refreshed; ``overload_retried``: the one
    move after an overload is spent; ``last_failure``: what to return if no account can answer;
    ``count``: attempts made (a request that moves is logged as a failover); ``connect_failed``: an
    attempt of this request already failed without an answer.
    """

    tried: frozenset[str] = frozenset()
    refreshed: frozenset[str] = frozenset()
    overload_retried: bool = False
    last_failure: Failure | None = None
    count: int = 0
    connect_failed: bool = False

    def attempt(self, name: str) -> "Attempts":
        """One more attempt is being made (on ``name``)."""
        return Attempts(self.tried, self.refreshed, self.overload_retried, self.last_failure, self.count + 1,
                        self.connect_failed)

    @property
    def moving(self) -> bool:
        """Whether the next attempt moves the request away from an account it failed on."""
        return self.count > 0 and bool(self.tried)

    def skip(self, name: str) -> "Attempts":
        """``name`` cannot be used by this request (no credential): do not route to it again."""
        return self._replace(tried=self.tried | {name})

    def after(self, name: str, kind: str, outcome: Outcome, answer: UpstreamAnswer) -> tuple["Attempts", Step]:
        """The next history and step after ``name`` (of ``kind`` ``oauth``/``api_key``) gave ``answer``,
        classified as ``outcome`` (any action but SUCCESS)."""
        act = outcome.action
        if act is Action.RETURN:
            return self, Step.ANSWER
        tried = self.tried | {name}
        if act in (Action.EXHAUSTED, Action.THROTTLE):
            return self._replace(tried=tried, last_failure=None), Step.NEXT
        if act in (Action.FORBIDDEN, Action.SERVER_ERROR):
            return self._replace(tried=tried, last_failure=answer), Step.NEXT
        if act is Action.OVERLOADED:
            if self.overload_retried:
                return self, Step.ANSWER
            return self._replace(tried=tried, last_failure=answer, overload_retried=True), Step.BACKOFF
        if act is Action.AUTH:
            nxt = self._replace(tried=tried, last_failure=answer)
            if kind != "oauth":
                return nxt, Step.DISABLE
            if name in self.refreshed:
                return nxt, Step.REAUTH
            return nxt._replace(refreshed=self.refreshed | {name}), Step.REFRESH
        raise ValueError(f"no step for {act}")

    def after_connect_error(self, failure: ConnectFailure) -> tuple["Attempts", Step]:
        """``failure.account`` gave no answer: the next history and step, NEXT (another account) the
        first time the host could not be reached, else ANSWER (with :attr:`last_failure`). A
        connection failure is kept only while no upstream answer was seen (an answer is the better
        thing to return)."""
        keep = self.last_failure if isinstance(self.last_failure, UpstreamAnswer) else failure
        nxt = self._replace(tried=self.tried | {failure.account}, last_failure=keep, connect_failed=True)
        return nxt, Step.ANSWER if failure.timed_out or self.connect_failed else Step.NEXT

    def retry(self, name: str) -> "Attempts":
        """``name``'s token was refreshed: it may be tried again."""
        return self._replace(tried=self.tried - {name})

    def after_hold(self) -> "Attempts":
        """An account recovered while the request was held: every account may be tried (and refreshed) again."""
        return self._replace(tried=frozenset(), refreshed=frozenset())
