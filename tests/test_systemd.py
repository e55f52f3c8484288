"""
systemd notification: a real datagram socket stands in for systemd's, and
what the notifier sends is read back from its buffer (a local C{AF_UNIX}
datagram is there as soon as the send returns); a Clock drives the watchdog.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from libvirt_twisted._systemd import Notifier, SystemdService, watchdogInterval

from ._harness import openFds


def shortDirectory(case: SynchronousTestCase) -> str:
    """
    A new directory, removed after C{case}: short enough for a socket path
    (108 bytes for C{AF_UNIX}), which trial's own temporary paths may not be.
    """
    parent = tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="sd-", dir=parent if len(parent) < 40 else "/tmp")
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def systemdSocket(case: SynchronousTestCase, address: str) -> socket.socket:
    """A non-blocking datagram socket bound to C{address}, closed after C{case}."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    case.addCleanup(receiver.close)
    receiver.bind(address)
    receiver.setblocking(False)
    return receiver


def received(receiver: socket.socket) -> list[str]:
    """Every datagram waiting on C{receiver}, in order."""
    found: list[str] = []
    while True:
        try:
            found.append(receiver.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return found


def warnings(case: SynchronousTestCase) -> list[str]:
    """Every warning logged from now until C{case} ends, formatted."""
    messages: list[str] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_level") is LogLevel.warn:
            messages.append(formatEvent(event) or "")

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return messages


class Listening(SynchronousTestCase):
    """A test with a systemd socket on a path, and a notifier for it."""

    def setUp(self) -> None:
        self.path = os.path.join(shortDirectory(self), "notify")
        self.systemd = systemdSocket(self, self.path)
        notifier = Notifier.fromEnvironment({"NOTIFY_SOCKET": self.path})
        assert notifier is not None
        self.notifier = notifier
        self.addCleanup(notifier.close)


class NotifierTests(Listening):
    def test_noSocketNoNotifier(self) -> None:
        self.assertIsNone(Notifier.fromEnvironment({}))
        self.assertIsNone(Notifier.fromEnvironment({"NOTIFY_SOCKET": ""}))

    def test_anAddressThatIsNoSocketPathIsWarnedOf(self) -> None:
        logged = warnings(self)
        self.assertIsNone(Notifier.fromEnvironment({"NOTIFY_SOCKET": "vsock:2:1234"}))
        self.assertEqual(len(logged), 1)
        self.assertIn("'vsock:2:1234'", logged[0])

    def test_oneDatagramPerMessage(self) -> None:
        self.notifier.notify(READY=1, STATUS="watching 3 hosts")
        self.notifier.send("WATCHDOG=1")
        self.assertEqual(received(self.systemd), ["READY=1\nSTATUS=watching 3 hosts", "WATCHDOG=1"])

    def test_aNewlineInAValueStaysInIt(self) -> None:
        self.notifier.notify(STATUS="one\nREADY=1")
        self.assertEqual(received(self.systemd), ["STATUS=one READY=1"])

    def test_theAbstractNamespace(self) -> None:
        name = f"libvirt-twisted-test-{os.getpid()}-{id(self)}"
        systemd = systemdSocket(self, "\0" + name)
        notifier = Notifier.fromEnvironment({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None
        self.addCleanup(notifier.close)
        notifier.notify(READY=1)
        self.assertEqual(received(systemd), ["READY=1"])
        self.assertEqual(received(self.systemd), [])

    def test_oneSocketKeptUntilClosed(self) -> None:
        before = openFds()
        for _ in range(3):
            self.notifier.notify(WATCHDOG=1)
        self.assertEqual(len(openFds() - before), 1)
        self.notifier.close()
        self.assertEqual(openFds(), before)
        self.notifier.close()
        self.assertEqual(len(received(self.systemd)), 3)

    def test_noSystemdIsOneWarning(self) -> None:
        logged = warnings(self)
        missing = os.path.join(shortDirectory(self), "gone")
        notifier = Notifier(missing)
        self.addCleanup(notifier.close)
        notifier.notify(READY=1)
        notifier.notify(WATCHDOG=1)
        notifier.send("STOPPING=1")
        self.assertEqual(len(logged), 1)
        self.assertIn(f"cannot notify systemd at {missing}", logged[0])

    def test_aSocketNobodyReadsIsOneWarning(self) -> None:
        logged = warnings(self)
        self.systemd.close()  # the path stays: connection refused
        self.notifier.notify(READY=1)
        self.notifier.notify(READY=1)
        self.assertEqual(len(logged), 1)
        self.assertIn("refused", logged[0])

    def test_aFullSocketDoesNotBlock(self) -> None:
        logged = warnings(self)

        def blocked(signum: int, frame: object) -> None:
            raise AssertionError("the notifier blocks on a full socket")

        previous = signal.signal(signal.SIGALRM, blocked)
        signal.setitimer(signal.ITIMER_REAL, 10)
        try:
            for _ in range(5000):  # far past the kernel's queue of datagrams
                self.notifier.notify(WATCHDOG=1)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        self.assertEqual(len(logged), 1)
        self.assertIn("unavailable", logged[0])  # EAGAIN
        self.assertGreater(len(received(self.systemd)), 0)


class WatchdogIntervalTests(SynchronousTestCase):
    def test_halfOfWatchdogUSec(self) -> None:
        self.assertEqual(watchdogInterval({"WATCHDOG_USEC": "2000000"}), 1.0)
        self.assertEqual(watchdogInterval({"WATCHDOG_USEC": "30000000"}), 15.0)

    def test_noWatchdog(self) -> None:
        self.assertIsNone(watchdogInterval({}))

    def test_ourPid(self) -> None:
        ours = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
        self.assertEqual(watchdogInterval(ours), 1.0)

    def test_anotherProcesssWatchdog(self) -> None:
        for pid in (str(os.getpid() + 1), "1", "", "x", "-1"):
            theirs = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": pid}
            self.assertIsNone(watchdogInterval(theirs), pid)

    def test_invalidValues(self) -> None:
        for usec in ("", "0", "-5", "1.5", " 10", "1_000", "²", "ten"):
            self.assertIsNone(watchdogInterval({"WATCHDOG_USEC": usec}), usec)


class SystemdServiceTests(Listening):
    def service(self, **kwargs: Any) -> tuple[SystemdService, Clock, list[Deferred[None]]]:
        """A service whose every C{whenReady} returns a new Deferred, kept in the list."""
        clock = Clock()
        waits: list[Deferred[None]] = []

        def whenReady() -> Deferred[None]:
            waits.append(Deferred())
            return waits[-1]

        kwargs.setdefault("watchdog", None)
        service = SystemdService(self.notifier, whenReady, clock, **kwargs)
        self.addCleanup(service.stopService)
        return service, clock, waits

    def test_readyOnceReadyWithTheStatus(self) -> None:
        hosts = ["a"]
        service, _, waits = self.service(status=lambda: f"watching {len(hosts)} hosts")
        service.startService()
        self.assertEqual(received(self.systemd), [])
        hosts.extend("bc")
        waits[0].callback(None)
        self.assertEqual(received(self.systemd), ["READY=1\nSTATUS=watching 3 hosts"])

    def test_readyAtOnceWithoutStatus(self) -> None:
        service = SystemdService(self.notifier, lambda: succeed(None), Clock(), None)
        service.startService()
        self.assertEqual(received(self.systemd), ["READY=1"])

    def test_aStatusThatFailsStillSendsReady(self) -> None:
        service, _, waits = self.service(status=lambda: str(1 / 0))
        service.startService()
        waits[0].callback(None)
        self.assertEqual(received(self.systemd), ["READY=1"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failingToGetReadyIsNoReady(self) -> None:
        service, _, waits = self.service()
        service.startService()
        waits[0].errback(RuntimeError("no host"))
        self.assertEqual(received(self.systemd), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_watchdogEveryHalfInterval(self) -> None:
        interval = watchdogInterval({"WATCHDOG_USEC": "2000000"})
        service, clock, _ = self.service(watchdog=interval)
        service.startService()
        self.assertEqual(received(self.systemd), ["WATCHDOG=1"])
        clock.advance(0.5)
        self.assertEqual(received(self.systemd), [])
        for _ in range(3):
            clock.advance(0.5)
            self.assertEqual(received(self.systemd), ["WATCHDOG=1"])
            clock.advance(0.5)
        service.stopService()
        self.assertEqual(received(self.systemd), ["STOPPING=1"])
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual(received(self.systemd), [])

    def test_aWatchdogOfNoTimeIsRefused(self) -> None:
        for seconds in (0.0, -1.0, float("nan")):
            with self.assertRaises(ValueError):
                self.service(watchdog=seconds)

    def test_stoppingAndNoReadyAfterIt(self) -> None:
        service, _, waits = self.service()
        service.startService()
        service.stopService()
        self.assertEqual(received(self.systemd), ["STOPPING=1"])
        self.assertNoResult(waits[0])  # the caller's wait goes on
        waits[0].callback(None)
        self.assertEqual(received(self.systemd), [])
        service.startService()  # and failing late is no error
        service.stopService()
        waits[1].errback(RuntimeError("too late"))
        self.assertEqual(self.flushLoggedErrors(RuntimeError), [])

    def test_stopOnce(self) -> None:
        service, _, waits = self.service(watchdog=1.0)
        service.stopService()
        self.assertEqual(received(self.systemd), [])
        service.startService()
        waits[0].callback(None)
        service.stopService()
        service.stopService()
        self.assertEqual(received(self.systemd), ["WATCHDOG=1", "READY=1", "STOPPING=1"])

    def test_restartNotifiesAgain(self) -> None:
        service, clock, waits = self.service(watchdog=1.0)
        service.startService()
        first = waits[0]
        service.stopService()
        service.startService()
        first.callback(None)  # the first start's wait, overtaken
        self.assertEqual(received(self.systemd), ["WATCHDOG=1", "STOPPING=1", "WATCHDOG=1"])
        waits[1].callback(None)
        clock.advance(1.0)
        self.assertEqual(received(self.systemd), ["READY=1", "WATCHDOG=1"])
