"""
LibvirtConnection: one libvirt connection's lifetime, in Twisted terms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import libvirt
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.logger import Logger

from . import _calls
from ._fanout import (
    FAMILIES,
    CloseDispatcher,
    Delivery,
    Dispatcher,
    Entry,
    FanOut,
    FanOutClosed,
    Key,
    Subscriber,
)
from ._inflight import InFlight
from ._install import installed
from ._queue import EventQueue
from ._reactor import onReactorThread
from ._uri import openURI
from .events import checkEventID, closeReasonName

CLOSE_REASON_CLIENT: int = libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT

Callback = Callable[..., object] | DeferredQueue[Any]


class UnknownCallbackError(ValueError):
    """No registration of that kind with that id on this connection."""


class ConnectionClosedError(RuntimeError):
    """The connection is closed: nothing can be registered on it any more."""


class LibvirtConnection:
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

    # Tracked registration, with virConnect's names and signatures.  Each
    # returns an id of this wrapper's (several subscribers may share one
    # libvirt registration), for the matching *EventDeregisterAny.

    def domainEventRegisterAny(
        self, dom: libvirt.virDomain | None, eventID: int, cb: Callback, opaque: Any = None
    ) -> int:
        return self._subscribe("domain", dom, eventID, cb, opaque)

    def networkEventRegisterAny(
        self, net: libvirt.virNetwork | None, eventID: int, cb: Callback, opaque: Any = None
    ) -> int:
        return self._subscribe("network", net, eventID, cb, opaque)

    def storagePoolEventRegisterAny(
        self, pool: libvirt.virStoragePool | None, eventID: int, cb: Callback, opaque: Any = None
    ) -> int:
        return self._subscribe("storage_pool", pool, eventID, cb, opaque)

    def nodeDeviceEventRegisterAny(
        self, dev: libvirt.virNodeDevice | None, eventID: int, cb: Callback, opaque: Any = None
    ) -> int:
        return self._subscribe("node_device", dev, eventID, cb, opaque)

    def secretEventRegisterAny(
        self, secret: libvirt.virSecret | None, eventID: int, cb: Callback, opaque: Any = None
    ) -> int:
        return self._subscribe("secret", secret, eventID, cb, opaque)

    def domainEventDeregisterAny(self, callbackID: int) -> None:
        self._unsubscribe("domain", callbackID)

    def networkEventDeregisterAny(self, callbackID: int) -> None:
        self._unsubscribe("network", callbackID)

    def storagePoolEventDeregisterAny(self, callbackID: int) -> None:
        self._unsubscribe("storage_pool", callbackID)

    def nodeDeviceEventDeregisterAny(self, callbackID: int) -> None:
        self._unsubscribe("node_device", callbackID)

    def secretEventDeregisterAny(self, callbackID: int) -> None:
        self._unsubscribe("secret", callbackID)

    def tracked(self) -> list[tuple[str, int, int]]:
        """Every live registration made through the wrapper: (family, event id, id)."""
        return self._fanOut.tracked()

    def deregisterCallbacks(self) -> None:
        """Deregister everything registered through the *EventRegisterAny methods."""
        if not self._inFlight.enter():
            return  # closing, which deregisters everything
        try:
            subscribers, entries = self._fanOut.clear()
            _forget(subscribers)
            for entry in entries:
                self._libvirtDeregister(entry, quiet=self._fanOut.closed)
        finally:
            self._inFlight.leave()

    def domainEventRegister(self, *args: object) -> None:
        raise NotImplementedError(
            "LibvirtConnection does not support the legacy domainEventRegister():"
            " pass onDomainChange to receive lifecycle events, or use"
            " domainEventRegisterAny()"
        )

    def domainEventDeregister(self, *args: object) -> None:
        raise NotImplementedError(
            "LibvirtConnection does not support the legacy domainEventDeregister():"
            " lifecycle callbacks come through onDomainChange"
        )

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
        for entry in entries:
            self._libvirtDeregister(entry, quiet=True)
        _quietly(self.virConnect.unregisterCloseCallback)
        _quietly(self.virConnect.close)

    # Registration internals.

    def _subscribe(self, family: str, obj: Any, eventID: int, cb: Callback, opaque: Any) -> int:
        """Register C{cb}; any thread (a round trip when first of its key)."""
        spec = FAMILIES[family]
        checkEventID(family, eventID)
        queue = cb if isinstance(cb, DeferredQueue) else None
        if queue is None and not callable(cb):
            raise TypeError(f"the callback must be a callable or a DeferredQueue, not {cb!r}")
        if isinstance(queue, EventQueue) and queue.finished:
            raise ValueError(f"{queue!r} is finished: it receives no more events")
        if obj is not None and not isinstance(obj, spec.objectType):
            raise TypeError(f"{family} events filter on a {spec.objectType.__name__}, not {obj!r}")
        key: Key = (family, eventID, None if obj is None else spec.objectKey(obj))
        callback = None if isinstance(cb, DeferredQueue) else cb
        if not self._inFlight.enter():
            raise ConnectionClosedError(f"cannot register on {self!r}: it is closed")
        try:
            try:
                subscriber, entry, fresh = self._fanOut.add(key, callback, queue, opaque)
            except FanOutClosed:
                raise ConnectionClosedError(f"cannot register on {self!r}: it is closed") from None
            if fresh:
                self._register(entry, obj, eventID)
            else:
                self._joined(entry, subscriber)
        finally:
            self._inFlight.leave()
        subscriberId = subscriber.id
        if isinstance(queue, EventQueue):
            subscriber.forget = queue.registered(
                lambda: self._unsubscribe(family, subscriberId, missingOK=True, background=True)
            )
            if not self._fanOut.tracks(subscriberId):
                _forget([subscriber])  # the connection closed meanwhile
        return subscriberId

    def _register(self, entry: Entry, obj: Any, eventID: int) -> None:
        """
        The libvirt half of a first subscription, no lock held, counted in
        flight: the virConnect must not close under it.
        """
        register = getattr(self.virConnect, FAMILIES[entry.key[0]].register)
        try:
            libvirtId = register(obj, eventID, Dispatcher(self._deliver, entry.key), None)
        except BaseException as e:
            _forget(self._fanOut.abandon(entry, e))
            raise
        if not self._fanOut.registered(entry, libvirtId):
            # Closed, or left by its subscribers, while libvirt registered it.
            entry.libvirtId = libvirtId
            self._libvirtDeregister(entry, quiet=True)
            if self._fanOut.closed:
                raise ConnectionClosedError(f"{self!r} closed while registering")

    def _joined(self, entry: Entry, subscriber: Subscriber) -> None:
        """
        A subscriber joined a registration that may still be under way in
        another thread: it holds once that one does, and fails as it fails.
        """
        entry.settled.wait()
        if entry.error is not None:
            raise _again(entry.error)
        if self._fanOut.closed and not self._fanOut.tracks(subscriber.id):
            raise ConnectionClosedError(f"{self!r} closed while registering")

    def _unsubscribe(
        self, family: str, callbackID: int, missingOK: bool = False, background: bool = False
    ) -> None:
        """
        Forget a subscriber; deregister from libvirt if it was the last of
        its key, here or (C{background}) on the call pool.
        """
        # Once closing has begun the fan-out is empty, and closing frees
        # whatever libvirt still holds.
        entered = self._inFlight.enter()
        leave = self._inFlight.leaveOnce() if entered else _nothing
        try:
            subscriber, entry = self._fanOut.remove(callbackID, family)
        except KeyError:
            leave()
            if missingOK:
                return
            raise UnknownCallbackError(
                f"no {family} event callback with id {callbackID!r} on {self!r}"
            ) from None
        _forget([subscriber])
        if entry is None or entry.libvirtId is None:
            leave()
        elif background:
            self._inBackground("deregistering", [entry], leave)
        else:
            try:
                self._libvirtDeregister(entry, quiet=self._fanOut.closed)
            finally:
                leave()

    def _inBackground(
        self, what: str, entries: list[Entry], leave: Callable[[], None], last: bool = False
    ) -> Deferred[None]:
        """
        Deregister C{entries} (and with C{last} the close callback) on the
        call pool, then C{leave}: closing waits for that.
        """

        def deregister() -> None:
            try:
                for entry in entries:
                    self._libvirtDeregister(entry, quiet=True)
                if last:
                    _quietly(self.virConnect.unregisterCloseCallback)
            finally:
                leave()

        def failed(failure: Any) -> None:
            leave()
            self.log.failure("{what} on {conn!r} failed", failure, what=what, conn=self)

        return _calls.callInThread(self._reactor, deregister).addErrback(failed)

    def _libvirtDeregister(self, entry: Entry, quiet: bool) -> None:
        if entry.libvirtId is None:
            return
        deregister = getattr(self.virConnect, FAMILIES[entry.key[0]].deregister)
        try:
            deregister(entry.libvirtId)
        except libvirt.libvirtError:
            # A lost connection refuses the round trip but frees its side.
            if not quiet:
                raise

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
        done = self._inBackground("tearing down", entries, self._inFlight.leaveOnce(), last=True)
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


def _forget(subscribers: list[Subscriber]) -> None:
    """Drop the queues' hooks for subscribers that are gone (and the cycles they make)."""
    for subscriber in subscribers:
        forget, subscriber.forget = subscriber.forget, None
        if forget is not None:
            forget()


def _safely(function: Callable[..., object], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        LibvirtConnection.log.failure("close callback {callback!r} raised", callback=function)


def _again(error: BaseException) -> BaseException:
    """
    The error of a registration, to raise in a subscriber that joined it:
    a copy, since the registrant's thread raises the original.
    """
    if isinstance(error, libvirt.libvirtError):
        copy = libvirt.libvirtError(str(error))
        copy.args, copy.err = error.args, error.err
        return copy
    again = RuntimeError(f"the registration this subscriber joined failed: {error!r}")
    again.__cause__ = error
    return again


def _nothing() -> None:
    pass


def _quietly(function: Callable[[], object]) -> None:
    """Call C{function}; a lost connection makes libvirt refuse, and that is fine."""
    with contextlib.suppress(libvirt.libvirtError):
        function()
