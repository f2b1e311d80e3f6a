"""Whether alerts are muted, kept in ``alerts.json`` in shunt's home so that a mute survives restarts.

The file is ``{"muted": bool, "changed_at_s": epoch seconds}``, written atomically with mode 0600. A
missing or unreadable file means not muted.
"""

from __future__ import annotations

import json
import os
import threading

from .fsutil import atomic_write_bytes


def mute_path(home: str) -> str:
    """``alerts.json`` in shunt's home."""
    return os.path.join(home, "alerts.json")


class MuteFlag:
    """The alerts' mute switch. Thread-safe; :attr:`muted` is read without I/O."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self.muted = self._read()

    def _read(self) -> bool:
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("muted") is True

    def set(self, muted: bool, now_s: float) -> bool:
        """Mute or unmute, saved at once. :returns: the new value. :raises OSError: the file cannot
        be written (the value is unchanged then)."""
        with self._lock:
            atomic_write_bytes(self.path, json.dumps({"muted": muted, "changed_at_s": int(now_s)}).encode())
            self.muted = muted
        return muted
