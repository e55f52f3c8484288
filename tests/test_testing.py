"""
The private libvirtd harness itself: it starts, faults and restarts a real
daemon, and leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import threading

import libvirt
from twisted.trial.unittest import SynchronousTestCase

from libvirt_twisted import _libvirtd, testing
from libvirt_twisted.testing import DaemonError, PrivateLibvirtd

from . import _harness
from ._harness import qemuDomainXML, requireDaemon, testDomainXML


class PrivateLibvirtdTests(SynchronousTestCase):
    def setUp(self) -> None:
        requireDaemon()

    def test_startRestartStopLeavesNothing(self) -> None:
        daemon = PrivateLibvirtd()
        self.addCleanup(daemon.stop)
        daemon.start()
        firstPid = daemon.pid
        self.assertIsNotNone(firstPid)
        self.assertIn("test+unix:///default?socket=", daemon.testURI)
        self.assertIn("qemu+unix:///session?socket=", daemon.qemuURI)
        conn = libvirt.open(daemon.testURI)
        conn.close()
        daemon.restart()
        self.assertNotEqual(daemon.pid, firstPid)
        conn = libvirt.open(daemon.testURI)
        self.assertEqual(conn.listDomainsID(), [1])
        conn.close()
        daemon.stop()
        self.assertIsNone(daemon.pid)
        self.assertFalse(os.path.exists(daemon.base))
        assert firstPid is not None
        with self.assertRaises(ProcessLookupError):
            os.kill(firstPid, 0)

    def test_stopKillsQemuProcesses(self) -> None:
        daemon = PrivateLibvirtd(cacheDir=_harness._qemuCache())
        self.addCleanup(daemon.stop)
        daemon.start()
        conn = libvirt.open(daemon.qemuURI)
        conn.createXML(qemuDomainXML("left-running"), 0)
        conn.close()
        qemus = daemon.qemuProcesses()
        self.assertEqual(len(qemus), 1)
        # A killed daemon leaves QEMU running, as a crashed one would.
        daemon.kill()
        self.assertEqual(daemon.qemuProcesses(), qemus)
        daemon.stop()
        self.assertEqual(daemon.qemuProcesses(), [])

    def test_aDaemonStartedFromAThreadThatEndsLivesOn(self) -> None:
        started: list[PrivateLibvirtd] = []

        def start() -> None:
            daemon = PrivateLibvirtd(cacheDir=_harness._qemuCache())
            daemon.start()
            started.append(daemon)

        thread = threading.Thread(target=start)
        thread.start()
        thread.join()
        (daemon,) = started
        self.addCleanup(daemon.stop)
        # Once the kernel has ended that thread, a parent-death signal tied
        # to it has been sent.
        task = f"/proc/self/task/{thread.native_id}"
        while os.path.exists(task):
            os.sched_yield()
        conn = libvirt.open(daemon.testURI)
        self.assertEqual(conn.getType(), "TEST")
        conn.close()
        daemon.stop()
        self.assertIsNone(daemon.pid)

    def test_pauseAndResume(self) -> None:
        daemon = PrivateLibvirtd()
        self.addCleanup(daemon.stop)
        daemon.start()
        daemon.pause()
        with open(f"/proc/{daemon.pid}/stat") as f:
            self.assertEqual(f.read().rsplit(")", 1)[1].split()[0], "T")
        daemon.resume()
        conn = libvirt.open(daemon.testURI)
        conn.createXML(testDomainXML("after-pause"), 0).destroy()
        conn.close()

    def test_pausedDaemonDiesOnEitherSignal(self) -> None:
        daemon = PrivateLibvirtd()
        self.addCleanup(daemon.stop)
        for signum in (signal.SIGKILL, signal.SIGTERM):
            daemon.start()
            pid = daemon.pid
            assert pid is not None
            daemon.pause()
            daemon.kill(signum)
            self.assertIsNone(daemon.pid)
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)

    def test_virtAdminRunsAsTheDaemonUser(self) -> None:
        daemon = PrivateLibvirtd()
        self.addCleanup(daemon.stop)
        daemon.start()
        conn = libvirt.open(daemon.testURI)
        self.addCleanup(conn.close)
        self.assertIn("unix", daemon.virtAdmin("client-list", "libvirtd"))

    def test_signalsToAStoppedDaemonFail(self) -> None:
        daemon = PrivateLibvirtd()
        self.addCleanup(daemon.stop)
        self.assertRaises(DaemonError, daemon.pause)
        daemon.kill(signal.SIGKILL)
        self.assertIsNone(daemon.pid)

    def test_startTwiceFails(self) -> None:
        daemon = PrivateLibvirtd()
        self.addCleanup(daemon.stop)
        daemon.start()
        self.assertRaises(DaemonError, daemon.start)


class RequireDaemonTests(SynchronousTestCase):
    """A missing daemon skips a test, except under CI where it fails it."""

    def setUp(self) -> None:
        self.patch(_harness, "daemonUnavailable", lambda: "no libvirtd here")

    def test_skipsOutsideCI(self) -> None:
        self.patch(os, "environ", {**os.environ, "CI": "false"})
        from twisted.trial.unittest import SkipTest

        with self.assertRaises(SkipTest) as raised:
            requireDaemon()
        self.assertEqual(str(raised.exception), "no libvirtd here")

    def test_failsUnderCI(self) -> None:
        self.patch(os, "environ", {**os.environ, "CI": "true"})
        with self.assertRaises(AssertionError) as raised:
            requireDaemon()
        self.assertIn("no libvirtd here", str(raised.exception))

    def test_unavailableExplainsWhy(self) -> None:
        self.patch(_libvirtd, "_PATH", "/nonexistent")
        reason = testing.daemonUnavailable()
        assert reason is not None
        self.assertIn("libvirtd is not installed", reason)
