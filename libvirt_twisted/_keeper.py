"""
What keeps a LibvirtService's inventory true: the lifecycle subscriptions
that feed it, the snapshot each connection attempt takes once subscribed
(subscribed first, so that no change falls between), the diff after every
(re)connection, and the drift checks of L{Resync}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from twisted.logger import Logger

from ._audience import Audience
from ._connection import LibvirtConnection
from ._connectionstatus import ConnectionStatus
from ._eventloop import EventLoop
from ._inventory import FAMILIES, Inventory
from ._reactor import Scheduler, ThreadsReactor
from ._records import Change
from ._resync import Resync
from ._subscriptions import Registered, Subscriptions
from .events import decode, eventIDs, lifecycleNames

log = Logger()


class InventoryKeeper:
    """
    @param interval: seconds between drift checks, or L{None}.
    @param audience: who hears of the repairs.
    @param current: the service's current connection, if any.
    @ivar lostEvents: how many events libvirt did not send, by the changes
        the drift checks found (one change may take two, DEFINED and STARTED).
    """

    def __init__(
        self,
        inventory: Inventory,
        uri: str,
        interval: float | None,
        subscriptions: Subscriptions,
        audience: Audience,
        current: Callable[[], LibvirtConnection | None],
        reactor: ThreadsReactor,
        clock: Scheduler,
    ) -> None:
        self.inventory = inventory
        self.lostEvents = 0
        self._uri = uri
        self._subscriptions = subscriptions
        self._audience = audience
        self._current = current
        self._loop: EventLoop | None = None
        self._feeds: dict[int, str] = {}
        for family in FAMILIES:
            lifecycle = eventIDs(family)["lifecycle"]
            feed = subscriptions.add(
                family, lifecycle, self._feeder(family, lifecycle), None, None, _never
            )
            self._feeds[feed.id] = family
        self._resync = Resync(inventory, uri, interval, reactor, clock, self._corrected)
        self._built = False

    def start(self, loop: EventLoop | None) -> None:
        """The service starts: check at once whenever C{loop} sees libvirt lose an event."""
        if loop is not None and self._loop is None:
            loop.addLostEventObserver(self._raceSeen)
            self._loop = loop

    def stop(self) -> None:
        self._resync.disconnected()
        if self._loop is not None:
            self._loop.removeLostEventObserver(self._raceSeen)
            self._loop = None

    @property
    def checks(self) -> int:
        """How many drift checks have run."""
        return self._resync.checks

    def families(self, registered: Registered) -> list[str]:
        """The families whose events an attempt holds: the ones to take a snapshot of."""
        return [family for feedId, family in self._feeds.items() if feedId in registered]

    def connected(self, connection: LibvirtConnection, snapshot: Any) -> list[Change]:
        """
        C{connection} is current, and C{snapshot} was taken once it was
        subscribed: the inventory is built from it the first time, and
        reconciled with it after that.
        """
        if self._built:
            changes = self.inventory.reconcile(snapshot)
        else:
            self.inventory.rebuild(snapshot)
            changes = []
            self._built = True
        self._resync.connected(connection)
        return changes

    def disconnected(self) -> None:
        self._resync.disconnected()

    def checkNow(self, restore: bool = False) -> None:
        """A drift check at once (see L{Resync.now})."""
        self._resync.now(restore)

    def _corrected(self, changes: list[Change], restore: bool) -> None:
        """A drift check found changes that libvirt never told: tell, warn, count."""
        lost = [change for change in changes if change.lost]
        missed = sum(len(change.events) for change in lost)
        self.lostEvents += missed
        for words in describe(lost):
            log.warn("{uri}: libvirt lost an event: {change}", uri=self._uri, change=words)
        synthesized = tuple(event for change in changes for event in change.events)
        status = ConnectionStatus("resynced", self._uri, changes=synthesized, lost=missed)
        queues = self._subscriptions.queues()
        self._audience.tell(status, queues, self._subscriptions.decodedFor(synthesized))
        connection = self._current()
        if restore and lost and connection is not None:
            log.warn(
                "{uri}: the connection lost events to libvirt's race: reconnecting",
                uri=self._uri,
            )
            connection.close()

    def _raceSeen(self) -> None:
        """The event loop saw libvirt lose an event, on some connection: check ours."""
        self._resync.now(restore=True)

    def _feeder(self, family: str, eventID: int) -> Any:
        inventory = self.inventory
        names = cache(lifecycleNames)

        def feed(connection: LibvirtConnection, obj: Any, event: int, detail: int, _: Any) -> None:
            inventory.follow(
                family,
                obj.UUIDString(),
                obj.name(),
                *names(family, event, detail),
                lambda: decode(family, eventID, (obj, event, detail)),
            )

        return feed


def describe(changes: Iterable[Change]) -> Iterable[str]:
    """Each change as words for a warning: what it was, what it is, what was missed."""
    for change in changes:
        record = change.after or change.before
        name = record.name if record is not None else change.uuid
        missed = ", ".join(str(event.fields.get("event")) for event in change.events)
        yield (
            f"{change.family} {name} ({change.uuid}) was {_state(change.before)},"
            f" is {_state(change.after)}; missed {missed or 'nothing'}"
        )


def _state(record: Any) -> str:
    if record is None:
        return "absent"
    if hasattr(record, "state"):
        kept = "persistent" if record.persistent else "transient"
        return f"{record.state} ({kept})"
    active = "active" if record.active else "inactive"
    return f"{active} ({'persistent' if record.persistent else 'transient'})"


def _never(subscriptionId: int) -> None:
    """A feed is a callable: no queue finishes it."""
