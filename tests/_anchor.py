"""
An anchor for the fault tests: a process that holds one domain event
registration on the private daemon through every fault that leaves the
daemon running.

Why: when every client of the daemon disconnected at once while other
clients made events, the daemon now and then stopped delivering domain
events to anyone, fresh connections included, and stayed that way: idle,
every worker waiting.  The likely cause is in libvirt's
src/conf/object_event.c (seen with 9.0): queueing an event checks that the
driver's event timer exists before taking the lock that guards it.  If the
daemon's last event registration goes in between, the event lands in a
queue whose timer was just removed; the next registration creates a timer
that nothing arms, as the queue is never again exactly one event long, and
no event of that driver is delivered until every registration is gone once
more.  With the anchor's registration the count never drops to zero, and the tests
test this package rather than that race.

The anchor is this package's own LibvirtService, without keepalive (a frozen
daemon must not make it leave), in a process of its own, whose pid lets
C{virt-admin client-disconnect} spare it.
"""

from __future__ import annotations

import textwrap
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from ._harness import spawnPython

_ANCHOR = textwrap.dedent(
    """
    import sys
    import libvirt
    from twisted.internet import reactor
    from libvirt_twisted import LibvirtService, install

    install(reactor)
    service = LibvirtService(sys.argv[1], keepalive=None, retryPolicy=lambda failures: 0.05)
    service.subscribe("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda *args: None)
    service.addObserver(lambda status: print(status.state, flush=True))
    service.startService()
    reactor.run()
    """
)


_CONNECTED = ("connected", "reconnected")


class Anchor(ProcessProtocol):
    """The anchor process: the states its service went through, in order."""

    process: IProcessTransport

    def __init__(self) -> None:
        self.states: list[str] = []
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""
        self._waiters: list[tuple[int, Deferred[None]]] = []

    @property
    def pid(self) -> int | None:
        return cast("int | None", self.process.pid)

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        self.states.extend(line.decode() for line in lines)
        for entry in list(self._waiters):
            times, d = entry
            if self._holds(times):
                self._waiters.remove(entry)
                d.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.errback(RuntimeError(f"the anchor exited: {self.stderr.decode()}"))

    def connections(self) -> int:
        """How many times its service has connected so far."""
        return sum(1 for state in self.states if state in _CONNECTED)

    def whenConnected(self, times: int = 1) -> Deferred[None]:
        """Fires once the service has connected C{times} times and holds its registration."""
        d: Deferred[None] = Deferred()
        if self.ended.called:
            d.errback(RuntimeError(f"the anchor exited: {self.stderr.decode()}"))
        elif self._holds(times):
            d.callback(None)
        else:
            self._waiters.append((times, d))
        return d

    def _holds(self, times: int) -> bool:
        return self.connections() >= times and self.states[-1] in _CONNECTED


def spawnAnchor(case: TestCase, uri: str) -> Anchor:
    """Start an anchor on C{uri}; killed at cleanup."""
    anchor = Anchor()
    anchor.process = spawnPython(case, anchor, ["-c", _ANCHOR, uri], anchor.ended)
    return anchor
