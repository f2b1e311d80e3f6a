"""New connections past the cap held, without a thread, until their request head is in.

At ``max_connections``, a new connection takes the place of the one waiting longest for a request
only once its own request head has arrived (:data:`~shunt_lib.limits.Admission.WAIT`). Until then it
is held here: one thread and a selector for all of them, no thread or buffer of its own. Its head
arrives within :data:`HEAD_GRACE_S` (it is admitted) or not (a fast 503, as over the cap with every
connection busy). A client that drips its head, and reconnects each time it is closed, thus costs
shunt a few system calls per connection rather than a thread: new clients sending a whole request
keep finding room at once (the 503's ``retry-after: 1`` tells the others when to come back).

At most ``max_pending`` connections are held; a newer one takes the place of the oldest, which gets
its 503 then. Nothing is read from a held socket: its head is only peeked at (``MSG_PEEK``).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import OrderedDict
from typing import Callable

log = logging.getLogger("shunt.head_wait")

HEAD_GRACE_S = 0.25  # how long a held connection may take to send its whole head, seconds
HEAD_PEEK_BYTES = 65536  # the most of a head looked at; a head this long is handed on as it is


def head_complete(data: bytes) -> bool:
    """Whether ``data``, the first bytes a client sent, hold a whole request head (up to its blank
    line, RFC 9112 §2.1: https://www.rfc-editor.org/rfc/rfc9112#section-2.1; a bare LF ends a line
    too, §2.2), or are as long as shunt looks (:data:`HEAD_PEEK_BYTES`: let the handler judge it)."""
    return b"\n\r\n" in data or b"\n\n" in data or len(data) >= HEAD_PEEK_BYTES


def peek(sock: socket.socket) -> bytes | None:
    """What ``sock``'s client has sent so far, left unread, without blocking.

    :returns: the bytes (``b""``: the client closed), or None if nothing has arrived (or on an error).
    """
    dontwait = getattr(socket, "MSG_DONTWAIT", 0)
    try:
        if not dontwait:
            sock.setblocking(False)
        return sock.recv(HEAD_PEEK_BYTES, socket.MSG_PEEK | dontwait)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        if not dontwait:
            sock.setblocking(True)


class HeadWait:
    """The held connections and the thread that watches them.

    :param admit: called (on this thread) with ``(sock, client_address)`` once a head is in; it
        serves or refuses the connection and owns ``sock`` from then on.
    :param refuse: called (on this thread, or on :meth:`add`'s for the oldest held one) with a socket
        whose head did not arrive in time; it answers 503 and closes ``sock``.
    :param close: called with a socket whose client left before sending its head.
    :param max_pending: most connections held at once.
    """

    def __init__(self, admit: Callable, refuse: Callable[[socket.socket], None],
                 close: Callable[[socket.socket], None], max_pending: int):
        self._admit, self._refuse, self._close = admit, refuse, close
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: OrderedDict[socket.socket, tuple[float, object]] = OrderedDict()  # oldest first
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="shunt-head-wait", daemon=True)
        self._thread.start()

    def count(self) -> int:
        """Connections held now."""
        with self._lock:
            return len(self._pending)

    def add(self, sock: socket.socket, client_address, grace_s: float = HEAD_GRACE_S) -> None:
        """Hold ``sock`` until its head is in (then ``admit``) or ``grace_s`` seconds pass (then
        ``refuse``). When ``max_pending`` are held already, the oldest is refused now. Each is held
        with the same grace (its deadlines are in the order they were added)."""
        oldest = None
        with self._lock:
            idle = not self._pending  # the thread may wait with no timeout: wake it
            if self._stopped:
                oldest = sock
            else:
                if len(self._pending) >= self._max_pending:
                    oldest, _ = self._pending.popitem(last=False)
                    self._unregister(oldest)
                self._pending[sock] = (time.monotonic() + grace_s, client_address)
                self._sel.register(sock, selectors.EVENT_READ)
        if oldest is not None:
            self._refuse(oldest)
        if idle:
            self._wake()  # (otherwise its wait ends by the oldest's deadline; epoll sees sock at once)

    def stop(self) -> None:
        """End the thread and refuse every connection still held. Idempotent."""
        with self._lock:
            self._stopped = True
        self._wake()
        self._thread.join()
        with self._lock:
            held = list(self._pending)
            self._pending.clear()
        for sock in held:
            self._refuse(sock)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # a wake-up is pending already (or stopped)

    def _unregister(self, sock: socket.socket) -> None:
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass  # unregistered at its first (partial) bytes

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                first = next(iter(self._pending.values()), None)
            timeout = None if first is None else max(0.0, first[0] - time.monotonic())
            ready = self._sel.select(timeout)
            for key, _ in ready:
                if key.fileobj is self._wake_r:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                else:
                    self._look(key.fileobj, final=False)
            now = time.monotonic()
            due = []
            with self._lock:
                for s, (deadline, _) in self._pending.items():  # oldest first: deadlines in order
                    if deadline > now:
                        break
                    due.append(s)
            for sock in due:
                self._look(sock, final=True)

    def _look(self, sock: socket.socket, *, final: bool) -> None:
        """Peek at a held socket: hand it on if its head is in (or its client left); past its
        grace (``final``), refuse it; with part of a head, keep it, unwatched, until its grace ends."""
        data = peek(sock)
        with self._lock:
            entry = self._pending.get(sock)
            if entry is None:
                return  # refused meanwhile by add()
            done = final or data == b"" or (data is not None and head_complete(data))
            if not done and data is None:
                return
            self._unregister(sock)
            if done:
                del self._pending[sock]
        if not done:
            return  # part of a head: looked at again when its grace ends (no busy loop on unread bytes)
        if data == b"":
            self._close(sock)
        elif data is not None and head_complete(data):
            self._admit(sock, entry[1])
        else:
            self._refuse(sock)
