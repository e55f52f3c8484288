"""
The gate that a wrapper's libvirt calls on its virConnect pass through.

Closing a virConnect while another thread registers or deregisters on it
makes libvirt call through a freed pointer, or leave the connection (and its
socket) alive for good.  L{CallGate} counts the calls inside so that closing
can wait for them, and lets no new one in once closing has begun.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from twisted.logger import Logger


class CallGate:
    """The libvirt calls under way on one virConnect, which closing waits for."""

    log = Logger()

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count = 0
        self._pending: dict[object, Callable[[], None]] = {}
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

    def later(self, job: Callable[[], None]) -> Callable[[], None]:
        """
        Keep C{job}, a call already counted by L{enter}, for a pool thread:
        return a function that runs it, once, and leaves.  If closing comes
        first, the closer runs it itself, since the pool may have no thread
        free for it (the closer may be holding the last one).
        """
        token = object()
        with self._condition:
            self._pending[token] = job

        def run() -> None:
            with self._condition:
                claimed = self._pending.pop(token, None)
            if claimed is not None:
                self._run(claimed)

        return run

    def close(self) -> None:
        """Refuse new calls, run the pending ones, wait (blocking) for the rest."""
        with self._condition:
            self.closing = True
            jobs, self._pending = list(self._pending.values()), {}
        for job in jobs:
            self._run(job)
        with self._condition:
            while self._count:
                self._condition.wait()

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:
            self.log.failure("a libvirt call on a closing connection failed")
        finally:
            self.leave()
