"""
A connection wrapper's event methods, with virConnect's names and
signatures: the five families' C{*EventRegisterAny} and
C{*EventDeregisterAny}, their generic form (L{EventMethods.subscribe},
L{EventMethods.unsubscribe}), the list of what is registered and the
deregistration of all of it, and the legacy domain methods, refused.  Each
registration returns an id of the wrapper's (several listeners may share
one libvirt registration) for the matching deregistration.
"""

from __future__ import annotations

from typing import Any

import libvirt
from twisted.internet.defer import Deferred

from ._delivery import Target
from ._registrations import Registrations


class EventMethods:
    """
    The event methods of L{LibvirtConnection}, each a call to its
    L{Registrations}.
    """

    _registrations: Registrations

    def domainEventRegisterAny(
        self, dom: libvirt.virDomain | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        return self._registrations.subscribe("domain", dom, eventID, cb, opaque)

    def networkEventRegisterAny(
        self, net: libvirt.virNetwork | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        return self._registrations.subscribe("network", net, eventID, cb, opaque)

    def storagePoolEventRegisterAny(
        self, pool: libvirt.virStoragePool | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        return self._registrations.subscribe("storage_pool", pool, eventID, cb, opaque)

    def nodeDeviceEventRegisterAny(
        self, dev: libvirt.virNodeDevice | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        return self._registrations.subscribe("node_device", dev, eventID, cb, opaque)

    def secretEventRegisterAny(
        self, secret: libvirt.virSecret | None, eventID: int, cb: Target, opaque: Any = None
    ) -> int:
        return self._registrations.subscribe("secret", secret, eventID, cb, opaque)

    def domainEventDeregisterAny(self, callbackID: int) -> None:
        self._registrations.unsubscribe("domain", callbackID)

    def networkEventDeregisterAny(self, callbackID: int) -> None:
        self._registrations.unsubscribe("network", callbackID)

    def storagePoolEventDeregisterAny(self, callbackID: int) -> None:
        self._registrations.unsubscribe("storage_pool", callbackID)

    def nodeDeviceEventDeregisterAny(self, callbackID: int) -> None:
        self._registrations.unsubscribe("node_device", callbackID)

    def secretEventDeregisterAny(self, callbackID: int) -> None:
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
        """
        return self._registrations.subscribe(family, obj, eventID, callback, opaque)

    def unsubscribe(self, callbackID: int) -> Deferred[None]:
        """
        Deregister a callback of any family, without blocking: from now on
        it receives nothing, and if it was the last of its event and object,
        libvirt is told on the call pool.  The Deferred fires once that is
        done (at once if nothing needed telling); a refusal is logged.

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
        Deregister everything registered through the *EventRegisterAny
        methods.  Should libvirt refuse some, the rest still go, and the
        first refusal is raised.
        """
        self._registrations.deregisterAll()

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
