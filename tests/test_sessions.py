import json
import os

from shunt_lib.sessions import session_from_body, session_key

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def load(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)


def test_header_wins_and_body_is_not_parsed():
    assert session_key({"x-claude-code-session-id": "abc"}, b"not json at all") == "s:abc"


def test_real_claude_code_requests_share_one_session():
    t1, t2 = load("claude-code-2.1.328-turn1.json"), load("claude-code-2.1.328-turn2.json")
    sid = t1["headers"]["x-claude-code-session-id"]
    assert session_key(t1["headers"], b"") == "s:" + sid
    # Without the header, metadata.user_id's session_id gives the same key.
    assert session_from_body(t1["body"]) == "s:" + sid
    assert session_from_body(t2["body"]) == "s:" + sid


def test_legacy_user_id_form():
    assert session_from_body({"metadata": {"user_id": "user_abc_account_x_session_1234"}, "messages": []}) == "s:1234"


def test_content_hash_is_stable_across_turns_and_differs_by_system():
    base = {"system": [{"type": "text", "text": "You are helpful."}], "tools": [{"name": "b"}, {"name": "a"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "first"}]}]}
    later = dict(base, messages=base["messages"] + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "more"}])
    k1 = session_key({}, json.dumps(base).encode())
    assert k1.startswith("h:")
    assert session_key({}, json.dumps(later).encode()) == k1
    other = dict(base, system="Another system")
    assert session_key({}, json.dumps(other).encode()) != k1


def test_no_identity():
    assert session_key({}, b"") is None
    assert session_key({}, b"{}") is None
    assert session_key({}, b"garbage") is None
    assert session_key({}, json.dumps({"messages": "nope"}).encode()) is None
