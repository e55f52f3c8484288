"""
What lifecycle events mean for an object's state, both ways: the state an
event leaves a domain, network or storage pool in (so that an inventory
follows events with no round trip), and the events that explain a change
of state found by a resync (so that it can tell subscribers in their terms).

Domain states and reasons go by libvirt's names: C{RUNNING}, C{PAUSED},
C{SHUTOFF}...; C{BOOTED}, C{USER}, C{DESTROYED}...
"""

from __future__ import annotations

from typing import NamedTuple

from .events import codeName, domainState

#: The domain states in which a domain is running, in libvirt's sense (it has a process).
ACTIVE = frozenset({"RUNNING", "BLOCKED", "PAUSED", "SHUTDOWN", "CRASHED", "PMSUSPENDED"})

#: States that a resync treats as one: blocked is a running domain waiting on a resource.
_ALIKE = {"BLOCKED": "RUNNING"}

# Reasons whose constants share a prefix with other constants (shutdown flags).
_REASONS_BY_HAND = {"SHUTDOWN": {0: "UNKNOWN", 1: "USER"}, "PMSUSPENDED": {0: "UNKNOWN"}}


class DomainState(NamedTuple):
    """Where a domain is: its state, the reason, and whether it outlives a stop."""

    state: str
    reason: str
    persistent: bool

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def alike(self, other: DomainState) -> bool:
        """The same for a resync: state (blocked as running) and persistence."""
        return (
            _ALIKE.get(self.state, self.state) == _ALIKE.get(other.state, other.state)
            and self.persistent == other.persistent
        )


def stateReason(state: int, reason: int) -> tuple[str, str]:
    """A C{virDomainGetState} answer by name: C{(1, 1)} -> C{("RUNNING", "BOOTED")}."""
    name = domainState(state)
    byHand = _REASONS_BY_HAND.get(name)
    if byHand is not None:
        return name, byHand.get(reason, f"UNKNOWN({reason})")
    return name, codeName(f"VIR_DOMAIN_{name}_", reason)


# Domains: event -> (state, reason); detail names are the event's.
_ENTERED: dict[str, tuple[str, dict[str, str], str]] = {
    # event: (state, detail -> reason, reason for any other detail)
    "STARTED": ("RUNNING", {"MIGRATED": "MIGRATED", "RESTORED": "RESTORED",
                            "FROM_SNAPSHOT": "FROM_SNAPSHOT", "WAKEUP": "WAKEUP"}, "BOOTED"),
    "SUSPENDED": ("PAUSED", {"MIGRATED": "MIGRATION", "IOERROR": "IOERROR",
                             "WATCHDOG": "WATCHDOG", "FROM_SNAPSHOT": "FROM_SNAPSHOT",
                             "POSTCOPY": "POSTCOPY", "POSTCOPY_FAILED": "POSTCOPY_FAILED",
                             "PAUSED": "USER"}, "UNKNOWN"),
    "RESUMED": ("RUNNING", {"MIGRATED": "MIGRATED", "FROM_SNAPSHOT": "FROM_SNAPSHOT",
                            "POSTCOPY": "POSTCOPY", "POSTCOPY_FAILED": "POSTCOPY_FAILED"},
                "UNPAUSED"),
    "STOPPED": ("SHUTOFF", {"SHUTDOWN": "SHUTDOWN", "DESTROYED": "DESTROYED",
                            "CRASHED": "CRASHED", "MIGRATED": "MIGRATED", "SAVED": "SAVED",
                            "FAILED": "FAILED", "FROM_SNAPSHOT": "FROM_SNAPSHOT"}, "UNKNOWN"),
    "SHUTDOWN": ("SHUTDOWN", {}, "UNKNOWN"),
    "PMSUSPENDED": ("PMSUSPENDED", {}, "UNKNOWN"),
    "CRASHED": ("CRASHED", {"CRASHLOADED": "CRASHED"}, "PANICKED"),
}  # fmt: skip


def domainAfter(before: DomainState | None, event: str, detail: str) -> DomainState | None:
    """
    The state a domain lifecycle event leaves a domain in, from the state
    before (C{None}: unknown to the inventory); C{None} if it is gone.
    """
    if event == "DEFINED":
        if before is None:
            return DomainState("SHUTOFF", "UNKNOWN", True)
        return DomainState(before.state, before.reason, True)
    if event == "UNDEFINED":
        if before is None or not before.active:
            return None
        return DomainState(before.state, before.reason, False)
    entered = _ENTERED.get(event)
    if entered is None:
        return before
    state, reasons, otherwise = entered
    if event == "CRASHED" and detail == "CRASHLOADED":
        state = "RUNNING"
    persistent = before.persistent if before is not None else False
    if state == "SHUTOFF" and not persistent:
        return None  # a transient domain that stops is gone
    return DomainState(state, reasons.get(detail, otherwise), persistent)


# The events that explain a change: the detail each new reason implies.
_DETAIL_OF = {
    "STARTED": {"MIGRATED": "MIGRATED", "RESTORED": "RESTORED",
                "FROM_SNAPSHOT": "FROM_SNAPSHOT", "WAKEUP": "WAKEUP", "BOOTED": "BOOTED"},
    "SUSPENDED": {"USER": "PAUSED", "MIGRATION": "MIGRATED", "IOERROR": "IOERROR",
                  "WATCHDOG": "WATCHDOG", "FROM_SNAPSHOT": "FROM_SNAPSHOT",
                  "POSTCOPY": "POSTCOPY", "POSTCOPY_FAILED": "POSTCOPY_FAILED"},
    "RESUMED": {"UNPAUSED": "UNPAUSED", "MIGRATED": "MIGRATED",
                "FROM_SNAPSHOT": "FROM_SNAPSHOT", "POSTCOPY": "POSTCOPY"},
    "STOPPED": {"SHUTDOWN": "SHUTDOWN", "DESTROYED": "DESTROYED", "CRASHED": "CRASHED",
                "MIGRATED": "MIGRATED", "SAVED": "SAVED", "FAILED": "FAILED",
                "FROM_SNAPSHOT": "FROM_SNAPSHOT"},
    "CRASHED": {"PANICKED": "PANICKED"},
    "PMSUSPENDED": {},
    "SHUTDOWN": {},
}  # fmt: skip

#: The detail of a synthesized event when nothing tells which one libvirt would have sent.
UNKNOWN_DETAIL = "UNKNOWN"


def _event(event: str, reason: str | None) -> tuple[str, str]:
    return event, _DETAIL_OF.get(event, {}).get(reason or "", UNKNOWN_DETAIL)


def explainDomain(before: DomainState | None, after: DomainState | None) -> list[tuple[str, str]]:
    """
    The domain lifecycle events, as (event, detail), that take a domain from
    C{before} to C{after} (C{None}: not there): DEFINED first, UNDEFINED
    last, the change of state between.
    """
    if before is None and after is None:
        return []
    explained: list[tuple[str, str]] = []
    if after is not None and after.persistent and (before is None or not before.persistent):
        explained.append(("DEFINED", "ADDED"))
    wasActive = before is not None and before.active
    state = after.state if after is not None else "SHUTOFF"
    reason = after.reason if after is not None else None
    if not wasActive and state in ACTIVE:
        explained.append(_event("STARTED", reason if state == "RUNNING" else None))
        if state != "RUNNING" and state != "BLOCKED":
            explained.append(_entering(state, reason))
    elif wasActive and state not in ACTIVE:
        explained.append(_event("STOPPED", reason))
    elif wasActive and before is not None:
        old = _ALIKE.get(before.state, before.state)
        new = _ALIKE.get(state, state)
        if old != new:
            if new == "RUNNING":
                resumed = "RESUMED" if old == "PAUSED" else "STARTED"
                explained.append(_event(resumed, reason))
            else:
                explained.append(_entering(state, reason))
    if before is not None and before.persistent and (after is None or not after.persistent):
        explained.append(("UNDEFINED", "REMOVED"))
    return explained


def _entering(state: str, reason: str | None) -> tuple[str, str]:
    """The event that brings a running domain into C{state}."""
    event = {"PAUSED": "SUSPENDED", "SHUTDOWN": "SHUTDOWN", "CRASHED": "CRASHED"}.get(
        state, "PMSUSPENDED"
    )
    if event == "SHUTDOWN":
        return event, "FINISHED"
    if event == "PMSUSPENDED":
        return event, "MEMORY"
    return _event(event, reason)


# Networks and storage pools: active or not, persistent or not.


class PoolState(NamedTuple):
    """Where a network or a storage pool is."""

    active: bool
    persistent: bool

    def alike(self, other: PoolState) -> bool:
        return self == other


def poolAfter(before: PoolState | None, event: str) -> PoolState | None:
    """The state a network or storage pool lifecycle event leaves it in; C{None}: gone."""
    if event == "DEFINED":
        return PoolState(before.active if before is not None else False, True)
    if event == "UNDEFINED":
        if before is None or not before.active:
            return None
        return PoolState(True, False)
    if event == "STARTED":
        return PoolState(True, before.persistent if before is not None else False)
    if event == "STOPPED":
        if before is None or not before.persistent:
            return None
        return PoolState(False, True)
    return before  # CREATED, DELETED: the pool's storage, not its state


def explainPool(before: PoolState | None, after: PoolState | None) -> list[str]:
    """The lifecycle events that take a network or a pool from C{before} to C{after}."""
    explained = []
    if after is not None and after.persistent and (before is None or not before.persistent):
        explained.append("DEFINED")
    wasActive = before is not None and before.active
    isActive = after is not None and after.active
    if isActive and not wasActive:
        explained.append("STARTED")
    elif wasActive and not isActive:
        explained.append("STOPPED")
    if before is not None and before.persistent and (after is None or not after.persistent):
        explained.append("UNDEFINED")
    return explained
