"""
Logs an operator can read: a lost connection is one line, not one for each
subscription torn down; a family the driver refuses is one line for each
connection, not one for each of its events.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import provider

from libvirt_twisted import LibvirtService, events

from ._harness import Recorder, startDaemon


class Captured:
    """Our log events from now on, with their levels."""

    def __init__(self, case: TestCase) -> None:
        self.events: list[LogEvent] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            if str(event.get("log_namespace", "")).startswith("libvirt_twisted"):
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        case.addCleanup(globalLogPublisher.removeObserver, observe)

    def atLeast(self, level: Any) -> list[str]:
        return [formatEvent(e) or "" for e in self.events if e["log_level"] >= level]


def everyKind(service: LibvirtService) -> None:
    for family, eventID in events.allKinds().values():
        service.subscribe(family, eventID, lambda *args: None)


class LoggingTests(TestCase):
    timeout = 60

    def service(self, uri: str, **kwargs: Any) -> tuple[LibvirtService, Recorder]:
        service = LibvirtService(uri, **kwargs)
        statuses = Recorder()
        service.addObserver(statuses)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service, statuses

    async def test_aLostConnectionIsOneLine(self) -> None:
        daemon = startDaemon(self)
        service, statuses = self.service(
            daemon.testURI, inventory=True, retryPolicy=lambda failures: 100.0
        )
        everyKind(service)
        service.startService()
        connection = await service.whenConnected()
        self.assertGreater(len(connection.tracked()), 30)
        captured = Captured(self)
        daemon.kill()
        await statuses.when(lambda calls: calls[-1][0].state == "disconnected")
        (line,) = captured.atLeast(LogLevel.info)
        self.assertIn("disconnected (EOF)", line)
        # libvirt's refusals of each deregistration are not even debug lines.
        self.assertEqual([m for m in captured.atLeast(LogLevel.debug) if "libvirt:" in m], [])

    async def test_aRefusedFamilyIsOneLineAConnection(self) -> None:
        captured = Captured(self)
        service, _ = self.service("test:///default")
        everyKind(service)
        service.startService()
        await service.whenConnected()
        refused = [m for m in captured.atLeast(LogLevel.info) if "cannot be watched" in m]
        secret = [kind for kind in events.allKinds() if kind.startswith("secret.")]
        self.assertGreater(len(secret), 1)
        self.assertEqual(len(refused), 1, refused)
        self.assertIn("secret events cannot be watched here", refused[0])
