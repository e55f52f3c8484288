"""
What an inventory knows of one object, and a change to it: the records
(L{DomainRecord}, L{ObjectRecord}) and L{Change}, and how records compare,
with each other and with a snapshot, and which synthesized lifecycle events
explain the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ._lifecycle import DomainState, PoolState, explainDomain, explainPool
from .events import Event

#: What told the inventory of a change: libvirt's event, or a resync.
Source = Literal["event", "resync"]


class DomainRecord(NamedTuple):
    """
    One domain.  C{state} and C{reason} are libvirt's names (C{RUNNING},
    C{BOOTED}); C{changed} is when it last changed (the reactor's time) and
    C{source} whether an event or a resync said so.

    @ivar uuid: the domain's UUID.
    @ivar name: the domain's name.
    @ivar state: its state's name (C{"RUNNING"}, C{"SHUTOFF"}...).
    @ivar reason: the reason's name for that state (C{"BOOTED"}...).
    @ivar persistent: whether the domain is defined (not transient).
    @ivar changed: when the record last changed, in the reactor's seconds.
    @ivar source: C{"event"} or C{"resync"}: what said so.
    """

    uuid: str
    name: str
    state: str
    reason: str
    persistent: bool
    changed: float
    source: Source

    @property
    def active(self) -> bool:
        """Whether the domain runs (paused, shutting down and crashed included)."""
        return DomainState(self.state, self.reason, self.persistent).active


class ObjectRecord(NamedTuple):
    """
    One network or storage pool (C{family} says which).

    @ivar family: C{"network"} or C{"storage_pool"}.
    @ivar uuid: the object's UUID.
    @ivar name: the object's name.
    @ivar active: whether it is active (started).
    @ivar persistent: whether it is defined (not transient).
    @ivar changed: when the record last changed, in the reactor's seconds.
    @ivar source: C{"event"} or C{"resync"}: what said so.
    """

    family: str
    uuid: str
    name: str
    active: bool
    persistent: bool
    changed: float
    source: Source


Record = DomainRecord | ObjectRecord


@dataclass(frozen=True)
class Change:
    """
    One object's record changed.  C{before} or C{after} is C{None} when it
    appeared or went.  C{events} are libvirt's event that did it, or the
    synthesized ones that explain what a resync found (C{Event.synthetic}).
    C{lost} is true when a resync found the change while the connection was
    up: libvirt lost the event that should have told.

    @ivar family: the object's family (C{"domain"}, C{"network"},
        C{"storage_pool"}).
    @ivar uuid: the object's UUID.
    @ivar before: its record before (a L{DomainRecord} or an
        L{ObjectRecord}), or C{None} if it appeared.
    @ivar after: its record after, or C{None} if it went.
    @ivar events: the decoded L{events.Event<libvirt_twisted.events.Event>}s
        that explain the change.
    @ivar source: C{"event"} or C{"resync"}: what found it.
    @ivar lost: whether libvirt lost the event that should have told.
    """

    family: str
    uuid: str
    before: Record | None
    after: Record | None
    events: tuple[Event, ...]
    source: Source
    lost: bool = False


def domainStateOf(record: Record | None) -> DomainState | None:
    """A domain record's L{DomainState}; C{None} for anything else."""
    if not isinstance(record, DomainRecord):
        return None
    return DomainState(record.state, record.reason, record.persistent)


def poolStateOf(record: Record | None) -> PoolState | None:
    """A network's or pool's L{PoolState}; C{None} for anything else."""
    if not isinstance(record, ObjectRecord):
        return None
    return PoolState(record.active, record.persistent)


def agrees(record: Record | None, wanted: Any) -> bool:
    """Whether a record and a snapshot's (name, state) agree, as a resync compares them."""
    if record is None or wanted is None:
        return record is None and wanted is None
    name, state = wanted
    if record.name != name:
        return False
    if isinstance(record, DomainRecord):
        return bool(domainStateOf(record).alike(state))  # type: ignore[union-attr]
    return bool(poolStateOf(record) == state)


def unchanged(before: Record | None, after: Record | None) -> bool:
    """Whether nothing but the time and the source differ."""
    if before is None or after is None:
        return before is after
    if isinstance(before, DomainRecord) and isinstance(after, DomainRecord):
        return (before.name, before.state, before.reason, before.persistent) == (
            after.name,
            after.state,
            after.reason,
            after.persistent,
        )
    if isinstance(before, ObjectRecord) and isinstance(after, ObjectRecord):
        return (before.name, before.active, before.persistent) == (
            after.name,
            after.active,
            after.persistent,
        )
    return False


def explain(
    family: str, uuid: str, before: Record | None, after: Record | None
) -> tuple[Event, ...]:
    """The synthesized lifecycle events that take an object from C{before} to C{after}."""
    name = (after or before).name if (after or before) is not None else None  # type: ignore[union-attr]
    kind = f"{family}.lifecycle"
    if family == "domain":
        return tuple(
            Event(family, kind, name, uuid, {"event": e, "detail": d}, synthetic=True)
            for e, d in explainDomain(domainStateOf(before), domainStateOf(after))
        )
    return tuple(
        Event(family, kind, name, uuid, {"event": e, "detail": "0"}, synthetic=True)
        for e in explainPool(poolStateOf(before), poolStateOf(after))
    )
