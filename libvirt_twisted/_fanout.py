"""
Several subscribers per libvirt event registration.

libvirt accepts one registration per (event id, object) on a connection:
libvirt-python hands it the same C function for every registration of an
event id, and libvirt rejects the duplicate.  L{FanOut} keeps one entry per
key, with every subscriber of it, each with an id of its own; L{Dispatcher}
and L{CloseDispatcher} are what libvirt calls; L{Delivery} hands each event
to the subscribers, callables at once and queues on the next reactor turn.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import libvirt
from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted.internet.defer import DeferredQueue

#: (family, event id, object filter): what libvirt knows one registration by.
Key = tuple[str, int, str | None]


@dataclass(frozen=True)
class Family:
    """How to register, deregister and filter one family of events."""

    name: str
    register: str
    deregister: str
    objectType: type
    objectKey: Callable[[Any], str]


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "domain",
            "domainEventRegisterAny",
            "domainEventDeregisterAny",
            libvirt.virDomain,
            lambda o: o.UUIDString(),
        ),
        Family(
            "network",
            "networkEventRegisterAny",
            "networkEventDeregisterAny",
            libvirt.virNetwork,
            lambda o: o.UUIDString(),
        ),
        Family(
            "storage_pool",
            "storagePoolEventRegisterAny",
            "storagePoolEventDeregisterAny",
            libvirt.virStoragePool,
            lambda o: o.UUIDString(),
        ),
        Family(
            "node_device",
            "nodeDeviceEventRegisterAny",
            "nodeDeviceEventDeregisterAny",
            libvirt.virNodeDevice,
            lambda o: o.name(),
        ),
        Family(
            "secret",
            "secretEventRegisterAny",
            "secretEventDeregisterAny",
            libvirt.virSecret,
            lambda o: o.UUIDString(),
        ),
    )
}


@dataclass(eq=False)
class Subscriber:
    """One registration made through the wrapper."""

    id: int
    key: Key
    callback: Callable[..., object] | None
    queue: DeferredQueue[Any] | None
    opaque: Any
    forget: Callable[[], None] | None = None


class Departure:
    """
    When libvirt lets go of a registration whose subscribers have all left.
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
class Entry:
    """
    One registration with libvirt, shared by its subscribers.  C{settled}
    is set once libvirt has answered its registration: with C{libvirtId},
    or with C{error}, which every subscriber that joined meanwhile gets too.
    Once its subscribers have gone, C{departure} tells when libvirt has let
    go of it; C{predecessor} is the entry of the same key that was leaving
    when this one came, which must be gone before this one registers.
    """

    key: Key
    libvirtId: int | None = None
    subscribers: dict[int, Subscriber] = field(default_factory=dict)
    settled: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    departure: Departure = field(default_factory=Departure)
    predecessor: Entry | None = None


class FanOutClosed(Exception):
    """The connection closed: it takes no more subscribers."""


class FanOut:
    """
    The subscriptions of one connection, by key and by id.  Mutations and
    snapshots hold a small lock, never across a libvirt call: libvirt may
    deliver from any thread, and registrations run on the call pool.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._entries: dict[Key, Entry] = {}
        self._leaving: dict[Key, Entry] = {}
        self._subscribers: dict[int, Subscriber] = {}
        self.closed = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def add(
        self, key: Key, callback: Callable[..., object] | None, queue: Any, opaque: Any
    ) -> tuple[Subscriber, Entry, bool]:
        """
        Record a subscriber; return it, its entry, and whether it is the
        first of its key, in which case the caller must register with
        libvirt and then call L{registered} or L{abandon}.  A later
        subscriber waits for C{entry.settled} before counting on it.

        @raise FanOutClosed: the connection closed.
        """
        with self._lock:
            if self.closed:
                raise FanOutClosed()
            subscriber = Subscriber(next(self._ids), key, callback, queue, opaque)
            entry = self._entries.get(key)
            fresh = entry is None
            if entry is None:
                entry = self._entries[key] = Entry(key, predecessor=self._leaving.get(key))
            entry.subscribers[subscriber.id] = subscriber
            self._subscribers[subscriber.id] = subscriber
        return subscriber, entry, fresh

    def registered(self, entry: Entry, libvirtId: int) -> bool:
        """
        Record libvirt's id for C{entry}; false if the entry went meanwhile
        (its subscribers left, or the connection closed), in which case the
        caller must deregister C{libvirtId} itself and call L{departed}.
        """
        with self._lock:
            live = self._entries.get(entry.key) is entry
            if live:
                entry.libvirtId = libvirtId
        entry.settled.set()
        return live

    def abandon(self, entry: Entry, error: BaseException) -> list[Subscriber]:
        """
        libvirt refused C{entry}'s registration with C{error}: forget the
        entry and its subscribers, each of which gets the error.
        """
        with self._lock:
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            for subscriberId in entry.subscribers:
                self._subscribers.pop(subscriberId, None)
            subscribers = list(entry.subscribers.values())
        entry.error = error
        entry.settled.set()
        self.departed(entry)
        return subscribers

    def remove(
        self, subscriberId: int, family: str | None = None
    ) -> tuple[Subscriber, Entry | None]:
        """
        Forget a subscriber; also return its entry if it was the last of its
        key, in which case the caller must deregister from libvirt and call
        L{departed} (when the entry has a libvirt id: otherwise its
        registration is under way and its registrant will find the entry
        gone, and do both).

        @raise KeyError: no such subscriber (of C{family}, when given).
        """
        with self._lock:
            subscriber = self._subscribers.get(subscriberId)
            if subscriber is None or family not in (None, subscriber.key[0]):
                raise KeyError(subscriberId)
            del self._subscribers[subscriberId]
            entry = self._entries[subscriber.key]
            del entry.subscribers[subscriberId]
            if entry.subscribers:
                return subscriber, None
            del self._entries[subscriber.key]
            self._leaving[subscriber.key] = entry
            return subscriber, entry

    def clear(self, close: bool = False) -> tuple[list[Subscriber], list[Entry]]:
        """
        Forget every subscriber, and with C{close} refuse new ones; return
        what went.  The caller deregisters the entries, as after L{remove}.
        """
        with self._lock:
            self.closed = self.closed or close
            subscribers = list(self._subscribers.values())
            entries = list(self._entries.values())
            self._subscribers.clear()
            self._entries.clear()
            for entry in entries:
                entry.subscribers = {}  # the caller has them; a leaving entry holds none
                self._leaving[entry.key] = entry
        return subscribers, entries

    def departed(self, entry: Entry) -> None:
        """libvirt no longer holds C{entry}'s registration: its key is free."""
        with self._lock:
            if self._leaving.get(entry.key) is entry:
                del self._leaving[entry.key]
        entry.departure.done()

    def tracks(self, subscriberId: int) -> bool:
        """Whether C{subscriberId} is a live subscriber."""
        with self._lock:
            return subscriberId in self._subscribers

    def tracked(self) -> list[tuple[str, int, int]]:
        """(family, event id, subscriber id) of every subscriber."""
        with self._lock:
            return sorted((s.key[0], s.key[1], s.id) for s in self._subscribers.values())

    def subscribersOf(self, key: Key) -> tuple[Subscriber, ...]:
        """The subscribers of C{key} right now."""
        with self._lock:
            entry = self._entries.get(key)
            return tuple(entry.subscribers.values()) if entry is not None else ()


class Delivery:
    """
    Hands a key's events to its subscribers: a callable at once, inside
    libvirt's dispatch as with libvirt itself; a queue on the next reactor
    turn, outside it, in order with everything else queued.  Queues can be
    held (a connection still being set up) until released.
    """

    log = Logger()

    def __init__(self, fanOut: FanOut, reactor: Any, hold: bool = False) -> None:
        self._fanOut = fanOut
        self._reactor = reactor
        self._holding = hold
        self._queued: list[tuple[DeferredQueue[Any], object]] = []

    def deliver(self, source: object, key: Key, args: tuple[Any, ...]) -> None:
        """One event for C{key}'s subscribers, as C{(source, *args, opaque)} (reactor thread)."""
        for subscriber in self._fanOut.subscribersOf(key):
            item = (source, *args, subscriber.opaque)
            if subscriber.queue is not None:
                self.enqueue(subscriber.queue, item)
                continue
            assert subscriber.callback is not None
            try:
                subscriber.callback(*item)
            except Exception:
                self.log.failure("event callback {callback!r} raised", callback=subscriber.callback)

    def enqueue(self, queue: DeferredQueue[Any], item: object) -> None:
        """Put C{item} in C{queue} on the next reactor turn, in order."""
        if not self._queued and not self._holding:
            self._reactor.callLater(0, self._putQueued)
        self._queued.append((queue, item))

    def release(self, first: list[tuple[DeferredQueue[Any], object]]) -> None:
        """Stop holding: deliver C{first}, then what was held."""
        self._queued[:0] = first
        self._holding = False
        if self._queued:
            self._reactor.callLater(0, self._putQueued)

    def _putQueued(self) -> None:
        queued, self._queued = self._queued, []
        for queue, item in queued:
            try:
                queue.put(item)
            except Exception:
                self.log.failure("could not queue an event for {queue!r}", queue=queue)


class Dispatcher:
    """
    The callback libvirt holds for one key.  It refers to the wrapper weakly:
    libvirt-python keeps callbacks alive from C, where the garbage collector
    cannot see the cycle.
    """

    def __init__(self, deliver: Callable[[Key, tuple[Any, ...]], None], key: Key) -> None:
        self._deliver = weakref.WeakMethod(deliver)
        self._key = key

    def __call__(self, virConnect: Any, *args: Any) -> None:
        deliver = self._deliver()
        if deliver is not None:
            # libvirt passes (connection, object, details..., opaque).
            deliver(self._key, args[:-1])


class CloseDispatcher:
    """The close callback libvirt holds; it refers to the wrapper weakly."""

    def __init__(self, closed: Callable[[int], None]) -> None:
        self._closed = weakref.WeakMethod(closed)

    def __call__(self, conn: Any, reason: int, opaque: Any) -> None:
        closed = self._closed()
        if closed is not None:
            closed(reason)
