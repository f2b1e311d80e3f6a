"""shunt_lib.json_edit: an override changes only its field, byte for byte otherwise (property tests)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shunt_lib.json_edit import NotAnObject, get_member, members, set_inner, set_member

WS = st.text(alphabet=" \t\r\n", max_size=3)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=8)


@st.composite
def value_text(draw, value):
    """``value`` serialised in a drawn style: indentation, separators, ASCII escapes or not, ``\\/``."""
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2, "\t"])),
                      separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])))
    if draw(st.booleans()):
        text = text.replace("/", "\\/")  # an escape json.dumps never writes; json.loads reads it
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15 and draw(st.booleans()):
        text = f"{int(value)}.0e0"  # another spelling of the same number
    return text


@st.composite
def documents(draw):
    """(members as (key, value, value_text), the object's text as a list of pieces with the value texts at
    odd positions)."""
    keys = draw(st.lists(st.sampled_from(["model", "effort", "output_config", "messages", "stream", "x", "é", "a\"b"]),
                         unique=True, max_size=6))
    mems = []
    for k in keys:
        v = draw(VALUES) if k != "output_config" else draw(st.one_of(VALUES, st.dictionaries(st.text(max_size=5), SCALARS, max_size=3)))
        mems.append((k, v, draw(value_text(v))))
    pieces = [draw(WS) + "{"]
    for i, (k, v, vt) in enumerate(mems):
        pieces[-1] += draw(WS) + json.dumps(k, ensure_ascii=draw(st.booleans())) + draw(WS) + ":" + draw(WS)
        pieces.append(vt)
        pieces.append(draw(WS) + ("," if i < len(mems) - 1 else ""))
    pieces[-1] += draw(WS) + "}" + draw(WS)
    return mems, pieces


def splice(pieces, index, replacement):
    out = list(pieces)
    out[2 * index + 1] = replacement
    return "".join(out).encode()


def dump(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


@settings(max_examples=150, deadline=None)
@given(documents(), st.sampled_from(["model", "stream", "new"]), VALUES)
def test_set_member_changes_only_that_member(doc, key, value):
    mems, pieces = doc
    raw = "".join(pieces).encode()
    original = json.loads(raw)
    edited = set_member(raw, key, value)
    assert json.loads(edited) == {**original, key: value}
    index = next((i for i, m in enumerate(mems) if m[0] == key), None)
    if index is not None:  # exactly the value's span replaced, every other byte as it was
        assert edited == splice(pieces, index, dump(value))
    else:  # inserted first, right after the "{"
        head, rest = pieces[0].split("{", 1)
        tail = "".join([rest, *pieces[1:]])
        assert edited == (head + "{" + dump(key) + ":" + dump(value) + ("," if mems else "") + tail).encode()
    assert get_member(edited, key) == value


@settings(max_examples=150, deadline=None)
@given(documents(), st.sampled_from(["low", "medium", "high", "max"]))
def test_set_inner_changes_only_output_config_effort(doc, effort):
    mems, pieces = doc
    raw = "".join(pieces).encode()
    original = json.loads(raw)
    edited = set_inner(raw, "output_config", "effort", effort)
    parsed = json.loads(edited)
    before = original.get("output_config")
    expected_config = {**before, "effort": effort} if isinstance(before, dict) else {"effort": effort}
    assert parsed == {**original, "output_config": expected_config}
    index = next((i for i, m in enumerate(mems) if m[0] == "output_config"), None)
    if index is not None:  # the bytes outside output_config's value are unchanged
        prefix = "".join(pieces[:2 * index + 1]).encode()
        suffix = "".join(pieces[2 * index + 2:]).encode()
        assert edited.startswith(prefix) and edited.endswith(suffix)
        assert json.loads(edited[len(prefix):len(edited) - len(suffix)]) == expected_config


def test_the_examples_read_as_they_should():
    raw = b'{ "model" : "claude-opus-4-1",\n  "max_tokens": 1E3, "x": "\\u00e9\\/", "stream": true }'
    assert set_member(raw, "model", "claude-sonnet-4-5") == \
        b'{ "model" : "claude-sonnet-4-5",\n  "max_tokens": 1E3, "x": "\\u00e9\\/", "stream": true }'
    assert set_inner(raw, "output_config", "effort", "high") == \
        b'{"output_config":{"effort":"high"}, "model" : "claude-opus-4-1",\n  "max_tokens": 1E3, "x": "\\u00e9\\/", "stream": true }'
    cfg = b'{"output_config": {"format": {"type": "json_schema"}, "effort":"low"}, "model": "m"}'
    assert set_inner(cfg, "output_config", "effort", "max") == \
        b'{"output_config": {"format": {"type": "json_schema"}, "effort":"max"}, "model": "m"}'
    assert set_inner(b'{"output_config": null}', "output_config", "effort", "low") == b'{"output_config": {"effort":"low"}}'
    assert set_member(b"{}", "model", "m") == b'{"model":"m"}'
    # a key given twice is edited in both places (json.loads keeps the last)
    assert set_member(b'{"model":"a","model":"b"}', "model", "c") == b'{"model":"c","model":"c"}'
    assert get_member(b'{"model":"a","model":"b"}', "model") == "b"


@pytest.mark.parametrize("raw", [b"", b"[]", b'"x"', b"1", b"{", b'{"a":1}x', b'{"a" 1}', b'{"a":1,}', b"\xff{}",
                                 b'\xef\xbb\xbf{"a":1}', b"{'a':1}", b'{"a":1} {}'])
def test_anything_but_one_json_object_is_refused(raw):
    with pytest.raises(NotAnObject):
        set_member(raw, "model", "m")
    with pytest.raises(NotAnObject):
        members(raw.decode("utf-8", "replace"))
    assert get_member(raw, "model") is None
