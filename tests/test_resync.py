"""
A service's inventory against a real daemon: changes made while it was cut
off come back as exactly the synthesized events that explain them; a daemon
restart, random load and a QEMU domain that outlives its daemon leave it
equal to a fresh listing; drift repair counts what libvirt did not tell.
"""

from __future__ import annotations

from typing import Any

import libvirt
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from libvirt_twisted import (
    ConnectionStatus,
    EventQueue,
    Inventory,
    LibvirtConnection,
    LibvirtService,
)
from libvirt_twisted._lifecycle import DomainState
from libvirt_twisted._resync import GRACE, Resync
from libvirt_twisted._snapshot import Snapshot
from libvirt_twisted.events import Event

from ._harness import (
    Recorder,
    daemonClients,
    logMessages,
    qemuDomainXML,
    startDaemon,
    testDomainXML,
    until,
)
from ._producers import spawnChurner

View = dict[str, tuple[str, str, bool]]


def listing(uri: str) -> View:
    """What libvirt says now: UUID -> (name, state, persistent), with a connection of its own."""
    conn = libvirt.open(uri)
    try:
        view: View = {}
        for domain in conn.listAllDomains():
            names = {1: "RUNNING", 3: "PAUSED", 5: "SHUTOFF"}
            state = names.get(int(domain.state()[0]), "OTHER")
            view[domain.UUIDString()] = (domain.name(), state, bool(domain.isPersistent()))
        return view
    finally:
        conn.close()


def known(inventory: Inventory) -> View:
    return {u: (r.name, r.state, r.persistent) for u, r in inventory.domains.items()}


def explained(events: tuple[Event, ...] | list[Event]) -> list[tuple[str | None, str, bool]]:
    return [(e.name, str(e.fields["event"]), e.synthetic) for e in events]


class ResyncTestCase(TestCase):
    timeout = 120

    def service(self, uri: str, **kwargs: Any) -> tuple[LibvirtService, Recorder]:
        kwargs.setdefault("retryPolicy", lambda failures: 0.05)
        service = LibvirtService(uri, inventory=True, **kwargs)
        statuses = Recorder()
        service.addObserver(statuses)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service, statuses


class GapTests(ResyncTestCase):
    async def test_changesMadeWhileCutOffComeBackExplained(self) -> None:
        daemon = startDaemon(self)
        uri = daemon.testURI
        conn = libvirt.open(uri)
        self.addCleanup(conn.close)
        stays = conn.defineXML(testDomainXML("stays"))
        stays.create()
        stops = conn.defineXML(testDomainXML("stops"))
        stops.create()
        pauses = conn.defineXML(testDomainXML("pauses"))
        pauses.create()
        conn.defineXML(testDomainXML("undefined"))
        vanishes = conn.createXML(testDomainXML("vanishes"), 0)
        others = daemonClients(daemon)
        clock = Clock()
        service, statuses = self.service(
            uri, clock=clock, retryPolicy=lambda failures: 30.0, resync=None
        )
        watched: EventQueue[Any] = EventQueue()
        service.watch("domain.lifecycle", watched)
        raw: EventQueue[Any] = EventQueue()
        service.subscribe("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, raw)
        service.startService()
        await service.whenConnected()
        assert service.inventory is not None
        self.assertEqual(known(service.inventory), listing(uri))
        self.assertEqual(statuses.calls[0][0].changes, ())
        # Cut the service's client off with the daemon's admin interface.
        (ours,) = daemonClients(daemon) - others
        daemon.virtAdmin("client-disconnect", "libvirtd", ours)
        await statuses.when(lambda calls: calls[-1][0].state == "disconnected")
        # The gap.
        stops.destroy()
        pauses.suspend()
        conn.lookupByName("undefined").undefine()
        vanishes.destroy()
        conn.defineXML(testDomainXML("defined"))
        conn.createXML(testDomainXML("appears"), 0)
        clock.advance(30.0)
        await statuses.when(lambda calls: calls[-1][0].state == "reconnected")
        reconnected = statuses.calls[-1][0]
        expected = [
            ("appears", "STARTED", True),
            ("defined", "DEFINED", True),
            ("pauses", "SUSPENDED", True),
            ("stops", "STOPPED", True),
            ("undefined", "UNDEFINED", True),
            ("vanishes", "STOPPED", True),
        ]
        self.assertEqual(sorted(explained(reconnected.changes)), expected)
        self.assertEqual(known(service.inventory), listing(uri))
        # Watchers get them as events, after the status and in the same order.
        items = [await watched.get() for _ in range(3 + len(expected))]
        statusItems = [i.state for i in items if isinstance(i, ConnectionStatus)]
        self.assertEqual(statusItems, ["connected", "disconnected", "reconnected"])
        self.assertIsInstance(items[2], ConnectionStatus)
        self.assertEqual(explained(items[3:]), explained(reconnected.changes))
        # Raw subscribers get the status, which carries them, and no callback.
        rawItems = [await raw.get() for _ in range(3)]
        self.assertEqual([i.state for i in rawItems], ["connected", "disconnected", "reconnected"])
        self.assertEqual(rawItems[2].changes, reconnected.changes)
        self.assertEqual(raw.pending, [])
        self.assertEqual(service.lostEvents, 0)
        self.assertEqual(service.inventory.domain("stays").state, "RUNNING")  # type: ignore[union-attr]

    async def test_daemonRestartOnTheTestDriverTellsWhatVanished(self) -> None:
        daemon = startDaemon(self)
        uri = daemon.testURI
        conn = libvirt.open(uri)
        conn.defineXML(testDomainXML("defined"))
        conn.defineXML(testDomainXML("running")).create()
        conn.createXML(testDomainXML("transient"), 0)
        service, statuses = self.service(uri, keepalive=(1, 2), resync=None)
        service.startService()
        await service.whenConnected()
        # The test driver keeps its state while a client is connected.
        conn.close()
        assert service.inventory is not None
        self.assertEqual(len(service.inventory.domains), 4)
        daemon.restart()
        await statuses.when(lambda calls: calls[-1][0].state == "reconnected")
        self.assertEqual(
            sorted(explained(statuses.calls[-1][0].changes)),
            [
                ("defined", "UNDEFINED", True),
                ("running", "STOPPED", True),
                ("running", "UNDEFINED", True),
                ("transient", "STOPPED", True),
            ],
        )
        self.assertEqual(known(service.inventory), listing(uri))


class LoadTests(ResyncTestCase):
    async def test_randomOperationsLeaveItEqualToAFreshListing(self) -> None:
        daemon = startDaemon(self)
        uri = daemon.testURI
        service, statuses = self.service(uri, resync=0.5)
        service.startService()
        await service.whenConnected()
        churners = [spawnChurner(self, uri, f"churn{n}", 5000, seed=n) for n in range(2)]
        counts = await DeferredList([c.ended for c in churners], fireOnOneErrback=True)
        self.assertEqual([count for _, count in counts], [5000, 5000])
        assert service.inventory is not None
        inventory = service.inventory
        fresh = listing(uri)
        await until(lambda: known(inventory) == fresh)
        self.assertGreater(len(fresh), 10)
        checks = service._keeper.checks  # type: ignore[union-attr]
        self.assertGreater(checks, 1)
        # Wait for one more check to have run over the quiet host.
        await until(lambda: service._keeper.checks > checks + 1)  # type: ignore[union-attr]
        self.assertEqual(service.lostEvents, 0)
        self.assertNotIn("resynced", [call[0].state for call in statuses.calls])
        self.assertEqual(known(inventory), listing(uri))


class QemuTests(ResyncTestCase):
    async def test_aDomainThatOutlivesItsDaemonIsNoChange(self) -> None:
        daemon = startDaemon(self)
        uri = daemon.qemuURI
        conn = libvirt.open(uri)
        domain = conn.createXML(qemuDomainXML("outlives"), 0)
        uuid = domain.UUIDString()
        conn.close()
        service, statuses = self.service(uri, keepalive=(1, 2), resync=None)
        service.startService()
        await service.whenConnected()
        assert service.inventory is not None
        self.assertEqual(service.inventory.domains[uuid].state, "RUNNING")
        daemon.restart()
        await statuses.when(lambda calls: calls[-1][0].state == "reconnected")
        self.assertEqual(statuses.calls[-1][0].changes, ())
        self.assertEqual(service.inventory.domains[uuid].state, "RUNNING")
        self.assertEqual(known(service.inventory), listing(uri))


class DriftTests(ResyncTestCase):
    """Drift repair through a service, on the embedded test driver and a Clock."""

    async def test_aLostEventIsRepairedWarnedCountedAndTold(self) -> None:
        clock = Clock()
        service, statuses = self.service("test:///default", clock=clock, resync=10.0)
        watched = Recorder()
        service.watch("domain.lifecycle", watched)
        logged = logMessages(self)
        service.startService()
        connection = await service.whenConnected()
        assert service.inventory is not None
        inventory = service.inventory
        # libvirt loses the next event, as far as the inventory can tell.
        realFollow = inventory.follow
        swallowed: list[tuple[Any, ...]] = []
        inventory.follow = lambda *args: swallowed.append(args)  # type: ignore[method-assign]
        domain = connection.createXML(testDomainXML("unseen"), 0)
        await watched.called(1)
        inventory.follow = realFollow  # type: ignore[method-assign]
        self.assertEqual(len(swallowed), 1)
        self.assertIsNone(inventory.domain("unseen"))
        clock.advance(10.0)  # the check, whose snapshot disagrees
        await until(clock.getDelayedCalls)  # the confirmation, after the grace
        clock.advance(GRACE)  # the difference lasted
        await statuses.when(lambda calls: calls[-1][0].state == "resynced")
        resynced = statuses.calls[-1][0]
        self.assertEqual((resynced.lost, explained(resynced.changes)), (1, [
            ("unseen", "STARTED", True)
        ]))  # fmt: skip
        self.assertEqual(service.lostEvents, 1)
        self.assertEqual(inventory.domain("unseen").state, "RUNNING")  # type: ignore[union-attr]
        self.assertEqual(watched.calls[-1][0].synthetic, True)
        self.assertTrue(any("libvirt lost an event: domain unseen" in line for line in logged))
        domain.destroy()

    async def test_aDifferenceAnEventExplainsIsNotALostEvent(self) -> None:
        clock = Clock()
        service, statuses = self.service("test:///default", clock=clock, resync=10.0)
        service.startService()
        connection = await service.whenConnected()
        assert service.inventory is not None
        inventory = service.inventory
        realFollow = inventory.follow
        late: list[tuple[Any, ...]] = []
        inventory.follow = lambda *args: late.append(args)  # type: ignore[method-assign]
        domain = connection.createXML(testDomainXML("late"), 0)
        await until(lambda: late)
        clock.advance(10.0)
        await until(clock.getDelayedCalls)  # the confirmation, after the grace
        # The event comes late, but within the grace: libvirt lost nothing.
        inventory.follow = realFollow  # type: ignore[method-assign]
        realFollow(*late[0])
        clock.advance(GRACE)
        await until(clock.getDelayedCalls)  # the next check, scheduled once this is over
        self.assertEqual(service.lostEvents, 0)
        self.assertNotIn("resynced", [call[0].state for call in statuses.calls])
        domain.destroy()

    async def test_aSnapshotThatDisagreesAfterTheGraceIsCorrected(self) -> None:
        inventory = Inventory(Clock())
        inventory.rebuild(Snapshot({"u": ("a", DomainState("RUNNING", "BOOTED", True))}, {}, {}))
        disagreeing = Snapshot({"u": ("a", DomainState("PAUSED", "USER", True))}, {}, {})
        clock = Clock()
        corrected: list[tuple[list[Any], bool]] = []
        resync = Resync(
            inventory,
            "test:///default",
            5.0,
            reactor,
            clock,
            lambda changes, restore: corrected.append((changes, restore)),
            take=lambda conn, families: disagreeing,
        )
        connection = LibvirtConnection(libvirt.open("test:///default"))
        self.addCleanup(connection.close)
        resync.connected(connection)
        clock.advance(5.0)
        await until(clock.getDelayedCalls)
        self.assertEqual(corrected, [])
        clock.advance(GRACE)
        ((changes, restore),) = corrected
        self.assertFalse(restore)
        self.assertEqual([e.fields["event"] for e in changes[0].events], ["SUSPENDED"])
        self.assertTrue(changes[0].lost)
        resync.disconnected()

    async def test_aCheckLeftByADisconnectionLeavesNothingAndBlocksNothing(self) -> None:
        inventory = Inventory(Clock())
        inventory.rebuild(Snapshot({}, {}, {}))
        disagreeing = Snapshot({"u": ("a", DomainState("RUNNING", "BOOTED", False))}, {}, {})
        clock = Clock()
        corrected: list[tuple[list[Any], bool]] = []
        resync = Resync(
            inventory,
            "test:///default",
            60.0,
            reactor,
            clock,
            lambda changes, restore: corrected.append((changes, restore)),
            take=lambda conn, families: disagreeing,
        )
        first, second = (LibvirtConnection(libvirt.open("test:///default")) for _ in range(2))
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        resync.connected(first)
        resync.now()
        await until(clock.getDelayedCalls)  # its confirmation, after the grace
        resync.disconnected()
        self.assertEqual(clock.getDelayedCalls(), [])
        # On the next connection, a check asked for at once runs at once.
        resync.connected(second)
        resync.now(restore=True)
        await until(clock.getDelayedCalls)  # the grace
        clock.advance(GRACE)
        ((changes, restore),) = corrected
        self.assertTrue(restore)
        self.assertEqual([change.uuid for change in changes], ["u"])
        self.assertEqual(resync.checks, 2)
        resync.disconnected()
        self.assertEqual(clock.getDelayedCalls(), [])
