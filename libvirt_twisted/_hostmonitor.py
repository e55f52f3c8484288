"""
One host of the monitor: its events (libvirt's and the synthesized ones that
explain what changed unseen), its connection's changes, its inventory after
every (re)connection and the events libvirt lost, all as records; and the
counts that the metrics and the health check read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from ._connectionstatus import ConnectionStatus
from ._monitoroutput import Output
from ._service import LibvirtService
from .events import Event


@dataclass
class HostStats:
    """
    What one host has done since the monitor started watching it, counted on
    the event path at the cost of a dict update, read at scrape time.

    @ivar events: events by C{(kind, event)}; C{event} is the lifecycle
        event's name (C{STARTED}...), empty for kinds that have none.
    @ivar lastEvent: when the last event came (the reactor's time), or None.
    @ivar state: the last connection state a status said (C{connecting}
        until the first attempt ends).
    @ivar lastError: the last failed attempt's error or close reason.
    """

    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    lastEvent: float | None = None
    state: str = "connecting"
    lastError: str | None = None
    reconnections: int = 0
    failedAttempts: int = 0
    synthesized: int = 0


class HostMonitor(Service):
    """
    One URI's service, the records it makes and its L{HostStats}.
    C{key} identifies what it was made from: a reload keeps the hosts whose
    key it still has.
    """

    def __init__(
        self,
        service: LibvirtService,
        kinds: tuple[str, ...] | list[str],
        output: Output,
        clock: Callable[[], float],
        key: object = None,
    ) -> None:
        self.libvirt = service
        self.uri = service.maskedURI
        self.key = key
        self.stats = HostStats()
        self._output = output
        self._clock = clock
        self._attempted = False
        self._firstWaiters: list[Deferred[None]] = []
        for kind in kinds:
            service.watch(kind, self._event)
        service.addObserver(self._status)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.libvirt.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.libvirt.stopService()

    @property
    def connected(self) -> bool:
        """Whether the host's connection is up, as the service knows it now."""
        return self.stats.state in ("connected", "reconnected", "resynced")

    def whenFirstAttempted(self) -> Deferred[None]:
        """Fires once the first connection attempt has ended, either way."""
        d: Deferred[None] = Deferred()
        if self._attempted:
            d.callback(None)
        else:
            self._firstWaiters.append(d)
        return d

    def _event(self, event: Event) -> None:
        self._output.event(self.uri, event)
        stats = self.stats
        name = event.fields.get("event")
        stats.events[event.kind, name if isinstance(name, str) else ""] += 1
        stats.lastEvent = self._clock()
        if event.synthetic:
            stats.synthesized += 1

    def _status(self, status: ConnectionStatus) -> None:
        self._count(status)
        fields: dict[str, Any] = {}
        if status.reason is not None:
            key = "error" if status.state == "failed" else "reason"
            fields[key] = status.reason
        if status.state == "failed":
            fields["failures"] = status.failures
        if status.state == "resynced":
            fields["lost"] = status.lost
        self._output.write(self.uri, f"connection.{status.state}", fields)
        if status.state == "resynced":
            for event in status.changes:
                self._output.write(self.uri, "connection.lost_event", _lost(event))
        if status.state in ("connected", "reconnected"):
            self._inventory()
        if status.state in ("connected", "failed", "stopped"):
            self._firstAttemptEnded()

    def _count(self, status: ConnectionStatus) -> None:
        stats = self.stats
        if status.state != "resynced":
            stats.state = status.state
        if status.state == "reconnected":
            stats.reconnections += 1
        elif status.state == "failed":
            stats.failedAttempts += 1
        if status.state in ("failed", "disconnected") and status.reason is not None:
            stats.lastError = status.reason

    def _firstAttemptEnded(self) -> None:
        if self._attempted:
            return
        self._attempted = True
        waiters, self._firstWaiters = self._firstWaiters, []
        for d in waiters:
            d.callback(None)

    def _inventory(self) -> None:
        inventory = self.libvirt.inventory
        if inventory is None:
            return
        domains = [
            {"name": record.name, "uuid": record.uuid, "state": record.state}
            for record in sorted(inventory.domains.values(), key=lambda r: (r.name, r.uuid))
        ]
        self._output.write(self.uri, "inventory", {"domains": domains})


def _lost(event: Event) -> dict[str, Any]:
    """What a lost-event record says: the object, and the event libvirt did not send."""
    return {
        "family": event.family,
        "name": event.name,
        "uuid": event.uuid,
        "missed": event.fields.get("event"),
    }
