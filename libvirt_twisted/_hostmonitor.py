"""
One host of the monitor: its events (libvirt's and the synthesized ones that
explain what changed unseen), its connection's changes, its inventory after
every (re)connection and the events libvirt lost, all as records.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from ._connectionstatus import ConnectionStatus
from ._monitoroutput import Output
from ._service import LibvirtService
from .events import Event


class HostMonitor(Service):
    """One URI's service, and the records it makes."""

    def __init__(self, service: LibvirtService, kinds: list[str], output: Output) -> None:
        self.libvirt = service
        self.uri = service.maskedURI
        self._output = output
        for kind in kinds:
            service.watch(kind, self._event)
        service.addObserver(self._status)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.libvirt.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.libvirt.stopService()

    def _event(self, event: Event) -> None:
        self._output.event(self.uri, event)

    def _status(self, status: ConnectionStatus) -> None:
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
