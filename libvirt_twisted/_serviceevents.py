"""
A LibvirtService's event methods: its subscriptions (L{LibvirtServiceEvents.subscribe}
with the wrapper's arguments, L{LibvirtServiceEvents.watch} by kind, decoded), kept
across its connections, and the observers of its connection's changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._audience import Audience
from ._connection import LibvirtConnection
from ._connectionstatus import ConnectionStatus
from ._delivery import EventTarget, Listener, Target
from ._subscriptions import Subscriptions
from .events import allKinds


class LibvirtServiceEvents:
    """
    The event methods of L{LibvirtService}: what it keeps subscribed is
    its C{Subscriptions}, who hears of its changes its C{Audience}.

    @ivar connection: the service's current L{LibvirtConnection}, or
        C{None} while there is none.
    """

    connection: LibvirtConnection | None
    _subscriptions: Subscriptions
    _audience: Audience

    def subscribe(
        self,
        family: str,
        eventID: int,
        callback: Target,
        opaque: Any = None,
        objectFilter: str | None = None,
    ) -> int:
        """
        Receive C{family} events with C{eventID} on every connection the
        service makes, as the wrapper's C{*EventRegisterAny} would deliver
        them; C{objectFilter} (a UUID, or a node device name) limits them to
        one object.  A queue also receives a L{ConnectionStatus} whenever the
        connection goes and comes back, and when the service stops; an
        L{EventQueue}'s C{finish()} ends the subscription.  Returns an id for
        L{unsubscribe}.

        @param family: one of C{domain}, C{network}, C{storage_pool},
            C{node_device}, C{secret}.
        @param eventID: one of that family's event ids
            (C{libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE}...).
        @param callback: called C{(connection, object, ...event arguments,
            opaque)} inside libvirt's dispatch, C{connection} being the
            L{LibvirtConnection} of the moment; or a C{DeferredQueue} (an
            L{EventQueue}) that receives those arguments as a tuple on a
            later reactor turn.
        @param opaque: passed to C{callback} last.
        @param objectFilter: the UUID (a node device's name) of the one
            object to hear of, or C{None} for all.
        @return: an id for L{unsubscribe}.
        @raise ValueError: unknown family or event id.
        """
        return self._subscribe(family, eventID, callback, opaque, objectFilter, False)

    def watch(
        self,
        kind: str,
        callback: EventTarget,
        objectFilter: str | None = None,
    ) -> int:
        """
        Receive every event of C{kind} (C{domain.lifecycle}...) as one
        decoded L{Event}, on every connection the service makes.  With an
        inventory, the synthesized events that explain what changed unseen
        (C{event.synthetic}) come too, after the connection's status and
        before its own events.  A queue also receives every
        L{ConnectionStatus}.  Returns an id for L{unsubscribe}.

        @param kind: C{"<family>.<event id name>"}, one of
            L{events.allKinds()<libvirt_twisted.events.allKinds>}.
        @param callback: called with each decoded
            L{Event<libvirt_twisted.events.Event>}, or a C{DeferredQueue} (an
            L{EventQueue}) that receives them, and every L{ConnectionStatus},
            on a later reactor turn: typed C{EventQueue[Event | ConnectionStatus]}
            (or C{Any}, or C{object}).
        @param objectFilter: the UUID (a node device's name) of the one
            object to hear of, or C{None} for all.
        @return: an id for L{unsubscribe}.
        @raise ValueError: unknown kind.
        """
        known = allKinds()
        if kind not in known:
            raise ValueError(f"unknown event kind {kind!r}; allKinds() lists this libvirt's")
        family, eventID = known[kind]
        return self._subscribe(family, eventID, callback, None, objectFilter, True)

    def _subscribe(
        self,
        family: str,
        eventID: int,
        callback: Listener,
        opaque: Any,
        objectFilter: str | None,
        decoded: bool,
    ) -> int:
        subscription = self._subscriptions.add(
            family,
            eventID,
            callback,
            opaque,
            objectFilter,
            onFinish=lambda finished: self.unsubscribe(finished, missingOK=True),
            decoded=decoded,
        )
        return subscription.id

    def unsubscribe(self, subscriptionId: int, missingOK: bool = False) -> None:
        """
        Stop a subscription made with L{subscribe} or L{watch}.

        @param subscriptionId: the id they returned.
        @param missingOK: do nothing, rather than raise, if there is no such
            subscription (any more).
        @raise ValueError: there is no such subscription, unless
            C{missingOK}.
        """
        if not self._subscriptions.remove(subscriptionId, self.connection) and not missingOK:
            raise ValueError(f"no subscription {subscriptionId!r} on {self!r}")

    def addObserver(self, observer: Callable[[ConnectionStatus], object]) -> None:
        """
        Call C{observer} with a L{ConnectionStatus} on every change.

        @param observer: a callable taking a L{ConnectionStatus}.
        """
        self._audience.addObserver(observer)

    def removeObserver(self, observer: Callable[[ConnectionStatus], object]) -> None:
        """
        Stop calling C{observer}.

        @param observer: one given to L{addObserver}.
        @raise ValueError: it was not given.
        """
        self._audience.removeObserver(observer)
