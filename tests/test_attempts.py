"""The failover decision as a pure value, like urllib3's test_retry: each outcome's next history and step."""

import pytest

from shunt_lib.attempts import Attempts, ConnectFailure, Step, UpstreamAnswer
from shunt_lib.forwarding import ResponseHead
from shunt_lib.outcome import Action, Outcome


def answer(account="a", status=500) -> UpstreamAnswer:
    return UpstreamAnswer(account, ResponseHead.from_items(status, "", []), b"{}")


def test_a_new_request_has_no_history():
    a = Attempts()
    assert a.tried == frozenset() and a.refreshed == frozenset() and a.count == 0
    assert a.last_failure is None and not a.overload_retried and not a.moving


def test_values_are_immutable_and_reusable():
    a = Attempts()
    b, step = a.after("x", "oauth", Outcome(Action.SERVER_ERROR), answer("x"))
    assert a.tried == frozenset() and b.tried == {"x"} and step is Step.NEXT
    with pytest.raises(AttributeError):
        a.count = 3


def test_return_answers_unchanged_and_keeps_the_history():
    a = Attempts(tried=frozenset({"z"}))
    b, step = a.after("x", "oauth", Outcome(Action.RETURN), answer("x", 400))
    assert step is Step.ANSWER and b is a


@pytest.mark.parametrize("action", [Action.EXHAUSTED, Action.THROTTLE])
def test_quota_and_throttle_move_on_and_forget_the_failure(action):
    a = Attempts(last_failure=answer("old"))
    b, step = a.after("x", "oauth", Outcome(action, until_s=99), answer("x", 429))
    assert step is Step.NEXT and b.tried == {"x"} and b.last_failure is None


@pytest.mark.parametrize("action", [Action.FORBIDDEN, Action.SERVER_ERROR])
def test_forbidden_and_server_errors_move_on_and_keep_the_answer(action):
    ans = answer("x", 503)
    b, step = Attempts().after("x", "api_key", Outcome(action), ans)
    assert step is Step.NEXT and b.tried == {"x"} and b.last_failure is ans


def test_overload_moves_once_after_a_backoff_then_answers():
    first = answer("x", 529)
    b, step = Attempts().after("x", "oauth", Outcome(Action.OVERLOADED), first)
    assert step is Step.BACKOFF and b.overload_retried and b.tried == {"x"} and b.last_failure is first
    second = answer("y", 529)
    c, step = b.after("y", "oauth", Outcome(Action.OVERLOADED), second)
    assert step is Step.ANSWER and c is b  # the caller answers with `second`; y is not marked tried


def test_401_on_an_api_key_disables_it():
    b, step = Attempts().after("k", "api_key", Outcome(Action.AUTH), answer("k", 401))
    assert step is Step.DISABLE and b.tried == {"k"} and b.refreshed == frozenset()


def test_401_on_oauth_refreshes_once_then_needs_a_login():
    first, second = answer("a", 401), answer("a", 401)
    b, step = Attempts().after("a", "oauth", Outcome(Action.AUTH), first)
    assert step is Step.REFRESH and b.refreshed == {"a"} and b.tried == {"a"} and b.last_failure is first
    b = b.retry("a")  # the refresh worked: a may be tried again
    assert b.tried == frozenset() and b.refreshed == {"a"}
    c, step = b.after("a", "oauth", Outcome(Action.AUTH), second)
    assert step is Step.REAUTH and c.tried == {"a"} and c.last_failure is second


def test_connect_failures_never_hide_an_upstream_answer():
    ans = answer("a", 503)
    b, _ = Attempts().after_connect_error(ConnectFailure("a", "refused"))
    assert b.tried == {"a"} and b.last_failure == ConnectFailure("a", "refused")
    c, _ = b.after_connect_error(ConnectFailure("b", "timed out"))
    assert c.last_failure == ConnectFailure("b", "timed out")
    d, _ = Attempts(last_failure=ans).after_connect_error(ConnectFailure("b", "refused"))
    assert d.last_failure is ans and d.tried == {"b"}


def test_an_unreachable_host_moves_the_request_once_and_a_silent_one_not_at_all():
    b, step = Attempts().after_connect_error(ConnectFailure("a", "could not connect to h:443: connection refused"))
    assert step is Step.NEXT and b.connect_failed
    c, step = b.attempt("b").after_connect_error(ConnectFailure("b", "could not connect to h:443: connection refused"))
    assert step is Step.ANSWER and c.tried == {"a", "b"}  # a third account would reach the same host
    d, step = Attempts().after_connect_error(ConnectFailure("a", "h:443 sent no response head within 120 s", True))
    assert step is Step.ANSWER and d.last_failure.timed_out


def test_a_hold_clears_tried_and_refreshed_but_not_the_rest():
    ans = answer()
    a = Attempts(tried=frozenset({"a", "b"}), refreshed=frozenset({"a"}), overload_retried=True, last_failure=ans, count=3)
    b = a.after_hold()
    assert b == Attempts(overload_retried=True, last_failure=ans, count=3)


def test_moving_is_an_attempt_after_a_failed_one():
    a = Attempts().attempt("a")
    assert a.count == 1 and not a.moving
    b, _ = a.after("a", "oauth", Outcome(Action.SERVER_ERROR), answer())
    assert b.moving
    assert Attempts().skip("ghost").tried == {"ghost"} and not Attempts().skip("ghost").moving


def test_success_is_not_a_failure():
    with pytest.raises(ValueError):
        Attempts().after("a", "oauth", Outcome(Action.SUCCESS), answer("a", 200))
