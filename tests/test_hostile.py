"""
Hostile input to every public entry point: wrong types and values get a
clear exception naming the problem, nothing is left half-registered, and the
reactor keeps running.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import libvirt
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

import libvirt_twisted
from libvirt_twisted import (
    EventQueue,
    EventQueueFinished,
    LibvirtConnection,
    LibvirtService,
    UnknownCallbackError,
    events,
    install,
    inThread,
    setThreadPoolSize,
)
from libvirt_twisted.testing import DaemonError, PrivateLibvirtd

from ._harness import LOOP, testDomainXML, turns

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE


class HostileInputTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.baseline = LOOP.counts()
        self.addCleanup(self.stillFine)

    async def stillFine(self) -> None:
        """After each test: the reactor runs and the loop holds what it held."""
        await turns(2)
        await LOOP.drain()
        self.assertTrue(reactor.running)
        self.assertEqual(LOOP.counts(), self.baseline)

    def assertRaisesNaming(
        self, kind: type[Exception], words: str, f: Any, *a: Any, **kw: Any
    ) -> None:
        with self.assertRaises(kind) as raised:
            f(*a, **kw)
        self.assertIn(words, str(raised.exception))

    def connection(self, **kwargs: Any) -> LibvirtConnection:
        connection = LibvirtConnection(libvirt.open("test:///default"), **kwargs)
        self.addCleanup(connection.close)
        return connection

    def test_install(self) -> None:
        self.assertRaisesNaming(TypeError, "needs a reactor", install, "reactor")
        self.assertRaisesNaming(TypeError, "needs a reactor", install, object())

    def test_eventLoopFunctions(self) -> None:
        self.assertRaisesNaming(
            TypeError, "fd must be an int", LOOP.addHandle, None, 1, print, None
        )
        self.assertRaisesNaming(ValueError, "fd must be >= 0", LOOP.addHandle, -3, 1, print, None)
        self.assertRaisesNaming(
            TypeError, "events must be an int", LOOP.addHandle, 0, "1", print, None
        )
        self.assertRaisesNaming(TypeError, "is not callable", LOOP.addHandle, 0, 1, 42, None)
        self.assertRaisesNaming(
            ValueError, "timeout must be >= -1", LOOP.addTimeout, -7, print, None
        )
        self.assertRaisesNaming(
            TypeError, "timeout must be an int", LOOP.addTimeout, 1.5, print, None
        )
        self.assertRaisesNaming(KeyError, "unknown watch", LOOP.removeHandle, -1)
        self.assertRaisesNaming(KeyError, "unknown timer", LOOP.removeTimeout, "x")
        LOOP.updateHandle(-1, 1)
        LOOP.updateTimeout(-1, 1)

    def test_connectionConstructor(self) -> None:
        self.assertRaisesNaming(TypeError, "wraps a libvirt.virConnect", LibvirtConnection, None)
        conn = libvirt.open("test:///default")
        self.addCleanup(conn.close)
        self.assertRaisesNaming(
            TypeError,
            "onClose must be a callable or a Deferred",
            LibvirtConnection,
            conn,
            onClose=3,
        )
        self.assertRaisesNaming(
            TypeError,
            "must be a callable or a DeferredQueue",
            LibvirtConnection,
            conn,
            onDomainChange="x",
        )
        # The refused wrapper left no close callback behind: a real one fits.
        connection = LibvirtConnection(conn)
        self.assertEqual(connection.tracked(), [])

    def test_registrations(self) -> None:
        connection = self.connection()
        domain = connection.lookupByName("test")
        cases: list[tuple[type[Exception], str, Any, tuple[Any, ...]]] = [
            (
                ValueError,
                "unknown domain event id -1",
                connection.domainEventRegisterAny,
                (None, -1, print),
            ),
            (
                ValueError,
                "unknown network event id 99",
                connection.networkEventRegisterAny,
                (None, 99, print),
            ),
            (
                TypeError,
                "event id must be an int",
                connection.secretEventRegisterAny,
                (None, None, print),
            ),
            (
                TypeError,
                "must be a callable or a DeferredQueue",
                connection.domainEventRegisterAny,
                (None, 0, 0),
            ),
            (
                TypeError,
                "filter on a virStoragePool",
                connection.storagePoolEventRegisterAny,
                (domain, 0, print),
            ),
            (
                UnknownCallbackError,
                "no domain event callback with id 12345",
                connection.domainEventDeregisterAny,
                (12345,),
            ),
            (NotImplementedError, "onDomainChange", connection.domainEventRegister, (print, None)),
            (TypeError, "is not callable", connection.registerCloseCallback, (None,)),
            (ValueError, "no close callback is registered", connection.unregisterCloseCallback, ()),
        ]
        for kind, words, function, args in cases:
            self.assertRaisesNaming(kind, words, function, *args)
        self.assertEqual(connection.tracked(), [])

    async def test_registeringOnAClosedConnection(self) -> None:
        connection = LibvirtConnection(libvirt.open("test:///default"))
        await connection.close()
        self.assertRaisesNaming(
            RuntimeError,
            "it is closed",
            connection.domainEventRegisterAny,
            None,
            LIFECYCLE,
            print,
        )
        self.assertEqual(connection.tracked(), [])

    def test_queues(self) -> None:
        self.assertRaisesNaming(TypeError, "size must be an int", EventQueue, "10")
        self.assertRaisesNaming(ValueError, "size must be at least 1", EventQueue, 0)
        queue: EventQueue[int] = EventQueue()
        queue.finish()
        queue.finish()
        self.failureResultOf(queue.get(), EventQueueFinished)

    async def test_aConsumerThatRaises(self) -> None:
        queue: EventQueue[tuple[Any, ...]] = EventQueue()
        connection = self.connection(onDomainChange=queue)

        async def clumsy() -> None:
            async for _ in queue:
                raise ZeroDivisionError("consumer bug")

        failed = ensureDeferred(clumsy())
        other = libvirt.open("test:///default")
        other.createXML(testDomainXML("hostile"), 0).destroy()
        other.close()
        with self.assertRaises(ZeroDivisionError):
            await failed
        # The queue, the connection and the reactor carry on.
        _, dom, event, _, _ = await queue.get()
        self.assertEqual((dom.name(), event), ("hostile", libvirt.VIR_DOMAIN_EVENT_STOPPED))
        self.assertEqual(len(connection.tracked()), 1)

    def test_calls(self) -> None:
        self.assertRaisesNaming(TypeError, "needs a libvirt object", inThread, None)
        self.assertRaisesNaming(TypeError, "pool size must be an int", setThreadPoolSize, "8")
        self.assertRaisesNaming(ValueError, "at least 1", setThreadPoolSize, 0)

    def test_service(self) -> None:
        for uri in ("", "default", "qemu:/system", "qemu :///system", "://x"):
            self.assertRaisesNaming(ValueError, "malformed libvirt URI", LibvirtService, uri)
        self.assertRaisesNaming(
            TypeError, "a libvirt URI is a str", LibvirtService, b"test:///default"
        )
        self.assertRaisesNaming(
            ValueError,
            "keepalive interval must be >= 1",
            LibvirtService,
            "test:///default",
            keepalive=(-5, 3),
        )
        self.assertRaisesNaming(
            TypeError,
            "retryPolicy must be a callable",
            LibvirtService,
            "test:///default",
            retryPolicy=1.0,
        )
        self.assertRaisesNaming(
            TypeError, "auth must be", LibvirtService, "test:///default", auth=["user", "pw"]
        )
        service = LibvirtService("test:///default")
        self.assertRaisesNaming(
            ValueError, "unknown event family 'vm'", service.subscribe, "vm", 0, print
        )
        self.assertRaisesNaming(
            ValueError, "unknown domain event id 77", service.subscribe, "domain", 77, print
        )
        self.assertRaisesNaming(
            TypeError, "objectFilter", service.subscribe, "domain", 0, print, objectFilter=3
        )
        self.assertRaisesNaming(ValueError, "no subscription 5", service.unsubscribe, 5)

    def test_events(self) -> None:
        self.assertRaisesNaming(ValueError, "unknown event family", events.decode, "vm", 0, ())
        self.assertRaisesNaming(ValueError, "domain", events.decode, "domain", 999, ())
        self.assertRaisesNaming(
            TypeError, "takes 3 arguments", events.decode, "domain", LIFECYCLE, (None,)
        )
        self.assertRaisesNaming(ValueError, "unknown event family", events.eventIDs, "vm")

    def test_privateDaemon(self) -> None:
        before = set(os.listdir(tempfile.gettempdir()))
        if os.geteuid() == 0:
            self.assertRaisesNaming(
                DaemonError, "no such user", PrivateLibvirtd, user="no-such-user-here"
            )
        self.assertRaisesNaming(
            ValueError, "not a libvirtd.conf setting", PrivateLibvirtd, config={"a b": 1}
        )
        self.assertRaisesNaming(
            TypeError, "must be an int or a str", PrivateLibvirtd, config={"max_clients": 1.5}
        )
        self.assertEqual(set(os.listdir(tempfile.gettempdir())) - before, set())

    def test_everyPublicNameIsExported(self) -> None:
        for name in libvirt_twisted.__all__:
            self.assertTrue(hasattr(libvirt_twisted, name), name)
