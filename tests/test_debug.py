"""
The debug mode's warnings (a libvirt call that blocks the reactor thread, a
connection never closed at shutdown) and the leak check for tests.
"""

from __future__ import annotations

import gc
import os
from types import SimpleNamespace
from typing import Any

import libvirt
from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import ConnectionClosedError, LibvirtConnection
from libvirt_twisted._debug import DEFAULT_THRESHOLD, threshold
from libvirt_twisted.testing import LeakChecks, checkForLeaks

from ._harness import LOOP, logMessages, requireDaemon, runPython, startDaemon


class ThresholdTests(SynchronousTestCase):
    def test_fromTheArgumentOrTheEnvironment(self) -> None:
        self.assertEqual(threshold(True), DEFAULT_THRESHOLD)
        self.assertIsNone(threshold(False))
        self.assertEqual(threshold(20), 0.02)
        self.assertRaises(ValueError, threshold, 0)
        for setting, expected in [("", None), ("0", None), ("1", DEFAULT_THRESHOLD), ("5", 0.005)]:
            self.patch(os, "environ", {"LIBVIRT_TWISTED_DEBUG": setting})
            self.assertEqual(threshold(None), expected, setting)
        self.patch(os, "environ", {"LIBVIRT_TWISTED_DEBUG": "loud"})
        self.assertRaises(ValueError, threshold, None)


class SlowCallTests(TestCase):
    timeout = 60

    async def test_aCallThatBlocksTheReactorIsNamed(self) -> None:
        daemon = startDaemon(self)
        # A password in the URI (libvirt takes one, and ignores it, on a unix socket).
        uri = daemon.testURI.replace("test+unix:///", "test+unix://admin:s3cret@/")
        connection = LibvirtConnection(libvirt.open(uri))
        self.addCleanup(connection.close)
        self.patch(LOOP, "slowCallThreshold", 1e-9)  # any round trip is too long
        logged = logMessages(self)
        connection.getLibVersion()
        connection.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, print)
        slow = [line for line in logged if "blocked the reactor thread" in line]
        self.assertEqual(len(slow), 2, logged)
        self.assertIn("getLibVersion() blocked the reactor thread for", slow[0])
        self.assertIn("call it through inThread", slow[0])
        self.assertIn("domainEventRegisterAny()", slow[1])
        for line in slow:
            self.assertIn("test+unix://admin:***@/default", line)
            self.assertNotIn("s3cret", line)
        # Off the reactor thread, nothing to say.
        await connection.inThread.getLibVersion()
        self.assertEqual(len([line for line in logged if "blocked" in line]), 2)

    def test_offByDefault(self) -> None:
        self.assertIsNone(LOOP.slowCallThreshold)


class UnclosedAtShutdownTests(TestCase):
    timeout = 60

    async def test_aConnectionNeverClosedIsNamed(self) -> None:
        requireDaemon()
        out, err, code = await runPython(
            """
            import sys, libvirt
            from twisted.internet import reactor
            from twisted.logger import globalLogBeginner, textFileLogObserver
            import libvirt_twisted
            from libvirt_twisted import ConnectionClosedError, LibvirtConnection

            globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
            libvirt_twisted.install(reactor, debug=True)
            forgotten = LibvirtConnection(libvirt.open("test:///default"))
            closed = LibvirtConnection(libvirt.open("test:///default"))
            reactor.callWhenRunning(lambda: closed.close().addCallback(lambda _: reactor.stop()))
            reactor.run()
            """
        )
        self.assertEqual(code, 0, err)
        never = [line for line in out.splitlines() if "was never closed" in line]
        self.assertEqual(len(never), 1, out)
        self.assertIn("on test:///default was never closed", never[0])


class LeakCheckTests(TestCase):
    timeout = 60

    async def test_aConnectionLeftOpenFailsTheTest(self) -> None:
        # A daemon of its own: the embedded driver's event timer is shared by
        # every test:///default connection of the process, open or leaked.
        daemon = startDaemon(self)
        cleanups: list[Any] = []
        case = SimpleNamespace(addCleanup=cleanups.append, failureException=AssertionError)
        checkForLeaks(case)
        connection = LibvirtConnection(libvirt.open(daemon.testURI))
        connection.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, print)
        with self.assertRaises(AssertionError) as raised:
            await cleanups[0]()
        self.assertIn("was never closed", str(raised.exception))
        self.assertIn("the event loop holds", str(raised.exception))
        await connection.close()
        await cleanups[0]()  # all given back now

    async def test_theMixinChecksEachTest(self) -> None:
        class Leaky(LeakChecks, TestCase):
            def test_leaks(self) -> None:
                self.connection = LibvirtConnection(libvirt.open("test:///default"))

        case = Leaky("test_leaks")
        cleanups: list[Any] = []
        self.patch(case, "addCleanup", lambda f, *a: cleanups.append(f))
        case.setUp()
        case.test_leaks()
        with self.assertRaises(case.failureException):
            await cleanups[0]()
        await case.connection.close()


class DroppedTests(TestCase):
    timeout = 60

    async def test_aConnectionDroppedWhileOpenIsLogged(self) -> None:
        daemon = startDaemon(self)
        logged = logMessages(self)
        conn = libvirt.open(daemon.testURI)
        self.addCleanup(conn.close)  # what libvirt-python still holds
        connection = LibvirtConnection(conn)
        uri = connection.maskedURI
        closed = LibvirtConnection(libvirt.open(daemon.testURI))
        await closed.close()
        del connection, closed
        gc.collect()
        dropped = [line for line in logged if "was dropped while open" in line]
        self.assertEqual(len(dropped), 1, logged)
        self.assertIn(uri, dropped[0])


class LostWithoutOwnerTests(TestCase):
    timeout = 60

    async def test_aLostConnectionNobodyAskedAboutIsLogged(self) -> None:
        daemon = startDaemon(self)
        logged = logMessages(self)
        bare = LibvirtConnection(libvirt.open(daemon.testURI))
        owned = LibvirtConnection(libvirt.open(daemon.testURI), onClose=lambda c, r: None)
        daemon.kill()
        await bare.whenClosed()
        await owned.whenClosed()
        lost = [line for line in logged if "connection lost (EOF)" in line]
        self.assertEqual(lost, [f"{bare.maskedURI}: connection lost (EOF)"])


class DebugClosedTests(TestCase):
    async def test_registeringOnAClosedConnectionSaysSoInDebugMode(self) -> None:
        connection = LibvirtConnection(libvirt.open("test:///default"))
        await connection.close()
        self.patch(LOOP, "slowCallThreshold", 1e-9)
        with self.assertRaises(ConnectionClosedError):
            connection.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, print)
