"""
Drift repair: a service's inventory compared with a fresh snapshot every
C{resync} seconds, and at once when the event loop sees libvirt lose an
event.

A snapshot can run ahead of the events (the daemon answers a listing before
its event loop has sent the events of the same changes), so a difference
counts as a lost event only if it lasts: no event about that object came
from the moment the snapshot was asked for until C{GRACE} seconds after it
arrived.  Then the inventory takes the snapshot's word for it, and the
service tells its subscribers, warns and counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import libvirt
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _snapshot
from ._connection import LibvirtConnection
from ._inventory import Inventory
from ._reactor import Scheduler, ThreadsReactor
from ._records import Change
from ._threads import deferToLibvirtPool

log = Logger()

#: How long a difference must last, with no event about its object, to be a lost event.
GRACE = 2.0

#: Takes a snapshot: (virConnect, families) -> Snapshot, blocking.
Take = Callable[[libvirt.virConnect, Iterable[str]], _snapshot.Snapshot]

#: What a service does with the changes a check confirmed: (changes, restore delivery).
Corrected = Callable[[list[Change], bool], None]


class Resync:
    """
    The checks of one service's inventory.  L{connected} starts them on a
    connection, L{disconnected} stops them; L{now} checks at once.

    @param interval: seconds between checks, or L{None} for none but those
        asked with L{now}.
    @param corrected: called with the changes a check confirmed, and
        whether the check was asked to restore delivery.
    @param take: takes a snapshot of some families on a virConnect, in a
        call-pool thread (a test may disagree with the inventory on purpose).
    """

    def __init__(
        self,
        inventory: Inventory,
        uri: str,
        interval: float | None,
        reactor: ThreadsReactor,
        clock: Scheduler,
        corrected: Corrected,
        take: Take = _snapshot.take,
    ) -> None:
        self._inventory = inventory
        self._uri = uri
        self._interval = interval
        self._reactor = reactor
        self._clock = clock
        self._corrected = corrected
        self._take = take
        self._connection: LibvirtConnection | None = None
        self._next: IDelayedCall | None = None
        self._confirming: tuple[IDelayedCall, Deferred[None]] | None = None
        self._checking: LibvirtConnection | None = None  # the check under way is for it
        self._again: bool | None = None  # a check asked for while one runs: restore?
        self.checks = 0

    def connected(self, connection: LibvirtConnection) -> None:
        """Check C{connection} every C{interval} seconds from now."""
        self.disconnected()
        self._connection = connection
        self._schedule()

    def disconnected(self) -> None:
        """No more checks (the one under way, if any, comes to nothing)."""
        self._connection = None
        self._again = None
        self._checking = None
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        confirming, self._confirming = self._confirming, None
        if confirming is not None:
            call, confirmed = confirming
            call.cancel()
            confirmed.callback(None)  # the check ends, with nothing confirmed

    def now(self, restore: bool = False) -> None:
        """
        Check at once; with C{restore}, a connection found to have lost
        events is given up (so that the service reconnects), since libvirt
        may have stranded its event queue.
        """
        if self._connection is None:
            return
        if self._checking is self._connection:
            self._again = bool(self._again) or restore
            return  # once the one under way is over
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._check(restore)

    def _schedule(self) -> None:
        if self._interval is not None and self._connection is not None:
            self._next = self._clock.callLater(self._interval, self._check, False)

    def _check(self, restore: bool) -> None:
        connection = self._connection
        if connection is None:
            return
        self._next = None
        self._checking = connection
        self.checks += 1
        mark = self._inventory.sequence
        d = deferToLibvirtPool(
            self._reactor, self._take, connection.virConnect, self._inventory.tracked
        )
        compared = d.addCallback(self._compare, connection, mark, restore)
        compared.addErrback(self._failed, connection).addBoth(self._over, connection)

    def _compare(
        self, snapshot: _snapshot.Snapshot, connection: LibvirtConnection, mark: int, restore: bool
    ) -> Deferred[None] | None:
        if connection is not self._connection:
            return None
        suspects = [
            key
            for key in self._inventory.differences(snapshot)
            if not self._inventory.touchedSince(*key, mark)
        ]
        if not suspects:
            self._inventory.forgetTouchesBefore(mark)
            return None
        confirmed: Deferred[None] = Deferred()

        def confirm() -> None:
            self._confirming = None
            if connection is self._connection:
                still = set(self._inventory.differences(snapshot))
                lost = [
                    key
                    for key in suspects
                    if key in still and not self._inventory.touchedSince(*key, mark)
                ]
                changes = self._inventory.correct(snapshot, lost)
                self._inventory.forgetTouchesBefore(mark)
                if changes:
                    self._corrected(changes, restore)
            confirmed.callback(None)

        self._confirming = (self._clock.callLater(GRACE, confirm), confirmed)
        return confirmed

    def _failed(self, failure: Failure, connection: LibvirtConnection) -> None:
        if connection is self._connection:
            log.warn(
                "{uri}: resync failed: {error}", uri=self._uri, error=failure.getErrorMessage()
            )

    def _over(self, _: object, connection: LibvirtConnection) -> None:
        if self._checking is not connection:
            return  # disconnected meanwhile: connected() looks after the next ones
        self._checking = None
        again, self._again = self._again, None
        if connection is not self._connection:
            return
        if again is not None:
            self._check(again)
        else:
            self._schedule()
