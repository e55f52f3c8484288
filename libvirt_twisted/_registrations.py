"""
A connection's event registrations with libvirt: one libvirt registration
per event and object, shared by any number of listeners, each deregistered
when it leaves; and no libvirt call on the virConnect once closing has begun.

L{LibvirtConnection} holds one L{Registrations} and forwards its
C{*EventRegisterAny} methods to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.logger import Logger

from . import _families
from ._callgate import CallGate
from ._debug import timed
from ._delivery import Dispatcher, Target, weakDelivery
from ._eventloop import EventLoop
from ._queue import EventQueue
from ._reactor import ThreadsReactor
from ._registry import Key, Listener, Registration, Registry, RegistryClosed
from ._threads import deferToLibvirtPool
from .events import checkEventID

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])


class UnknownCallbackError(ValueError):
    """No registration of that kind with that id on this connection."""


class ConnectionClosedError(RuntimeError):
    """The connection is closed: nothing can be registered on it any more."""


class Registrations:
    """
    Registering may happen on any thread: the L{Registry} is updated under
    its lock, libvirt is called with no lock held, and every such call
    passes through the L{CallGate} that closing shuts and waits on.

    @param virConnect: the connection to register on.
    @param deliver: where libvirt's dispatch of an event for a key goes; a
        bound method, held weakly (libvirt keeps its callbacks alive from C,
        where the garbage collector cannot see a cycle).
    @param reactor: whose call pool runs deregistrations in the background.
    @param loop: the event loop; in its debug mode, a registration or
        deregistration that blocks the reactor thread too long is logged.
    @param uri: the connection's URI as logs may show it (password masked).
    """

    def __init__(
        self,
        virConnect: libvirt.virConnect,
        deliver: Callable[[Key, tuple[Any, ...]], None],
        reactor: ThreadsReactor,
        loop: EventLoop | None = None,
        uri: str = "",
    ) -> None:
        self._virConnect = virConnect
        self._loop = loop
        self._uri = uri
        # Weakly, as the dispatchers libvirt holds do: no cycle through the connection.
        self._deliverTo = weakDelivery(deliver)
        self._reactor = reactor
        self._registry = Registry()
        self._gate = CallGate()

    def __len__(self) -> int:
        return len(self._registry)

    @property
    def shut(self) -> bool:
        """Whether closing has begun: no listener is taken any more."""
        return self._registry.closed

    def listenersOf(self, key: Key) -> tuple[Listener, ...]:
        """The listeners of C{key} right now."""
        return self._registry.listenersOf(key)

    def tracked(self) -> list[tuple[str, int, int]]:
        """(family, event id, listener id) of every listener."""
        return self._registry.tracked()

    def parked(self) -> tuple[str, int, str | None] | None:
        """The key libvirt keeps registered with no listener, if any."""
        return self._registry.parked()

    def subscribe(
        self, familyName: str, obj: Any, eventID: int, target: Target, opaque: Any
    ) -> int:
        """Add a listener; any thread (a round trip when first of its key)."""
        subscribe = self._timed(_families.family(familyName).register, self._subscribe)
        return subscribe(familyName, obj, eventID, target, opaque)

    def _timed(self, name: str, function: F) -> F:
        """C{function} (a round trip for C{name}), timed in the loop's debug mode."""
        loop = self._loop
        if loop is None or loop.slowCallThreshold is None:
            return function
        return timed(function, name, loop.slowCallThreshold, loop.onReactorThread, self._uri)

    def _subscribe(
        self, familyName: str, obj: Any, eventID: int, target: Target, opaque: Any
    ) -> int:
        family = _families.family(familyName)
        checkEventID(family.name, eventID)
        checkCallback(target)
        if obj is not None and not isinstance(obj, family.objectType):
            raise TypeError(
                f"{family.name} events filter on a {family.objectType.__name__}, not {obj!r}"
            )
        key: Key = (family.name, eventID, None if obj is None else family.keyOf(obj))
        if not self._gate.enter():
            raise _closed()
        try:
            try:
                listener, registration, fresh = self._registry.add(key, target, opaque)
            except RegistryClosed:
                raise _closed() from None
            if fresh:
                self._register(registration, obj, eventID)
            else:
                self._joined(registration, listener)
        finally:
            self._gate.leave()
        listenerId = listener.id
        if isinstance(target, EventQueue):
            listener.forget = target.registered(
                lambda: self.unsubscribe(family.name, listenerId, missingOK=True, background=True)
            )
            if not self._registry.tracks(listenerId):
                _forget([listener])  # the connection closed meanwhile
        return listenerId

    def unsubscribe(
        self,
        familyName: str | None,
        listenerId: int,
        missingOK: bool = False,
        background: bool = False,
    ) -> Deferred[None]:
        """
        Forget a listener (of C{familyName}, unless C{None}); deregister from
        libvirt if it was the last of its key, here or (C{background}) on
        the call pool.  The Deferred fires once libvirt has been told.
        """
        # Once closing has begun the registry is empty, and closing frees
        # whatever libvirt still holds.
        entered = self._gate.enter()
        try:
            listener, registration = self._registry.remove(listenerId, familyName)
        except KeyError:
            if entered:
                self._gate.leave()
            if missingOK:
                return succeed(None)
            kind = f"{familyName} event" if familyName else "event"
            raise UnknownCallbackError(
                f"no {kind} callback with id {listenerId!r} on this connection"
            ) from None
        _forget([listener])
        if not entered:
            return succeed(None)
        if registration is None or registration.libvirtId is None:
            self._gate.leave()
        elif background:
            return self._inBackground(registration)
        else:
            family = _families.family(registration.key[0])
            try:
                deregister = self._timed(family.deregister, self._libvirtDeregister)
                deregister(registration, self._registry.closed)
            finally:
                self._gate.leave()
        return succeed(None)

    def deregisterAll(self) -> None:
        """
        Deregister every listener.  Should libvirt refuse some, the rest
        still go, and the first refusal is raised.
        """
        if not self._gate.enter():
            return  # closing, which deregisters everything
        try:
            listeners, registrations = self._registry.clear()
            _forget(listeners)
            deregisterAll = self._timed("deregisterCallbacks", self._deregisterAll)
            deregisterAll(registrations, self._registry.closed)
        finally:
            self._gate.leave()

    def shutDown(self) -> list[Registration]:
        """
        Closing begins: refuse new listeners and forget the present ones.
        Returns what libvirt still holds, for L{release}.
        """
        listeners, registrations = self._registry.clear(close=True)
        _forget(listeners)
        return registrations

    def release(self, registrations: list[Registration]) -> None:
        """
        Blocking, off the reactor thread: wait for the libvirt calls under
        way (running those still queued for the pool), then deregister
        C{registrations}, quietly: a lost connection refuses but frees.
        """
        self._gate.close()
        self._deregisterAll(registrations, quiet=True)

    # The libvirt side.

    def _register(self, registration: Registration, obj: Any, eventID: int) -> None:
        """
        The libvirt half of a key's first listener, no lock held, inside
        the gate: the virConnect must not close under it.
        """
        family = _families.family(registration.key[0])
        register = getattr(self._virConnect, family.register)
        try:
            predecessor, registration.predecessor = registration.predecessor, None
            if predecessor is not None:
                # libvirt refuses a key it still holds for listeners gone.
                predecessor.departure.wait()
            dispatcher = Dispatcher(*self._deliverTo, registration.key)
            libvirtId = register(obj, eventID, dispatcher, None)
        except BaseException as e:
            _forget(self._registry.abandon(registration, e))
            raise
        live, unparked = self._registry.registered(registration, libvirtId)
        if unparked is not None and unparked.libvirtId is not None:
            self._unparked(unparked)
        if not live:
            # Closed, or left by its listeners, while libvirt registered
            # it; whoever took it saw no id, and deregisters nothing.
            try:
                self._deregisterId(family.name, libvirtId, quiet=True)
            finally:
                self._registry.departed(registration)
            if self._registry.closed:
                raise ConnectionClosedError("the connection closed while registering")

    def _unparked(self, registration: Registration) -> None:
        """
        Another key holds now: deregister the parked registration in the
        background.  If closing has begun meanwhile, it no longer sees this
        registration, so deregister it here: the caller is still inside the
        gate, which closing waits for.
        """
        if self._gate.enter():
            self._inBackground(registration)
        else:
            self._deregisterAll([registration], quiet=True)

    def _joined(self, registration: Registration, listener: Listener) -> None:
        """
        A listener joined a registration that may still be under way in
        another thread: it holds once that one does, and fails as it fails.
        """
        registration.settled.wait()
        if registration.error is not None:
            raise _again(registration.error)
        if self._registry.closed and not self._registry.tracks(listener.id):
            raise ConnectionClosedError("the connection closed while registering")

    def _inBackground(self, registration: Registration) -> Deferred[None]:
        """
        Deregister C{registration} on the call pool, as one call inside the
        gate (the caller has entered): closing waits for it, or runs it
        itself if no pool thread has yet, and so may the key's next
        registrant.
        """
        run = self._gate.later(lambda: self._deregisterAll([registration], quiet=True))
        registration.departure.offer(run)
        d = deferToLibvirtPool(self._reactor, run)
        d.addErrback(lambda f: log.failure("deregistering in the background failed", f))
        return d

    def _deregisterAll(self, registrations: list[Registration], quiet: bool) -> None:
        """
        Deregister left registrations, every one even if some fail (a
        waiting registrant must not wait for ever); raise the first failure.
        """
        failure: Exception | None = None
        for registration in registrations:
            try:
                self._libvirtDeregister(registration, quiet)
            except Exception as e:
                failure = failure or e
        if failure is not None:
            raise failure

    def _libvirtDeregister(self, registration: Registration, quiet: bool) -> None:
        """Deregister a left registration (one still registering is its registrant's to undo)."""
        if registration.libvirtId is not None:
            try:
                self._deregisterId(registration.key[0], registration.libvirtId, quiet)
            finally:
                self._registry.departed(registration)

    def _deregisterId(self, familyName: str, libvirtId: int, quiet: bool) -> None:
        deregister = getattr(self._virConnect, _families.family(familyName).deregister)
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


def quietly(function: Callable[[], object]) -> None:
    """Call C{function}; a lost connection makes libvirt refuse, and that is fine."""
    with contextlib.suppress(libvirt.libvirtError):
        function()


def _closed() -> ConnectionClosedError:
    return ConnectionClosedError("cannot register on this connection: it is closed")


def _forget(listeners: list[Listener]) -> None:
    """Drop the queues' hooks for listeners that are gone (and the cycles they make)."""
    for listener in listeners:
        forget, listener.forget = listener.forget, None
        if forget is not None:
            forget()


def _again(error: BaseException) -> BaseException:
    """
    The error of a registration, to raise in a listener that joined it:
    a copy, since the registrant's thread raises the original.
    """
    if isinstance(error, libvirt.libvirtError):
        copy = libvirt.libvirtError(str(error))
        copy.args, copy.err = error.args, error.err
        return copy
    again = RuntimeError(f"the registration this listener joined failed: {error!r}")
    again.__cause__ = error
    return again
