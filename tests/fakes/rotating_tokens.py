"""A token endpoint for :class:`~tests.fakes.upstream.FakeUpstream` (``upstream.token_handler``) that
behaves like a real one: each refresh token works once; a refresh rotates the pair; a rotated-out
refresh token is refused with ``invalid_grant``. Every refresh token received is recorded, in order.
"""

from __future__ import annotations

import threading
from typing import Callable


class RotatingTokens:
    """``RotatingTokens("ref-a", prefix="a")``: ``ref-a`` is the one live refresh token; the n-th refresh
    answers ``tok-<prefix>-n`` / ``ref-<prefix>-n``. :param before_answer: called (with the refresh
    token) before a successful answer, e.g. to hold it until the test is ready."""

    def __init__(self, live: str, prefix: str = "new", *, before_answer: Callable[[str], None] | None = None):
        self.live = live
        self.prefix = prefix
        self.before_answer = before_answer
        self.received: list[str] = []  # every refresh token sent, in order
        self.issued: list[str] = []  # the access tokens handed out
        self._lock = threading.Lock()

    def __call__(self, req: dict) -> tuple[int, dict]:
        token = req.get("refresh_token") or ""
        with self._lock:
            self.received.append(token)
            if token != self.live:
                return 400, {"error": "invalid_grant", "error_description": "refresh token already used or revoked"}
            n = len(self.issued) + 1
            self.live = f"ref-{self.prefix}-{n}"
            access = f"tok-{self.prefix}-{n}"
            self.issued.append(access)
            live = self.live
        if self.before_answer is not None:
            self.before_answer(token)
        return 200, {"access_token": access, "refresh_token": live, "expires_in": 3600}
