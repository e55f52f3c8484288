"""
libvirt's constants by name, read from the installed libvirt-python: event
ids, the codes under a prefix (with the prefixes that name each coded event
argument), domain states and the domain lifecycle events.  Nothing here
lists a constant by hand but the prefixes.
"""

from __future__ import annotations

import re
from functools import cache

import libvirt

from . import _families

#: Which constants name a coded argument: (family, dispatch stem, argument) -> prefix.
#: The domain lifecycle event and detail are found apart (L{lifecycleEvents}).
CODES = {
    ("network", "Lifecycle", "event"): "VIR_NETWORK_EVENT_",
    ("storage_pool", "Lifecycle", "event"): "VIR_STORAGE_POOL_EVENT_",
    ("node_device", "Lifecycle", "event"): "VIR_NODE_DEVICE_EVENT_",
    ("secret", "Lifecycle", "event"): "VIR_SECRET_EVENT_",
    ("domain", "Watchdog", "action"): "VIR_DOMAIN_EVENT_WATCHDOG_",
    ("domain", "IOError", "action"): "VIR_DOMAIN_EVENT_IO_ERROR_",
    ("domain", "IOErrorReason", "action"): "VIR_DOMAIN_EVENT_IO_ERROR_",
    ("domain", "Graphics", "phase"): "VIR_DOMAIN_EVENT_GRAPHICS_",
    ("domain", "BlockJob", "type"): "VIR_DOMAIN_BLOCK_JOB_TYPE_",
    ("domain", "BlockJob", "status"): "VIR_DOMAIN_BLOCK_JOB_",
    ("domain", "DiskChange", "reason"): "VIR_DOMAIN_EVENT_DISK_",
    ("domain", "TrayChange", "reason"): "VIR_DOMAIN_EVENT_TRAY_CHANGE_",
    ("domain", "AgentLifecycle", "state"): "VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_",
    ("domain", "AgentLifecycle", "reason"): "VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_",
    ("domain", "MetadataChange", "mtype"): "VIR_DOMAIN_METADATA_",
    ("network", "MetadataChange", "mtype"): "VIR_NETWORK_METADATA_",
    ("domain", "MemoryFailure", "recipient"): "VIR_DOMAIN_EVENT_MEMORY_FAILURE_RECIPIENT_",
    ("domain", "MemoryFailure", "action"): "VIR_DOMAIN_EVENT_MEMORY_FAILURE_ACTION_",
}
#: Bit-mask arguments, rendered as the list of their flags' names.
FLAGS = {("domain", "MemoryFailure", "flags"): "VIR_DOMAIN_MEMORY_FAILURE_"}
GRAPHICS_ADDRESS = "VIR_DOMAIN_EVENT_GRAPHICS_ADDRESS_"
CLOSE_REASON = "VIR_CONNECT_CLOSE_REASON_"
#: Other constants that share a prefix above without being its codes.
NOT_CODES = (
    "VIR_DOMAIN_BLOCK_JOB_ABORT_",
    "VIR_DOMAIN_BLOCK_JOB_INFO_",
    "VIR_DOMAIN_BLOCK_JOB_SPEED_",
)


def codeName(prefix: str, value: int) -> str:
    """
    The name, less C{prefix}, of the libvirt constant under C{prefix} that
    equals C{value}, or C{"UNKNOWN(<value>)"}.  Constants under a longer
    prefix this module knows are not codes of C{prefix}
    (C{VIR_DOMAIN_EVENT_GRAPHICS_ADDRESS_*} are not graphics phases).

    @param prefix: the constants' common prefix, e.g.
        C{"VIR_CONNECT_CLOSE_REASON_"}.
    @param value: the code.
    @return: e.g. C{"EOF"} for C{("VIR_CONNECT_CLOSE_REASON_", 1)}.
    """
    return codes(prefix).get(value, f"UNKNOWN({value})")


def domainState(state: int) -> str:
    """
    The name of a domain state (C{virDomainState}: C{RUNNING}, C{PAUSED},
    C{SHUTOFF}...), from the one-word C{VIR_DOMAIN_*} constants.

    @param state: a C{virDomainState} code, as C{virDomain.state()} gives
        it.
    @return: its name, or C{"UNKNOWN(<state>)"}.
    """
    return _domainStates().get(state, f"UNKNOWN({state})")


@cache
def _domainStates() -> dict[int, str]:
    # VIR_DOMAIN_NONE is a flag value that shares 0 with VIR_DOMAIN_NOSTATE.
    states = {}
    for name, value in _constants().items():
        match = re.fullmatch(r"VIR_DOMAIN_([A-Z]+)", name)
        if match and match[1] != "NONE":
            states[value] = match[1]
    return states


@cache
def _constants() -> dict[str, int]:
    """The installed libvirt's integer constants, but C{*_LAST}."""
    return {
        name: value
        for name, value in vars(libvirt).items()
        if name.startswith("VIR_") and type(value) is int and not name.endswith("_LAST")
    }


@cache
def eventIDsOf(family: str) -> dict[str, int]:
    prefix = _families.family(family).eventIDPrefix
    found = {name: value for name, value in _constants().items() if name.startswith(prefix)}
    ordered = sorted(found.items(), key=lambda item: item[1])
    return {name[len(prefix) :].lower(): value for name, value in ordered}


@cache
def _nested(prefix: str) -> tuple[str, ...]:
    """The prefixes this module knows that lie inside C{prefix}."""
    known = {*CODES.values(), *FLAGS.values(), GRAPHICS_ADDRESS, CLOSE_REASON, *NOT_CODES}
    known.update(family.eventIDPrefix for family in _families.ALL)
    return tuple(sorted(other for other in known if other.startswith(prefix) and other != prefix))


def under(prefix: str) -> list[str]:
    """The constants under C{prefix} and under no longer prefix this module knows."""
    nested = _nested(prefix)
    return sorted(n for n in _constants() if n.startswith(prefix) and not n.startswith(nested))


@cache
def codes(prefix: str) -> dict[int, str]:
    """C{prefix}'s codes: value -> name less prefix; the first name wins a shared value."""
    names: dict[int, str] = {}
    for name in under(prefix):
        names.setdefault(_constants()[name], name[len(prefix) :])
    return names


@cache
def lifecycleEvents() -> dict[int, str]:
    """
    The domain lifecycle events: each C{VIR_DOMAIN_EVENT_<EVENT>} that has
    details C{VIR_DOMAIN_EVENT_<EVENT>_*} and is not a detail itself
    (C{SUSPENDED_POSTCOPY} has C{SUSPENDED_POSTCOPY_FAILED} after it).
    """
    prefix = "VIR_DOMAIN_EVENT_"
    constants = under(prefix)
    events: dict[int, str] = {}
    for name in sorted(constants, key=len):
        event = name[len(prefix) :]
        isDetail = any(event.startswith(known + "_") for known in events.values())
        if not isDetail and any(other.startswith(name + "_") for other in constants):
            events.setdefault(_constants()[name], event)
    return events


def flagNames(prefix: str, value: int) -> tuple[str, ...]:
    names: list[str] = []
    seen = 0
    for bit, name in sorted(codes(prefix).items()):
        if bit and value & bit == bit:
            names.append(name)
            seen |= bit
    if value & ~seen:
        names.append(f"UNKNOWN({value & ~seen})")
    return tuple(names)
