"""Noticing an upstream that goes quiet mid-stream, so a ``ping`` can be sent meanwhile.

A socket read cannot be interrupted by a timer and resumed safely (a timeout leaves the buffered
reader and the chunked decoder in an undefined state), so :func:`with_silences` reads on a helper
thread and hands the pieces over through a queue; the consumer wakes after ``interval_s`` without a
piece and is told so. Anthropic's own streams carry ``ping`` events while the model is slow
(https://docs.anthropic.com/en/docs/build-with-claude/streaming#event-types); a translated stream
sends its own while the provider is silent.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

_END = object()


def with_silences(pieces: Iterator[bytes], interval_s: float) -> Iterator[bytes | None]:
    """Yield every piece of ``pieces`` as it comes, and ``None`` each time ``interval_s`` seconds
    pass without one. An exception raised by ``pieces`` is raised here, after the pieces before it.

    ``pieces`` is read on a daemon thread, which ends when ``pieces`` ends or raises. A consumer that
    stops early must end ``pieces`` itself (abort the upstream response: the blocked read then raises);
    pieces that arrive after it stopped are dropped.
    """
    handoff: queue.SimpleQueue = queue.SimpleQueue()
    stopped = threading.Event()

    def pump() -> None:
        try:
            for piece in pieces:
                if stopped.is_set():
                    return
                handoff.put(piece)
            handoff.put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put(exc)

    threading.Thread(target=pump, name="shunt-stream-reader", daemon=True).start()
    try:
        while True:
            try:
                item = handoff.get(timeout=interval_s)
            except queue.Empty:
                yield None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()
