"""
LibvirtConnection against the private daemon and the embedded test driver:
tracked registrations, fan-out, queues, teardown on close and collection.
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import libvirt
from twisted.internet.defer import Deferred, DeferredQueue, gatherResults
from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import (
    ConnectionClosedError,
    EventQueue,
    LibvirtConnection,
    UnknownCallbackError,
)
from libvirt_twisted._callgate import CallGate
from libvirt_twisted._registry import Departure
from libvirt_twisted._threads import CallPool, callPool

from ._harness import LOOP, PATIENCE, Recorder, churn, startDaemon, turns, until

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
REBOOT = libvirt.VIR_DOMAIN_EVENT_ID_REBOOT
STARTED = libvirt.VIR_DOMAIN_EVENT_STARTED
STOPPED = libvirt.VIR_DOMAIN_EVENT_STOPPED


class ConnectionTestCase(TestCase):
    timeout = 60

    def wrap(self, uri: str, **kwargs: Any) -> LibvirtConnection:
        connection = LibvirtConnection(libvirt.open(uri), **kwargs)
        self.addCleanup(connection.close)
        return connection

    def churn(self, uri: str, name: str) -> None:
        """Start and destroy a domain from another client: STARTED, then STOPPED."""
        churn(uri, name)


class WrapperTests(ConnectionTestCase):
    """Against the embedded test driver: no daemon needed."""

    uri = "test:///default"

    def test_forwardsEverythingElse(self) -> None:
        connection = self.wrap(self.uri)
        self.assertEqual(connection.getType(), "TEST")
        self.assertIsInstance(connection.virConnect, libvirt.virConnect)
        self.assertEqual(
            [d.name() for d in connection.listAllDomains()],
            [d.name() for d in connection.virConnect.listAllDomains()],
        )

    def test_legacyRegistrationRefusedClearly(self) -> None:
        connection = self.wrap(self.uri)
        for method in (connection.domainEventRegister, connection.domainEventDeregister):
            with self.assertRaises(NotImplementedError) as raised:
                method(lambda *a: None, None)
            self.assertIn("onDomainChange", str(raised.exception))

    async def test_callablesQueuesAndOnDomainChangeShareOneEvent(self) -> None:
        changes: EventQueue[tuple[Any, ...]] = EventQueue()
        connection = self.wrap(self.uri, onDomainChange=changes)
        first, second = Recorder(), Recorder()
        plain: DeferredQueue[tuple[Any, ...]] = DeferredQueue()
        ids = [
            connection.domainEventRegisterAny(None, LIFECYCLE, first, "one"),
            connection.domainEventRegisterAny(None, LIFECYCLE, second, "two"),
            connection.domainEventRegisterAny(None, LIFECYCLE, plain, "three"),
        ]
        self.assertEqual(len(set(ids)), 3)
        self.churn(self.uri, "fan")
        await first.called(2)
        await second.called(2)
        for recorder, opaque in ((first, "one"), (second, "two")):
            conn, dom, event, _detail, got = recorder.calls[0]
            self.assertIs(conn, connection)
            self.assertEqual((dom.name(), event, got), ("fan", STARTED, opaque))
        item = await plain.get()
        self.assertIs(item[0], connection)
        self.assertEqual((item[1].name(), item[2], item[4]), ("fan", STARTED, "three"))
        item = await changes.get()
        self.assertEqual((item[1].name(), item[2]), ("fan", STARTED))

        connection.domainEventDeregisterAny(ids[0])
        self.churn(self.uri, "fan2")
        await second.when(lambda calls: len(calls) == 4)
        await turns(3)
        self.assertEqual(len(first.calls), 2)

    async def test_deferredConsumersMayCallLibvirt(self) -> None:
        queue: EventQueue[tuple[Any, ...]] = EventQueue()
        connection = self.wrap(self.uri)
        connection.domainEventRegisterAny(None, LIFECYCLE, queue)
        self.churn(self.uri, "consumer")
        _, _dom, event, _, _ = await queue.get()
        # A consumer runs outside libvirt's dispatch: libvirt calls are fine.
        self.assertEqual(connection.lookupByName("test").name(), "test")
        self.assertEqual(event, STARTED)

    async def test_raisingCallbackIsLoggedOthersStillServed(self) -> None:
        connection = self.wrap(self.uri)

        def boom(*args: Any) -> None:
            raise ZeroDivisionError("subscriber bug")

        after = Recorder()
        connection.domainEventRegisterAny(None, LIFECYCLE, boom)
        connection.domainEventRegisterAny(None, LIFECYCLE, after)
        self.churn(self.uri, "raiser")
        await after.called(2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_badInputRegistersNothing(self) -> None:
        connection = self.wrap(self.uri)
        domain = connection.lookupByName("test")
        with self.assertRaises(ValueError) as raised:
            connection.domainEventRegisterAny(None, 9999, Recorder())
        self.assertIn("unknown domain event id 9999", str(raised.exception))
        self.assertRaises(TypeError, connection.domainEventRegisterAny, None, "0", Recorder())
        self.assertRaises(TypeError, connection.domainEventRegisterAny, None, LIFECYCLE, "no")
        self.assertRaises(TypeError, connection.networkEventRegisterAny, domain, 0, Recorder())
        self.assertEqual(connection.tracked(), [])
        callbackId = connection.domainEventRegisterAny(domain, REBOOT, Recorder())
        with self.assertRaises(UnknownCallbackError):
            connection.networkEventDeregisterAny(callbackId)
        with self.assertRaises(UnknownCallbackError):
            connection.domainEventDeregisterAny(callbackId + 1000)
        self.assertEqual(connection.tracked(), [("domain", REBOOT, callbackId)])
        connection.domainEventDeregisterAny(callbackId)
        self.assertEqual(connection.tracked(), [])

    def test_libvirtRefusalRegistersNothing(self) -> None:
        connection = self.wrap(self.uri)
        other = libvirt.open(self.uri)
        foreign = other.lookupByName("test")
        other.close()
        before = dict(getattr(connection.virConnect, "domainEventCallbackID", {}))
        # A domain object of a closed connection: libvirt refuses the filter.
        with self.assertRaises(libvirt.libvirtError):
            connection.domainEventRegisterAny(foreign, LIFECYCLE, Recorder())
        self.assertEqual(connection.tracked(), [])
        self.assertEqual(getattr(connection.virConnect, "domainEventCallbackID", {}), before)

    async def test_eventQueueFinishDeregisters(self) -> None:
        connection = self.wrap(self.uri)
        # Another key holds, so that the queue's registration really goes
        # (the last one would stay parked).
        other = connection.domainEventRegisterAny(None, REBOOT, Recorder())
        queue: EventQueue[tuple[Any, ...]] = EventQueue()
        callbackId = connection.domainEventRegisterAny(None, LIFECYCLE, queue)
        self.assertEqual(
            connection.tracked(), [("domain", LIFECYCLE, callbackId), ("domain", REBOOT, other)]
        )
        self.assertEqual(len(connection.virConnect.domainEventCallbackID), 2)
        consumed = []

        async def consume() -> None:
            async for item in queue:
                consumed.append(item)

        from twisted.internet.defer import ensureDeferred

        consumer = ensureDeferred(consume())
        queue.finish()
        await consumer
        self.assertEqual(connection.tracked(), [("domain", REBOOT, other)])
        # libvirt's side goes on the call pool: no round trip on the reactor.
        await until(lambda: len(connection.virConnect.domainEventCallbackID) == 1)
        self.churn(self.uri, "after-finish")
        await turns(3)
        self.assertEqual(consumed, [])

    async def test_userCloseCallbackAndOnClose(self) -> None:
        onClose: Deferred[int] = Deferred()
        connection = LibvirtConnection(libvirt.open(self.uri), onClose=onClose)
        closed = Recorder()
        connection.registerCloseCallback(closed, "mine")
        self.assertRaises(ValueError, connection.registerCloseCallback, closed)
        reason = await connection.close()
        self.assertEqual(reason, libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        self.assertEqual(await onClose, reason)
        self.assertEqual(closed.calls, [(connection, reason, "mine")])
        self.assertEqual(await connection.close(), reason)
        self.assertRaises(RuntimeError, connection.domainEventRegisterAny, None, LIFECYCLE, closed)

    def test_needsLibvirtConnection(self) -> None:
        self.assertRaises(TypeError, LibvirtConnection, "test:///default")
        conn = libvirt.open(self.uri)
        self.addCleanup(conn.close)
        self.assertRaises(TypeError, LibvirtConnection, conn, onClose="nope")


class DaemonTests(ConnectionTestCase):
    """Teardown and collection when a real daemon goes away."""

    async def test_daemonKilledTearsEverythingDownAndFreesIt(self) -> None:
        daemon = startDaemon(self)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        baseline = LOOP.counts()
        onClose: Deferred[int] = Deferred()
        changes: EventQueue[tuple[Any, ...]] = EventQueue()
        conn = libvirt.open(daemon.testURI)
        connection = LibvirtConnection(conn, onClose=onClose, onDomainChange=changes)
        connection.domainEventRegisterAny(None, REBOOT, Recorder())
        connection.networkEventRegisterAny(
            None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, lambda *a: None
        )
        connection.storagePoolEventRegisterAny(
            None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, changes
        )
        self.assertEqual(len(connection.tracked()), 4)
        self.churn(daemon.testURI, "before-kill")
        await changes.get()

        daemon.kill()
        reason = await onClose
        self.assertEqual(reason, libvirt.VIR_CONNECT_CLOSE_REASON_EOF)
        self.assertEqual(connection.tracked(), [])
        self.assertEqual(connection.closeReason, reason)
        # The queue was deregistered from the dead connection, not finished.
        self.assertFalse(changes.finished)

        wrapper, virConnect = weakref.ref(connection), weakref.ref(conn)
        del connection, conn, onClose
        changes.pending.clear()
        # Freed by reference counting alone (no cycle waits for the collector)
        # once the teardown's frames and delayed calls are done.
        await until(lambda: wrapper() is None)
        self.assertIsNone(virConnect())
        await LOOP.drain()
        self.assertEqual(LOOP.counts(), baseline)

    async def test_wrappingAConnectionAlreadyLostFails(self) -> None:
        """
        libvirt refuses a close callback on a connection already lost, so
        the wrapper cannot miss the close: wrapping fails, holding nothing.
        """
        daemon = startDaemon(self)
        baseline = LOOP.counts()
        conn = libvirt.open(daemon.testURI)
        daemon.kill()
        await until(lambda: not conn.isAlive())
        onClose: Deferred[int] = Deferred()
        with self.assertRaises(libvirt.libvirtError):
            LibvirtConnection(conn, onClose=onClose, onDomainChange=Recorder())
        conn.close()
        await LOOP.drain()
        await turns(2)
        self.assertFalse(onClose.called)
        self.assertEqual(LOOP.counts(), baseline)

    async def test_closeTearsDownAndDrains(self) -> None:
        daemon = startDaemon(self)
        baseline = LOOP.counts()
        connection = LibvirtConnection(libvirt.open(daemon.testURI), onDomainChange=Recorder())
        connection.setKeepAlive(5, 3)
        self.assertGreater(LOOP.counts()["watches"], baseline["watches"])
        reason = await connection.close()
        self.assertEqual(reason, libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        self.assertEqual(connection.tracked(), [])
        self.assertEqual(LOOP.counts(), baseline)


class ConcurrencyTests(ConnectionTestCase):
    """Registrations on the call pool racing teardown, and the reactor never waiting."""

    async def test_finishingAQueueNeverWaitsForARoundTrip(self) -> None:
        daemon = startDaemon(self)
        connection = LibvirtConnection(libvirt.open(daemon.testURI))
        first: EventQueue[Any] = EventQueue()
        second: EventQueue[Any] = EventQueue()
        connection.domainEventRegisterAny(None, LIFECYCLE, first)
        connection.domainEventRegisterAny(None, LIFECYCLE, second)
        daemon.pause()
        # A registration stuck in a round trip to the frozen daemon...
        stuck = connection.inThread.domainEventRegisterAny(None, REBOOT, Recorder())
        await until(lambda: len(connection.tracked()) == 3)
        # ...does not hold up the reactor thread's own bookkeeping.
        first.finish()
        self.assertEqual([kind for _, kind, _ in connection.tracked()], [LIFECYCLE, REBOOT])
        daemon.resume()
        await stuck
        self.assertEqual([kind for _, kind, _ in connection.tracked()], [LIFECYCLE, REBOOT])
        await connection.close()

    async def test_closeWhileARegistrationIsUnderWay(self) -> None:
        daemon = startDaemon(self)
        await LOOP.drain()
        baseline = LOOP.counts()
        conn = libvirt.open(daemon.testURI)
        connection = LibvirtConnection(conn)
        registered = threading.Event()
        proceed = threading.Event()
        realRegister = conn.domainEventRegisterAny

        def slowly(*args: Any) -> int:
            callbackId: int = realRegister(*args)
            registered.set()
            proceed.wait(PATIENCE)
            return callbackId

        conn.domainEventRegisterAny = slowly  # type: ignore[method-assign,assignment]
        registration = connection.inThread.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        await until(registered.is_set)
        closing = connection.close()
        proceed.set()
        with self.assertRaises(ConnectionClosedError):
            await registration
        self.assertEqual(await closing, libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        # The registration that lost the race deregistered itself.
        self.assertEqual(conn.domainEventCallbackID, {})
        del conn.domainEventRegisterAny
        await LOOP.drain()
        self.assertEqual(LOOP.counts(), baseline)

    async def test_closeWaitsForABackgroundDeregistration(self) -> None:
        daemon = startDaemon(self)
        await LOOP.drain()
        baseline = LOOP.counts()
        conn = libvirt.open(daemon.testURI)
        queue: EventQueue[Any] = EventQueue()
        connection = LibvirtConnection(conn, onDomainChange=queue)
        connection.domainEventRegisterAny(None, REBOOT, Recorder())  # holds: the queue's goes
        started = threading.Event()
        proceed = threading.Event()
        outcomes: list[object] = []
        realDeregister = conn.domainEventDeregisterAny

        def slowly(callbackId: int) -> None:
            started.set()
            proceed.wait(PATIENCE)
            try:
                realDeregister(callbackId)
            except libvirt.libvirtError as e:
                outcomes.append(e)
            else:
                outcomes.append("deregistered")

        conn.domainEventDeregisterAny = slowly  # type: ignore[method-assign,assignment]
        # finish() deregisters on the call pool; close() comes meanwhile...
        queue.finish()
        await until(started.is_set)
        closing = connection.close()
        await until(lambda: connection._registrations._gate.closing)
        proceed.set()
        # ...and closes the virConnect only once the deregistration is over
        # (then deregisters the other key itself).
        self.assertEqual(await closing, libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        self.assertEqual(outcomes, ["deregistered", "deregistered"])
        del conn.domainEventDeregisterAny
        await LOOP.drain()
        self.assertEqual(LOOP.counts(), baseline)

    async def test_reregisteringWaitsForTheKeyToBeFree(self) -> None:
        """
        libvirt refuses a key it still holds: a new first subscriber of a
        key whose last one has just left registers only once libvirt has
        let go of the old registration.
        """
        conn = libvirt.open("test:///default")
        connection = LibvirtConnection(conn)
        self.addCleanup(connection.close)
        held = connection.domainEventRegisterAny(None, REBOOT, Recorder())  # the queue's goes
        queue: EventQueue[Any] = EventQueue()
        connection.domainEventRegisterAny(None, LIFECYCLE, queue)
        started = threading.Event()
        proceed = threading.Event()
        calls: list[str] = []
        realRegister = conn.domainEventRegisterAny
        realDeregister = conn.domainEventDeregisterAny

        def register(*args: Any) -> int:
            callbackId: int = realRegister(*args)
            calls.append("registered")
            return callbackId

        def deregister(callbackId: int) -> None:
            started.set()
            proceed.wait(PATIENCE)
            realDeregister(callbackId)
            calls.append("deregistered")

        conn.domainEventRegisterAny = register  # type: ignore[method-assign,assignment]
        conn.domainEventDeregisterAny = deregister  # type: ignore[method-assign,assignment]
        queue.finish()
        await until(started.is_set)
        events = Recorder()
        registration = connection.inThread.domainEventRegisterAny(None, LIFECYCLE, events)
        proceed.set()
        callbackId = await registration
        self.assertEqual(calls, ["deregistered", "registered"])
        self.assertEqual(
            connection.tracked(), [("domain", LIFECYCLE, callbackId), ("domain", REBOOT, held)]
        )
        self.churn("test:///default", "re-registered")
        await events.called(2)

    async def test_reregisteringRunsAQueuedDeregistrationItself(self) -> None:
        """
        When every pool thread is busy, the old registration's
        deregistration still waits for one: the new registrant runs it
        itself, once, rather than wait for a thread it may be holding.
        """
        conn = libvirt.open("test:///default")
        connection = LibvirtConnection(conn)
        self.addCleanup(connection.close)
        held = connection.domainEventRegisterAny(None, REBOOT, Recorder())  # the queue's goes
        queue: EventQueue[Any] = EventQueue()
        connection.domainEventRegisterAny(None, LIFECYCLE, queue)
        deregisteredIn: list[threading.Thread] = []
        realDeregister = conn.domainEventDeregisterAny

        def deregister(callbackId: int) -> None:
            realDeregister(callbackId)
            deregisteredIn.append(threading.current_thread())

        conn.domainEventDeregisterAny = deregister  # type: ignore[method-assign,assignment]
        pool = callPool()
        bound = pool.maxThreads
        self.addCleanup(setattr, pool, "maxThreads", bound)
        pool.maxThreads = 1
        release = threading.Event()
        self.addCleanup(release.set)
        blockers = await occupy(pool, release)
        queue.finish()
        callbackId = connection.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        self.assertEqual(deregisteredIn, [threading.current_thread()])
        self.assertEqual(
            connection.tracked(), [("domain", LIFECYCLE, callbackId), ("domain", REBOOT, held)]
        )
        release.set()
        await gatherResults(blockers)
        await until(lambda: not pool._work and pool._idle == len(pool._threads))
        self.assertEqual(deregisteredIn, [threading.current_thread()])

    async def test_deregisterCallbacksGoesOnPastARefusal(self) -> None:
        """
        One refused deregistration neither keeps the others registered nor
        leaves their keys waiting for a deregistration that never comes.
        """
        conn = libvirt.open("test:///default")
        connection = LibvirtConnection(conn)
        self.addCleanup(connection.close)
        connection.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        connection.domainEventRegisterAny(None, REBOOT, Recorder())
        realDeregister = conn.domainEventDeregisterAny
        refusal = libvirt.libvirtError("refused for the test")

        def deregister(callbackId: int) -> None:
            conn.domainEventDeregisterAny = realDeregister  # type: ignore[method-assign]
            raise refusal

        conn.domainEventDeregisterAny = deregister  # type: ignore[method-assign,assignment]
        with self.assertRaises(libvirt.libvirtError) as raised:
            connection.deregisterCallbacks()
        self.assertIs(raised.exception, refusal)
        self.assertEqual(connection.tracked(), [])
        # The refused key is still libvirt's, and re-registering it says so...
        with self.assertRaises(libvirt.libvirtError):
            await connection.inThread.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        # ...while the other was deregistered, and registers again at once.
        callbackId = await connection.inThread.domainEventRegisterAny(None, REBOOT, Recorder())
        self.assertEqual(connection.tracked(), [("domain", REBOOT, callbackId)])

    async def test_subscribersJoiningARegistrationShareItsFailure(self) -> None:
        daemon = startDaemon(self)
        connection = LibvirtConnection(libvirt.open(daemon.testURI))
        self.addCleanup(connection.close)
        daemon.pause()
        # The first registration of a key is a round trip that hangs; the
        # second joins it, and holds or fails with it.
        first = connection.inThread.domainEventRegisterAny(None, REBOOT, Recorder())
        second = connection.inThread.domainEventRegisterAny(None, REBOOT, Recorder())
        await until(lambda: len(connection.tracked()) == 2)
        daemon.kill()
        for registration in (first, second):
            with self.assertRaises(libvirt.libvirtError):
                await registration
        self.assertEqual(connection.tracked(), [])

    async def test_subscribersJoiningARegistrationHoldWhenItDoes(self) -> None:
        daemon = startDaemon(self)
        connection = LibvirtConnection(libvirt.open(daemon.testURI))
        self.addCleanup(connection.close)
        recorders = [Recorder(), Recorder()]
        daemon.pause()
        registrations = [
            connection.inThread.domainEventRegisterAny(None, LIFECYCLE, recorder)
            for recorder in recorders
        ]
        await until(lambda: len(connection.tracked()) == 2)
        daemon.resume()
        ids = [await registration for registration in registrations]
        self.assertEqual(
            connection.tracked(), [("domain", LIFECYCLE, ids[0]), ("domain", LIFECYCLE, ids[1])]
        )
        self.churn(daemon.testURI, "joined")
        for recorder in recorders:
            calls = await recorder.when(lambda calls: len(calls) == 2)
            self.assertEqual([call[2] for call in calls], [STARTED, STOPPED])

    def test_libvirtErrorIsNotMaskedWhenTheConnectionGoesMeanwhile(self) -> None:
        conn = libvirt.open("test:///default")
        connection = LibvirtConnection(conn)
        self.addCleanup(connection.close)

        def failing(*args: Any) -> int:
            connection._registrations.shutDown()  # as a teardown would, meanwhile
            raise libvirt.libvirtError("refused")

        conn.domainEventRegisterAny = failing  # type: ignore[method-assign,assignment]
        with self.assertRaises(libvirt.libvirtError):
            connection.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        del conn.domainEventRegisterAny
        self.assertEqual(connection.tracked(), [])

    async def test_inThreadRegistrationIsTracked(self) -> None:
        connection = self.wrap("test:///default")
        callbackId = await connection.inThread.domainEventRegisterAny(None, LIFECYCLE, Recorder())
        self.assertEqual(connection.tracked(), [("domain", LIFECYCLE, callbackId)])
        self.assertEqual(await connection.inThread.close(), libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        self.assertEqual(connection.tracked(), [])

    async def test_openOffTheReactorThread(self) -> None:
        changes: EventQueue[Any] = EventQueue()
        connection = await LibvirtConnection.open("test:///default", onDomainChange=changes)
        self.addCleanup(connection.close)
        self.assertEqual(len(connection.tracked()), 1)
        self.churn("test:///default", "opened")
        _, dom, event, _, _ = await changes.get()
        self.assertEqual((dom.name(), event), ("opened", STARTED))
        with self.assertRaises(libvirt.libvirtError):
            await LibvirtConnection.open("test+unix:///default?socket=/nonexistent/sock")


class CallGateTests(SynchronousTestCase):
    """What closing waits for, as pure logic."""

    def closeInAThread(self, gate: CallGate) -> threading.Thread:
        closer = threading.Thread(target=gate.close)
        closer.start()
        return closer

    def test_closeWaitsForCallsUnderWayAndRefusesNewOnes(self) -> None:
        gate = CallGate()
        self.assertTrue(gate.enter())
        closer = self.closeInAThread(gate)
        while not gate.closing:
            closer.join(0.001)
        self.assertTrue(closer.is_alive())
        self.assertFalse(gate.enter())
        gate.leave()
        closer.join(PATIENCE)
        self.assertFalse(closer.is_alive())

    def test_closeRunsAPendingCallItself(self) -> None:
        """
        The closer may hold the pool's last thread: a call still waiting for
        one is run by the closer, and only once.
        """
        gate = CallGate()
        ran: list[str] = []
        self.assertTrue(gate.enter())
        run = gate.later(lambda: ran.append("deregistered"))
        closer = self.closeInAThread(gate)
        closer.join(PATIENCE)
        self.assertFalse(closer.is_alive())
        self.assertEqual(ran, ["deregistered"])
        run()  # the pool thread's turn, at last
        self.assertEqual(ran, ["deregistered"])

    def test_aPendingCallRunsOnceThenCloseNeedNotWait(self) -> None:
        gate = CallGate()
        ran: list[str] = []
        self.assertTrue(gate.enter())
        run = gate.later(lambda: ran.append("deregistered"))
        run()
        run()
        self.assertEqual(ran, ["deregistered"])
        gate.close()
        self.assertEqual(ran, ["deregistered"])


async def occupy(pool: CallPool, release: threading.Event) -> list[Deferred[object]]:
    """
    Keep every thread of C{pool} busy until C{release}, one call at a time
    while a thread is idle: a thread busy with something else when the
    bound was lowered retires when it finishes, rather than take a call.
    """
    blockers: list[Deferred[object]] = []
    while True:
        await until(lambda: not pool._work)
        if pool._threads and not pool._idle:
            return blockers
        blockers.append(pool.call(release.wait, PATIENCE))


class DepartureTests(SynchronousTestCase):
    """When libvirt lets go of a key: the pure logic of L{Departure}."""

    def test_aWaiterRunsAJobNoThreadHasTaken(self) -> None:
        departure = Departure()
        ran: list[threading.Thread] = []

        def job() -> None:
            ran.append(threading.current_thread())
            departure.done()

        departure.offer(job)
        departure.wait()
        self.assertEqual(ran, [threading.current_thread()])

    def test_aWaiterWaitsForAJobUnderWayElsewhere(self) -> None:
        departure = Departure()
        taken = threading.Event()
        finish = threading.Event()
        claimed: list[bool] = []
        order: list[str] = []

        def job() -> None:
            # The first to call it claims it, as CallGate.later's runner does.
            if claimed:
                return
            claimed.append(True)
            taken.set()
            finish.wait(PATIENCE)
            order.append("done")
            departure.done()

        def wait() -> None:
            departure.wait()
            order.append("waited")

        departure.offer(job)
        worker = threading.Thread(target=job)
        worker.start()
        self.addCleanup(worker.join, PATIENCE)
        taken.wait(PATIENCE)
        waiter = threading.Thread(target=wait)
        waiter.start()
        waiter.join(0.05)  # a chance to return too early, if it would
        finish.set()
        waiter.join(PATIENCE)
        self.assertFalse(waiter.is_alive())
        self.assertEqual(order, ["done", "waited"])

    def test_aJobOfferedAfterTheWaiterCameIsRun(self) -> None:
        departure = Departure()
        waiter = threading.Thread(target=departure.wait)
        waiter.start()
        departure.offer(departure.done)
        waiter.join(PATIENCE)
        self.assertFalse(waiter.is_alive())

    def test_doneNeedsNoJob(self) -> None:
        departure = Departure()
        departure.done()
        departure.offer(lambda: self.fail("offered after done"))
        departure.wait()
