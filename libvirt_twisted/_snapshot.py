"""
A snapshot of a host's objects, taken in a call-pool thread: every domain
with its state, reason and persistence, every network and storage pool with
whether it is active and persistent.  A few round trips whatever the number
of objects (libvirt's bulk listings), never one per object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import libvirt

from ._install import errorCode
from ._lifecycle import DomainState, PoolState, stateReason

#: What a snapshot holds of one object: its name and its state.
Named = tuple[str, DomainState]
NamedPool = tuple[str, PoolState]


@dataclass(frozen=True)
class Snapshot:
    """
    The objects of one host, by UUID.  A family is L{None} when the driver
    has no such objects (C{listAllNetworks} refused), so that nothing about
    it can be concluded.
    """

    domains: Mapping[str, Named] | None
    networks: Mapping[str, NamedPool] | None
    storagePools: Mapping[str, NamedPool] | None

    def family(self, name: str) -> Mapping[str, Named] | Mapping[str, NamedPool] | None:
        """The objects of the family called C{name}."""
        if name == "domain":
            return self.domains
        if name == "network":
            return self.networks
        return self.storagePools


def take(conn: libvirt.virConnect, families: Iterable[str]) -> Snapshot:
    """Take a snapshot of C{families} on C{conn}: blocking, a few round trips."""
    wanted = set(families)
    return Snapshot(
        _domains(conn) if "domain" in wanted else None,
        _pools(conn, "network") if "network" in wanted else None,
        _pools(conn, "storage_pool") if "storage_pool" in wanted else None,
    )


def _domains(conn: libvirt.virConnect) -> dict[str, Named]:
    found: dict[str, Named] = {}
    for persistent, flag in (
        (True, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_PERSISTENT),
        (False, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_TRANSIENT),
    ):
        for domain, code, why in _states(conn, flag):
            state, reason = stateReason(code, why)
            # A domain defined between the two listings shows in both.
            uuid = domain.UUIDString()
            if uuid not in found:
                found[uuid] = (domain.name(), DomainState(state, reason, persistent))
    return found


def _states(conn: libvirt.virConnect, flag: int) -> list[tuple[libvirt.virDomain, int, int]]:
    """
    The domains that C{flag} selects, with their state and reason: one
    round trip, or, from a driver without C{getAllDomainStats}, one a domain.
    """
    try:
        return [
            (domain, stats.get("state.state", 0), stats.get("state.reason", 0))
            for domain, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, flag)
        ]
    except libvirt.libvirtError as e:
        if errorCode(e) != libvirt.VIR_ERR_NO_SUPPORT:
            raise
    listed = (
        libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT
        if flag == libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_PERSISTENT
        else libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT
    )
    found = []
    for domain in conn.listAllDomains(listed):
        try:
            code, why = (int(value) for value in domain.state())
        except libvirt.libvirtError as e:
            if errorCode(e) == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # gone since the listing: its events tell
            raise
        found.append((domain, code, why))
    return found


def _pools(conn: libvirt.virConnect, family: str) -> dict[str, NamedPool] | None:
    listAll: Callable[[int], list[Any]]
    if family == "network":
        listAll = conn.listAllNetworks
        activeFlag = libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE
        persistentFlag = libvirt.VIR_CONNECT_LIST_NETWORKS_PERSISTENT
    else:
        listAll = conn.listAllStoragePools
        activeFlag = libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE
        persistentFlag = libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_PERSISTENT
    try:
        every = {each.UUIDString(): each.name() for each in listAll(0)}
    except libvirt.libvirtError as e:
        if errorCode(e) in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_NO_CONNECT):
            return None
        raise
    active = {each.UUIDString() for each in listAll(activeFlag)}
    persistent = {each.UUIDString() for each in listAll(persistentFlag)}
    # One that came between the listings is left to its events.
    return {
        uuid: (name, PoolState(uuid in active, uuid in persistent)) for uuid, name in every.items()
    }
