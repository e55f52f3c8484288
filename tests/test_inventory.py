"""
The inventory's pure logic: what lifecycle events do to a state, which
events explain a change, and an Inventory built, followed and reconciled
on a Clock.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import DeferredQueue
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from libvirt_twisted import Change, DomainRecord, Inventory, ObjectRecord
from libvirt_twisted._lifecycle import (
    DomainState,
    PoolState,
    domainAfter,
    explainDomain,
    explainPool,
    poolAfter,
    stateReason,
)
from libvirt_twisted._snapshot import Snapshot
from libvirt_twisted.events import Event

STATES = ["RUNNING", "BLOCKED", "PAUSED", "SHUTDOWN", "SHUTOFF", "CRASHED", "PMSUSPENDED"]
REASONS = ["BOOTED", "USER", "DESTROYED", "UNKNOWN", "MIGRATED", "UNPAUSED"]

domainStates = st.builds(
    DomainState, st.sampled_from(STATES), st.sampled_from(REASONS), st.booleans()
).filter(lambda s: s.active or s.persistent)  # an inactive transient domain is gone
poolStates = st.builds(PoolState, st.booleans(), st.booleans()).filter(
    lambda s: s.active or s.persistent
)


def follow(before: DomainState | None, events: list[tuple[str, str]]) -> DomainState | None:
    state = before
    for event, detail in events:
        state = domainAfter(state, event, detail)
    return state


class LifecycleTests(SynchronousTestCase):
    def test_eventsMoveADomain(self) -> None:
        running = DomainState("RUNNING", "BOOTED", True)
        cases: list[tuple[DomainState | None, str, str, DomainState | None]] = [
            (None, "DEFINED", "ADDED", DomainState("SHUTOFF", "UNKNOWN", True)),
            (None, "STARTED", "BOOTED", DomainState("RUNNING", "BOOTED", False)),
            (running, "SUSPENDED", "PAUSED", DomainState("PAUSED", "USER", True)),
            (running, "SUSPENDED", "MIGRATED", DomainState("PAUSED", "MIGRATION", True)),
            (running, "STOPPED", "DESTROYED", DomainState("SHUTOFF", "DESTROYED", True)),
            (DomainState("RUNNING", "BOOTED", False), "STOPPED", "SHUTDOWN", None),
            (DomainState("SHUTOFF", "UNKNOWN", True), "UNDEFINED", "REMOVED", None),
            (running, "UNDEFINED", "REMOVED", DomainState("RUNNING", "BOOTED", False)),
            (running, "CRASHED", "PANICKED", DomainState("CRASHED", "PANICKED", True)),
            (running, "CRASHED", "CRASHLOADED", DomainState("RUNNING", "CRASHED", True)),
            (running, "SHUTDOWN", "FINISHED", DomainState("SHUTDOWN", "UNKNOWN", True)),
            (running, "TRAY_CHANGE", "x", running),
        ]
        for before, event, detail, after in cases:
            self.assertEqual(domainAfter(before, event, detail), after, (before, event))

    def test_explainedChanges(self) -> None:
        running = DomainState("RUNNING", "BOOTED", True)
        paused = DomainState("PAUSED", "USER", True)
        off = DomainState("SHUTOFF", "DESTROYED", True)
        transient = DomainState("RUNNING", "BOOTED", False)
        cases: list[tuple[DomainState | None, DomainState | None, list[tuple[str, str]]]] = [
            (None, transient, [("STARTED", "BOOTED")]),
            (None, paused, [("DEFINED", "ADDED"), ("STARTED", "UNKNOWN"), ("SUSPENDED", "PAUSED")]),
            (running, None, [("STOPPED", "UNKNOWN"), ("UNDEFINED", "REMOVED")]),
            (transient, None, [("STOPPED", "UNKNOWN")]),
            (off, None, [("UNDEFINED", "REMOVED")]),
            (running, paused, [("SUSPENDED", "PAUSED")]),
            (paused, running, [("RESUMED", "UNKNOWN")]),
            (running, off, [("STOPPED", "DESTROYED")]),
            (transient, running, [("DEFINED", "ADDED")]),
            (running, transient, [("UNDEFINED", "REMOVED")]),
            (running, DomainState("BLOCKED", "UNKNOWN", True), []),
        ]
        for before, after, events in cases:
            self.assertEqual(explainDomain(before, after), events, (before, after))

    @given(st.none() | domainStates, st.none() | domainStates)
    def test_explainingEventsLeadThere(
        self, before: DomainState | None, after: DomainState | None
    ) -> None:
        reached = follow(before, explainDomain(before, after))
        if after is None:
            self.assertIsNone(reached)
        else:
            assert reached is not None
            self.assertTrue(reached.alike(after), (before, after, reached))

    @given(st.none() | poolStates, st.none() | poolStates)
    def test_explainingPoolEventsLeadThere(
        self, before: PoolState | None, after: PoolState | None
    ) -> None:
        state = before
        for event in explainPool(before, after):
            state = poolAfter(state, event)
        self.assertEqual(state, after)

    def test_stateReasonsByName(self) -> None:
        self.assertEqual(stateReason(1, 1), ("RUNNING", "BOOTED"))
        self.assertEqual(stateReason(5, 2), ("SHUTOFF", "DESTROYED"))
        self.assertEqual(stateReason(4, 1), ("SHUTDOWN", "USER"))  # not a shutdown flag
        self.assertEqual(stateReason(7, 0), ("PMSUSPENDED", "UNKNOWN"))
        self.assertEqual(stateReason(3, 99), ("PAUSED", "UNKNOWN(99)"))


def snapshot(
    domains: dict[str, tuple[str, DomainState]] | None = None,
    networks: dict[str, tuple[str, PoolState]] | None = None,
) -> Snapshot:
    return Snapshot(domains if domains is not None else {}, networks, {})


def lifecycle(family: str, name: str, uuid: str, event: str, detail: Any = "BOOTED") -> Event:
    return Event(family, f"{family}.lifecycle", name, uuid, {"event": event, "detail": detail})


class InventoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inventory = Inventory(self.clock)
        self.changes: list[Change] = []
        self.inventory.addObserver(self.changes.append)

    def test_builtFromOneSnapshotWithNoEvents(self) -> None:
        self.clock.advance(5)
        built = self.inventory.rebuild(
            snapshot(
                {"u1": ("web", DomainState("RUNNING", "BOOTED", True))},
                {"n1": ("default", PoolState(True, True))},
            )
        )
        self.assertEqual([(c.family, c.uuid, c.events) for c in built], [
            ("domain", "u1", ()), ("network", "n1", ())
        ])  # fmt: skip
        self.assertEqual(self.changes, built)
        self.assertEqual(
            self.inventory.domains["u1"],
            DomainRecord("u1", "web", "RUNNING", "BOOTED", True, 5.0, "resync"),
        )
        self.assertEqual(
            self.inventory.networks["n1"],
            ObjectRecord("network", "n1", "default", True, True, 5.0, "resync"),
        )
        self.assertEqual(self.inventory.tracked, {"domain", "network", "storage_pool"})
        self.assertIs(self.inventory.domain("web"), self.inventory.domains["u1"])
        self.assertIsNone(self.inventory.domain("nope"))

    def test_followsEvents(self) -> None:
        self.inventory.rebuild(snapshot())
        self.clock.advance(1)
        change = self.inventory.apply(lifecycle("domain", "db", "u2", "STARTED"))
        assert change is not None
        self.assertEqual((change.before, change.source, change.lost), (None, "event", False))
        self.assertEqual(
            change.after, DomainRecord("u2", "db", "RUNNING", "BOOTED", False, 1.0, "event")
        )
        self.clock.advance(1)
        self.inventory.apply(lifecycle("domain", "db", "u2", "SUSPENDED", "PAUSED"))
        self.assertEqual(self.inventory.domains["u2"].state, "PAUSED")
        # A transient domain that stops is gone.
        self.inventory.apply(lifecycle("domain", "db", "u2", "STOPPED", "DESTROYED"))
        self.assertNotIn("u2", self.inventory.domains)
        self.assertEqual(len(self.changes), 3)
        # An event that changes nothing is no change.
        self.inventory.apply(lifecycle("domain", "x", "u3", "DEFINED", "ADDED"))
        self.assertIsNone(
            self.inventory.apply(lifecycle("domain", "x", "u3", "DEFINED", "UPDATED"))
        )
        self.assertIsNone(self.inventory.apply(lifecycle("domain", "x", "u3", "REBOOT")))

    def test_untrackedFamiliesAndEventsAreIgnored(self) -> None:
        self.assertIsNone(self.inventory.apply(lifecycle("domain", "a", "u", "STARTED")))
        self.inventory.rebuild(snapshot(networks=None))
        self.assertIsNone(self.inventory.apply(lifecycle("network", "n", "n1", "STARTED", 0)))
        self.assertNotIn("network", self.inventory.tracked)
        self.assertIsNone(self.inventory.apply(lifecycle("secret", "s", "s1", "DEFINED", 0)))

    def test_reconcileSynthesizesTheExplanation(self) -> None:
        self.inventory.rebuild(
            snapshot(
                {
                    "gone": ("old", DomainState("RUNNING", "BOOTED", True)),
                    "paused": ("p", DomainState("RUNNING", "BOOTED", True)),
                    "same": ("s", DomainState("RUNNING", "BOOTED", True)),
                }
            )
        )
        del self.changes[:]
        changes = self.inventory.reconcile(
            snapshot(
                {
                    "new": ("fresh", DomainState("RUNNING", "BOOTED", False)),
                    "paused": ("p", DomainState("PAUSED", "USER", True)),
                    "same": ("s", DomainState("RUNNING", "UNPAUSED", True)),
                }
            ),
            lost=True,
        )
        explained = {
            c.uuid: [(e.fields["event"], e.fields["detail"], e.synthetic) for e in c.events]
            for c in changes
        }
        self.assertEqual(
            explained,
            {
                "gone": [("STOPPED", "UNKNOWN", True), ("UNDEFINED", "REMOVED", True)],
                "new": [("STARTED", "BOOTED", True)],
                "paused": [("SUSPENDED", "PAUSED", True)],
            },
        )
        self.assertTrue(all(c.lost and c.source == "resync" for c in changes))
        self.assertEqual(self.changes, changes)
        # A reason alone is updated without a change to tell.
        self.assertEqual(self.inventory.domains["same"].reason, "UNPAUSED")

    def test_aNetworkExplanationHasTheLiveEventsShape(self) -> None:
        """Synthesized network events carry C{detail} as a string, as libvirt's decoded ones."""
        self.inventory.rebuild(snapshot({}, {}))
        (change,) = self.inventory.reconcile(
            snapshot({}, {"n1": ("net", PoolState(True, True))}), lost=False
        )
        self.assertEqual(
            [dict(e.fields) for e in change.events],
            [{"event": "DEFINED", "detail": "0"}, {"event": "STARTED", "detail": "0"}],
        )

    def test_differencesComparesWithoutChanging(self) -> None:
        self.inventory.rebuild(snapshot({"a": ("a", DomainState("RUNNING", "BOOTED", True))}))
        other = snapshot(
            {
                "a": ("a", DomainState("BLOCKED", "UNKNOWN", True)),  # alike: running
                "b": ("b", DomainState("SHUTOFF", "UNKNOWN", True)),
            }
        )
        self.assertEqual(self.inventory.differences(other), [("domain", "b")])
        self.assertNotIn("b", self.inventory.domains)
        (change,) = self.inventory.correct(other, [("domain", "b")])
        self.assertTrue(change.lost)
        self.assertEqual([e.fields["event"] for e in change.events], ["DEFINED"])

    def test_touchesMarkWhatIsInFlux(self) -> None:
        self.inventory.rebuild(snapshot())
        mark = self.inventory.sequence
        self.assertFalse(self.inventory.touchedSince("domain", "u", mark))
        self.inventory.apply(lifecycle("domain", "d", "u", "STARTED"))
        self.assertTrue(self.inventory.touchedSince("domain", "u", mark))
        self.inventory.apply(lifecycle("domain", "d", "u", "STOPPED", "DESTROYED"))
        later = self.inventory.sequence
        self.inventory.forgetTouchesBefore(later)
        self.assertFalse(self.inventory.touchedSince("domain", "u", mark))

    def test_queueObserversHearOnALaterTurn(self) -> None:
        queue: DeferredQueue[Change] = DeferredQueue()
        self.inventory.addObserver(queue)
        self.inventory.rebuild(snapshot({"a": ("a", DomainState("RUNNING", "BOOTED", True))}))
        self.assertEqual(queue.pending, [])
        self.clock.advance(0)
        self.assertEqual([c.uuid for c in queue.pending], ["a"])
        self.assertRaises(TypeError, self.inventory.addObserver, "not an observer")
        self.inventory.removeObserver(queue)
