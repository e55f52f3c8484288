"""
A connection never lets its last libvirt event registration go while it is
open (it stays parked), so that libvirt's client-side event-queue race
cannot strand it: the pure logic of the registry, then against libvirt.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import libvirt
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import LibvirtConnection
from libvirt_twisted._registrations import Registrations
from libvirt_twisted._registry import Key, Registry

from ._harness import LOOP, PATIENCE, Recorder, churn, startDaemon, turns, until

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
REBOOT = libvirt.VIR_DOMAIN_EVENT_ID_REBOOT
A: Key = ("domain", LIFECYCLE, None)
B: Key = ("domain", REBOOT, None)


def held(registry: Registry, key: Key, libvirtId: int) -> int:
    """Add a listener of C{key} and give its registration libvirt's id, if first."""
    listener, registration, fresh = registry.add(key, print, None)
    if fresh:
        assert registry.registered(registration, libvirtId) == (True, None)
    return listener.id


class RegistryParkingTests(SynchronousTestCase):
    def test_theLastRegistrationStaysParked(self) -> None:
        registry = Registry()
        first = held(registry, A, 7)
        _, going = registry.remove(first)
        self.assertIsNone(going)
        self.assertEqual(registry.parked(), A)
        self.assertEqual(registry.listenersOf(A), ())
        # The key's next listener reuses it: no round trip.
        _, registration, fresh = registry.add(A, print, None)
        self.assertFalse(fresh)
        self.assertEqual(registration.libvirtId, 7)
        self.assertIsNone(registry.parked())

    def test_anotherKeyHoldingLetsTheParkedOneGo(self) -> None:
        registry = Registry()
        registry.remove(held(registry, A, 7))
        _, registration, fresh = registry.add(B, print, None)
        self.assertTrue(fresh)
        self.assertEqual(registry.parked(), A)  # B is not held yet
        live, unparked = registry.registered(registration, 8)
        self.assertTrue(live)
        assert unparked is not None
        self.assertEqual((unparked.key, unparked.libvirtId), (A, 7))
        self.assertIsNone(registry.parked())
        # Leaving until the caller has deregistered it: A's next registrant waits.
        _, again, fresh = registry.add(A, print, None)
        self.assertTrue(fresh)
        self.assertIs(again.predecessor, unparked)

    def test_notTheLastGoesAsBefore(self) -> None:
        registry = Registry()
        first = held(registry, A, 7)
        held(registry, B, 8)
        _, going = registry.remove(first)
        assert going is not None
        self.assertEqual(going.key, A)
        self.assertIsNone(registry.parked())

    def test_aRegistrationStillUnderWayIsParkedAndKeptOnceHeld(self) -> None:
        registry = Registry()
        listener, registration, _ = registry.add(A, print, None)
        self.assertEqual(registry.remove(listener.id)[1], None)
        self.assertEqual(registry.parked(), A)
        self.assertEqual(registry.registered(registration, 7), (True, None))
        self.assertEqual(registry.parked(), A)

    def test_clearKeepsTheNewestHeldParkedUnlessClosing(self) -> None:
        registry = Registry()
        held(registry, A, 7)
        held(registry, B, 8)
        listeners, going = registry.clear()
        self.assertEqual(len(listeners), 2)
        self.assertEqual([r.key for r in going], [A])
        self.assertEqual(registry.parked(), B)
        _, going = registry.clear(close=True)
        self.assertEqual([r.key for r in going], [B])
        self.assertIsNone(registry.parked())

    def test_closedNeverParks(self) -> None:
        registry = Registry()
        first = held(registry, A, 7)
        registry.clear(close=True)
        self.assertRaises(KeyError, registry.remove, first)
        self.assertIsNone(registry.parked())

    def test_aRefusedParkedRegistrationIsForgotten(self) -> None:
        registry = Registry()
        listener, registration, _ = registry.add(A, print, None)
        registry.remove(listener.id)
        registry.abandon(registration, RuntimeError("refused"))
        self.assertIsNone(registry.parked())
        self.assertTrue(registry.add(A, print, None)[2])


class FakeConnect:
    """What Registrations calls on a virConnect, counting what libvirt would hold."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.held: set[int] = set()

    def domainEventRegisterAny(self, obj: Any, eventID: int, cb: Any, opaque: Any) -> int:
        libvirtId = next(self.ids)
        self.held.add(libvirtId)
        return libvirtId

    def domainEventDeregisterAny(self, libvirtId: int) -> None:
        self.held.discard(libvirtId)


class Sink:
    def deliver(self, key: Key, args: tuple[Any, ...]) -> None:
        pass


class UnparkingWhileClosingTests(SynchronousTestCase):
    def test_theUnparkedRegistrationIsReleasedByItsRegistrant(self) -> None:
        """
        Another key holds just as closing begins: the parked registration,
        no longer among what closing releases, is deregistered by the
        registrant, which closing waits for.
        """
        conn, sink = FakeConnect(), Sink()
        registrations = Registrations(conn, sink.deliver, reactor)  # type: ignore[arg-type]
        first = registrations.subscribe("domain", None, LIFECYCLE, print, None)
        registrations.unsubscribe("domain", first)
        self.assertEqual((registrations.parked(), conn.held), (A, {1}))
        unpark = registrations._unparked
        closing: list[threading.Thread] = []

        def closeMeanwhile(registration: Any) -> None:
            left = registrations.shutDown()
            closer = threading.Thread(target=registrations.release, args=(left,))
            closer.start()
            closing.append(closer)
            while not registrations._gate.closing:
                closer.join(0.001)
            unpark(registration)

        registrations._unparked = closeMeanwhile  # type: ignore[method-assign]
        registrations.subscribe("domain", None, REBOOT, print, None)
        closing[0].join(PATIENCE)
        self.assertEqual(registrations.tracked(), [])
        self.assertEqual(conn.held, set())


class ConnectionParkingTests(TestCase):
    timeout = 60

    def countRegistrations(self, conn: libvirt.virConnect) -> list[str]:
        """Record each registration libvirt is asked for."""
        calls: list[str] = []
        real = conn.domainEventRegisterAny

        def register(*args: Any) -> int:
            calls.append("registered")
            callbackId: int = real(*args)
            return callbackId

        conn.domainEventRegisterAny = register  # type: ignore[method-assign,assignment]
        return calls

    async def test_parkedDropsEventsAndIsReused(self) -> None:
        conn = libvirt.open("test:///default")
        connection = LibvirtConnection(conn)
        self.addCleanup(connection.close)
        registered = self.countRegistrations(conn)
        first = Recorder()
        callbackId = connection.domainEventRegisterAny(None, LIFECYCLE, first)
        connection.domainEventDeregisterAny(callbackId)
        self.assertEqual(connection.tracked(), [])
        self.assertEqual(len(conn.domainEventCallbackID), 1)
        churn("test:///default", "parked")
        await turns(3)
        self.assertEqual(first.calls, [])
        second = Recorder()
        connection.domainEventRegisterAny(None, LIFECYCLE, second)
        self.assertEqual(registered, ["registered"])
        churn("test:///default", "reused")
        calls = await second.called(2)
        self.assertEqual([call[1].name() for call in calls], ["reused", "reused"])

    async def test_anotherKeyHoldingDeregistersTheParkedOne(self) -> None:
        conn = libvirt.open("test:///default")
        connection = LibvirtConnection(conn)
        self.addCleanup(connection.close)
        connection.domainEventDeregisterAny(
            connection.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        )
        reboot = connection.domainEventRegisterAny(None, REBOOT, Recorder())
        # The parked one goes on the call pool.
        await until(lambda: len(conn.domainEventCallbackID) == 1)
        self.assertEqual(connection.tracked(), [("domain", REBOOT, reboot)])
        # And the freed key registers afresh, as any other.
        events = Recorder()
        connection.domainEventRegisterAny(None, LIFECYCLE, events)
        churn("test:///default", "fresh")
        await events.called(2)

    async def test_closeLetsEverythingGo(self) -> None:
        daemon = startDaemon(self)
        await LOOP.drain()
        baseline = LOOP.counts()
        conn = libvirt.open(daemon.testURI)
        connection = LibvirtConnection(conn)
        callbackId = connection.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        connection.domainEventDeregisterAny(callbackId)
        self.assertEqual(len(conn.domainEventCallbackID), 1)
        await connection.close()
        self.assertEqual(conn.domainEventCallbackID, {})
        await LOOP.drain()
        self.assertEqual(LOOP.counts(), baseline)

    async def test_deregisterCallbacksKeepsOneParked(self) -> None:
        conn = libvirt.open("test:///default")
        connection = LibvirtConnection(conn)
        self.addCleanup(connection.close)
        connection.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        connection.domainEventRegisterAny(None, REBOOT, Recorder())
        connection.deregisterCallbacks()
        self.assertEqual(connection.tracked(), [])
        self.assertEqual(len(conn.domainEventCallbackID), 1)

    async def test_unsubscribedWhileLibvirtAnswers(self) -> None:
        """The last listener leaves during the round trip: libvirt keeps the result."""
        conn = libvirt.open("test:///default")
        connection = LibvirtConnection(conn)
        self.addCleanup(connection.close)
        answering = threading.Event()
        proceed = threading.Event()
        real = conn.domainEventRegisterAny

        def slowly(*args: Any) -> int:
            callbackId: int = real(*args)
            answering.set()
            proceed.wait(PATIENCE)
            return callbackId

        conn.domainEventRegisterAny = slowly  # type: ignore[method-assign,assignment]
        registering = connection.inThread.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        await until(answering.is_set)
        ((_, _, callbackId),) = connection.tracked()
        connection.domainEventDeregisterAny(callbackId)
        proceed.set()
        self.assertEqual(await registering, callbackId)
        self.assertEqual(connection.tracked(), [])
        self.assertEqual(len(conn.domainEventCallbackID), 1)
