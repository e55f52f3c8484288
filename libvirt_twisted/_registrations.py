"""
Tracked event registration, the half of L{LibvirtConnection} that talks to
libvirt about events: one libvirt registration per event and object, fanned
out to any number of subscribers, each deregistered when it leaves; and no
libvirt call on the virConnect while closing it.

@see: C{_connection.py} for the other half: the connection's lifetime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import libvirt
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.logger import Logger

from . import _calls
from ._fanout import FAMILIES, Dispatcher, Entry, FanOut, FanOutClosed, Key, Subscriber
from ._inflight import InFlight
from ._queue import EventQueue
from .events import checkEventID

Callback = Callable[..., object] | DeferredQueue[Any]


class UnknownCallbackError(ValueError):
    """No registration of that kind with that id on this connection."""


class ConnectionClosedError(RuntimeError):
    """The connection is closed: nothing can be registered on it any more."""


class Registrations:
    """
    The C{*EventRegisterAny} / C{*EventDeregisterAny} methods, with
    virConnect's names and signatures, for L{LibvirtConnection} to inherit.
    Each registration returns an id of the wrapper's (several subscribers
    may share one libvirt registration) for the matching deregistration.

    Registering may happen on any thread: L{FanOut} is updated under its
    lock, libvirt is called with no lock held, and L{InFlight} counts every
    such call so that closing waits for them.
    """

    log: Logger
    virConnect: libvirt.virConnect
    _reactor: Any
    _fanOut: FanOut
    _inFlight: InFlight

    def _deliver(self, key: Key, args: tuple[Any, ...]) -> None:
        """libvirt's dispatch of one event for C{key}: the connection's to define."""
        raise NotImplementedError

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
        """
        Every live registration made through the wrapper: (family, event id,
        id), from the moment its round trip to libvirt starts.
        """
        return self._fanOut.tracked()

    def deregisterCallbacks(self) -> None:
        """
        Deregister everything registered through the *EventRegisterAny
        methods.  Should libvirt refuse some, the rest still go, and the
        first refusal is raised.
        """
        if not self._inFlight.enter():
            return  # closing, which deregisters everything
        try:
            subscribers, entries = self._fanOut.clear()
            _forget(subscribers)
            self._deregisterAll(entries, quiet=self._fanOut.closed)
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

    # The machinery.

    def _subscribe(self, family: str, obj: Any, eventID: int, cb: Callback, opaque: Any) -> int:
        """Register C{cb}; any thread (a round trip when first of its key)."""
        spec = FAMILIES[family]
        checkEventID(family, eventID)
        checkCallback(cb)
        queue = cb if isinstance(cb, DeferredQueue) else None
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
            predecessor, entry.predecessor = entry.predecessor, None
            if predecessor is not None:
                # libvirt refuses a key it still holds for subscribers gone.
                predecessor.departure.wait()
            libvirtId = register(obj, eventID, Dispatcher(self._deliver, entry.key), None)
        except BaseException as e:
            _forget(self._fanOut.abandon(entry, e))
            raise
        if not self._fanOut.registered(entry, libvirtId):
            # Closed, or left by its subscribers, while libvirt registered
            # it; whoever took the entry saw no id, and deregisters nothing.
            try:
                self._deregisterId(entry.key[0], libvirtId, quiet=True)
            finally:
                self._fanOut.departed(entry)
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
        try:
            subscriber, entry = self._fanOut.remove(callbackID, family)
        except KeyError:
            if entered:
                self._inFlight.leave()
            if missingOK:
                return
            raise UnknownCallbackError(
                f"no {family} event callback with id {callbackID!r} on {self!r}"
            ) from None
        _forget([subscriber])
        if not entered:
            return
        if entry is None or entry.libvirtId is None:
            self._inFlight.leave()
        elif background:
            self._inBackground("deregistering on", [entry])
        else:
            try:
                self._libvirtDeregister(entry, quiet=self._fanOut.closed)
            finally:
                self._inFlight.leave()

    def _inBackground(self, what: str, entries: list[Entry], last: bool = False) -> Deferred[None]:
        """
        Deregister C{entries} (and with C{last} the close callback) on the
        call pool, as one call counted in flight (the caller has entered):
        closing waits for it, or runs it itself if no pool thread has yet.
        """

        def deregister() -> None:
            self._deregisterAll(entries, quiet=True)
            if last:
                _quietly(self.virConnect.unregisterCloseCallback)

        run = self._inFlight.later(deregister)
        for entry in entries:
            entry.departure.offer(run)
        d = _calls.callInThread(self._reactor, run)
        d.addErrback(lambda f: self.log.failure("{what} {conn!r} failed", f, what=what, conn=self))
        return d

    def _deregisterAll(self, entries: list[Entry], quiet: bool) -> None:
        """
        Deregister left entries, every one even if some fail (a waiting
        registrant must not wait for ever); raise the first failure.
        """
        failure: Exception | None = None
        for entry in entries:
            try:
                self._libvirtDeregister(entry, quiet)
            except Exception as e:
                failure = failure or e
        if failure is not None:
            raise failure

    def _libvirtDeregister(self, entry: Entry, quiet: bool) -> None:
        """Deregister a left entry (one still registering is its registrant's to undo)."""
        if entry.libvirtId is not None:
            try:
                self._deregisterId(entry.key[0], entry.libvirtId, quiet)
            finally:
                self._fanOut.departed(entry)

    def _deregisterId(self, family: str, libvirtId: int, quiet: bool) -> None:
        deregister = getattr(self.virConnect, FAMILIES[family].deregister)
        try:
            deregister(libvirtId)
        except libvirt.libvirtError:
            # A lost connection refuses the round trip but frees its side.
            if not quiet:
                raise


def checkCallback(callback: object) -> None:
    """Refuse what cannot receive events: a non-callable, a finished queue."""
    if not (callable(callback) or isinstance(callback, DeferredQueue)):
        raise TypeError(f"the callback must be a callable or a DeferredQueue, not {callback!r}")
    if isinstance(callback, EventQueue) and callback.finished:
        raise ValueError(f"{callback!r} is finished: it receives no more events")


def _forget(subscribers: list[Subscriber]) -> None:
    """Drop the queues' hooks for subscribers that are gone (and the cycles they make)."""
    for subscriber in subscribers:
        forget, subscriber.forget = subscriber.forget, None
        if forget is not None:
            forget()


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


def _quietly(function: Callable[[], object]) -> None:
    """Call C{function}; a lost connection makes libvirt refuse, and that is fine."""
    with contextlib.suppress(libvirt.libvirtError):
        function()
