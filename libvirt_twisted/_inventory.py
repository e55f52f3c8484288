"""
Inventory: the domains, networks and storage pools of one host, as the
program last knew them, read with no round trip.

It is built from one snapshot and then follows lifecycle events, with no
round trip on the event path.  A L{LibvirtService} made with
C{inventory=True} keeps one: it diffs a fresh snapshot against it after every
(re)connection and every C{resync} seconds, and what differs becomes a
L{Change} explained by synthesized events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import DeferredQueue

from ._delivery import Delivery
from ._lifecycle import DomainState, PoolState, domainAfter, poolAfter
from ._reactor import Scheduler, resolve
from ._records import (
    Change,
    DomainRecord,
    ObjectRecord,
    Record,
    Source,
    agrees,
    explain,
    poolStateOf,
    unchanged,
)
from ._snapshot import Snapshot
from .events import Event

#: The families an inventory tracks.
FAMILIES = ("domain", "network", "storage_pool")


Observer = Callable[[Change], object] | DeferredQueue[Change]


class Inventory:
    """
    The objects of one host by UUID: L{domains}, L{networks},
    L{storagePools}, read-only mappings to records.

    Observers (a callable, or a queue, which gets them on a later reactor
    turn) receive every L{Change}.  It starts empty, tracking no family,
    until L{rebuild} or L{reconcile}.

    @param reactor: gives the time of each change, and schedules queue
        observers; the global reactor by default.
    """

    def __init__(self, reactor: Scheduler | None = None) -> None:
        self._reactor: Scheduler = resolve(reactor)
        self._delivery = Delivery(self._reactor)
        self._records: dict[str, dict[str, Record]] = {family: {} for family in FAMILIES}
        self._observers: list[Observer] = []
        self._tracked: frozenset[str] = frozenset()
        self._sequence = 0
        self._touched: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{family}={len(self._records[family])}" for family in FAMILIES)
        return f"<Inventory {counts}>"

    @property
    def domains(self) -> Mapping[str, DomainRecord]:
        """Every domain by UUID."""
        return MappingProxyType(self._records["domain"])  # type: ignore[arg-type]

    @property
    def networks(self) -> Mapping[str, ObjectRecord]:
        """Every network by UUID."""
        return MappingProxyType(self._records["network"])  # type: ignore[arg-type]

    @property
    def storagePools(self) -> Mapping[str, ObjectRecord]:
        """Every storage pool by UUID."""
        return MappingProxyType(self._records["storage_pool"])  # type: ignore[arg-type]

    @property
    def tracked(self) -> frozenset[str]:
        """The families the inventory knows (a driver may have no networks)."""
        return self._tracked

    def domain(self, nameOrUUID: str) -> DomainRecord | None:
        """
        The domain with that UUID, or else that name, if there is one.

        @param nameOrUUID: the domain's UUID or name.
        @return: its record, or C{None}.
        """
        records = self._records["domain"]
        found = records.get(nameOrUUID)
        if found is None:
            found = next((r for r in records.values() if r.name == nameOrUUID), None)
        assert found is None or isinstance(found, DomainRecord)
        return found

    def addObserver(self, observer: Observer) -> None:
        """
        Tell C{observer} of every change from now on.

        @param observer: a callable, called with each L{Change} as it is
            made, or a C{DeferredQueue}, which gets it on a later reactor
            turn.
        @raise TypeError: C{observer} is neither.
        """
        if not (callable(observer) or isinstance(observer, DeferredQueue)):
            raise TypeError(f"an observer is a callable or a DeferredQueue, not {observer!r}")
        self._observers.append(observer)

    def removeObserver(self, observer: Observer) -> None:
        """
        Stop telling C{observer} of changes.

        @param observer: one given to L{addObserver}.
        @raise ValueError: it was not given.
        """
        self._observers.remove(observer)

    # Keeping it: the service's to call.

    def apply(self, event: Event) -> Change | None:
        """
        Follow one of libvirt's lifecycle events (decoded); the change it
        made, if any.  No round trip: everything is in the event.

        @param event: a decoded event; one that is not a lifecycle event, or
            has no UUID, or is of a family the inventory does not track,
            changes nothing.
        @return: the L{Change} the event made (observers hear of it too), or
            C{None} if it changed nothing.
        """
        if event.uuid is None or not event.kind.endswith(".lifecycle"):
            return None
        return self.follow(
            event.family,
            event.uuid,
            event.name,
            str(event.fields.get("event")),
            str(event.fields.get("detail")),
            lambda: event,
            want=True,
        )

    def follow(
        self,
        family: str,
        uuid: str,
        name: str | None,
        event: str,
        detail: str,
        explain: Callable[[], Event],
        want: bool = False,
    ) -> Change | None:
        """
        L{apply} for the event path: a lifecycle event by its names, the
        decoded L{Event} made by C{explain} only if an observer is to hear
        of the change.  The L{Change} is returned only if C{want}.

        @param family: the object's family (C{"domain"}, C{"network"},
            C{"storage_pool"}).
        @param uuid: the object's UUID.
        @param name: the object's name, or C{None} to keep the one known.
        @param event: the lifecycle event's name (C{"STARTED"}...).
        @param detail: its detail's name (a domain's, C{"BOOTED"}...) or
            number (the others', as a string).
        @param explain: makes the decoded L{Event}, for the L{Change}.
        @param want: whether to make and return the L{Change} even when no
            observer is to hear of it.
        @return: the L{Change} if C{want} or an observer heard of it, else
            C{None}.
        """
        if family not in self._tracked:
            return None
        self._sequence += 1
        self._touched[(family, uuid)] = self._sequence
        records = self._records[family]
        before = records.get(uuid)
        if name is None:
            name = before.name if before is not None else uuid
        after: Record | None
        if family == "domain":
            changed, after = self._domainAfter(before, uuid, name, event, detail)
        else:
            pool = poolAfter(poolStateOf(before), event)
            after = None if pool is None else self._object(family, uuid, name, pool, "event")
            changed = not unchanged(before, after)
        if not changed:
            return None
        if after is None:
            del records[uuid]
        else:
            records[uuid] = after
        if not (want or self._observers):
            return None
        change = Change(family, uuid, before, after, (explain(),), "event")
        self._tell(change)
        return change

    def _domainAfter(
        self, before: Record | None, uuid: str, name: str, event: str, detail: str
    ) -> tuple[bool, DomainRecord | None]:
        """
        Whether a domain lifecycle event changes what the record says, and
        the record after it (C{None}: the domain is gone).
        """
        state = domainAfter(None if before is None else DomainState(*before[2:5]), event, detail)
        if state is None:
            return before is not None, None
        if before is not None and before[1:5] == (name, *state):
            return False, None  # the event changed nothing the record says
        return True, DomainRecord(uuid, name, *state, self._reactor.seconds(), "event")

    def rebuild(self, snapshot: Snapshot) -> list[Change]:
        """
        Start over from C{snapshot}: the changes, explained by no event.

        @param snapshot: a snapshot of the host (its domains, networks and storage
            pools with their states), as the service takes one off the
            reactor thread; a family it has none of (C{None}) is left as
            it is.
        @return: the changes, which observers hear of too.
        """
        return self._reconcile(snapshot, synthesize=False, lost=False)

    def reconcile(self, snapshot: Snapshot, lost: bool = False) -> list[Change]:
        """
        Make the inventory equal C{snapshot}; each difference is a change
        explained by synthesized events (marked C{lost} if asked).

        @param snapshot: a snapshot of the host (its domains, networks and storage
            pools with their states), as the service takes one off the
            reactor thread; a family it has none of (C{None}) is left as
            it is.
        @param lost: mark each change as one that lost events explain.
        @return: the changes, which observers hear of too.
        """
        return self._reconcile(snapshot, synthesize=True, lost=lost)

    def differences(self, snapshot: Snapshot) -> list[tuple[str, str]]:
        """
        (family, UUID) of each object the inventory and C{snapshot} disagree
        on; nothing changes.

        @param snapshot: a snapshot of the host (its domains, networks and storage
            pools with their states), as the service takes one off the
            reactor thread; a family it has none of (C{None}) is left as
            it is.
        """
        found = []
        for family in self._tracked:
            wanted = snapshot.family(family)
            if wanted is None:
                continue
            records = self._records[family]
            for uuid in records.keys() | wanted.keys():
                if not agrees(records.get(uuid), wanted.get(uuid)):
                    found.append((family, uuid))
        return found

    def touchedSince(self, family: str, uuid: str, sequence: int) -> bool:
        """
        Whether an event about that object came after event number
        C{sequence}.

        @param family: the object's family.
        @param uuid: the object's UUID.
        @param sequence: a mark read from L{sequence} earlier.
        """
        return self._touched.get((family, uuid), 0) > sequence

    @property
    def sequence(self) -> int:
        """How many events the inventory has followed: a mark for L{touchedSince}."""
        return self._sequence

    def forgetTouchesBefore(self, sequence: int) -> None:
        """
        Forget when objects no longer there were last touched, up to
        C{sequence}.

        @param sequence: a mark read from L{sequence}.
        """
        self._touched = {
            key: seen
            for key, seen in self._touched.items()
            if seen > sequence or key[1] in self._records[key[0]]
        }

    def correct(self, snapshot: Snapshot, keys: Iterable[tuple[str, str]]) -> list[Change]:
        """
        Like L{reconcile} with C{lost}, for the objects C{keys} only.

        @param snapshot: a snapshot of the host (its domains, networks and storage
            pools with their states), as the service takes one off the
            reactor thread; a family it has none of (C{None}) is left as
            it is.
        @param keys: (family, UUID) of each object to correct, as
            L{differences} lists them.
        @return: the changes, which observers hear of too.
        """
        changes = []
        for family, uuid in keys:
            wanted = snapshot.family(family)
            if wanted is not None:
                change = self._resync(family, uuid, wanted.get(uuid), True, True)
                if change is not None:
                    changes.append(change)
        return changes

    # The machinery.

    def _reconcile(self, snapshot: Snapshot, synthesize: bool, lost: bool) -> list[Change]:
        tracked = {family for family in FAMILIES if snapshot.family(family) is not None}
        for family in FAMILIES:
            if family not in tracked:
                self._records[family] = {}
        self._tracked = frozenset(tracked)
        changes = []
        for family in FAMILIES:
            wanted = snapshot.family(family)
            if wanted is None:
                continue
            for uuid in sorted(self._records[family].keys() | wanted.keys()):
                change = self._resync(family, uuid, wanted.get(uuid), synthesize, lost)
                if change is not None:
                    changes.append(change)
        return changes

    def _resync(
        self, family: str, uuid: str, wanted: Any, synthesize: bool, lost: bool
    ) -> Change | None:
        before = self._records[family].get(uuid)
        after: Record | None = None
        if wanted is not None:
            name, state = wanted
            if before is not None and agrees(before, wanted):
                if isinstance(before, DomainRecord) and before.reason != state.reason:
                    after = self._domain(uuid, name, state, "resync", quietly=before)
                    self._records[family][uuid] = after
                return None  # the same but for a reason: no change to tell
            if family == "domain":
                after = self._domain(uuid, name, state, "resync")
            else:
                after = self._object(family, uuid, name, state, "resync")
        elif before is None:
            return None
        events = explain(family, uuid, before, after) if synthesize else ()
        return self._record(family, uuid, before, after, events, "resync", lost)

    def _record(
        self,
        family: str,
        uuid: str,
        before: Record | None,
        after: Record | None,
        events: tuple[Event, ...],
        source: Source,
        lost: bool = False,
    ) -> Change | None:
        if unchanged(before, after):
            return None
        if after is None:
            del self._records[family][uuid]
        else:
            self._records[family][uuid] = after
        change = Change(family, uuid, before, after, events, source, lost)
        self._tell(change)
        return change

    def _tell(self, change: Change) -> None:
        for observer in list(self._observers):
            self._delivery.giveOne(observer, change)

    def _domain(
        self,
        uuid: str,
        name: str,
        state: DomainState,
        source: Source,
        quietly: DomainRecord | None = None,
    ) -> DomainRecord:
        changed = quietly.changed if quietly is not None else self._reactor.seconds()
        return DomainRecord(
            uuid, name, state.state, state.reason, state.persistent, changed, source
        )

    def _object(
        self, family: str, uuid: str, name: str, state: PoolState, source: Source
    ) -> ObjectRecord:
        return ObjectRecord(
            family, uuid, name, state.active, state.persistent, self._reactor.seconds(), source
        )
