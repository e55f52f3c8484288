"""
whenDomainState on a connection and on a service: a state already there or
reached later, a timeout, a domain that is not there or goes, a connection
that closes, a cancelled wait; nothing left registered after any of them.
"""

from __future__ import annotations

import contextlib

import libvirt
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import (
    ConnectionClosedError,
    DomainStateTimeout,
    DomainUndefinedError,
    LibvirtConnection,
    LibvirtService,
)
from libvirt_twisted._lifecycle import DomainState
from libvirt_twisted._statewait import StateWait

from ._harness import daemonClients, startDaemon, testDomainXML, turns, until


class ConnectionWaitTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.connection = LibvirtConnection(libvirt.open("test:///default"))
        self.addCleanup(self.connection.close)

    def domain(self, name: str) -> libvirt.virDomain:
        domain: libvirt.virDomain = self.connection.createXML(testDomainXML(name), 0)

        def destroy() -> None:
            with contextlib.suppress(libvirt.libvirtError):  # gone already
                domain.destroy()

        self.addCleanup(destroy)
        return domain

    async def test_alreadyThere(self) -> None:
        self.assertEqual(await self.connection.whenDomainState("test", "RUNNING"), "RUNNING")
        test = self.connection.lookupByName("test")
        self.assertEqual(
            await self.connection.whenDomainState(test.UUIDString(), ("PAUSED", "RUNNING")),
            "RUNNING",
        )
        self.assertEqual(self.connection.tracked(), [])

    async def test_reachedLater(self) -> None:
        domain = self.domain("later")
        waiting = self.connection.whenDomainState(domain, "PAUSED")
        await until(lambda: self.connection.tracked())
        self.assertNoResult(waiting)
        domain.suspend()
        self.assertEqual(await waiting, "PAUSED")
        self.assertEqual(self.connection.tracked(), [])
        # Back to running, asked by name.
        waiting = self.connection.whenDomainState("later", "RUNNING")
        await until(lambda: self.connection.tracked())
        domain.resume()
        self.assertEqual(await waiting, "RUNNING")

    async def test_aTransientDomainStoppingIsShutoffThenGone(self) -> None:
        domain = self.domain("stopping")
        shutoff = self.connection.whenDomainState(domain, "SHUTOFF")
        paused = self.connection.whenDomainState(domain, "PAUSED")
        await until(lambda: len(self.connection.tracked()) == 2)
        domain.destroy()
        self.assertEqual(await shutoff, "SHUTOFF")
        with self.assertRaises(DomainUndefinedError):
            await paused
        self.assertEqual(self.connection.tracked(), [])

    async def test_notThere(self) -> None:
        with self.assertRaises(DomainUndefinedError) as raised:
            await self.connection.whenDomainState("no-such-domain", "RUNNING")
        self.assertIn("'no-such-domain' is not defined", str(raised.exception))
        self.assertEqual(self.connection.tracked(), [])

    async def test_timeout(self) -> None:
        domain = self.domain("slow")
        with self.assertRaises(DomainStateTimeout) as raised:
            await self.connection.whenDomainState(domain, "PAUSED", timeout=0.2)
        self.assertIn("did not become PAUSED within 0.2s (it is RUNNING)", str(raised.exception))
        self.assertEqual(self.connection.tracked(), [])

    async def test_cancelled(self) -> None:
        domain = self.domain("cancelled")
        waiting = self.connection.whenDomainState(domain, "PAUSED")
        await until(lambda: self.connection.tracked())
        waiting.cancel()
        with self.assertRaises(CancelledError):
            await waiting
        self.assertEqual(self.connection.tracked(), [])
        domain.suspend()
        await turns(3)  # nothing fires twice

    async def test_connectionCloses(self) -> None:
        connection = LibvirtConnection(libvirt.open("test:///default"))
        waiting = connection.whenDomainState("test", "SHUTOFF")
        await until(lambda: connection.tracked())
        await connection.close()
        with self.assertRaises(ConnectionClosedError):
            await waiting
        with self.assertRaises(ConnectionClosedError):
            await connection.whenDomainState("test", "RUNNING")

    def test_badArguments(self) -> None:
        self.assertRaises(ValueError, self.connection.whenDomainState, "test", "RUNING")
        self.assertRaises(ValueError, self.connection.whenDomainState, "test", ())
        self.assertRaises(TypeError, self.connection.whenDomainState, 42, "RUNNING")
        self.assertRaises(ValueError, self.connection.whenDomainState, "test", "RUNNING", -1)
        self.assertEqual(self.connection.tracked(), [])


class EarlyEventTests(SynchronousTestCase):
    """Events that come before the read's answer are applied to what it says."""

    UUID = "11111111-2222-3333-4444-555555555555"

    def wait(self, *states: str) -> tuple[StateWait, Clock, list[object]]:
        clock = Clock()
        wait = StateWait(self.UUID, frozenset(states), clock, clock, None)
        results: list[object] = []
        wait.deferred.addBoth(results.append)
        return wait, clock, results

    def test_stoppedAndStartedAgainDuringTheRead(self) -> None:
        wait, clock, results = self.wait("RUNNING")
        wait.event("d", self.UUID, "STOPPED", "DESTROYED")
        wait.event("d", self.UUID, "STARTED", "BOOTED")
        wait.observe(DomainState("RUNNING", "BOOTED", True))
        clock.advance(0)
        self.assertEqual(results, ["RUNNING"])

    def test_aConfigChangeIsNoStop(self) -> None:
        wait, clock, results = self.wait("SHUTOFF")
        wait.event("d", self.UUID, "DEFINED", "UPDATED")
        wait.observe(DomainState("RUNNING", "BOOTED", True))
        clock.advance(0)
        self.assertEqual(results, [])
        wait.event("d", self.UUID, "STOPPED", "SHUTDOWN")
        clock.advance(0)
        self.assertEqual(results, ["SHUTOFF"])

    def test_aTransientDomainThatStoppedBeforeTheRead(self) -> None:
        wait, clock, results = self.wait("SHUTOFF")
        wait.event("d", self.UUID, "STOPPED", "DESTROYED")
        wait.observe(None)
        clock.advance(0)
        self.assertEqual(results, ["SHUTOFF"])

    def test_anotherDomainsEventsAreNotApplied(self) -> None:
        wait, clock, results = self.wait("SHUTOFF")
        wait.event("other", "99999999-2222-3333-4444-555555555555", "STOPPED", "DESTROYED")
        wait.observe(DomainState("RUNNING", "BOOTED", True))
        clock.advance(0)
        self.assertEqual(results, [])


class ServiceWaitTests(TestCase):
    timeout = 60

    async def test_acrossAReconnection(self) -> None:
        daemon = startDaemon(self)
        conn = libvirt.open(daemon.testURI)  # keeps the test driver's state
        self.addCleanup(conn.close)
        others = daemonClients(daemon)
        clock = Clock()
        service = LibvirtService(
            daemon.testURI, clock=clock, retryPolicy=lambda failures: 30.0, keepalive=None
        )
        self.addCleanup(lambda: service.stopService() if service.running else None)
        waiting = service.whenDomainState("appears", "RUNNING")  # before it starts, too
        service.startService()
        first = await service.whenConnected()
        with self.assertRaises(DomainUndefinedError):
            await waiting
        domain = conn.defineXML(testDomainXML("appears"))
        waiting = service.whenDomainState("appears", "RUNNING")
        await until(lambda: first.tracked())
        # Cut off, the service misses the start; reconnected, it reads anew.
        (ours,) = daemonClients(daemon) - others
        daemon.virtAdmin("client-disconnect", "libvirtd", ours)
        await until(lambda: service.connection is None)
        domain.create()
        self.assertNoResult(waiting)
        clock.advance(30.0)
        self.assertEqual(await waiting, "RUNNING")
        second = service.connection
        assert second is not None
        self.assertIsNot(second, first)
        self.assertEqual(second.tracked(), [])

    async def test_stopCancels(self) -> None:
        service = LibvirtService("test:///default")
        service.startService()
        waiting = service.whenDomainState("test", "SHUTOFF")
        connection = await service.whenConnected()
        await until(lambda: connection.tracked())
        await service.stopService()
        with self.assertRaises((CancelledError, ConnectionClosedError)):
            await waiting
        with self.assertRaises(CancelledError):
            await service.whenDomainState("test", "RUNNING")
