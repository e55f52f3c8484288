"""
The five families of libvirt objects that have events, in one table that
every layer reads: how each registers and deregisters its events, how a
filter names one of its objects and how that name is looked up, and the
object's local (no RPC) name and UUID accessors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libvirt


@dataclass(frozen=True)
class Family:
    """
    One family of objects with events.

    @ivar name: what events and records call it (C{"storage_pool"}).
    @ivar objectType: the libvirt-python class of its objects.
    @ivar register: C{virConnect}'s registration method for its events.
    @ivar deregister: the matching deregistration method.
    @ivar lookup: the C{virConnect} method that finds an object by the key
        a filter names it with (a round trip).
    @ivar keyAccessor: the object's method giving that key: its UUID, or a
        node device's name.
    @ivar nameAccessor: the object's method giving its name (a secret's
        usage id), with no round trip.
    @ivar uuidAccessor: the method giving its UUID, or C{None} where the
        objects have none (node devices).
    """

    name: str
    objectType: type[Any]
    register: str
    deregister: str
    lookup: str
    keyAccessor: str
    nameAccessor: str
    uuidAccessor: str | None

    @property
    def eventIDPrefix(self) -> str:
        """The prefix of the family's C{VIR_*_EVENT_ID_*} constants."""
        return f"VIR_{self.name.upper()}_EVENT_ID_"

    def keyOf(self, obj: Any) -> str:
        """The key that filters events to C{obj} (no round trip)."""
        key: str = getattr(obj, self.keyAccessor)()
        return key

    def lookUp(self, conn: libvirt.virConnect, key: str) -> Any:
        """The object C{key} names on C{conn}: a round trip."""
        return getattr(conn, self.lookup)(key)

    def identify(self, obj: Any) -> tuple[str | None, str | None]:
        """C{obj}'s name and UUID, read with no round trip."""
        name = getattr(obj, self.nameAccessor)() or None
        uuid = getattr(obj, self.uuidAccessor)() if self.uuidAccessor else None
        return name, uuid


#: Every family, in the order libvirt added them.
ALL: tuple[Family, ...] = (
    Family(
        "domain",
        libvirt.virDomain,
        "domainEventRegisterAny",
        "domainEventDeregisterAny",
        "lookupByUUIDString",
        "UUIDString",
        "name",
        "UUIDString",
    ),
    Family(
        "network",
        libvirt.virNetwork,
        "networkEventRegisterAny",
        "networkEventDeregisterAny",
        "networkLookupByUUIDString",
        "UUIDString",
        "name",
        "UUIDString",
    ),
    Family(
        "storage_pool",
        libvirt.virStoragePool,
        "storagePoolEventRegisterAny",
        "storagePoolEventDeregisterAny",
        "storagePoolLookupByUUIDString",
        "UUIDString",
        "name",
        "UUIDString",
    ),
    Family(
        "node_device",
        libvirt.virNodeDevice,
        "nodeDeviceEventRegisterAny",
        "nodeDeviceEventDeregisterAny",
        "nodeDeviceLookupByName",
        "name",
        "name",
        None,
    ),
    Family(
        "secret",
        libvirt.virSecret,
        "secretEventRegisterAny",
        "secretEventDeregisterAny",
        "secretLookupByUUIDString",
        "UUIDString",
        "usageID",
        "UUIDString",
    ),
)

#: The families' names, as events and subscriptions give them.
NAMES: tuple[str, ...] = tuple(family.name for family in ALL)

_BY_NAME = {family.name: family for family in ALL}


def family(name: str) -> Family:
    """
    The family called C{name}.

    @raise ValueError: there is no such family.
    """
    found = _BY_NAME.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"unknown event family {name!r}; known: {', '.join(NAMES)}")
    return found
