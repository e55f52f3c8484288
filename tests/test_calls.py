"""
Deferred-returning libvirt calls on the call pool, under load and when the
daemon dies in the middle of them.
"""

from __future__ import annotations

import threading
from typing import Any

import libvirt
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from libvirt_twisted import EventQueue, LibvirtConnection, callInThread, inThread
from libvirt_twisted._threads import CallPool

from ._harness import PATIENCE, startDaemon, testDomainXML, until

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE


def produce(uri: str, prefix: str, cycles: int) -> None:
    """Start and destroy C{cycles} domains: two lifecycle events each."""
    conn = libvirt.open(uri)
    try:
        for i in range(cycles):
            conn.createXML(testDomainXML(f"{prefix}-{i}"), 0).destroy()
    finally:
        conn.close()


class CallPoolTests(TestCase):
    timeout = 120

    async def test_callsRunOffTheReactorThread(self) -> None:
        threads: list[threading.Thread] = []

        def where(x: int) -> int:
            threads.append(threading.current_thread())
            return x * 2

        self.assertEqual(await callInThread(None, where, 21), 42)
        self.assertIsNot(threads[0], threading.main_thread())
        conn = libvirt.open("test:///default")
        self.addCleanup(conn.close)
        domain = await inThread(conn).lookupByName("test")
        self.assertEqual(await inThread(domain).name(), "test")
        with self.assertRaises(libvirt.libvirtError):
            await inThread(conn).lookupByName("no-such-domain")
        with self.assertRaises(TypeError) as raised:
            inThread(conn)._o  # noqa: B018
        self.assertIn("is not a method", str(raised.exception))

    async def test_poolGrowsToItsBoundAndShrinksWithIt(self) -> None:
        pool = CallPool(reactor, maxThreads=3)
        self.addCleanup(pool.stop)
        together = threading.Barrier(3)
        # Three calls that can only finish together: three threads.
        results = await gatherResults([pool.call(together.wait, PATIENCE) for _ in range(3)])
        self.assertEqual(sorted(results), [0, 1, 2])
        self.assertEqual(len(pool._threads), 3)
        # A fourth call at once reuses an idle thread.
        self.assertEqual(await pool.call(lambda: 4), 4)
        self.assertEqual(len(pool._threads), 3)
        # A lower bound retires threads as they finish their calls.
        pool.maxThreads = 1
        for n in range(3):
            self.assertEqual(await pool.call(lambda n=n: n), n)
        await until(lambda: len(pool._threads) == 1)

    async def test_concurrentCallsWhileEventsFlow(self) -> None:
        daemon = startDaemon(self)
        events: EventQueue[tuple[Any, ...]] = EventQueue(size=50_000)
        connection = LibvirtConnection(libvirt.open(daemon.testURI), onDomainChange=events)
        self.addCleanup(connection.close)
        producers = gatherResults(
            [deferToThread(produce, daemon.testURI, f"p{n}", 1250) for n in range(4)]
        )
        seen = set()

        async def consume(count: int) -> None:
            for _ in range(count):
                _, domain, event, _, _ = await events.get()
                seen.add((domain.name(), event))

        # The calls start once events flow, and run while they go on.
        await consume(500)
        calls: Deferred[list[Any]] = gatherResults(
            [connection.inThread.listAllDomains() for _ in range(100)]
            + [connection.inThread.getLibVersion() for _ in range(100)]
        )
        await consume(9_500)
        self.assertEqual(len(await calls), 200)
        await producers
        expected = {
            (f"p{n}-{i}", event)
            for n in range(4)
            for i in range(1250)
            for event in (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STOPPED)
        }
        self.assertEqual(seen, expected)
        self.assertEqual(events.dropped, 0)

    async def test_daemonDiesDuringCalls(self) -> None:
        daemon = startDaemon(self)
        connection = LibvirtConnection(libvirt.open(daemon.testURI))
        self.addCleanup(connection.close)
        daemon.pause()
        # Every call now waits for a reply that never comes...
        pending = [connection.inThread.listAllDomains() for _ in range(100)]
        daemon.kill()
        # ...until the daemon dies: each one fails, none hangs.
        results = await DeferredList(pending, consumeErrors=True)
        self.assertEqual(len(results), 100)
        for ok, result in results:
            self.assertFalse(ok)
            assert isinstance(result, Failure)
            result.trap(libvirt.libvirtError)
        # Which thread notices the death decides the reason: the reactor
        # reports EOF, a pool thread in libvirt's own I/O loop may say ERROR.
        self.assertIn(
            await connection.whenClosed(),
            (libvirt.VIR_CONNECT_CLOSE_REASON_EOF, libvirt.VIR_CONNECT_CLOSE_REASON_ERROR),
        )
