"""One thread that notices clients hanging up while their request waits for the upstream, is held or streamed.

A relay thread blocked on an upstream read cannot see its client go away. :class:`ClientWatch`
polls every watched client socket with one selector; when a socket reports EOF or an error it
calls that request's ``on_gone`` callback (which shuts the upstream socket, unblocking the relay
thread, or wakes a held request). Callbacks run on the watch thread and must not block.

A socket is put in the selector only once it has been watched for :data:`REGISTER_AFTER_S`, by the
watch thread itself: most requests are answered sooner, and for them watching costs no system call
(two ``epoll_ctl`` per request, each releasing the GIL, were most of what the client watch cost under
concurrent load). A client that leaves is still noticed, at most that much later.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Callable

log = logging.getLogger("shunt.watch")

REGISTER_AFTER_S = 0.05  # how long a socket is watched before it goes into the selector, seconds


class ClientWatch:
    """Watches client sockets for disconnects. :meth:`add`/:meth:`remove` may be called from any thread."""

    def __init__(self, register_after_s: float = REGISTER_AFTER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()  # guards _sel registrations, _pending and _idle
        self._pending: dict[socket.socket, tuple[float, Callable[[], None]]] = {}  # sock -> (register at, on_gone)
        self._idle = False  # the watch thread waits with nothing pending: a new socket must wake it
        self._register_after_s, self._clock = register_after_s, clock
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="shunt-client-watch", daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket, on_gone: Callable[[], None]) -> bool:
        """Start watching ``sock``; ``on_gone`` is called once if the client disconnects.

        :returns: False if the socket cannot be watched (already closed).
        """
        if sock.fileno() < 0:
            return False
        with self._lock:
            self._pending[sock] = (self._clock() + self._register_after_s, on_gone)
            wake, self._idle = self._idle, False
        if wake:
            self._poke()
        return True

    def watched(self, sock: socket.socket) -> bool:
        """Whether ``sock`` is being watched now."""
        with self._lock:
            if sock in self._pending:
                return True
            try:
                self._sel.get_key(sock)
            except (KeyError, ValueError):
                return False
        return True

    def remove(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` (no-op if it is not watched)."""
        with self._lock:
            if self._pending.pop(sock, None) is not None:
                return
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass

    def _register_due(self) -> float:
        """Put the sockets watched long enough into the selector; :returns: how long to wait, seconds."""
        with self._lock:
            now = self._clock()
            for sock, (at_s, on_gone) in list(self._pending.items()):
                if at_s <= now:
                    del self._pending[sock]
                    try:
                        self._sel.register(sock, selectors.EVENT_READ, on_gone)
                    except (ValueError, KeyError, OSError):  # closed meanwhile: its request has ended
                        pass
            next_s = min((at_s for at_s, _ in self._pending.values()), default=None)
            self._idle = next_s is None
            return 1.0 if next_s is None else max(0.0, next_s - now)

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        while not self._closed:
            timeout_s = self._register_due()
            try:
                ready = self._sel.select(timeout=timeout_s)
            except OSError:
                continue
            for key, _ in ready:
                if key.fileobj is self._wake_r:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                sock = key.fileobj
                try:
                    peek = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                    gone = peek == b""
                except BlockingIOError:
                    continue
                except OSError:
                    gone = True
                self.remove(sock)  # gone, or the client sent more bytes (pipelining): stop either way
                if gone:
                    try:
                        key.data()
                    except Exception:  # a callback must never kill the watcher
                        log.exception("client-gone callback failed")

    def close(self) -> None:
        """Stop the watch thread and close its selector (call once, from any other thread)."""
        self._closed = True
        self._poke()
        self._thread.join(2)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
