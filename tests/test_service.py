"""
LibvirtService: connecting off the reactor thread, keepalive, reconnection
with resubscription across a daemon restart, retries, and a clean stop.
"""

from __future__ import annotations

import os
from typing import Any

import libvirt
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import ConnectionStatus, EventQueue, LibvirtService, maskURI
from libvirt_twisted._uri import isEmbedded, maskPasswords

from ._harness import (
    LOOP,
    Recorder,
    churn,
    logMessages,
    startDaemon,
    testDomainXML,
    turns,
    until,
)

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
STARTED = libvirt.VIR_DOMAIN_EVENT_STARTED
STOPPED = libvirt.VIR_DOMAIN_EVENT_STOPPED


class ServiceTestCase(TestCase):
    timeout = 60

    def service(self, uri: str, **kwargs: Any) -> tuple[LibvirtService, Recorder]:
        kwargs.setdefault("retryPolicy", lambda failures: 0.05)
        service = LibvirtService(uri, **kwargs)
        statuses = Recorder()
        service.addObserver(statuses)
        self.addCleanup(self.stop, service)
        return service, statuses

    async def stop(self, service: LibvirtService) -> None:
        if service.running:
            await service.stopService()


def held(service: LibvirtService, subscription: int) -> bool:
    """
    Whether libvirt has answered C{subscription}'s registration on the
    current connection: its subscriber is tracked as soon as the round
    trip starts, and events made before it ends are not delivered.
    """
    return service._subscriptions.holds(subscription)


def states(statuses: Recorder) -> list[str]:
    return [call[0].state for call in statuses.calls]


class EmbeddedDriverTests(ServiceTestCase):
    async def test_connectSubscribeStop(self) -> None:
        service, statuses = self.service("test:///default")
        events = Recorder()
        service.subscribe("domain", LIFECYCLE, events, "opaque")
        service.startService()
        connection = await service.whenConnected()
        self.assertIs(await service.whenConnected(), connection)
        churn("test:///default", "svc")
        await events.called(2)
        self.assertIs(events.calls[0][0], connection)
        self.assertEqual(events.calls[0][4], "opaque")
        await service.stopService()
        self.assertEqual(states(statuses), ["connected", "stopped"])
        self.assertEqual(connection.tracked(), [])
        self.assertTrue(LOOP.isIdle() or LOOP.counts()["unfreed"] == 0)

    async def test_unsubscribeWhileConnected(self) -> None:
        service, _ = self.service("test:///default")
        events = Recorder()
        subscription = service.subscribe("domain", LIFECYCLE, events)
        service.startService()
        connection = await service.whenConnected()
        self.assertEqual(len(connection.tracked()), 1)
        service.unsubscribe(subscription)
        self.assertEqual(connection.tracked(), [])
        self.assertRaises(ValueError, service.unsubscribe, subscription)

    async def test_subscribeWhileConnected(self) -> None:
        service, _ = self.service("test:///default")
        service.startService()
        connection = await service.whenConnected()
        events = Recorder()
        subscription = service.subscribe("domain", LIFECYCLE, events)
        await until(lambda: held(service, subscription))
        self.assertEqual(len(connection.tracked()), 1)
        churn("test:///default", "late")
        await events.called(2)

    async def test_whenConnectedFailsOnStop(self) -> None:
        service, _ = self.service("test+unix:///default?socket=/nonexistent/libvirt-sock")
        service.startService()
        waiting = service.whenConnected()
        await service.stopService()
        with self.assertRaises(CancelledError):
            await waiting


class DaemonServiceTests(ServiceTestCase):
    async def test_survivesDaemonRestartWithSubscriptionsIntact(self) -> None:
        daemon = startDaemon(self)
        service, statuses = self.service(daemon.testURI, keepalive=(1, 2))
        queue: EventQueue[Any] = EventQueue()
        service.subscribe("domain", LIFECYCLE, queue)
        service.startService()
        first = await service.whenConnected()
        churn(daemon.testURI, "before")
        items = [await queue.get() for _ in range(3)]
        daemon.kill()
        await statuses.when(lambda calls: "disconnected" in states(statuses))
        daemon.start()
        await statuses.when(lambda calls: "reconnected" in states(statuses))
        second = await service.whenConnected()
        self.assertIsNot(second, first)
        self.assertEqual(first.tracked(), [])
        churn(daemon.testURI, "after")
        items += [await queue.get() for _ in range(4)]
        summary = [
            (item.state, item.reason)
            if isinstance(item, ConnectionStatus)
            else (item[1].name(), item[2])
            for item in items
        ]
        self.assertEqual(
            summary,
            [
                ("connected", None),
                ("before", STARTED),
                ("before", STOPPED),
                ("disconnected", "EOF"),
                ("reconnected", None),
                ("after", STARTED),
                ("after", STOPPED),
            ],
        )
        self.assertEqual(states(statuses), ["connected", "disconnected", "reconnected"])

    async def test_keepaliveDetectsAFrozenDaemon(self) -> None:
        daemon = startDaemon(self)
        service, statuses = self.service(daemon.testURI, keepalive=(1, 1))
        service.startService()
        await service.whenConnected()
        daemon.pause()
        self.addCleanup(daemon.resume)
        await statuses.when(lambda calls: "disconnected" in states(statuses))
        self.assertEqual(statuses.calls[1][0].reason, "KEEPALIVE")

    async def test_readOnly(self) -> None:
        daemon = startDaemon(self)
        service, _ = self.service(daemon.testURI, readOnly=True)
        service.startService()
        connection = await service.whenConnected()
        self.assertIn("test", [d.name() for d in await connection.inThread.listAllDomains()])
        with self.assertRaises(libvirt.libvirtError) as raised:
            await connection.inThread.createXML(testDomainXML("denied"), 0)
        self.assertEqual(raised.exception.get_error_code(), libvirt.VIR_ERR_OPERATION_DENIED)

    async def test_openAuth(self) -> None:
        """The test driver can demand credentials; the service passes them on."""
        node = os.path.abspath(self.mktemp())
        with open(node, "w") as f:
            f.write("<node><auth><user password='s3cret'>admin</user></auth></node>")
        asked: list[int] = []

        def credentials(password: str) -> Any:
            def answer(creds: list[list[Any]], opaque: Any) -> int:
                for cred in creds:
                    asked.append(cred[0])
                    cred[4] = "admin" if cred[0] == libvirt.VIR_CRED_AUTHNAME else password
                return 0

            return [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]

        wrong, _ = self.service(f"test://{node}", auth=credentials("guess"))
        wrong.startService()
        with self.assertRaises(libvirt.libvirtError) as raised:
            await wrong.whenConnected(failAfterFailures=1)
        self.assertIn("authentication failed", str(raised.exception))
        await wrong.stopService()
        service, _ = self.service(f"test://{node}", auth=credentials("s3cret"))
        service.startService()
        connection = await service.whenConnected()
        self.assertEqual(await connection.inThread.getType(), "TEST")
        self.assertEqual(asked[-2:], [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE])

    async def test_stopWhileAnAttemptHangs(self) -> None:
        daemon = startDaemon(self)
        daemon.pause()
        self.addCleanup(daemon.resume)
        service, statuses = self.service(daemon.testURI)
        service.startService()
        stopped = service.stopService()
        self.assertNoResult(stopped)
        daemon.resume()
        await stopped
        self.assertEqual(states(statuses), ["stopped"])
        self.assertIsNone(service.connection)

    async def test_stopGivesUpOnAnAttemptThatHangs(self) -> None:
        daemon = startDaemon(self)
        await LOOP.drain()
        baseline = LOOP.counts()
        logged = logMessages(self)
        daemon.pause()
        self.addCleanup(daemon.resume)
        clock = Clock()
        service, statuses = self.service(daemon.testURI, clock=clock, stopTimeout=2)
        service.startService()
        stopped = service.stopService()
        self.assertNoResult(stopped)
        # A frozen daemon holds the open forever: stopping waits stopTimeout.
        clock.advance(2)
        await stopped
        self.assertEqual(states(statuses), ["stopped"])
        self.assertTrue(any("still under way after 2.0s" in line for line in logged))
        # The attempt, once it ends, closes what it opened.
        daemon.resume()
        await until(lambda: service._attempt is None and not service._closings)
        await LOOP.drain()
        self.assertEqual(LOOP.counts(), baseline)

    async def test_stoppedFollowsTheLastConnectionsMarkers(self) -> None:
        daemon = startDaemon(self)
        service, _ = self.service(daemon.testURI, keepalive=(1, 2))
        queue: EventQueue[Any] = EventQueue()
        service.subscribe("domain", LIFECYCLE, queue)
        stopping: list[Deferred[None]] = []

        def giveUp(status: ConnectionStatus) -> None:
            if status.state == "disconnected":
                stopping.append(service.stopService())

        service.addObserver(giveUp)
        service.startService()
        await service.whenConnected()
        daemon.kill()
        await until(lambda: stopping)
        await stopping[0]
        markers = [(await queue.get()).state for _ in range(3)]
        self.assertEqual(markers, ["connected", "disconnected", "stopped"])

    async def test_unreachableRetriesThenFailsAfterFailures(self) -> None:
        service, statuses = self.service("test+unix:///default?socket=/nonexistent/sock")
        service.startService()
        with self.assertRaises(libvirt.libvirtError):
            await service.whenConnected(failAfterFailures=3)
        self.assertEqual(states(statuses)[:3], ["failed"] * 3)
        self.assertEqual([c[0].failures for c in statuses.calls[:3]], [1, 2, 3])

    async def test_passwordsNeverLogged(self) -> None:
        logged = logMessages(self)
        uri = "test+unix://admin:s3cret@localhost/default?socket=/nonexistent/sock"
        service, statuses = self.service(uri)
        self.assertEqual(repr(service).count("s3cret"), 0)
        service.startService()
        await statuses.called(2)
        await service.stopService()
        # libvirt's own error quotes a URI that it cannot parse.
        unparsable, _ = self.service(uri + "&oops=%")
        unparsable.startService()
        with self.assertRaises(libvirt.libvirtError):
            await unparsable.whenConnected(failAfterFailures=1)
        await unparsable.stopService()
        text = "\n".join(logged + [repr(call) for call in statuses.calls])
        self.assertIn("admin:***@localhost", text)
        # libvirt's report goes to the log too, masked.
        self.assertIn("libvirt: internal error: Unable to parse URI test+unix://admin:***@", text)
        self.assertNotIn("s3cret", text)


class RetryScheduleTests(TestCase):
    """The retry policy decides the delays, on an injected clock."""

    timeout = 60

    async def test_delaysFollowThePolicyAfterFailures(self) -> None:
        clock = Clock()
        service = LibvirtService(
            "test+unix:///default?socket=/nonexistent/sock",
            retryPolicy=lambda failures: 10.0 * failures + 1,
            clock=clock,
        )
        statuses = Recorder()
        service.addObserver(statuses)
        service.startService()
        self.addCleanup(service.stopService)
        for failures in (1, 2, 3):
            await statuses.called(failures)
            (call,) = clock.getDelayedCalls()
            self.assertEqual(call.getTime(), clock.seconds() + 10.0 * failures + 1)
            clock.advance(10.0 * failures + 1)

    async def test_reconnectsAfterALossWithThePolicyForNoFailures(self) -> None:
        daemon = startDaemon(self)
        clock = Clock()
        service = LibvirtService(
            daemon.testURI, retryPolicy=lambda failures: 100.0 + failures, clock=clock
        )
        statuses = Recorder()
        service.addObserver(statuses)
        service.startService()
        self.addCleanup(service.stopService)
        await service.whenConnected()
        daemon.kill()
        await statuses.called(2)
        self.assertEqual(states(statuses), ["connected", "disconnected"])
        (call,) = clock.getDelayedCalls()
        self.assertEqual(call.getTime(), clock.seconds() + 100.0)
        daemon.start()
        clock.advance(100.0)
        await statuses.called(3)
        self.assertEqual(states(statuses)[-1], "reconnected")


class ServiceArgumentTests(SynchronousTestCase):
    def test_badArguments(self) -> None:
        self.assertRaises(ValueError, LibvirtService, "not a uri")
        self.assertRaises(ValueError, LibvirtService, "qemu:/system")
        self.assertRaises(TypeError, LibvirtService, None)
        self.assertRaises(ValueError, LibvirtService, "test:///default", keepalive=(0, 3))
        self.assertRaises(ValueError, LibvirtService, "test:///default", keepalive=(5, -1))
        self.assertRaises(TypeError, LibvirtService, "test:///default", keepalive=(5.0, 3))
        self.assertRaises(ValueError, LibvirtService, "test:///default", stopTimeout=-1)
        self.assertRaises(ValueError, LibvirtService, "test:///default", stopTimeout=float("nan"))
        self.assertRaises(TypeError, LibvirtService, "test:///default", stopTimeout="3")
        service = LibvirtService("test:///default")
        self.assertRaises(ValueError, service.subscribe, "vm", LIFECYCLE, print)
        self.assertRaises(ValueError, service.subscribe, "domain", 4242, print)
        self.assertRaises(TypeError, service.subscribe, "domain", LIFECYCLE, "print")
        self.assertRaises(ValueError, service.unsubscribe, 7)

    def test_oneMaskerForURIsAndTexts(self) -> None:
        for password in ("hunter2", "p@ss", "a:b", "a/b", "p%40ss", "a@b:c/d%2F"):
            uri = f"qemu+ssh://root:{password}@host/system?keyfile=/k"
            with self.subTest(password=password):
                self.assertEqual(maskURI(uri), "qemu+ssh://root:***@host/system?keyfile=/k")
                text = f"unable to connect to '{uri}': refused, and to {uri} too"
                masked = maskPasswords(text)
                self.assertNotIn(password, masked)
                self.assertEqual(
                    masked,
                    "unable to connect to 'qemu+ssh://root:***@host/system?keyfile=/k': refused,"
                    " and to qemu+ssh://root:***@host/system?keyfile=/k too",
                )
        self.assertEqual(maskPasswords("no uri here: a@b"), "no uri here: a@b")

    def test_whichURIsRunInThisProcess(self) -> None:
        for uri, embedded in [
            ("test:///default", True),
            ("test:///path/to/node.xml", True),
            ("qemu:///embed?root=/tmp/x", True),
            ("esx://esx1.example.com/?no_verify=1", True),
            ("vpx://vc/dc/host", True),
            ("openvz:///system", True),
            ("hyperv://hv1", True),
            ("test+unix:///default?socket=/s", False),
            ("test://host/default", False),
            ("qemu:///system", False),
            ("qemu+ssh://root@host/system", False),
            ("lxc:///system", False),
        ]:
            self.assertEqual(isEmbedded(uri), embedded, uri)

    def test_maskURI(self) -> None:
        self.assertEqual(
            maskURI("qemu+ssh://root:hunter2@host/system"), "qemu+ssh://root:***@host/system"
        )
        self.assertEqual(
            maskURI("qemu+ssh://root:p@ss@host/system"), "qemu+ssh://root:***@host/system"
        )
        self.assertEqual(
            maskURI("qemu+ssh://root:a/b@host/system"), "qemu+ssh://root:***@host/system"
        )
        self.assertEqual(maskURI("qemu+ssh://root@host/system"), "qemu+ssh://root@host/system")
        self.assertEqual(maskURI("test:///default"), "test:///default")


class ServiceRaceTests(ServiceTestCase):
    """Subscriptions and stops that meet a connection being set up."""

    async def test_subscribeThenUnsubscribeInOneTurn(self) -> None:
        service, _ = self.service("test:///default")
        service.startService()
        connection = await service.whenConnected()
        events = Recorder()
        service.unsubscribe(service.subscribe("domain", LIFECYCLE, events))
        other = Recorder()
        subscription = service.subscribe("domain", LIFECYCLE, other)
        await until(lambda: len(connection.tracked()) == 1 and held(service, subscription))
        churn("test:///default", "unwanted")
        await other.called(2)
        await turns(2)
        self.assertEqual(events.calls, [])
        self.assertEqual(len(connection.tracked()), 1)

    async def test_subscribeWhileConnecting(self) -> None:
        daemon = startDaemon(self)
        daemon.pause()
        service, _ = self.service(daemon.testURI)
        service.startService()
        events = Recorder()
        # The attempt is stuck in its first round trip when this comes.
        subscription = service.subscribe("domain", LIFECYCLE, events)
        daemon.resume()
        connection = await service.whenConnected()
        await until(lambda: held(service, subscription))
        self.assertEqual(len(connection.tracked()), 1)
        churn(daemon.testURI, "late-comer")
        await events.called(2)

    async def test_stopWhileSubscribingLeavesNothing(self) -> None:
        daemon = startDaemon(self)
        await LOOP.drain()
        baseline = LOOP.counts()
        service, _ = self.service(daemon.testURI)
        service.subscribe("domain", LIFECYCLE, Recorder())
        service.startService()
        daemon.pause()
        await turns(5)
        stopped = service.stopService()
        daemon.resume()
        await stopped
        self.assertEqual(LOOP.counts(), baseline)

    async def test_restartLeavesOneConnection(self) -> None:
        daemon = startDaemon(self)
        await LOOP.drain()
        baseline = LOOP.counts()
        service, statuses = self.service(daemon.testURI)
        service.subscribe("domain", LIFECYCLE, Recorder())
        daemon.pause()
        service.startService()
        await turns(2)
        stopping = service.stopService()
        service.startService()
        daemon.resume()
        await stopping
        connection = await service.whenConnected()
        await turns(5)
        self.assertEqual(states(statuses), ["stopped", "connected"])
        self.assertEqual(len(connection.tracked()), 1)
        await service.stopService()
        self.assertEqual(LOOP.counts(), baseline)

    async def test_finishingAQueueEndsItsSubscription(self) -> None:
        daemon = startDaemon(self)
        service, statuses = self.service(daemon.testURI)
        queue: EventQueue[Any] = EventQueue()
        service.subscribe("domain", LIFECYCLE, queue)
        service.startService()
        first = await service.whenConnected()
        await until(lambda: first.tracked())
        queue.finish()
        self.assertEqual(first.tracked(), [])
        self.assertRaises(ValueError, service.subscribe, "domain", LIFECYCLE, queue)
        daemon.kill()
        daemon.start()
        await statuses.when(lambda calls: "reconnected" in states(statuses))
        second = await service.whenConnected()
        self.assertEqual(second.tracked(), [])

    async def test_whenConnectedLikeClientService(self) -> None:
        service, statuses = self.service("test+unix:///default?socket=/nonexistent/sock")
        # Before startService(), it waits for the first connection.
        early = service.whenConnected()
        self.assertNoResult(early)
        service.startService()
        await statuses.called(3)
        # Counted from the call, not from the first failure.
        waiting = service.whenConnected(failAfterFailures=2)
        self.assertNoResult(waiting)
        await statuses.called(4)
        self.assertNoResult(waiting)
        with self.assertRaises(libvirt.libvirtError):
            await waiting
        self.assertGreaterEqual(len(statuses.calls), 5)
        self.assertNoResult(early)
        await service.stopService()
        for waiter in (early, service.whenConnected()):
            with self.assertRaises(CancelledError):
                await waiter

    async def test_aSubscriptionTheDriverRefusesDoesNotStopTheOthers(self) -> None:
        service, statuses = self.service("test:///default")
        service.subscribe("secret", libvirt.VIR_SECRET_EVENT_ID_LIFECYCLE, Recorder())
        events = Recorder()
        service.subscribe("domain", LIFECYCLE, events)
        service.subscribe("domain", LIFECYCLE, Recorder(), objectFilter="no-such-uuid")
        service.startService()
        connection = await service.whenConnected()
        self.assertEqual(states(statuses), ["connected"])
        # The filter's domain does not exist: only the unfiltered one holds.
        # (Whether this test driver has secret events depends on which
        # drivers the process loaded before.)
        self.assertEqual([f for f, _, _ in connection.tracked() if f == "domain"], ["domain"])
        churn("test:///default", "still-watched")
        await events.called(2)

    async def test_stoppedMarkerEndsTheQueueStory(self) -> None:
        service, _ = self.service("test:///default")
        queue: EventQueue[Any] = EventQueue()
        service.subscribe("domain", LIFECYCLE, queue)
        service.startService()
        await service.whenConnected()
        await service.stopService()
        first, last = await queue.get(), await queue.get()
        self.assertEqual((first.state, last.state), ("connected", "stopped"))
