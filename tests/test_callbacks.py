"""
Calling libvirt from inside a plain event callback, on the embedded test
driver and on a private daemon: what works, what is delivered when, and
what cannot work.

libvirt runs a callback from its event timer, on the reactor thread, with
the event queue's lock dropped (object_event.c: "Drop the lock while
dispatching, for sake of re-entrance") and the queue swapped out: a call
made there works, blocks the reactor for its round trip on a remote
connection, and an event it causes is delivered on a later turn, never
inside the callback.  What cannot work is waiting there for anything that
needs the reactor thread: an event, above all.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import libvirt
import libvirtmod  # type: ignore[import-not-found]
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from libvirt_twisted import ConnectionState, LibvirtConnection
from libvirt_twisted.testing import LeakChecks

from ._harness import (
    LOOP,
    PATIENCE,
    Calls,
    Recorder,
    churn,
    openConnection,
    startDaemon,
    testDomainXML,
    turns,
)

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
REBOOT = libvirt.VIR_DOMAIN_EVENT_ID_REBOOT
STARTED = libvirt.VIR_DOMAIN_EVENT_STARTED
SUSPENDED = libvirt.VIR_DOMAIN_EVENT_SUSPENDED
RESUMED = libvirt.VIR_DOMAIN_EVENT_RESUMED
STOPPED = libvirt.VIR_DOMAIN_EVENT_STOPPED

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


def named(calls: Calls) -> list[tuple[str, int]]:
    """(domain name, event) of each recorded lifecycle callback."""
    return [(call[1].name(), call[2]) for call in calls]


def saw(name: str, event: int) -> Any:
    """A condition for L{Recorder.when}: the callback heard C{event} for C{name}."""
    return lambda calls: (name, event) in named(calls)


def deregisterQuietly(conn: libvirt.virConnect, callbackId: int) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.domainEventDeregisterAny(callbackId)


class CallbackCalls(_Base):
    """
    The cases, for a driver: C{uri} is where to connect; C{roundTrips} says
    whether a call is a round trip that the calling thread makes itself.
    """

    uri: str
    roundTrips: bool

    def connect(self) -> libvirt.virConnect:
        return openConnection(self, self.uri)

    def listen(
        self, conn: libvirt.virConnect, callback: Any, dom: libvirt.virDomain | None = None
    ) -> int:
        callbackId: int = conn.domainEventRegisterAny(dom, LIFECYCLE, callback, None)
        self.addCleanup(deregisterQuietly, conn, callbackId)
        return callbackId

    async def test_readOnlyCallsWork(self) -> None:
        """
        Read-only calls on the connection whose event is being dispatched
        work; on a remote connection the reactor thread makes their round
        trips itself, there and then.
        """
        conn = self.connect()
        results: list[tuple[Any, ...]] = []

        def act(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) != ("reader", STARTED):
                return
            before = LOOP.watchUpdates()
            version = c.getVersion()
            names = sorted(d.name() for d in c.listAllDomains())
            state = c.lookupByName("test").info()[0]
            results.append((version, names, state, LOOP.watchUpdates() - before))

        events = Recorder(act)
        self.listen(conn, events)
        churn(self.uri, "reader")
        await events.when(saw("reader", STOPPED))
        [(version, names, state, updates)] = results
        self.assertEqual(version, conn.getVersion())
        self.assertIn("test", names)
        self.assertEqual(state, libvirt.VIR_DOMAIN_RUNNING)
        self.assertEqual(updates > 0, self.roundTrips)

    async def nestedEvents(self, via: libvirt.virConnect, conn: libvirt.virConnect) -> None:
        """
        A callback on C{conn} starts and destroys a domain through C{via}:
        its events come after the callback has returned, and no callback
        is ever entered while another runs.
        """
        depth = [0, 0]  # now, deepest
        order: list[object] = []

        def act(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            depth[0] += 1
            depth[1] = max(depth)
            try:
                order.append((dom.name(), event))
                if (dom.name(), event) == ("outer", STARTED):
                    via.createXML(testDomainXML("inner"), 0).destroy()
                    order.append("returned")
            finally:
                depth[0] -= 1

        events = Recorder(act)
        self.listen(conn, events)
        churn(self.uri, "outer")
        await events.when(saw("inner", STOPPED))
        self.assertEqual(depth, [0, 1])
        returned = order.index("returned")
        self.assertEqual(order[returned - 1], ("outer", STARTED))
        self.assertLess(returned, order.index(("inner", STARTED)))
        self.assertLess(order.index(("inner", STARTED)), order.index(("inner", STOPPED)))

    async def test_nestedEventOnTheSameConnectionComesLater(self) -> None:
        conn = self.connect()
        await self.nestedEvents(conn, conn)

    async def test_nestedEventThroughAnotherConnectionComesLater(self) -> None:
        conn = self.connect()
        other = self.connect()
        witness = Recorder()
        self.listen(other, witness)
        await self.nestedEvents(other, conn)
        await witness.when(saw("inner", STOPPED))

    async def test_registeringInsideACallback(self) -> None:
        """
        A callback registered during a dispatch does not receive the event
        being dispatched, and receives those that come after it.
        """
        conn = self.connect()
        other = self.connect()
        late = Recorder()

        def act(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("watched", STARTED):
                # libvirt-python takes one unfiltered registration of an
                # event per connection: this one filters on the domain.
                self.listen(c, late, dom)

        events = Recorder(act)
        self.listen(conn, events)
        domain = other.createXML(testDomainXML("watched"), 0)
        await events.when(saw("watched", STARTED))
        domain.suspend()
        domain.resume()
        domain.destroy()
        await late.when(saw("watched", STOPPED))
        self.assertEqual(
            named(late.calls), [("watched", SUSPENDED), ("watched", RESUMED), ("watched", STOPPED)]
        )

    async def test_deregisteringItselfInsideACallback(self) -> None:
        """
        A callback that deregisters itself hears nothing more, not even an
        event already queued; the connection still takes new registrations.
        """
        conn = self.connect()
        witness = Recorder()
        self.listen(self.connect(), witness)
        ids: list[int] = []

        def act(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("leaver", STARTED):
                c.domainEventDeregisterAny(ids[0])

        events = Recorder(act)
        ids.append(self.listen(conn, events))
        churn(self.uri, "leaver")
        await witness.when(saw("leaver", STOPPED))
        await turns(3)
        self.assertEqual(named(events.calls), [("leaver", STARTED)])
        self.assertNotIn(ids[0], conn.domainEventCallbackID)
        again = Recorder()
        self.listen(conn, again)
        churn(self.uri, "rejoined")
        await again.when(saw("rejoined", STOPPED))

    async def test_closingARawConnectionInsideACallbackLeavesItOpen(self) -> None:
        """
        virConnect.close() inside the callback returns at once, but the
        registration still holds the connection: it stays open and its
        callback goes on hearing events, while the Python object, whose
        handle close() dropped, can no longer deregister it.
        """
        conn = libvirt.open(self.uri)
        handle = conn._o
        returned: list[int] = []

        def act(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("closer", STARTED):
                returned.append(c.close())

        events = Recorder(act)
        callbackId = conn.domainEventRegisterAny(None, LIFECYCLE, events, None)

        def release() -> Deferred[None]:
            # What would let the connection go: deregistering, by the handle.
            libvirtmod.virConnectDomainEventDeregisterAny(handle, callbackId)
            return LOOP.drain()

        self.addCleanup(release)
        churn(self.uri, "closer")
        await events.when(saw("closer", STARTED))
        self.assertEqual(len(returned), 1)
        self.assertGreater(returned[0], 0)  # references remain
        churn(self.uri, "still-heard")
        await events.when(saw("still-heard", STOPPED))
        with self.assertRaises(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callbackId)

    async def test_aThreadsCallsAreServedWhileTheCallbackWaits(self) -> None:
        """
        Waiting inside a callback for another thread's libvirt calls, on the
        same connection, works: they need nothing of the reactor.
        """
        conn = self.connect()
        results: list[object] = []
        alive: list[bool] = []

        def call() -> None:
            results.append(conn.getVersion())
            results.append(conn.lookupByName("test").name())

        def act(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("joiner", STARTED):
                thread = threading.Thread(target=call)
                thread.start()
                thread.join(PATIENCE)
                alive.append(thread.is_alive())

        events = Recorder(act)
        self.listen(conn, events)
        churn(self.uri, "joiner")
        await events.when(saw("joiner", STARTED))
        self.assertEqual(alive, [False])
        self.assertEqual(results, [conn.getVersion(), "test"])

    async def test_waitingInsideACallbackForAnEventCannotSucceed(self) -> None:
        """
        Every event, of every connection, is dispatched on the reactor
        thread: a callback that blocks waiting for one waits for ever, and
        gets out only through its own timeout, however long (a short one
        here).  The event is delivered once the callback has returned.
        """
        conn = self.connect()
        other = self.connect()
        heard = threading.Event()
        outcome: list[bool] = []

        def hear(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("awaited", STARTED):
                heard.set()

        def act(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("waiter", STARTED):
                other.createXML(testDomainXML("awaited"), 0)
                outcome.append(heard.wait(0.2))

        witness = Recorder(hear)
        self.listen(other, witness)
        events = Recorder(act)
        self.listen(conn, events)
        churn(self.uri, "waiter")
        await witness.when(saw("awaited", STARTED))
        self.assertEqual(outcome, [False])
        self.assertTrue(heard.is_set())
        other.lookupByName("awaited").destroy()
        await events.when(saw("awaited", STOPPED))

    # The same through a LibvirtConnection.

    def wrap(self) -> LibvirtConnection:
        connection = LibvirtConnection(libvirt.open(self.uri))
        self.addCleanup(connection.close)
        return connection

    async def test_wrapperSubscribingInsideACallback(self) -> None:
        """
        A listener added during a dispatch (to the same event: the shared
        registration, no libvirt call; or to another, registered there and
        then) does not hear the event being dispatched, and hears the next.
        """
        connection = self.wrap()
        late = Recorder()
        added: list[int] = []

        def act(c: LibvirtConnection, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("joined", STARTED):
                added.append(c.domainEventRegisterAny(None, LIFECYCLE, late))
                added.append(c.domainEventRegisterAny(None, REBOOT, Recorder()))

        events = Recorder(act)
        mine = connection.domainEventRegisterAny(None, LIFECYCLE, events)
        churn(self.uri, "joined")
        await late.when(saw("joined", STOPPED))
        self.assertEqual(named(late.calls), [("joined", STOPPED)])
        self.assertEqual(
            sorted(connection.tracked()),
            sorted(
                [
                    ("domain", LIFECYCLE, mine),
                    ("domain", LIFECYCLE, added[0]),
                    ("domain", REBOOT, added[1]),
                ]
            ),
        )

    async def test_wrapperResubscribingInsideACallback(self) -> None:
        """
        A callback that unsubscribes itself, the last of its event (another
        event holds, so libvirt's registration really goes, on the call
        pool), then subscribes a new listener to the same event: the new
        registration waits for the old one to go, without deadlock, and
        hears the events that follow; the old listener hears nothing more.
        """
        connection = self.wrap()
        connection.domainEventRegisterAny(None, REBOOT, Recorder())
        late = Recorder()
        ids: list[int] = []

        def act(c: LibvirtConnection, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("swapped", STARTED):
                c.unsubscribe(ids[0])
                ids.append(c.domainEventRegisterAny(None, LIFECYCLE, late))

        events = Recorder(act)
        ids.append(connection.domainEventRegisterAny(None, LIFECYCLE, events))
        churn(self.uri, "swapped")
        await events.when(saw("swapped", STARTED))
        self.assertEqual(len(ids), 2)
        churn(self.uri, "afterwards")
        await late.when(saw("afterwards", STOPPED))
        self.assertEqual(named(events.calls), [("swapped", STARTED)])

    async def test_wrapperClosingInsideACallback(self) -> None:
        """
        close() inside a callback returns a Deferred at once: the listeners
        hear nothing more, and the teardown runs off the reactor thread.
        """
        onClose: Deferred[int] = Deferred()
        connection = LibvirtConnection(libvirt.open(self.uri), onClose=onClose)
        closing: list[Deferred[int]] = []

        def act(c: LibvirtConnection, dom: libvirt.virDomain, event: int, *rest: Any) -> None:
            if (dom.name(), event) == ("ender", STARTED):
                closing.append(c.close())
                self.assertIs(c.state, ConnectionState.CLOSING)
                self.assertFalse(closing[0].called)

        events = Recorder(act)
        connection.domainEventRegisterAny(None, LIFECYCLE, events)
        churn(self.uri, "ender")
        reason = await onClose
        self.assertEqual(reason, libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT)
        self.assertEqual(await closing[0], reason)
        self.assertEqual(named(events.calls), [("ender", STARTED)])
        self.assertIs(connection.state, ConnectionState.CLOSED)


class EmbeddedCallbackTests(CallbackCalls, LeakChecks, TestCase):
    """libvirt's embedded test driver: every call is in-process."""

    timeout = 60
    uri = "test:///default"
    roundTrips = False


class RemoteCallbackTests(CallbackCalls, LeakChecks, TestCase):
    """The test driver of a private libvirtd, over its unix socket."""

    timeout = 60
    roundTrips = True

    def setUp(self) -> Any:
        result = super().setUp()
        self.uri = startDaemon(self).testURI
        return result
