"""
The libvirt calls a wrapper has under way on its virConnect.

Closing a virConnect while another thread registers or deregisters on it
makes libvirt call through a freed pointer, or leave the connection (and its
socket) alive for good.  L{InFlight} counts those calls so that closing can
wait for them, and refuses new ones once closing has begun.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class InFlight:
    """A count of libvirt calls under way, which closing waits to reach zero."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count = 0
        self.closing = False

    def enter(self) -> bool:
        """Count one more call; false (counting nothing) once closing has begun."""
        with self._condition:
            if self.closing:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        """One call is over."""
        with self._condition:
            self._count -= 1
            if not self._count:
                self._condition.notify_all()

    def leaveOnce(self) -> Callable[[], None]:
        """L{leave}, as a function that acts the first time only, whoever calls it."""
        token = threading.Lock()

        def leave() -> None:
            if token.acquire(blocking=False):
                self.leave()

        return leave

    def close(self) -> None:
        """Refuse new calls and wait (blocking) until none is under way."""
        with self._condition:
            self.closing = True
            while self._count:
                self._condition.wait()
