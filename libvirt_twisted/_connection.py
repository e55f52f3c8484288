"""
LibvirtConnection: one libvirt connection's lifetime, in Twisted terms.

Its event registrations are in C{_registrations.py}; this module holds the
rest: wrapping, forwarding, delivery to subscribers, the close callback, and
the teardown when the connection closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import libvirt
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.logger import Logger

from . import _calls
from ._fanout import CloseDispatcher, Delivery, Entry, FanOut, Key
from ._inflight import InFlight
from ._install import installed
from ._reactor import onReactorThread
from ._registrations import Callback, Registrations, _forget, _quietly
from ._uri import openURI
from .events import closeReasonName

CLOSE_REASON_CLIENT: int = libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT


class LibvirtConnection(Registrations):
    """
    Wraps an open C{libvirt.virConnect} (opened after L{install}): callbacks
    become Deferreds and queues, every event registration made through it is
    tracked and torn down when the connection closes, whatever the reason,
    so that the connection can be garbage collected.

    Everything not defined here is forwarded to the wrapped connection,
    C{virConnect}, so the wrapper is a drop-in replacement for it.

    Callbacks: a plain callable runs inside libvirt's dispatch, as with
    libvirt itself, so it must not call libvirt (schedule that with
    C{reactor.callLater(0, ...)}); a Deferred or a queue fires on a later
    reactor turn, outside the dispatch, where its consumers may call libvirt.

    Wrapping registers a close callback, and registering an event is a round
    trip on a remote connection: L{open} does both off the reactor thread,
    and C{connection.inThread.domainEventRegisterAny(...)} registers there.

    @param onClose: a callable C{(connection, reason)}, or a Deferred fired
        with the reason (C{libvirt.VIR_CONNECT_CLOSE_REASON_*}), once the
        connection closed and every registration was torn down.
    @param onDomainChange: a callable, or a DeferredQueue receiving the
        arguments as a tuple, for every domain lifecycle event.
    """

    log = Logger()

    def __init__(
        self,
        conn: libvirt.virConnect,
        onClose: Callable[[LibvirtConnection, int], object] | Deferred[int] | None = None,
        onDomainChange: Callback | None = None,
        reactor: Any = None,
        _holdQueues: bool = False,
    ) -> None:
        if not isinstance(conn, libvirt.virConnect):
            raise TypeError(f"LibvirtConnection wraps a libvirt.virConnect, not {conn!r}")
        loop = installed()
        if loop is None:
            raise RuntimeError(
                "call libvirt_twisted.install() before opening the connection to wrap"
            )
        if onClose is not None and not (callable(onClose) or isinstance(onClose, Deferred)):
            raise TypeError(f"onClose must be a callable or a Deferred, not {onClose!r}")
        self.virConnect = conn
        self.closeReason: int | None = None
        self._reactor = _calls._resolve(reactor)
        self._loop = loop
        self._onClose = onClose
        self._userClose: tuple[Callable[..., object], Any] | None = None
        self._fanOut = FanOut()
        self._inFlight = InFlight()
        self._delivery = Delivery(self._fanOut, self._reactor, hold=_holdQueues)
        self._waiters: list[Deferred[int]] = []
        self._closeWaiters: list[Deferred[int]] | None = None
        self._closeDone = False
        conn.registerCloseCallback(CloseDispatcher(self._libvirtClosed), None)
        if onDomainChange is not None:
            try:
                self.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, onDomainChange
                )
            except BaseException:
                _quietly(conn.unregisterCloseCallback)
                raise

    @classmethod
    def open(
        cls,
        uri: str,
        readOnly: bool = False,
        auth: list[Any] | None = None,
        onClose: Callable[[LibvirtConnection, int], object] | Deferred[int] | None = None,
        onDomainChange: Callback | None = None,
        reactor: Any = None,
    ) -> Deferred[LibvirtConnection]:
        """
        Open C{uri} and wrap it, both off the reactor thread (each is a
        round trip to a remote daemon).
        """

        def openAndWrap() -> LibvirtConnection:
            conn = openURI(uri, readOnly, auth)
            try:
                return cls(conn, onClose, onDomainChange, reactor)
            except BaseException:
                _quietly(conn.close)
                raise

        return _calls.callInThread(reactor, openAndWrap)

    def __repr__(self) -> str:
        state = "closed" if self.closeReason is not None else "open"
        return f"<LibvirtConnection {state} callbacks={len(self._fanOut)}>"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.virConnect, name)

    def registerCloseCallback(self, cb: Callable[..., object], opaque: Any = None) -> int:
        """
        Like virConnect's: one close callback, called C{(connection, reason,
        opaque)} once the connection closed, after the teardown.
        """
        if not callable(cb):
            raise TypeError(f"close callback {cb!r} is not callable")
        if self._userClose is not None:
            raise ValueError("a close callback is already registered on this connection")
        self._userClose = (cb, opaque)
        return 0

    def unregisterCloseCallback(self) -> None:
        if self._userClose is None:
            raise ValueError("no close callback is registered on this connection")
        self._userClose = None

    # Lifetime.

    @property
    def inThread(self) -> _calls.InThread:
        """
        This connection's methods (its own registrations included), run on
        the libvirt call pool, returning Deferreds.
        """
        return _WrapperInThread(self, self._reactor)

    def whenClosed(self) -> Deferred[int]:
        """A Deferred that fires with the close reason once the teardown is done."""
        if self.closeReason is not None:
            return succeed(self.closeReason)
        waiter: Deferred[int] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def close(self) -> Deferred[int]:
        """
        Close the connection, off the reactor thread, with the same teardown
        as a lost one.  The Deferred fires with the close reason
        (C{VIR_CONNECT_CLOSE_REASON_CLIENT} unless the connection was lost
        before) once libvirt has freed what the connection had registered with
        the event loop.
        """
        if self._closeDone:
            assert self.closeReason is not None
            return succeed(self.closeReason)
        waiter: Deferred[int] = Deferred()
        if self._closeWaiters is not None:
            self._closeWaiters.append(waiter)
            return waiter
        self._closeWaiters = [waiter]
        subscribers, entries = self._fanOut.clear(close=True)
        _forget(subscribers)

        def closed(_: object) -> None:
            self._finish(CLOSE_REASON_CLIENT)
            assert self.closeReason is not None
            assert self._closeWaiters is not None
            waiters, self._closeWaiters = self._closeWaiters, []
            self._closeDone = True
            for each in waiters:
                each.callback(self.closeReason)

        done = _calls.callInThread(self._reactor, self._closeNow, entries)
        done.addErrback(lambda f: self.log.failure("closing {conn!r} failed", f, conn=self))
        done.addCallback(lambda _: self._loop.drain())
        done.addCallback(closed)
        return waiter

    def _closeNow(self, entries: list[Entry] | None = None) -> None:
        """
        Deregister everything (or C{entries}, already taken from the fan-out)
        and close the virConnect, blocking: on the call pool, or in the thread
        that is still building the connection.
        """
        if entries is None:
            subscribers, entries = self._fanOut.clear(close=True)
            _forget(subscribers)
        self._inFlight.close()
        self._deregisterAll(entries, quiet=True)
        _quietly(self.virConnect.unregisterCloseCallback)
        _quietly(self.virConnect.close)

    # Delivery.

    def _deliver(self, key: Key, args: tuple[Any, ...]) -> None:
        """libvirt's dispatch of one event: call or queue every subscriber of C{key}."""
        if not onReactorThread():
            self._reactor.callFromThread(self._deliver, key, args)
            return
        self._delivery.deliver(self, key, args)

    def _enqueue(self, queue: DeferredQueue[Any], item: object) -> None:
        """Put C{item} in C{queue} on the next reactor turn, in order with events."""
        self._delivery.enqueue(queue, item)

    def _release(self, first: list[tuple[DeferredQueue[Any], object]]) -> None:
        """Start delivering to queues (held since wrapping), C{first} before the rest."""
        self._delivery.release(first)

    # Closing.

    def _libvirtClosed(self, reason: int) -> None:
        """libvirt's close callback: any thread, inside libvirt's dispatch."""
        if onReactorThread():
            self._reactor.callLater(0, self._lost, reason)
        else:
            self._reactor.callFromThread(self._lost, reason)

    def _lost(self, reason: int) -> None:
        """Tear down a connection that libvirt closed, outside its dispatch."""
        if self._fanOut.closed:
            return
        subscribers, entries = self._fanOut.clear(close=True)
        _forget(subscribers)
        self.log.info("libvirt connection closed: {reason}", reason=closeReasonName(reason))
        if not self._inFlight.enter():
            return  # closing has begun, and tears it all down
        done = self._inBackground("tearing down", entries, last=True)
        done.addCallback(lambda _: self._finish(reason))

    def _finish(self, reason: int) -> None:
        """Record the reason and tell everyone who asked; only the first time counts."""
        if self.closeReason is not None:
            return
        self.closeReason = reason
        onClose, self._onClose = self._onClose, None
        userClose, self._userClose = self._userClose, None
        if isinstance(onClose, Deferred):
            onClose.callback(reason)
        elif onClose is not None:
            _safely(onClose, self, reason)
        if userClose is not None:
            _safely(userClose[0], self, reason, userClose[1])
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(reason)


class _WrapperInThread(_calls.InThread):
    """
    A wrapper's methods on the call pool, except those that already return
    Deferreds and must stay on the reactor thread.
    """

    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        if name in ("close", "whenClosed"):
            method: Callable[..., Deferred[Any]] = getattr(self._target, name)
            return method
        return super().__getattr__(name)


def _safely(function: Callable[..., object], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        LibvirtConnection.log.failure("close callback {callback!r} raised", callback=function)
