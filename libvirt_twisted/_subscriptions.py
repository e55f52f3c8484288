"""
What a LibvirtService keeps subscribed across its connections, and which of
those subscriptions hold on the current one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt
from twisted.internet.defer import DeferredQueue
from twisted.logger import Logger

from . import _calls
from ._connection import LibvirtConnection
from ._fanout import FAMILIES
from ._queue import EventQueue
from ._registrations import Callback, ConnectionClosedError, checkCallback
from .events import checkEventID

#: A registration made on a connection: subscription id -> (family, callback id).
Registered = dict[int, tuple[str, int]]


@dataclass(eq=False)
class Subscription:
    """One subscription's arguments, kept to register it on every connection."""

    family: str
    eventID: int
    callback: Callback
    opaque: Any
    objectFilter: str | None
    forget: Callable[[], None] | None = None


class Subscriptions:
    """
    The subscriptions, by id, and the callback id each has on the current
    connection.  Registering is a round trip: it happens on the call pool,
    and what changed meanwhile is reconciled on the reactor thread.

    @param uri: the URI as logs may show it.
    @param scrub: hides the URI's password in error messages.
    """

    log = Logger()

    def __init__(self, uri: str, scrub: Callable[[str], str], reactor: Any) -> None:
        self._uri = uri
        self._scrub = scrub
        self._reactor = reactor
        self._ids = itertools.count()
        self._all: dict[int, Subscription] = {}
        self._registered: dict[int, int] = {}

    def add(
        self,
        family: str,
        eventID: int,
        callback: Callback,
        opaque: Any,
        objectFilter: str | None,
        onFinish: Callable[[int], None],
    ) -> int:
        """Check and keep a subscription; C{onFinish(id)} when its queue finishes."""
        if family not in FAMILIES:
            raise ValueError(f"unknown event family {family!r}; known: {', '.join(FAMILIES)}")
        checkEventID(family, eventID)
        checkCallback(callback)
        if objectFilter is not None and not isinstance(objectFilter, str):
            raise TypeError(f"objectFilter is a UUID or name string, not {objectFilter!r}")
        subscriptionId = next(self._ids)
        subscription = Subscription(family, eventID, callback, opaque, objectFilter)
        self._all[subscriptionId] = subscription
        if isinstance(callback, EventQueue):
            subscription.forget = callback.registered(lambda: onFinish(subscriptionId))
        return subscriptionId

    def remove(self, subscriptionId: int, connection: LibvirtConnection | None) -> bool:
        """Drop a subscription, and its registration on C{connection}; false if unknown."""
        subscription = self._all.pop(subscriptionId, None)
        if subscription is None:
            return False
        forget, subscription.forget = subscription.forget, None
        if forget is not None:
            forget()
        callbackId = self._registered.pop(subscriptionId, None)
        if connection is not None and callbackId is not None:
            connection._unsubscribe(
                subscription.family, callbackId, missingOK=True, background=True
            )
        return True

    def snapshot(self) -> list[tuple[int, Subscription]]:
        """The subscriptions now, for a connection attempt to register."""
        return list(self._all.items())

    def queues(self) -> list[DeferredQueue[Any]]:
        """Every queue subscribed, once each."""
        queues: dict[int, DeferredQueue[Any]] = {}
        for subscription in self._all.values():
            if isinstance(subscription.callback, DeferredQueue):
                queues[id(subscription.callback)] = subscription.callback
        return list(queues.values())

    def registerAll(
        self, connection: LibvirtConnection, snapshot: list[tuple[int, Subscription]]
    ) -> Registered:
        """Register C{snapshot} on a connection being set up (in a thread)."""
        registered: Registered = {}
        for subscriptionId, subscription in snapshot:
            callbackId = self._registerOne(connection, subscription)
            if callbackId is not None:
                registered[subscriptionId] = (subscription.family, callbackId)
        return registered

    def adopt(
        self,
        connection: LibvirtConnection,
        registered: Registered,
        snapshot: set[int],
        stillCurrent: Callable[[], bool],
    ) -> None:
        """
        Make C{connection} current: keep what the attempt registered, undo
        what was unsubscribed meanwhile, register what was subscribed meanwhile.
        """
        self._registered = {}
        for subscriptionId, (family, callbackId) in registered.items():
            if subscriptionId in self._all:
                self._registered[subscriptionId] = callbackId
            else:
                connection._unsubscribe(family, callbackId, missingOK=True, background=True)
        for subscriptionId in self._all.keys() - snapshot:
            self.registerLater(connection, subscriptionId, stillCurrent)

    def disown(self) -> None:
        """The current connection went: nothing is registered any more."""
        self._registered = {}

    def registerLater(
        self,
        connection: LibvirtConnection,
        subscriptionId: int,
        stillCurrent: Callable[[], bool],
    ) -> None:
        """Register a subscription made while connected, on the call pool."""
        subscription = self._all[subscriptionId]
        d = _calls.callInThread(self._reactor, self._registerOne, connection, subscription)

        def registered(callbackId: int | None) -> None:
            if callbackId is None:
                return
            if stillCurrent() and subscriptionId in self._all:
                self._registered[subscriptionId] = callbackId
            else:
                connection._unsubscribe(
                    subscription.family, callbackId, missingOK=True, background=True
                )

        d.addCallback(registered)
        d.addErrback(lambda f: self.log.failure("{uri}: subscribing failed", f, uri=self._uri))

    def _registerOne(self, connection: LibvirtConnection, subscription: Subscription) -> int | None:
        """
        Register one subscription (in a thread); L{None} if it cannot hold
        on this connection, which the rest of the connection survives.
        """
        try:
            obj = None
            if subscription.objectFilter is not None:
                obj = _lookup(connection.virConnect, subscription.family, subscription.objectFilter)
            return connection._subscribe(
                subscription.family,
                obj,
                subscription.eventID,
                subscription.callback,
                subscription.opaque,
            )
        except ConnectionClosedError:
            return None
        except libvirt.libvirtError as e:
            if not connection.virConnect.isAlive():
                raise
            # One driver lacks some families' events (test:///default has no
            # secret events), an older daemon some event ids, a filter its
            # object: the other subscriptions still hold.
            self.log.info(
                "{uri}: {family} events cannot be watched here: {error}",
                uri=self._uri,
                family=subscription.family,
                error=self._scrub(str(e)),
            )
            return None


def _lookup(conn: libvirt.virConnect, family: str, key: str) -> Any:
    lookups = {
        "domain": conn.lookupByUUIDString,
        "network": conn.networkLookupByUUIDString,
        "storage_pool": conn.storagePoolLookupByUUIDString,
        "node_device": conn.nodeDeviceLookupByName,
        "secret": conn.secretLookupByUUIDString,
    }
    return lookups[family](key)
