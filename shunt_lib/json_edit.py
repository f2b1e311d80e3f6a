"""Byte-exact edits of a JSON object's text: replace one top-level member's value, or one member of a
top-level object, leaving every other byte (whitespace, key order, escapes, number formats) as it was.

Used by the runtime overrides (:mod:`shunt_lib.overrides`), the one case where shunt changes a request
body. The members are located with the standard library's own scanner
(:func:`json.decoder.scanstring` for keys, :meth:`json.JSONDecoder.raw_decode` for values), so what
counts as a member is exactly what :func:`json.loads` reads. A key given more than once is edited
everywhere (``json.loads`` keeps the last one, so the result reads as the edit either way).
Pure functions; no I/O.
"""

from __future__ import annotations

import json
from json.decoder import scanstring
from typing import NamedTuple

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


class NotAnObject(ValueError):
    """The text is not one JSON object (not UTF-8, not JSON, or another JSON value)."""


class Member(NamedTuple):
    """A top-level member: its ``key`` and the span of its value in the text, ``[start, end)``."""

    key: str
    start: int
    end: int


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WS:
        at += 1
    return at


def members(text: str) -> tuple[int, list[Member]]:
    """The members of the JSON object ``text`` (nothing but whitespace around it).

    :returns: the index just after the object's ``{``, and its members in order.
    :raises NotAnObject: ``text`` is not exactly one JSON object.
    """
    try:
        at = _skip(text, 0)
        if text[at:at + 1] != "{":
            raise NotAnObject("not a JSON object")
        opened = at = at + 1
        found: list[Member] = []
        at = _skip(text, at)
        if text[at:at + 1] == "}":
            at += 1
        else:
            while True:
                if text[at:at + 1] != '"':
                    raise NotAnObject("a member name is not a string")
                key, at = scanstring(text, at + 1, True)
                at = _skip(text, at)
                if text[at:at + 1] != ":":
                    raise NotAnObject("no ':' after a member name")
                start = _skip(text, at + 1)
                _, end = _DECODER.raw_decode(text, start)
                found.append(Member(key, start, end))
                at = _skip(text, end)
                sep = text[at:at + 1]
                at += 1
                if sep == "}":
                    break
                if sep != ",":
                    raise NotAnObject("no ',' or '}' after a member")
                at = _skip(text, at)
        if _skip(text, at) != len(text):
            raise NotAnObject("text after the object")
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
        if isinstance(exc, NotAnObject):
            raise
        raise NotAnObject(str(exc)) from None
    return opened, found


def _dump(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")  # RFC 8259 §8.1; a round trip of valid UTF-8 gives the same bytes back
    except UnicodeDecodeError:
        raise NotAnObject("not UTF-8") from None


def _set(text: str, key: str, value_text: str) -> str:
    """``text`` with every ``key`` member's value replaced by ``value_text``, or the member inserted
    first when absent."""
    opened, found = members(text)
    spans = [m for m in found if m.key == key]
    if not spans:
        return text[:opened] + _dump(key) + ":" + value_text + ("," if found else "") + text[opened:]
    out, last = [], 0
    for m in spans:
        out += [text[last:m.start], value_text]
        last = m.end
    out.append(text[last:])
    return "".join(out)


def set_member(raw: bytes, key: str, value) -> bytes:
    """The JSON object ``raw`` with its top-level member ``key`` set to ``value`` (inserted first when
    absent); every other byte unchanged.

    :raises NotAnObject: ``raw`` is not a UTF-8 JSON object.
    """
    return _set(_decode(raw), key, _dump(value)).encode("utf-8")


def set_inner(raw: bytes, outer: str, key: str, value) -> bytes:
    """The JSON object ``raw`` with ``key`` set to ``value`` inside its top-level object member
    ``outer`` (e.g. ``output_config.effort``): inserted in it when absent; the member ``outer`` is
    added (``{key: value}``) when absent, and replaced by it when it is not an object. Every other
    byte unchanged.

    :raises NotAnObject: ``raw`` is not a UTF-8 JSON object.
    """
    text = _decode(raw)
    opened, found = members(text)
    spans = [m for m in found if m.key == outer]
    fresh = _dump({key: value})
    if not spans:
        return (text[:opened] + _dump(outer) + ":" + fresh + ("," if found else "") + text[opened:]).encode("utf-8")
    out, last = [], 0
    for m in spans:
        inner = text[m.start:m.end]
        try:
            edited = _set(inner, key, _dump(value))
        except NotAnObject:
            edited = fresh
        out += [text[last:m.start], edited]
        last = m.end
    out.append(text[last:])
    return "".join(out).encode("utf-8")


def get_member(raw: bytes, key: str, default=None, *, strict: bool = False):
    """The value of the top-level member ``key`` of the JSON object ``raw`` (its last occurrence, as
    :func:`json.loads` reads it), or ``default`` when absent or (unless ``strict``) when ``raw`` is
    not a JSON object. :raises NotAnObject: ``strict`` and ``raw`` is not a JSON object."""
    try:
        text = _decode(raw)
        _, found = members(text)
    except NotAnObject:
        if strict:
            raise
        return default
    for m in reversed(found):
        if m.key == key:
            return _DECODER.raw_decode(text, m.start)[0]
    return default
