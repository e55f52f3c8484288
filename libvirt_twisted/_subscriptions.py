"""
What a LibvirtService keeps subscribed across its connections, and which of
those subscriptions hold on the current one.

The service registers a L{Route} per subscription on each connection, never
the subscriber itself: the route hands the event to the service, which
decides whether the subscriber gets it now, later (the connection is still
being set up) or never (the subscription has ended).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import libvirt
from twisted.internet.defer import DeferredQueue
from twisted.logger import Logger

from . import _families
from ._connection import LibvirtConnection
from ._delivery import Listener
from ._queue import EventQueue
from ._reactor import ThreadsReactor
from ._registrations import ConnectionClosedError, UnknownCallbackError, checkCallback
from ._threads import deferToLibvirtPool
from .events import Event, checkEventID, eventIDs

log = Logger()

#: Where a route hands its events: (subscription, connection, arguments).
Sink = Callable[["Subscription", LibvirtConnection, tuple[Any, ...]], None]

#: What an attempt registered on its connection: subscription id -> listener id.
Registered = dict[int, int]


@dataclass(eq=False)
class Subscription:
    """
    One subscription's arguments, kept to register it on every connection.
    A C{decoded} one receives each event as one L{Event} (synthesized ones
    included) instead of the callback's arguments.
    """

    id: int
    family: _families.Family
    eventID: int
    target: Listener
    opaque: Any
    objectFilter: str | None
    decoded: bool = False
    route: Route = field(init=False)
    live: bool = True
    forget: Callable[[], None] | None = None

    @property
    def kind(self) -> str:
        """The kind of its events, C{domain.lifecycle}..."""
        return kindOf(self.family.name, self.eventID)


class Route:
    """
    The callable a service registers on a connection for one subscription.
    It receives what the connection delivers, C{(connection, object,
    details..., None)}, and hands it to the service's sink.
    """

    __slots__ = ("_sink", "_subscription")

    def __init__(self, subscription: Subscription, sink: Sink) -> None:
        self._subscription = subscription
        self._sink = sink

    def __repr__(self) -> str:
        return f"<Route to {self._subscription.target!r}>"

    def __call__(self, connection: LibvirtConnection, *args: Any) -> None:
        self._sink(self._subscription, connection, args[:-1])


class Subscriptions:
    """
    The subscriptions, by id, and the listener id each has on the current
    connection.  Registering is a round trip: it happens on the call pool,
    and what changed meanwhile is reconciled on the reactor thread.

    @param uri: the URI as logs may show it.
    @param scrub: hides the URI's password in error messages.
    @param sink: where every subscription's route hands its events.
    @param current: the service's current connection, if any.
    """

    def __init__(
        self,
        uri: str,
        scrub: Callable[[str], str],
        reactor: ThreadsReactor,
        sink: Sink,
        current: Callable[[], LibvirtConnection | None],
    ) -> None:
        self._uri = uri
        self._current = current
        self._scrub = scrub
        self._reactor = reactor
        self._sink = sink
        self._ids = itertools.count()
        self._all: dict[int, Subscription] = {}
        self._registered: Registered = {}

    def add(
        self,
        familyName: str,
        eventID: int,
        callback: Listener,
        opaque: Any,
        objectFilter: str | None,
        onFinish: Callable[[int], None],
        decoded: bool = False,
    ) -> Subscription:
        """
        Check and keep a subscription, and register it on the current
        connection if there is one; C{onFinish(id)} when its queue finishes.
        """
        family = _families.family(familyName)
        checkEventID(family.name, eventID)
        checkCallback(callback)
        if objectFilter is not None and not isinstance(objectFilter, str):
            raise TypeError(f"objectFilter is a UUID or name string, not {objectFilter!r}")
        subscription = Subscription(
            next(self._ids), family, eventID, callback, opaque, objectFilter, decoded
        )
        subscription.route = Route(subscription, self._sink)
        self._all[subscription.id] = subscription
        if isinstance(callback, EventQueue):
            subscriptionId = subscription.id
            subscription.forget = callback.registered(lambda: onFinish(subscriptionId))
        connection = self._current()
        if connection is not None:
            self.registerLater(connection, subscription)
        return subscription

    def remove(self, subscriptionId: int, connection: LibvirtConnection | None) -> bool:
        """Drop a subscription, and its registration on C{connection}; false if unknown."""
        subscription = self._all.pop(subscriptionId, None)
        if subscription is None:
            return False
        subscription.live = False
        forget, subscription.forget = subscription.forget, None
        if forget is not None:
            forget()
        listenerId = self._registered.pop(subscriptionId, None)
        if connection is not None and listenerId is not None:
            _unsubscribe(connection, listenerId)
        return True

    def holds(self, subscriptionId: int) -> bool:
        """Whether libvirt has accepted the subscription on the current connection."""
        return subscriptionId in self._registered

    def decodedFor(self, events: Iterable[Event]) -> list[tuple[Listener, Event]]:
        """
        Each of C{events} (synthesized) with each decoded subscriber of its
        kind and object, in order.
        """
        decoded = [s for s in self._all.values() if s.decoded]
        return [
            (subscription.target, event)
            for event in events
            for subscription in decoded
            if subscription.kind == event.kind
            and subscription.objectFilter in (None, event.uuid, event.name)
        ]

    def snapshot(self) -> list[Subscription]:
        """The subscriptions now, for a connection attempt to register."""
        return list(self._all.values())

    def queues(self) -> list[DeferredQueue[Any]]:
        """Every queue subscribed, once each."""
        queues: dict[int, DeferredQueue[Any]] = {}
        for subscription in self._all.values():
            if isinstance(subscription.target, DeferredQueue):
                queues[id(subscription.target)] = subscription.target
        return list(queues.values())

    def registerAll(
        self, connection: LibvirtConnection, snapshot: list[Subscription]
    ) -> Registered:
        """Register C{snapshot} on a connection being set up (in a thread)."""
        registered: Registered = {}
        refused: set[tuple[str, str]] = set()  # logged once a connection
        for subscription in snapshot:
            listenerId = self._registerOne(connection, subscription, refused)
            if listenerId is not None:
                registered[subscription.id] = listenerId
        return registered

    def adopt(
        self,
        connection: LibvirtConnection,
        registered: Registered,
        snapshot: set[int],
    ) -> None:
        """
        Make C{connection} current: keep what the attempt registered, undo
        what was unsubscribed meanwhile, register what was subscribed meanwhile.
        """
        self._registered = {}
        for subscriptionId, listenerId in registered.items():
            if subscriptionId in self._all:
                self._registered[subscriptionId] = listenerId
            else:
                _unsubscribe(connection, listenerId)
        for subscriptionId in self._all.keys() - snapshot:
            self.registerLater(connection, self._all[subscriptionId])

    def disown(self) -> None:
        """The current connection went: nothing is registered any more."""
        self._registered = {}

    def registerLater(self, connection: LibvirtConnection, subscription: Subscription) -> None:
        """Register a subscription made while connected, on the call pool."""
        d = deferToLibvirtPool(self._reactor, self._registerOne, connection, subscription)

        def registered(listenerId: int | None) -> None:
            if listenerId is None:
                return
            if connection is self._current() and subscription.live:
                self._registered[subscription.id] = listenerId
            else:
                _unsubscribe(connection, listenerId)

        d.addCallback(registered)
        d.addErrback(lambda f: log.failure("{uri}: subscribing failed", f, uri=self._uri))

    def _registerOne(
        self,
        connection: LibvirtConnection,
        subscription: Subscription,
        refused: set[tuple[str, str]] | None = None,
    ) -> int | None:
        """
        Register one subscription (in a thread); L{None} if it cannot hold
        on this connection, which the rest of the connection survives.  A
        refusal is logged unless C{refused} has had the same one.
        """
        family = subscription.family
        try:
            obj = None
            if subscription.objectFilter is not None:
                obj = family.lookUp(connection.virConnect, subscription.objectFilter)
            return connection.subscribe(
                family.name, subscription.eventID, subscription.route, obj=obj
            )
        except ConnectionClosedError:
            return None
        except libvirt.libvirtError as e:
            if not connection.virConnect.isAlive():
                raise
            # One driver lacks some families' events (test:///default has no
            # secret events), an older daemon some event ids, a filter its
            # object: the other subscriptions still hold.
            error = self._scrub(str(e))
            if refused is not None:
                if (family.name, error) in refused:
                    return None
                refused.add((family.name, error))
            log.info(
                "{uri}: {family} events cannot be watched here: {error}",
                uri=self._uri,
                family=family.name,
                error=error,
            )
            return None


def _unsubscribe(connection: LibvirtConnection, listenerId: int) -> None:
    """Undo a route's registration; a connection closed meanwhile has done it."""
    with contextlib.suppress(UnknownCallbackError):
        connection.unsubscribe(listenerId)


def kindOf(family: str, eventID: int) -> str:
    """The kind of a family's event id: C{("domain", 0)} -> C{"domain.lifecycle"}."""
    names = {value: name for name, value in eventIDs(family).items()}
    return f"{family}.{names[eventID]}"
