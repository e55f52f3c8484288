"""
How a LibvirtService stops: it waits for the connection attempt under way
(at most C{stopTimeout} seconds: a frozen daemon can hold an open for ever,
and the abandoned attempt closes what it made whenever it ends), then for
every connection it is closing, and for the event loop to free what libvirt
removed meanwhile; then everyone who asked for the stop is told, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed

from ._attempt import Attempt
from ._connection import LibvirtConnection
from ._eventloop import EventLoop
from ._reactor import Scheduler


class Closings:
    """The connections a service is closing, which its stop waits for."""

    def __init__(self) -> None:
        self._closing: set[Deferred[int]] = set()

    def __len__(self) -> int:
        """How many connections are being closed."""
        return len(self._closing)

    def close(self, connection: LibvirtConnection) -> None:
        """Close C{connection}; L{allClosed} waits for it."""
        closing = connection.close()
        self._closing.add(closing)

        def closed(result: object) -> object:
            self._closing.discard(closing)
            return result

        closing.addBoth(closed)

    def allClosed(self) -> Deferred[Any]:
        """Fires once every connection being closed now has closed."""
        return DeferredList(list(self._closing))


class Stop:
    """
    One stop of a service.  Whoever asks for it while it is under way
    (C{stopService()} again) L{join}s it; all of them are told at once, in
    the order they asked, once it is over.

    @param uri: the service's masked URI, for the log.
    """

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._waiting: list[Deferred[None]] = []

    def join(self) -> Deferred[None]:
        """A Deferred that fires once the stop is over."""
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def waitFor(
        self,
        attempt: Attempt | None,
        clock: Scheduler,
        timeout: float,
        closings: Closings,
        loop: Callable[[], EventLoop | None],
        over: Callable[[Stop], object],
    ) -> None:
        """
        Once C{attempt} (if any) is over or given up after C{timeout}
        seconds, every close done and libvirt's removals freed: call
        C{over} with this stop, then tell those waiting.
        """

        def waitForCloses(_: object) -> Deferred[Any]:
            current = loop()
            assert current is not None
            return closings.allClosed().addCallback(lambda _: current.drain())

        def done(_: object) -> None:
            over(self)
            for each in self._waiting:
                each.callback(None)

        ended = attempt.endedOrAfter(clock, timeout, self._uri) if attempt else succeed(None)
        ended.addBoth(waitForCloses).addBoth(done)
