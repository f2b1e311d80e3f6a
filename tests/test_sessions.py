import json
import os

from shunt_lib.config import AccountConfig
from shunt_lib.sessions import SessionTable, id_key, session_from_body, session_key
from shunt_lib.state import Pool
from shunt_lib.state_file import next_write_delay_s

NOW = 1_000_000.0
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def load(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)


def test_header_wins_and_body_is_not_parsed():
    assert session_key({"x-claude-code-session-id": "abc"}, b"not json at all") == id_key("abc")


def test_real_claude_code_requests_share_one_session():
    t1, t2 = load("claude-code-2.1.328-turn1.json"), load("claude-code-2.1.328-turn2.json")
    sid = t1["headers"]["x-claude-code-session-id"]
    assert session_key(t1["headers"], b"") == id_key(sid)
    # Without the header, metadata.user_id's session_id gives the same key.
    assert session_from_body(t1["body"]) == id_key(sid)
    assert session_from_body(t2["body"]) == id_key(sid)


def test_legacy_user_id_form():
    assert session_from_body({"metadata": {"user_id": "user_abc_account_x_session_1234"}, "messages": []}) == id_key("1234")


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


def test_the_20001st_session_evicts_only_the_least_recently_used():
    t = SessionTable(ttl_s=3600)  # the default cap: 20,000
    for i in range(20000):
        t.bind(id_key(str(i)), "ab"[i % 2], NOW + i * 0.001)
    t.bind(id_key("0"), "a", NOW + 30)  # session 0 is used again: now the most recent
    t.bind(id_key("new"), "b", NOW + 31)
    assert len(t) == 20000
    assert t.account(id_key("1"), NOW + 31) is None  # the least recently used went
    assert all(t.account(id_key(str(i)), NOW + 31) == "ab"[i % 2] for i in (0, 2, 3, 19999))
    assert t.account(id_key("new"), NOW + 31) == "b"
    assert t.active_counts(["a", "b"], NOW + 31) == {"a": 10000, "b": 10000}


def test_active_counts_follow_binds_moves_expiry_and_eviction_without_walking_the_table():
    t = SessionTable(ttl_s=10, max_entries=4)
    t.bind("k1", "a", NOW)
    t.bind("k2", "a", NOW + 1)
    t.bind("k3", "b", NOW + 2)
    assert t.active_counts(["a", "b"], NOW + 2) == {"a": 2, "b": 1}
    t.bind("k1", "b", NOW + 3)  # moved: one fewer on a
    assert t.active_counts(["a", "b", "c"], NOW + 3) == {"a": 1, "b": 2, "c": 0}
    assert t.active_counts(["a", "b"], NOW + 11) == {"a": 0, "b": 2}  # k2 expired
    assert t.active_counts(["a", "b"], NOW + 13) == {"a": 0, "b": 0}


def test_session_ids_of_60_kb_keep_keys_and_state_small():
    pool = Pool([AccountConfig("a"), AccountConfig("b")], strategy="least-utilization", session_ttl_s=3600)
    big = "x" * 60_000
    for i in range(500):
        key = session_key({"x-claude-code-session-id": big + str(i)}, b"")
        assert len(key) == 34
        assert pool.route(key, frozenset(), NOW).reason in ("least-utilization", "session")
    size = len(json.dumps(pool.to_json(NOW)))
    assert size < 500 * 120, size  # about 80 bytes per binding, not 60 KB
    assert sum(v.active_sessions for v in pool.views(NOW)) == 500


def test_a_version_1_state_file_keeps_its_bindings_under_hashed_keys():
    old = {"version": 1, "accounts": {}, "sessions": {
        "s:sess-1": {"account": "b", "expires_at_s": NOW + 100},
        "h:" + "0" * 32: {"account": "a", "expires_at_s": NOW + 100}}}
    pool = Pool([AccountConfig("a"), AccountConfig("b")], strategy="fill-first", session_ttl_s=3600)
    pool.load_json(old, NOW)
    assert pool.session_account(session_key({"x-claude-code-session-id": "sess-1"}, b""), NOW) == "b"
    assert pool.session_account("h:" + "0" * 32, NOW) == "a"
    assert set(pool.to_json(NOW)["sessions"]) == {id_key("sess-1"), "h:" + "0" * 32}
    assert pool.to_json(NOW)["version"] == 2


def test_large_state_documents_are_written_at_a_size_aware_rate():
    assert next_write_delay_s(2_000, 0.1) == 0.1
    assert next_write_delay_s(1_600_000, 0.1, budget_bytes_per_s=2_000_000) == 0.8
