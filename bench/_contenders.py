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


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c for c in (TwistedEpoll, TwistedAsyncio, ThreadHop, Floor, Libvirtaio)
}
