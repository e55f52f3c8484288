"""
Who hears from a LibvirtService, and in what order.

Subscribers get the events of the current connection; a connection still
being set up has its events held, and released once it is current, after
the status that says so.  Queue subscribers also find every
L{ConnectionStatus} in their queue, in order with the events; observers are
called with every status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.internet.defer import DeferredQueue
from twisted.logger import Logger

from ._connection import LibvirtConnection
from ._connectionstatus import ConnectionStatus
from ._delivery import Delivery, Listener
from ._reactor import Scheduler
from ._subscriptions import Subscription
from .events import Event, decode

log = Logger()

Observer = Callable[[ConnectionStatus], object]


class Audience:
    """
    @param current: the service's current connection, if any.
    """

    def __init__(self, reactor: Scheduler, current: Callable[[], LibvirtConnection | None]) -> None:
        self._delivery = Delivery(reactor)
        self._current = current
        self._observers: list[Observer] = []
        #: Events of connections still being set up: each subscription and its arguments.
        self._held: dict[LibvirtConnection, list[tuple[Subscription, tuple[Any, ...]]]] = {}

    def addObserver(self, observer: Observer) -> None:
        self._observers.append(observer)

    def removeObserver(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def event(
        self, subscription: Subscription, connection: LibvirtConnection, args: tuple[Any, ...]
    ) -> None:
        """
        An event for C{subscription} from C{connection}: delivered now if
        the connection is the current one, held until it is if it is still
        being set up, and dropped if the subscription has ended.
        """
        if not subscription.live:
            return
        if connection is not self._current():
            self._held.setdefault(connection, []).append((subscription, args))
            return
        target = subscription.target
        if subscription.decoded or isinstance(target, DeferredQueue):
            self._give(subscription, connection, args)
            return
        raw = cast("Callable[..., object]", target)  # not decoded: a raw callback
        try:  # the event path: a plain callable, called straight away
            raw(connection, *args, subscription.opaque)
        except Exception:
            log.failure("event callback {callback!r} raised", callback=target)

    def tell(
        self,
        status: ConnectionStatus,
        queues: Iterable[DeferredQueue[Any]],
        synthesized: Iterable[tuple[Listener, Event]] = (),
    ) -> None:
        """
        Tell C{queues}, in order with the events before, and the observers;
        then hand each synthesized event to its decoded subscriber.
        """
        for queue in queues:
            self._delivery.send(queue, status)
        self.notify(status)
        for target, event in synthesized:
            self._delivery.giveOne(target, event)

    def notify(self, status: ConnectionStatus) -> None:
        """Tell the observers only (a failed attempt is no news to queues)."""
        for observer in list(self._observers):
            try:
                observer(status)
            except Exception:
                log.failure("observer {observer!r} raised", observer=observer)

    def connected(
        self,
        connection: LibvirtConnection,
        status: ConnectionStatus,
        queues: Iterable[DeferredQueue[Any]],
        synthesized: Iterable[tuple[Listener, Event]] = (),
    ) -> None:
        """
        C{connection} is now current: tell C{status}, then the events that
        explain what changed while there was none, then its own events.
        """
        self.tell(status, queues, synthesized)
        for subscription, args in self._held.pop(connection, ()):
            if subscription.live:
                self._give(subscription, connection, args)

    def _give(
        self, subscription: Subscription, connection: LibvirtConnection, args: tuple[Any, ...]
    ) -> None:
        """One event to one subscriber, decoded if it asked."""
        if subscription.decoded:
            event = decode(subscription.family.name, subscription.eventID, args)
            self._delivery.giveOne(subscription.target, event)
        else:
            self._delivery.give(subscription.target, (connection, *args, subscription.opaque))

    def forget(self, connection: LibvirtConnection) -> None:
        """C{connection} will never be current (again): drop what it held."""
        self._held.pop(connection, None)
