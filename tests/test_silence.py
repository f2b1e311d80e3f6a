"""with_silences: pieces pass through in order, a silence is reported, an error is raised after the pieces before it."""

from __future__ import annotations

import threading

import pytest

from shunt_lib.errors import UpstreamStreamError
from shunt_lib.silence import with_silences


def test_pieces_in_order_a_silence_between_and_the_error_at_the_end():
    go_on, saw_silence = threading.Event(), []

    def pieces():
        yield b"a"
        assert go_on.wait(30)  # silent until the consumer has been told so
        yield b"b"
        raise UpstreamStreamError("broke")

    got = []
    with pytest.raises(UpstreamStreamError):
        for piece in with_silences(pieces(), 0.01):
            if piece is None:
                saw_silence.append(True)
                go_on.set()
            else:
                got.append(piece)
    assert got == [b"a", b"b"] and saw_silence
