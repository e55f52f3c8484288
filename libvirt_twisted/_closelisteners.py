"""
Who hears that a connection has closed: the C{onClose} it was made with,
the one close callback registered as on a virConnect, and every Deferred
from C{whenClosed()}.  Each is told once, after the teardown, in that order;
a callable that raises is logged, and the others are still told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()

C = TypeVar("C")


class CloseListeners(Generic[C]):
    """
    @param onClose: a callable C{(connection, reason)}, or a Deferred fired
        with the reason, or L{None}.
    """

    def __init__(self, onClose: Callable[[C, int], object] | Deferred[int] | None) -> None:
        if onClose is not None and not (callable(onClose) or isinstance(onClose, Deferred)):
            raise TypeError(f"onClose must be a callable or a Deferred, not {onClose!r}")
        self._onClose = onClose
        self._callback: tuple[Callable[..., object], Any] | None = None
        self._waiters: list[Deferred[int]] = []

    @property
    def asked(self) -> bool:
        """Whether C{onClose} or a close callback is still to be told."""
        return self._onClose is not None or self._callback is not None

    def register(self, callback: Callable[..., object], opaque: Any) -> None:
        """The close callback, called C{(connection, reason, opaque)}: one at most."""
        if not callable(callback):
            raise TypeError(f"close callback {callback!r} is not callable")
        if self._callback is not None:
            raise ValueError("a close callback is already registered on this connection")
        self._callback = (callback, opaque)

    def unregister(self) -> None:
        if self._callback is None:
            raise ValueError("no close callback is registered on this connection")
        self._callback = None

    def wait(self) -> Deferred[int]:
        """A Deferred fired with the reason once told; cancelling it stops waiting."""
        waiter: Deferred[int] = Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(waiter)
        return waiter

    def tell(self, connection: C, reason: int) -> None:
        """C{connection} has closed for C{reason}: tell everyone, once."""
        onClose, self._onClose = self._onClose, None
        callback, self._callback = self._callback, None
        if isinstance(onClose, Deferred):
            onClose.callback(reason)
        elif onClose is not None:
            _safely(onClose, connection, reason)
        if callback is not None:
            _safely(callback[0], connection, reason, callback[1])
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(reason)


def _safely(function: Callable[..., object], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        log.failure("close callback {callback!r} raised", callback=function)
