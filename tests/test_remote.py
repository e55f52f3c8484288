"""
A real remote connection to a private libvirtd, driven by the reactor:
events, keepalive, close reasons, and no fd leaked.
"""

from __future__ import annotations

import contextlib
import threading

import libvirt
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from ._harness import (
    LOOP,
    Recorder,
    closeAndDrain,
    openConnection,
    openFds,
    startDaemon,
    testDomainXML,
)

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE


class RemoteConnectionTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.daemon = startDaemon(self)

    async def test_lifecycleEventsFromAnotherClient(self) -> None:
        conn = openConnection(self, self.daemon.testURI)
        threads: list[threading.Thread] = []
        events = Recorder(lambda *args: threads.append(threading.current_thread()))
        callbackId = conn.domainEventRegisterAny(
            None, LIFECYCLE, lambda c, d, e, detail, o: events(d.name(), e, detail), None
        )
        self.addCleanup(conn.domainEventDeregisterAny, callbackId)
        other = openConnection(self, self.daemon.testURI)
        domain = other.createXML(testDomainXML("remote-1"), 0)
        domain.suspend()
        domain.resume()
        domain.destroy()
        await events.called(4)
        self.assertEqual(
            [call[:2] for call in events.calls],
            [
                ("remote-1", libvirt.VIR_DOMAIN_EVENT_STARTED),
                ("remote-1", libvirt.VIR_DOMAIN_EVENT_SUSPENDED),
                ("remote-1", libvirt.VIR_DOMAIN_EVENT_RESUMED),
                ("remote-1", libvirt.VIR_DOMAIN_EVENT_STOPPED),
            ],
        )
        self.assertEqual(set(threads), {threading.main_thread()})

    async def test_idleConnectionAnswersTheDaemonsProbes(self) -> None:
        """
        A daemon probing every second drops a client that leaves two probes
        unanswered: through the reactor, an idle client answers them.
        """
        daemon = startDaemon(self, keepalive_interval=1, keepalive_count=1)
        conn = openConnection(self, daemon.testURI)
        closed = Recorder()
        conn.registerCloseCallback(lambda c, reason, o: closed(reason), None)
        self.addCleanup(_unregisterClose, conn)
        dispatched = LOOP.dispatched
        await deferLater(reactor, 3.5, lambda: None)
        self.assertEqual(closed.calls, [])
        self.assertGreaterEqual(LOOP.dispatched - dispatched, 2)
        self.assertIsInstance(conn.getLibVersion(), int)

    async def test_keepaliveTimerProbesTheDaemon(self) -> None:
        """
        With keepalive at 1 s x 2, the client's timer fires every idle second
        and probes the daemon, whose answers keep the connection open.
        """
        conn = openConnection(self, self.daemon.testURI)
        closed = Recorder()
        conn.registerCloseCallback(lambda c, reason, o: closed(reason), None)
        self.addCleanup(_unregisterClose, conn)
        timers = LOOP.counts()["timers"]
        conn.setKeepAlive(1, 2)
        self.assertEqual(LOOP.counts()["timers"], timers + 1)
        fired, dispatched = LOOP.fired, LOOP.dispatched
        await deferLater(reactor, 3.5, lambda: None)
        self.assertEqual(closed.calls, [])
        self.assertGreaterEqual(LOOP.fired - fired, 2)
        self.assertGreaterEqual(LOOP.dispatched - dispatched, 2)
        self.assertTrue(conn.isAlive())

    async def test_closeReasonEOFWhenTheDaemonDies(self) -> None:
        baseline = LOOP.counts()
        conn = openConnection(self, self.daemon.testURI)
        closed = Recorder()
        conn.registerCloseCallback(lambda c, reason, o: closed(reason), None)
        self.daemon.kill()
        await closed.called()
        self.assertEqual(closed.calls, [(libvirt.VIR_CONNECT_CLOSE_REASON_EOF,)])
        _unregisterClose(conn)
        await closeAndDrain(conn)
        self.assertEqual(LOOP.counts(), baseline)

    async def test_closeReasonKeepaliveWhenTheDaemonHangs(self) -> None:
        conn = openConnection(self, self.daemon.testURI)
        conn.setKeepAlive(1, 2)
        closed = Recorder()
        conn.registerCloseCallback(lambda c, reason, o: closed(reason), None)
        self.daemon.pause()
        self.addCleanup(self.daemon.resume)
        await closed.called()
        self.assertEqual(closed.calls, [(libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE,)])
        _unregisterClose(conn)

    async def test_noFdLeakedOverRepeatedOpenAndClose(self) -> None:
        async def cycle() -> None:
            conn = libvirt.open(self.daemon.testURI)
            conn.setKeepAlive(5, 3)
            cid = conn.domainEventRegisterAny(None, LIFECYCLE, lambda *a: None, None)
            conn.registerCloseCallback(lambda *a: None, None)
            conn.domainEventDeregisterAny(cid)
            conn.unregisterCloseCallback()
            await closeAndDrain(conn)

        await cycle()
        before = openFds()
        registrations = LOOP.counts()
        for _ in range(30):
            await cycle()
        self.assertEqual(openFds(), before)
        self.assertEqual(LOOP.counts(), registrations)


def _unregisterClose(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
