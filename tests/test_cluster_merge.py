"""The merge of the instances' views of one account (pure): stamps, clears, windows, flags, order-free."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shunt_lib.cluster_merge import EMPTY, SharedDoc, advance, merge
from shunt_lib.ratelimit import Window

NOW = 1_800_000_000.0


def local(**kw) -> dict:
    d = {"cooldown_until_s": 0.0, "cooldown_reason": "", "exhausted_until_s": 0.0, "exhausted_advice": "",
         "windows": {}, "rate_limits_at_s": 0.0, "disabled": False, "reauth_required": False}
    d.update(kw)
    return d


def test_a_mark_that_grew_is_set_now_and_one_that_vanished_ahead_is_cleared_now():
    a = advance(EMPTY, local(exhausted_until_s=NOW + 3600, exhausted_advice="x"), NOW)
    assert (a.exhausted_until_s, a.exhausted_set_s, a.exhausted_advice) == (NOW + 3600, NOW, "x")
    same = advance(a, local(exhausted_until_s=NOW + 3600, exhausted_advice="x"), NOW + 5)
    assert same == a  # nothing changed: no new stamp
    cleared = advance(a, local(), NOW + 10)
    assert (cleared.exhausted_until_s, cleared.exhausted_cleared_s) == (0.0, NOW + 10)
    ran_out = advance(a, local(), NOW + 4000)  # its time passed: not a clear
    assert ran_out.exhausted_cleared_s == 0.0 and ran_out.exhausted_until_s == 0.0


def test_what_an_instance_held_before_joining_is_stamped_zero():
    first = advance(None, local(cooldown_until_s=NOW + 60, cooldown_reason="403", disabled=True), NOW)
    assert first.cooldown_set_s == 0.0 and first.flags_s == 0.0 and first.cooldown_until_s == NOW + 60


def test_the_later_mark_wins_unless_a_clear_came_after_it():
    x = advance(EMPTY, local(exhausted_until_s=NOW + 100), NOW)  # one instance: exhausted until +100
    y = advance(EMPTY, local(exhausted_until_s=NOW + 50), NOW + 1)
    assert merge([x, y]).exhausted_until_s == NOW + 100
    z = advance(merge([x]), local(), NOW + 2)  # a third clears it (shunt reset) after both were set
    assert merge([x, y, z]).exhausted_until_s == 0.0
    w = advance(EMPTY, local(exhausted_until_s=NOW + 30), NOW + 3)  # a shorter mark set after the clear lives
    assert merge([x, y, z, w]).exhausted_until_s == NOW + 30
    assert merge([w, z, y, x]) == merge([x, y, z, w])


def test_a_usage_clear_of_the_exhaustion_leaves_the_cooldown():
    x = advance(EMPTY, local(exhausted_until_s=NOW + 100, cooldown_until_s=NOW + 20, cooldown_reason="429"), NOW)
    y = advance(x, local(cooldown_until_s=NOW + 20, cooldown_reason="429"), NOW + 1)
    m = merge([x, y])
    assert m.exhausted_until_s == 0.0 and (m.cooldown_until_s, m.cooldown_reason) == (NOW + 20, "429")


def test_per_window_the_later_reset_wins_then_the_higher_utilization():
    a = SharedDoc(windows={"5h": Window(0.9, NOW + 100, "allowed"), "7d": Window(0.2, NOW + 9000, "allowed")})
    b = SharedDoc(windows={"5h": Window(0.1, NOW + 18000, "allowed"), "7d": Window(0.3, NOW + 9000, "allowed")})
    m = merge([a, b])
    assert m.windows == {"5h": Window(0.1, NOW + 18000, "allowed"), "7d": Window(0.3, NOW + 9000, "allowed")}


def test_flags_last_writer_wins_and_a_tie_clears():
    a = advance(EMPTY, local(reauth_required=True), NOW)
    b = advance(a, local(), NOW + 1)
    assert merge([a, b]).reauth_required is False and merge([b, a]) == merge([a, b])
    c = advance(b, local(disabled=True), NOW + 2)
    assert merge([a, b, c]).disabled is True
    stale = [advance(None, local(reauth_required=True), NOW), advance(None, local(), NOW)]
    assert merge(stale).reauth_required is False


def test_a_view_survives_json_and_bad_values_take_defaults():
    a = advance(EMPTY, local(exhausted_until_s=NOW + 100, exhausted_advice="pay",
                             windows={"5h": Window(1.0, NOW + 100, "rejected")}, rate_limits_at_s=NOW), NOW)
    assert SharedDoc.from_json(a.to_json(), NOW) == a
    bad = SharedDoc.from_json({"exhausted_until_s": float("inf"), "disabled": "yes", "windows": [1],
                               "cooldown_reason": 7}, NOW)
    assert bad == EMPTY
    assert SharedDoc.from_json("nope", NOW) is None


def test_local_drops_marks_already_over():
    a = advance(EMPTY, local(cooldown_until_s=NOW + 10, cooldown_reason="r"), NOW)
    assert a.local(NOW + 5)["cooldown_until_s"] == NOW + 10
    assert a.local(NOW + 11)["cooldown_until_s"] == 0.0 and a.local(NOW + 11)["cooldown_reason"] == ""


# -- order-free: a property over random histories -------------------------------------------------
_step = st.tuples(st.integers(0, 2),  # which instance acts
                  st.sampled_from(["cool", "exhaust", "reset", "flag", "window", "expire"]),
                  st.integers(1, 500), st.floats(0, 1.2))


def _views(history) -> list[SharedDoc]:
    """Run a history of local changes on three instances, each learning nothing from the others."""
    views = [EMPTY, EMPTY, EMPTY]
    locs = [local(), local(), local()]
    t = NOW
    for who, what, n, util in history:
        t += 1
        loc = dict(locs[who])
        if what == "cool":
            loc["cooldown_until_s"], loc["cooldown_reason"] = max(loc["cooldown_until_s"], t + n), f"r{n}"
        elif what == "exhaust":
            loc["exhausted_until_s"] = max(loc["exhausted_until_s"], t + n)
        elif what == "reset":
            loc.update(cooldown_until_s=0.0, cooldown_reason="", exhausted_until_s=0.0, exhausted_advice="")
        elif what == "flag":
            loc["disabled"] = n % 2 == 0
        elif what == "window":
            loc["windows"] = {**loc["windows"], f"w{n % 3}": Window(util, NOW + n, "allowed")}
        else:
            t += n
        locs[who] = loc
        views[who] = advance(views[who], loc, t)
    return views


@settings(max_examples=200, deadline=None)
@given(st.lists(_step, max_size=12), st.randoms(use_true_random=False))
def test_merge_is_commutative_and_idempotent(history, rnd):
    views = _views(history)
    m = merge(views)
    shuffled = list(views)
    rnd.shuffle(shuffled)
    assert merge(shuffled) == m
    assert merge(views + views[:1]) == m  # a view heard twice
    assert merge([m]) == m and merge([m, *views]) == m  # merging the result again changes nothing
