"""
The service's and the connection's lifecycles as explicit states, driven
fast: the service opens through an injected opener (failing on purpose, or
opening libvirt's embedded test driver) and waits on a Clock, so that its
retry logic needs no daemon.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import libvirt
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

import libvirt_twisted
from libvirt_twisted import (
    ConnectionClosedError,
    ConnectionState,
    EventQueue,
    LibvirtConnection,
    LibvirtService,
    ServiceState,
    UnknownCallbackError,
    deferToLibvirtPool,
)

from ._harness import Recorder, churn, logMessages, until

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE


class Opener:
    """Fails the first C{failures} opens, then opens the embedded test driver."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[str, bool, Any]] = []
        self.threads: set[threading.Thread] = set()

    def __call__(self, uri: str, readOnly: bool, auth: Any) -> libvirt.virConnect:
        self.calls.append((uri, readOnly, auth))
        self.threads.add(threading.current_thread())
        if len(self.calls) <= self.failures:
            raise libvirt.libvirtError(f"refused for the test ({len(self.calls)})")
        return libvirt.open("test:///default")


class ServiceLifecycleTests(TestCase):
    timeout = 30

    def service(
        self, opener: Callable[[str, bool, Any], libvirt.virConnect], **kwargs: Any
    ) -> tuple[LibvirtService, Clock, Recorder]:
        clock = Clock()
        kwargs.setdefault("retryPolicy", lambda failures: 10.0 * failures)
        service = LibvirtService(
            "qemu+tcp://nowhere.invalid/system", clock=clock, opener=opener, **kwargs
        )
        statuses = Recorder()
        service.addObserver(statuses)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service, clock, statuses

    async def test_failedAttemptsWaitThenConnect(self) -> None:
        opener = Opener(failures=2)
        service, clock, statuses = self.service(opener, readOnly=True)
        self.assertIs(service.state, ServiceState.IDLE)
        logged = logMessages(self)
        service.startService()
        self.assertIs(service.state, ServiceState.CONNECTING)
        for failures in (1, 2):
            await statuses.called(failures)
            self.assertIs(service.state, ServiceState.WAITING)
            (retry,) = clock.getDelayedCalls()
            self.assertEqual(retry.getTime(), clock.seconds() + 10.0 * failures)
            clock.advance(10.0 * failures)
            self.assertIs(service.state, ServiceState.CONNECTING)
        connection = await service.whenConnected()
        self.assertIs(service.state, ServiceState.CONNECTED)
        self.assertIs(service.connection, connection)
        self.assertEqual([s.state for (s,) in statuses.calls], ["failed", "failed", "connected"])
        self.assertEqual([s.failures for (s,) in statuses.calls[:2]], [1, 2])
        self.assertEqual(opener.calls, [("qemu+tcp://nowhere.invalid/system", True, None)] * 3)
        self.assertNotIn(threading.current_thread(), opener.threads)
        self.assertEqual(clock.getDelayedCalls(), [])
        await service.stopService()
        self.assertIs(service.state, ServiceState.STOPPED)
        self.assertIs(connection.state, ConnectionState.CLOSED)
        moves = [line for line in logged if " -> " in line and "nowhere" in line]
        self.assertEqual(
            moves,
            [
                f"qemu+tcp://nowhere.invalid/system: {old} -> {new}"
                for old, new in [
                    ("idle", "connecting"),
                    ("connecting", "waiting"),
                    ("waiting", "connecting"),
                    ("connecting", "waiting"),
                    ("waiting", "connecting"),
                    ("connecting", "connected"),
                    ("connected", "stopping"),
                    ("stopping", "stopped"),
                ]
            ],
        )

    async def test_whenConnectedBeforeStartWaitsForTheFirstConnection(self) -> None:
        service, _, _ = self.service(Opener(failures=0))
        early = service.whenConnected()
        self.assertNoResult(early)
        service.startService()
        connection = await early
        self.assertIs(connection, service.connection)

    async def test_whenConnectedGivesUpAfterFailures(self) -> None:
        service, clock, statuses = self.service(Opener(failures=5))
        service.startService()
        waiting = service.whenConnected(failAfterFailures=2)
        await statuses.called(1)
        self.assertNoResult(waiting)
        clock.advance(10.0)
        with self.assertRaises(libvirt.libvirtError) as raised:
            await waiting
        self.assertIn("refused for the test (2)", str(raised.exception))

    async def test_stopWhileWaitingCancelsTheRetry(self) -> None:
        service, clock, statuses = self.service(Opener(failures=1))
        service.startService()
        await statuses.called(1)
        waiting = service.whenConnected()
        await service.stopService()
        self.assertIs(service.state, ServiceState.STOPPED)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual([s.state for (s,) in statuses.calls], ["failed", "stopped"])
        with self.assertRaises(CancelledError):
            await waiting

    async def test_anOpenerThatRaisesAnythingIsAFailedAttempt(self) -> None:
        def broken(uri: str, readOnly: bool, auth: Any) -> libvirt.virConnect:
            raise RuntimeError("the opener broke")

        service, _, statuses = self.service(broken)
        service.startService()
        (status,) = (await statuses.called(1))[0]
        self.assertEqual((status.state, status.reason), ("failed", "the opener broke"))
        self.assertIs(service.state, ServiceState.WAITING)

    async def test_aConnectionClosedByTheProgramIsReplaced(self) -> None:
        service, clock, statuses = self.service(Opener(failures=0))
        events = Recorder()
        service.subscribe("domain", LIFECYCLE, events)
        service.startService()
        first = await service.whenConnected()
        await first.close()
        self.assertIs(service.state, ServiceState.WAITING)
        self.assertIsNone(service.connection)
        clock.advance(0)  # retryPolicy(0) is no wait at all
        second = await service.whenConnected()
        self.assertIsNot(second, first)
        self.assertEqual(
            [s.state for (s,) in statuses.calls], ["connected", "disconnected", "reconnected"]
        )
        await until(lambda: service._subscriptions.holds(0))
        churn("test:///default", "replaced")
        calls = await events.called(2)
        self.assertEqual({call[0] for call in calls}, {second})

    async def test_stopTwiceFiresLikeTheFirst(self) -> None:
        service, _, statuses = self.service(Opener(failures=0))
        self.successResultOf(service.stopService())  # never started: nothing to stop
        service.startService()
        await service.whenConnected()
        first = service.stopService()
        second = service.stopService()
        self.assertNoResult(second)
        await first
        await second
        self.successResultOf(service.stopService())
        self.assertEqual([s.state for (s,) in statuses.calls], ["connected", "stopped"])

    async def test_whenConnectedWaitsPastAClosingConnection(self) -> None:
        service, clock, _ = self.service(Opener(failures=0))
        service.startService()
        first = await service.whenConnected()
        closing = first.close()
        self.assertIs(first.state, ConnectionState.CLOSING)
        waiting = service.whenConnected()
        self.assertNoResult(waiting)
        await closing
        clock.advance(0)
        second = await waiting
        self.assertIsNot(second, first)
        self.assertIs(second.state, ConnectionState.OPEN)

    async def test_aStopOvertakenByARestartDoesNotEndTheNextStop(self) -> None:
        service, _, _ = self.service(Opener(failures=0))
        service.startService()
        await service.whenConnected()
        first = service.stopService()
        service.startService()  # before the first stop is over
        second = service.stopService()
        await first
        if not second.called:
            self.assertIs(service.state, ServiceState.STOPPING)
        await second
        self.assertIs(service.state, ServiceState.STOPPED)

    def test_badOpener(self) -> None:
        self.assertRaises(TypeError, LibvirtService, "test:///default", opener="libvirt.open")


class ConnectionLifecycleTests(TestCase):
    timeout = 30

    async def test_openClosingClosed(self) -> None:
        connection = LibvirtConnection(libvirt.open("test:///default"))
        self.assertIs(connection.state, ConnectionState.OPEN)
        closing = connection.close()
        self.assertIs(connection.state, ConnectionState.CLOSING)
        self.assertIsNone(connection.closeReason)
        again = connection.close()
        self.assertEqual(await closing, libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        self.assertEqual(await again, libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        self.assertIs(connection.state, ConnectionState.CLOSED)
        self.assertEqual(await connection.close(), libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        self.assertIn("closed", repr(connection))

    async def test_genericSubscribeAndUnsubscribe(self) -> None:
        connection = LibvirtConnection(libvirt.open("test:///default"))
        self.addCleanup(connection.close)
        queue: EventQueue[Any] = EventQueue()
        events = Recorder()
        kept = connection.subscribe("domain", LIFECYCLE, events, "opaque")
        dropped = connection.subscribe("domain", LIFECYCLE, queue)
        self.assertEqual(
            connection.tracked(), [("domain", LIFECYCLE, kept), ("domain", LIFECYCLE, dropped)]
        )
        # Not the last of its event: nothing to tell libvirt, at once.
        await connection.unsubscribe(dropped)
        self.assertEqual(connection.tracked(), [("domain", LIFECYCLE, kept)])
        # The last: gone at once, and libvirt keeps the registration parked.
        await connection.unsubscribe(kept)
        self.assertEqual(connection.tracked(), [])
        self.assertEqual(len(connection.virConnect.domainEventCallbackID), 1)
        with self.assertRaises(UnknownCallbackError):
            connection.unsubscribe(kept)
        with self.assertRaises(ValueError):
            connection.subscribe("vm", LIFECYCLE, events)

    async def test_subscribeOnAClosedConnection(self) -> None:
        connection = LibvirtConnection(libvirt.open("test:///default"))
        await connection.close()
        with self.assertRaises(ConnectionClosedError):
            connection.subscribe("domain", LIFECYCLE, Recorder())
        self.assertEqual(connection.tracked(), [])


class RenamedNameTests(TestCase):
    async def test_callInThreadIsDeferToLibvirtPoolDeprecated(self) -> None:
        self.assertEqual(await deferToLibvirtPool(None, lambda x: x * 2, 21), 42)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = libvirt_twisted.callInThread(None, lambda x: x * 2, 21)
        self.assertEqual(await result, 42)
        (warning,) = caught
        self.assertIs(warning.category, DeprecationWarning)
        self.assertIn("deferToLibvirtPool", str(warning.message))
