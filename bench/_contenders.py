"""
The contenders: five ways for a process to receive libvirt's events, behind
one small interface so that every benchmark body runs unchanged on each.

A body is a generator run on the contender's application thread (the thread
that sees the events): it makes its libvirt calls there, between loop
iterations, and yields how long to let the loop run (seconds) or L{DRAIN} to
wait until the loop has freed what libvirt removed.  libvirt accepts one
event implementation per process, so a consumer process installs exactly one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import libvirt


class Drain:
    """Yielded by a body: wait until removed watches and timers are freed."""


DRAIN = Drain()

Step = float | Drain
Body = Iterator[Step]
#: libvirt's domain lifecycle callback: (conn, domain, event, detail, opaque).
Handler = Callable[[Any, Any, int, int, Any], None]

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE

#: How long libvirt's own loop, which has no drain, is left to free things.
DEFAULT_LOOP_DRAIN = 0.2

#: The longest a drain may take before the body goes on regardless.
DRAIN_TIMEOUT = 10.0


class Contender:
    """One event-loop arrangement; subclasses fill in the loop."""

    name: ClassVar[str]
    description: ClassVar[str]

    def install(self) -> None:
        """Register the event implementation, before any connection opens."""
        raise NotImplementedError

    def deliver(self, handler: Handler) -> Handler:
        """The callback to give libvirt so that C{handler} runs on the application thread."""
        return handler

    def run(self, body: Body) -> None:
        """Run the loop, stepping C{body} on it, until C{body} ends; re-raise its errors."""
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """The loop's own counters, where it has any."""
        return {}

    #: The parts it runs: those that open their own connections, for most.
    parts: ClassVar[tuple[str, ...]] = ("event", "paced", "idle", "churn", "scale")

    def listen(
        self, uri: str, handler: Handler, connections: int, out: dict[str, Any]
    ) -> Iterator[Step]:
        """
        Open C{connections} connections to C{uri} and have C{handler} called
        for their lifecycle events (the opaque is the connection's index);
        record how long opening and registering took.  Body steps.
        """
        started = time.monotonic()
        conns = [libvirt.open(uri) for _ in range(connections)]
        opened = time.monotonic()
        delivered = self.deliver(handler)
        self._listening = [
            (conn, conn.domainEventRegisterAny(None, LIFECYCLE, delivered, index))
            for index, conn in enumerate(conns)
        ]
        out["openSeconds"] = opened - started
        out["registerSeconds"] = time.monotonic() - opened
        yield 0.0

    def unlisten(self) -> Iterator[Step]:
        """Undo L{listen}."""
        for conn, callback in self._listening:
            conn.domainEventDeregisterAny(callback)
            conn.close()
        self._listening = []
        yield 0.0


def _runDefaultLoopForever() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


class TwistedContender(Contender):
    """libvirt_twisted: the reactor is libvirt's event loop."""

    reactorName: ClassVar[str]

    def install(self) -> None:
        if self.reactorName == "asyncio":
            from twisted.internet import asyncioreactor

            asyncioreactor.install(asyncio.new_event_loop())  # type: ignore[no-untyped-call]
        else:
            from twisted.internet import epollreactor

            epollreactor.install()  # type: ignore[no-untyped-call]
        from twisted.internet import reactor

        import libvirt_twisted

        self.reactor: Any = reactor
        self.loop = libvirt_twisted.install(reactor)

    def drain(self) -> Any:
        return self.loop.drain()

    def run(self, body: Body) -> None:
        reactor = self.reactor
        failures: list[BaseException] = []

        def fail(error: BaseException) -> None:
            failures.append(error)
            reactor.stop()

        def step() -> None:
            try:
                request = next(body)
            except StopIteration:
                reactor.stop()
                return
            except BaseException as e:
                fail(e)
                return
            if isinstance(request, Drain):
                waiting = self.drain()
                waiting.addCallback(lambda _: reactor.callLater(0, step))
                waiting.addErrback(lambda f: fail(f.value))
            else:
                reactor.callLater(request, step)

        reactor.callWhenRunning(step)
        reactor.run(installSignalHandlers=False)
        if failures:
            raise failures[0]

    def counters(self) -> dict[str, int]:
        return {"fired": self.loop.fired, "dispatched": self.loop.dispatched, **self.loop.counts()}


class TwistedEpoll(TwistedContender):
    name = "twisted-epoll"
    description = "libvirt_twisted on Twisted's epoll reactor"
    reactorName = "epoll"


class TwistedAsyncio(TwistedContender):
    name = "twisted-asyncio"
    description = "libvirt_twisted on Twisted's asyncio reactor"
    reactorName = "asyncio"


class ThreadHop(TwistedContender):
    """libvirt's C loop in a thread; every event hops to the reactor thread."""

    name = "thread-callFromThread"
    description = "libvirt's default loop in a thread, reactor.callFromThread to an epoll reactor"
    reactorName = "epoll"

    def install(self) -> None:
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_runDefaultLoopForever, name="libvirt-loop", daemon=True).start()
        from twisted.internet import epollreactor

        epollreactor.install()  # type: ignore[no-untyped-call]
        from twisted.internet import reactor

        self.reactor = reactor

    def deliver(self, handler: Handler) -> Handler:
        callFromThread = self.reactor.callFromThread

        def hop(conn: Any, domain: Any, event: int, detail: int, opaque: Any) -> None:
            callFromThread(handler, conn, domain, event, detail, opaque)

        return hop

    def drain(self) -> Any:
        from twisted.internet.task import deferLater

        return deferLater(self.reactor, DEFAULT_LOOP_DRAIN, lambda: None)

    def counters(self) -> dict[str, int]:
        return {}


class Floor(Contender):
    """libvirt's C loop calling the Python callback directly: no reactor at all."""

    name = "floor"
    description = "libvirt's default loop on the main thread calling the callback directly"

    def install(self) -> None:
        libvirt.virEventRegisterDefaultImpl()

    def run(self, body: Body) -> None:
        due = [True]

        def wake(timer: int, opaque: Any) -> None:
            due[0] = True
            libvirt.virEventUpdateTimeout(timer, -1)

        timer = libvirt.virEventAddTimeout(-1, wake, None)
        try:
            while True:
                if due[0]:
                    due[0] = False
                    try:
                        request = next(body)
                    except StopIteration:
                        return
                    delay = DEFAULT_LOOP_DRAIN if isinstance(request, Drain) else request
                    libvirt.virEventUpdateTimeout(timer, max(0, round(delay * 1000)))
                libvirt.virEventRunDefaultImpl()
        finally:
            libvirt.virEventRemoveTimeout(timer)


class Libvirtaio(Contender):
    """libvirt-python's libvirtaio on a plain asyncio loop."""

    name = "libvirtaio"
    description = "libvirt-python's libvirtaio on asyncio (selector loop, epoll)"

    def install(self) -> None:
        import libvirtaio

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.impl = libvirtaio.virEventRegisterAsyncIOImpl(loop=self.loop)

    def run(self, body: Body) -> None:
        loop = self.loop
        failures: list[BaseException] = []

        def step() -> None:
            try:
                request = next(body)
            except StopIteration:
                loop.stop()
                return
            except BaseException as e:
                failures.append(e)
                loop.stop()
                return
            if isinstance(request, Drain):
                # libvirtaio's drain waits for every registration, not only
                # the removed ones: bound it, a leak must not hang the run.
                task = loop.create_task(asyncio.wait_for(self.impl.drain(), DRAIN_TIMEOUT))
                task.add_done_callback(lambda _: loop.call_soon(step))
            else:
                loop.call_later(request, step)

        loop.call_soon(step)
        loop.run_forever()
        if failures:
            raise failures[0]

    def counters(self) -> dict[str, int]:
        return {"callbacks": len(self.impl.callbacks)}


class ServiceContender(TwistedEpoll):
    """libvirt_twisted's LibvirtService on epoll: the handler as a subscriber."""

    parts = ("event", "paced")
    inventory: ClassVar[bool] = False

    def listen(
        self, uri: str, handler: Handler, connections: int, out: dict[str, Any]
    ) -> Iterator[Step]:
        from libvirt_twisted import LibvirtService

        started = time.monotonic()
        self.services = []
        for index in range(connections):
            service = LibvirtService(uri, keepalive=None, inventory=self.inventory, resync=None)
            subscription = service.subscribe("domain", LIFECYCLE, handler, index)
            service.startService()
            self.services.append(service)
            connected = service.whenConnected()
            while not connected.called or not service._subscriptions.holds(subscription):
                yield 0.01
        out["openSeconds"] = time.monotonic() - started
        out["registerSeconds"] = 0.0

    def unlisten(self) -> Iterator[Step]:
        for service in self.services:
            stopped = service.stopService()
            while not stopped.called:
                yield 0.01
        self.services = []


class TwistedService(ServiceContender):
    name = "twisted-epoll + service"
    description = "a LibvirtService on epoll, the handler subscribed to it"


class TwistedInventory(ServiceContender):
    name = "twisted-epoll + inventory"
    description = "the same LibvirtService keeping an inventory (resync off)"
    inventory = True


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c
    for c in (
        TwistedEpoll,
        TwistedAsyncio,
        ThreadHop,
        Floor,
        Libvirtaio,
        TwistedService,
        TwistedInventory,
    )
}
