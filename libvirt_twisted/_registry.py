"""
A connection's event listeners, grouped by the libvirt registration they
share.

libvirt accepts one registration per (event id, object) on a connection:
libvirt-python hands it the same C function for every registration of an
event id, and libvirt rejects the duplicate.  L{Registry} keeps one
L{Registration} per key, with every L{Listener} of it, each with an id of
its own, and tracks each registration from its round trip to libvirt until
libvirt has let go of it (its L{Departure}).

While the connection is open, its last libvirt registration never goes: when
its listeners have all left it stays with libvirt, I{parked}, its events
dropped, until a listener of the same key reuses it or another key holds.
libvirt (seen with 9.0) can otherwise strand the connection's event queue:
an event queued just as the last registration goes leaves the queue with no
armed timer for as long as registrations come and go, and nothing is
delivered any more (C{docs/libvirtd_event_race.py --raw}).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.defer import DeferredQueue

#: (family, event id, object filter): what libvirt knows one registration by.
Key = tuple[str, int, str | None]


@dataclass(eq=False)
class Listener:
    """One callable or queue registered through the wrapper, and its id there."""

    id: int
    key: Key
    target: Callable[..., object] | DeferredQueue[Any]
    opaque: Any
    forget: Callable[[], None] | None = None


class Departure:
    """
    When libvirt lets go of a registration whose listeners have all left.
    Until then libvirt refuses a new registration of the same key, so the
    next registrant of the key waits; if the deregistration is still only
    queued for the call pool, the waiter runs it itself rather than wait
    for a pool thread that it may be holding.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._done = False
        self._job: Callable[[], None] | None = None

    def offer(self, job: Callable[[], None]) -> None:
        """C{job} deregisters, once, from whichever thread calls it first."""
        with self._condition:
            if not self._done:
                self._job = job
                self._condition.notify_all()

    def done(self) -> None:
        """libvirt holds the registration no more."""
        with self._condition:
            self._done = True
            self._job = None
            self._condition.notify_all()

    def wait(self) -> None:
        """Block until L{done}, running an offered job here if it is still waiting."""
        while True:
            with self._condition:
                while not self._done and self._job is None:
                    self._condition.wait()
                job, self._job = self._job, None
                if self._done or job is None:
                    return
            job()


@dataclass(eq=False)
class Registration:
    """
    One registration with libvirt, shared by its listeners.  C{settled}
    is set once libvirt has answered it: with C{libvirtId}, or with
    C{error}, which every listener that joined meanwhile gets too.  Once
    its listeners have gone, C{departure} tells when libvirt has let go of
    it; C{predecessor} is the registration of the same key that was leaving
    when this one came, which must be gone before this one registers.
    """

    key: Key
    libvirtId: int | None = None
    listeners: dict[int, Listener] = field(default_factory=dict)
    settled: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    departure: Departure = field(default_factory=Departure)
    predecessor: Registration | None = None


class RegistryClosed(Exception):
    """The connection closed: it takes no more listeners."""


class Registry:
    """
    The listeners of one connection, by key and by id.  Mutations and
    snapshots hold a small lock, never across a libvirt call: libvirt may
    deliver from any thread, and registrations run on the call pool.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._registrations: dict[Key, Registration] = {}
        self._leaving: dict[Key, Registration] = {}
        self._listeners: dict[int, Listener] = {}
        self._parked: Registration | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._listeners)

    def add(
        self, key: Key, target: Callable[..., object] | DeferredQueue[Any], opaque: Any
    ) -> tuple[Listener, Registration, bool]:
        """
        Record a listener; return it, its registration, and whether it is the
        first of its key, in which case the caller must register with
        libvirt and then call L{registered} or L{abandon}.  A later
        listener waits for C{registration.settled} before counting on it.

        @raise RegistryClosed: the connection closed.
        """
        with self._lock:
            if self.closed:
                raise RegistryClosed()
            listener = Listener(next(self._ids), key, target, opaque)
            registration = self._registrations.get(key)
            fresh = registration is None
            if registration is None:
                registration = Registration(key, predecessor=self._leaving.get(key))
                self._registrations[key] = registration
            elif registration is self._parked:
                self._parked = None  # reused: libvirt has it already
            registration.listeners[listener.id] = listener
            self._listeners[listener.id] = listener
        return listener, registration, fresh

    def registered(
        self, registration: Registration, libvirtId: int
    ) -> tuple[bool, Registration | None]:
        """
        Record libvirt's id for C{registration}.  Returns whether it is
        still there (if it went meanwhile, its listeners gone or the
        connection closed, the caller must deregister C{libvirtId} itself and
        call L{departed}), and the parked registration of another key that
        may go now that this one holds (the caller deregisters it, as after
        L{remove}, if it has a libvirt id; otherwise its own registrant will).
        """
        unparked = None
        with self._lock:
            live = self._registrations.get(registration.key) is registration
            if live:
                registration.libvirtId = libvirtId
                parked = self._parked
                if parked is not None and parked is not registration and not self.closed:
                    unparked = self._unpark()
        registration.settled.set()
        return live, unparked

    def abandon(self, registration: Registration, error: BaseException) -> list[Listener]:
        """
        libvirt refused C{registration} with C{error}: forget it and its
        listeners, each of which gets the error.
        """
        with self._lock:
            if self._registrations.get(registration.key) is registration:
                del self._registrations[registration.key]
            if self._parked is registration:
                self._parked = None
            for listenerId in registration.listeners:
                self._listeners.pop(listenerId, None)
            listeners = list(registration.listeners.values())
        registration.error = error
        registration.settled.set()
        self.departed(registration)
        return listeners

    def remove(
        self, listenerId: int, family: str | None = None
    ) -> tuple[Listener, Registration | None]:
        """
        Forget a listener; also return its registration if it was the last
        of its key, in which case the caller must deregister from libvirt
        and call L{departed} (when the registration has a libvirt id:
        otherwise its round trip is under way, and its registrant will find
        it gone and do both).

        @raise KeyError: no such listener (of C{family}, when given).
        """
        with self._lock:
            listener = self._listeners.get(listenerId)
            if listener is None or family not in (None, listener.key[0]):
                raise KeyError(listenerId)
            del self._listeners[listenerId]
            registration = self._registrations[listener.key]
            del registration.listeners[listenerId]
            if registration.listeners:
                return listener, None
            if self._isLast(registration):
                if self._parked is not None:
                    self._unpark()  # one still registering: its registrant undoes it
                self._parked = registration
                return listener, None
            del self._registrations[listener.key]
            self._leaving[listener.key] = registration
            return listener, registration

    def clear(self, close: bool = False) -> tuple[list[Listener], list[Registration]]:
        """
        Forget every listener, and with C{close} refuse new ones; return
        what went.  The caller deregisters the registrations, as after
        L{remove}.  Unless closing, one registration that libvirt holds
        stays, parked.
        """
        with self._lock:
            self.closed = self.closed or close
            listeners = list(self._listeners.values())
            registrations = list(self._registrations.values())
            self._listeners.clear()
            self._registrations.clear()
            held = [r for r in registrations if r.libvirtId is not None]
            keep = None
            if held and not self.closed:
                keep = self._parked if self._parked in held else held[-1]
            self._parked = keep
            going = []
            for registration in registrations:
                # The caller has them; a leaving registration holds none.
                registration.listeners = {}
                if registration is keep:
                    self._registrations[registration.key] = registration
                else:
                    self._leaving[registration.key] = registration
                    going.append(registration)
        return listeners, going

    def departed(self, registration: Registration) -> None:
        """libvirt no longer holds C{registration}: its key is free."""
        with self._lock:
            if self._leaving.get(registration.key) is registration:
                del self._leaving[registration.key]
        registration.departure.done()

    def tracks(self, listenerId: int) -> bool:
        """Whether C{listenerId} is a live listener."""
        with self._lock:
            return listenerId in self._listeners

    def tracked(self) -> list[tuple[str, int, int]]:
        """(family, event id, listener id) of every listener."""
        with self._lock:
            return sorted((each.key[0], each.key[1], each.id) for each in self._listeners.values())

    def parked(self) -> Key | None:
        """The key of the registration libvirt keeps with no listener, if any."""
        with self._lock:
            return self._parked.key if self._parked is not None else None

    def _isLast(self, registration: Registration) -> bool:
        """Whether C{registration} is the one libvirt would be left without (lock held)."""
        if self.closed:
            return False
        return not any(
            other.libvirtId is not None
            for other in self._registrations.values()
            if other is not registration
        )

    def _unpark(self) -> Registration:
        """The parked registration goes: it is leaving (lock held)."""
        parked = self._parked
        assert parked is not None
        self._parked = None
        del self._registrations[parked.key]
        self._leaving[parked.key] = parked
        return parked

    def listenersOf(self, key: Key) -> tuple[Listener, ...]:
        """The listeners of C{key} right now."""
        with self._lock:
            registration = self._registrations.get(key)
            return tuple(registration.listeners.values()) if registration is not None else ()
