"""
A connection wrapper's event methods, with virConnect's names and
signatures: the five families' C{*EventRegisterAny} and
C{*EventDeregisterAny}, their generic form
(L{LibvirtConnectionEvents.subscribe},
L{LibvirtConnectionEvents.unsubscribe}), the list of what is registered and
the deregistration of all of it, and the legacy domain methods, refused.
Each registration returns an id of the wrapper's (several listeners may
share one libvirt registration) for the matching deregistration.
"""

from __future__ import annotations

from typing import Any

import libvirt
from twisted.internet.defer import Deferred

from ._delivery import Target
from ._registrations import Registrations


class LibvirtConnectionEvents:
    """
    The event methods of L{LibvirtConnection}, each a call to its
    C{Registrations}.  (Named for what it is to users: a type checker's
    messages name the class that defines a method.)
    """

    _registrations: Registrations

    def domainEventRegisterAny(
        self, dom: libvirt.virDomain | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        """
        Like virConnect's: receive domain events with C{eventID}.  Any
        thread; a round trip when the first of its event and object.

        @param dom: the one domain to hear of, or C{None} for all.
        @param eventID: a C{libvirt.VIR_DOMAIN_EVENT_ID_*} event id.
        @param cb: called C{(connection, domain, ...event arguments, opaque)}
            inside libvirt's dispatch, C{connection} being this wrapper; or a
            C{DeferredQueue} (an L{EventQueue}) that receives those
            arguments as a tuple on a later reactor turn.
        @param opaque: passed to C{cb} last.
        @return: an id for L{domainEventDeregisterAny}.
        @raise ConnectionClosedError: the connection is closed.
        """
        return self._registrations.subscribe("domain", dom, eventID, cb, opaque)

    def networkEventRegisterAny(
        self, net: libvirt.virNetwork | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        """
        Like virConnect's: receive network events with C{eventID}.  Any
        thread; a round trip when the first of its event and object.

        @param net: the one network to hear of, or C{None} for all.
        @param eventID: a C{libvirt.VIR_NETWORK_EVENT_ID_*} event id.
        @param cb: called C{(connection, network, ...event arguments, opaque)}
            inside libvirt's dispatch, C{connection} being this wrapper; or a
            C{DeferredQueue} (an L{EventQueue}) that receives those
            arguments as a tuple on a later reactor turn.
        @param opaque: passed to C{cb} last.
        @return: an id for L{networkEventDeregisterAny}.
        @raise ConnectionClosedError: the connection is closed.
        """
        return self._registrations.subscribe("network", net, eventID, cb, opaque)

    def storagePoolEventRegisterAny(
        self, pool: libvirt.virStoragePool | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        """
        Like virConnect's: receive storage pool events with C{eventID}.  Any
        thread; a round trip when the first of its event and object.

        @param pool: the one storage pool to hear of, or C{None} for all.
        @param eventID: a C{libvirt.VIR_STORAGE_POOL_EVENT_ID_*} event id.
        @param cb: called C{(connection, pool, ...event arguments, opaque)}
            inside libvirt's dispatch, C{connection} being this wrapper; or a
            C{DeferredQueue} (an L{EventQueue}) that receives those
            arguments as a tuple on a later reactor turn.
        @param opaque: passed to C{cb} last.
        @return: an id for L{storagePoolEventDeregisterAny}.
        @raise ConnectionClosedError: the connection is closed.
        """
        return self._registrations.subscribe("storage_pool", pool, eventID, cb, opaque)

    def nodeDeviceEventRegisterAny(
        self, dev: libvirt.virNodeDevice | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        """
        Like virConnect's: receive node device events with C{eventID}.  Any
        thread; a round trip when the first of its event and object.

        @param dev: the one node device to hear of, or C{None} for all.
        @param eventID: a C{libvirt.VIR_NODE_DEVICE_EVENT_ID_*} event id.
        @param cb: called C{(connection, device, ...event arguments, opaque)}
            inside libvirt's dispatch, C{connection} being this wrapper; or a
            C{DeferredQueue} (an L{EventQueue}) that receives those
            arguments as a tuple on a later reactor turn.
        @param opaque: passed to C{cb} last.
        @return: an id for L{nodeDeviceEventDeregisterAny}.
        @raise ConnectionClosedError: the connection is closed.
        """
        return self._registrations.subscribe("node_device", dev, eventID, cb, opaque)

    def secretEventRegisterAny(
        self, secret: libvirt.virSecret | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        """
        Like virConnect's: receive secret events with C{eventID}.  Any
        thread; a round trip when the first of its event and object.

        @param secret: the one secret to hear of, or C{None} for all.
        @param eventID: a C{libvirt.VIR_SECRET_EVENT_ID_*} event id.
        @param cb: called C{(connection, secret, ...event arguments, opaque)}
            inside libvirt's dispatch, C{connection} being this wrapper; or a
            C{DeferredQueue} (an L{EventQueue}) that receives those
            arguments as a tuple on a later reactor turn.
        @param opaque: passed to C{cb} last.
        @return: an id for L{secretEventDeregisterAny}.
        @raise ConnectionClosedError: the connection is closed.
        """
        return self._registrations.subscribe("secret", secret, eventID, cb, opaque)

    def domainEventDeregisterAny(self, callbackID: int) -> None:
        """
        Like virConnect's: stop the domain callback C{callbackID}; libvirt
        is told (a round trip) if it was the last of its event and object.

        @param callbackID: an id from L{domainEventRegisterAny}.
        @raise UnknownCallbackError: no domain callback has that id here.
        """
        self._registrations.unsubscribe("domain", callbackID)

    def networkEventDeregisterAny(self, callbackID: int) -> None:
        """
        Like virConnect's: stop the network callback C{callbackID}; libvirt
        is told (a round trip) if it was the last of its event and object.

        @param callbackID: an id from L{networkEventRegisterAny}.
        @raise UnknownCallbackError: no network callback has that id here.
        """
        self._registrations.unsubscribe("network", callbackID)

    def storagePoolEventDeregisterAny(self, callbackID: int) -> None:
        """
        Like virConnect's: stop the storage pool callback C{callbackID}; libvirt
        is told (a round trip) if it was the last of its event and object.

        @param callbackID: an id from L{storagePoolEventRegisterAny}.
        @raise UnknownCallbackError: no storage pool callback has that id here.
        """
        self._registrations.unsubscribe("storage_pool", callbackID)

    def nodeDeviceEventDeregisterAny(self, callbackID: int) -> None:
        """
        Like virConnect's: stop the node device callback C{callbackID}; libvirt
        is told (a round trip) if it was the last of its event and object.

        @param callbackID: an id from L{nodeDeviceEventRegisterAny}.
        @raise UnknownCallbackError: no node device callback has that id here.
        """
        self._registrations.unsubscribe("node_device", callbackID)

    def secretEventDeregisterAny(self, callbackID: int) -> None:
        """
        Like virConnect's: stop the secret callback C{callbackID}; libvirt
        is told (a round trip) if it was the last of its event and object.

        @param callbackID: an id from L{secretEventRegisterAny}.
        @raise UnknownCallbackError: no secret callback has that id here.
        """
        self._registrations.unsubscribe("secret", callbackID)

    def subscribe(
        self, family: str, eventID: int, callback: Target, opaque: Any = None, obj: Any = None
    ) -> int:
        """
        The generic form of the C{*EventRegisterAny} methods: C{family} is
        one of C{domain}, C{network}, C{storage_pool}, C{node_device},
        C{secret}; C{obj}, an object of that family, limits the events to
        it.  Any thread; a round trip when the first of its event and
        object.  Returns the id that L{unsubscribe} takes.

        @param family: one of C{domain}, C{network}, C{storage_pool},
            C{node_device}, C{secret}.
        @param eventID: one of that family's event ids
            (C{libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE}...).
        @param callback: called C{(connection, object, ...event arguments, opaque)}
            inside libvirt's dispatch, C{connection} being this wrapper; or a
            C{DeferredQueue} (an L{EventQueue}) that receives those
            arguments as a tuple on a later reactor turn.
        @param opaque: passed to C{callback} last.
        @param obj: an object of that family (a C{libvirt.virDomain}...), or
            C{None} for all.
        @return: an id for L{unsubscribe}, or for the family's
            C{*EventDeregisterAny}.
        @raise ConnectionClosedError: the connection is closed.
        """
        return self._registrations.subscribe(family, obj, eventID, callback, opaque)

    def unsubscribe(self, callbackID: int) -> Deferred[None]:
        """
        Deregister a callback of any family, without blocking: from now on
        it receives nothing, and if it was the last of its event and object,
        libvirt is told on the call pool.  The Deferred fires once that is
        done (at once if nothing needed telling); a refusal is logged.

        @param callbackID: an id from L{subscribe} or a
            C{*EventRegisterAny} method.
        @raise UnknownCallbackError: no callback has that id here (a closed
            connection has none).
        """
        return self._registrations.unsubscribe(None, callbackID, background=True)

    def tracked(self) -> list[tuple[str, int, int]]:
        """
        Every live registration made through the wrapper: (family, event id,
        id), from the moment its round trip to libvirt starts.
        """
        return self._registrations.tracked()

    def deregisterCallbacks(self) -> None:
        """
        Deregister everything registered through the C{*EventRegisterAny}
        methods.  Should libvirt refuse some, the rest still go, and the
        first refusal is raised.
        """
        self._registrations.deregisterAll()

    def domainEventRegister(self, *args: object) -> None:
        """
        Refused: lifecycle events come through the wrapper's
        C{onDomainChange}, or L{domainEventRegisterAny}.

        @param args: ignored.
        @raise NotImplementedError: always.
        """
        raise NotImplementedError(
            "LibvirtConnection does not support the legacy domainEventRegister():"
            " pass onDomainChange to receive lifecycle events, or use"
            " domainEventRegisterAny()"
        )

    def domainEventDeregister(self, *args: object) -> None:
        """
        Refused, as L{domainEventRegister} is.

        @param args: ignored.
        @raise NotImplementedError: always.
        """
        raise NotImplementedError(
            "LibvirtConnection does not support the legacy domainEventDeregister():"
            " lifecycle callbacks come through onDomainChange"
        )
