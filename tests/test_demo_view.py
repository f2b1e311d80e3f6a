"""The demo's live view and story as pure functions: no sockets, time as an argument."""

from shunt_lib.demo_view import AccountRow, Story, ViewMode, frame, render_rows, rows_from_status, view_mode

NOW = 1_800_000_000.0


def test_live_drawing_and_colour_only_on_a_real_terminal():
    assert view_mode(True, {"TERM": "xterm-256color"}, True) == ViewMode(True, True, True)
    assert view_mode(True, {"TERM": "xterm", "NO_COLOR": "1"}, True) == ViewMode(True, False, True)
    assert view_mode(True, {"TERM": "xterm", "NO_COLOR": ""}, False) == ViewMode(True, True, False)  # empty: unset
    assert view_mode(True, {"TERM": "dumb"}, True) == ViewMode(False, False, True)
    assert view_mode(False, {"TERM": "xterm"}, True) == ViewMode(False, False, True)  # a pipe, CI, a test


def status_doc():
    acct = {"requests": 4, "utilization_5h": None, "reset_5h_at_s": None, "cooldown_until_s": None}
    return {"accounts": [
        {**acct, "name": "alpha", "status": "exhausted", "utilization_5h": 1.0, "reset_5h_at_s": NOW + 6,
         "cooldown_until_s": NOW + 6},
        {**acct, "name": "bravo", "status": "available", "utilization_5h": 0.52, "reset_5h_at_s": NOW + 4},
        {**acct, "name": "charlie", "status": "cooling", "utilization_5h": 0.1, "reset_5h_at_s": NOW + 9,
         "cooldown_until_s": NOW + 3},
        {**acct, "name": "delta", "status": "available", "requests": 1},
        {**acct, "name": "echo", "status": "reauth_required"},
    ], "recent_requests": []}


def test_rows_come_from_the_status_document_and_the_requests_in_flight():
    rows = rows_from_status(status_doc(), NOW, {"bravo": 1, "delta": 0})
    assert rows[0] == AccountRow("alpha", 1.0, 6.0, "exhausted", 6.0, 4)
    assert rows[1] == AccountRow("bravo", 0.52, 4.0, "serving", None, 4)
    assert rows[2] == AccountRow("charlie", 0.1, 9.0, "cooling", 3.0, 4)
    assert rows[3] == AccountRow("delta", None, None, "ready", None, 1)
    assert rows[4].status == "unavailable"


def test_a_row_shows_the_window_bar_percent_reset_and_status_within_the_width():
    rows = rows_from_status(status_doc(), NOW, {"bravo": 1})
    lines = render_rows(rows, 100, ViewMode(True, False, True))
    assert lines[0] == "  alpha   [" + "█" * 30 + "] 100%  resets in 6s   exhausted 6s  4 requests"
    assert lines[1].startswith("  bravo   [" + "█" * 16 + "░" * 14 + "]  52%  resets in 4s   serving")
    assert "cooling 3s" in lines[2] and "   -%" in lines[3] and lines[3].endswith("1 request")
    assert all(len(line) <= 99 for line in lines)
    narrow = render_rows(rows, 40, ViewMode(True, False, True))
    assert all(len(line) <= 39 for line in narrow) and "[" + "█" * 10 + "]" in narrow[0]


def test_ascii_bars_and_no_colour_unless_asked():
    rows = rows_from_status(status_doc(), NOW, {})
    ascii_lines = render_rows(rows, 100, ViewMode(False, False, False))
    assert all(line.isascii() for line in ascii_lines) and "\x1b" not in "".join(ascii_lines)
    assert "[" + "#" * 16 + "-" * 14 + "]" in ascii_lines[1]
    coloured = render_rows(rows, 100, ViewMode(True, True, True))
    assert "\x1b[31mexhausted\x1b[0m 6s" in coloured[0] and "\x1b[32mready\x1b[0m" in coloured[1]


def test_a_frame_redraws_the_block_in_place_below_the_new_events():
    assert frame(0, [], ["a", "b"]) == "a\nb\n"  # the first: nothing to move over
    again = frame(2, ["event"], ["a", "b"])
    assert again == "\r\x1b[2A\x1b[Jevent\na\nb\n"


def test_the_story_tells_failovers_exhaustions_holds_and_resets():
    story = Story(True)
    ev = lambda kind, account, **kw: story.event({"event": kind, "account": account, **kw}, NOW)  # noqa: E731
    assert ev("exhausted", "a", until_s=NOW + 6) == ["a exhausted: its 5-hour window is used up (resets in 6s)"]
    assert ev("failover", "b", from_account="a", status=429) == ["request moved from a to b (429)"]
    assert ev("cooling", "b", until_s=NOW + 3, reason="throttled") == ["b cooling for 3s: throttled"]
    assert ev("hold", "a", until_s=NOW + 5) == ["all accounts exhausted or cooling: holding requests until a is back (in 5s)"]
    assert ev("hold", "a", until_s=NOW + 5) == []  # one episode, told once
    assert ev("request", "a") == []
    assert ev("recovered", "b") == ["b's cooldown is over: back in service"]
    assert ev("recovered", "a") == ["a's window reset: back in service"]
    assert story.held([{"held_ms": 0, "account": "a"}]) == []
    assert story.held([{"held_ms": 4100, "account": "a"}, {"held_ms": 3200, "account": "b"}]) == [
        "all accounts were out: 2 requests held up to 4.1 s, then answered by a, b"]
    assert ev("hold", "b", until_s=NOW + 2) != []  # a new episode
    assert story.held([{"held_ms": 3200, "account": "b"}]) == ["all accounts were out: request held 3.2 s, then answered by b"]
    assert story.counts == {"exhausted": 1, "failover": 1, "cooling": 1, "hold": 3, "recovered": 2, "held": 3}
