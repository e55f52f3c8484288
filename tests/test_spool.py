"""
The spool on its own: seq and order through add, unsent and confirm; confirms
in any order; rewind; restarts, clean and crashed (SIGKILL, a partial last
line); the bound, its drops and their warnings; the in-memory tail; the lock
and the errors; and random sequences of all of it against a simple model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid
from typing import Any, ClassVar, cast

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

import libvirt_twisted
from libvirt_twisted import _spool
from libvirt_twisted._spool import Spool, SpoolError, SpoolItem

TOP = os.path.dirname(os.path.dirname(os.path.abspath(libvirt_twisted.__file__)))


def segmentFiles(directory: str) -> list[str]:
    """The segment files in a spool directory, oldest first."""
    return sorted(name for name in os.listdir(directory) if name.startswith("segment-"))


def segmentBytesOnDisk(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(directory, name)) for name in segmentFiles(directory))


def seqs(items: list[SpoolItem]) -> list[int]:
    return [item.seq for item in items]


def warnings(case: SynchronousTestCase) -> list[LogEvent]:
    """Every warning logged from now until C{case} ends."""
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_level") == LogLevel.warn:
            events.append(event)

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class SpoolCase(SynchronousTestCase):
    def spool(
        self, directory: str | None = None, maxBytes: int = 1 << 20, segmentBytes: int | None = None
    ) -> Spool:
        """A spool closed when the test ends (in C{self.mktemp()} unless told)."""
        spool = Spool(directory or self.mktemp(), maxBytes, segmentBytes)
        self.addCleanup(spool.close)
        return spool

    def fill(self, spool: Spool, count: int) -> list[SpoolItem]:
        return [spool.add({"kind": "event", "n": n}) for n in range(count)]


class OrderTests(SpoolCase):
    def test_addStampsSeqAndMonitorAsTheLastKeys(self) -> None:
        spool = self.spool()
        original = {"seq": "theirs", "kind": "event", "monitor": "theirs", "name": "vm1"}
        item = spool.add(original)
        self.assertEqual(item.seq, 1)
        self.assertEqual(original["seq"], "theirs")
        decoded = json.loads(item.body)
        self.assertEqual(list(decoded), ["kind", "name", "seq", "monitor"])
        self.assertEqual(decoded["seq"], 1)
        self.assertEqual(decoded["monitor"], spool.monitorId)
        uuid.UUID(spool.monitorId)

    def test_theSegmentHoldsTheCompactJSONLines(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory)
        items = [spool.add({"text": "é, ok", "n": n}) for n in range(3)]
        monitor = spool.monitorId.encode()
        self.assertEqual(
            items[0].body, b'{"text":"\\u00e9, ok","n":0,"seq":1,"monitor":"%s"}' % monitor
        )
        (name,) = segmentFiles(directory)
        self.assertEqual(name, f"segment-{1:020d}.jsonl")
        with open(os.path.join(directory, name), "rb") as f:
            self.assertEqual(f.read(), b"".join(item.body + b"\n" for item in items))
        self.assertEqual(spool.size, segmentBytesOnDisk(directory))

    def test_aRecordThatIsNotJSONTakesNoSeq(self) -> None:
        spool = self.spool()
        self.assertRaises(ValueError, spool.add, {"x": float("nan")})
        self.assertRaises(TypeError, spool.add, {"x": object()})
        self.assertEqual(spool.add({}).seq, 1)
        self.assertEqual(len(spool), 1)

    def test_unsentHandsOutEachItemOnceInOrder(self) -> None:
        spool = self.spool()
        added = self.fill(spool, 5)
        self.assertEqual(spool.unsent(2), added[:2])
        self.assertEqual(spool.unsent(10), added[2:])
        self.assertEqual(spool.unsent(10), [])
        self.assertEqual(spool.unsent(0), [])
        later = spool.add({"kind": "later"})
        self.assertEqual(spool.unsent(10), [later])

    def test_confirmsInAnyOrderAdvanceOverTheRun(self) -> None:
        spool = self.spool()
        self.fill(spool, 5)
        spool.unsent(5)
        spool.confirm(3)
        spool.confirm(2)
        self.assertEqual((spool.confirmed, len(spool)), (0, 3))
        spool.confirm(1)
        self.assertEqual((spool.confirmed, len(spool)), (3, 2))
        spool.confirm(5)
        spool.confirm(4)
        self.assertEqual((spool.confirmed, len(spool)), (5, 0))

    def test_repeatedAndUnknownConfirmsAreIgnored(self) -> None:
        spool = self.spool()
        self.fill(spool, 3)
        for seq in (2, 2, 0, -1, 4, 99):
            spool.confirm(seq)
        self.assertEqual((spool.confirmed, len(spool)), (0, 2))

    def test_rewindHandsOutAgainFromTheOldestUnconfirmed(self) -> None:
        spool = self.spool()
        self.fill(spool, 6)
        spool.unsent(4)
        spool.confirm(1)
        spool.confirm(3)
        spool.rewind()
        self.assertEqual(seqs(spool.unsent(2)), [2, 4])
        self.assertEqual(seqs(spool.unsent(10)), [5, 6])
        spool.confirm(5)
        spool.rewind()
        self.assertEqual(seqs(spool.unsent(10)), [2, 4, 6])

    def test_afterCloseNothingMoves(self) -> None:
        spool = self.spool()
        self.fill(spool, 2)
        spool.close()
        spool.close()
        self.assertRaises(SpoolError, spool.add, {})
        self.assertEqual(spool.unsent(10), [])
        spool.confirm(1)
        spool.rewind()


class RestartTests(SpoolCase):
    def test_aRestartReplaysTheUnconfirmedInOrder(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory, segmentBytes=200, maxBytes=1 << 20)
        added = self.fill(spool, 10)
        spool.unsent(10)
        for seq in (1, 2, 3, 4, 7):
            spool.confirm(seq)
        monitorId = spool.monitorId
        spool.close()
        with open(os.path.join(directory, "state.json"), "rb") as f:
            self.assertEqual(json.loads(f.read()), {"confirmed": 4, "next": 11})
        again = self.spool(directory, segmentBytes=200, maxBytes=1 << 20)
        self.assertEqual(again.monitorId, monitorId)
        self.assertEqual(len(again), 6)
        # 7 was confirmed out of order, after the last state written: at least once.
        self.assertEqual(again.unsent(100), added[4:])
        self.assertEqual(again.add({}).seq, 11)

    def test_seqGoesOnWhenEverySegmentWasConfirmedAndDeleted(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory, segmentBytes=200)
        for item in self.fill(spool, 30):
            spool.confirm(item.seq)
        self.assertEqual(len(segmentFiles(directory)), 1)  # the current one
        spool.close()
        self.assertEqual(segmentFiles(directory), [])
        again = self.spool(directory, segmentBytes=200)
        self.assertEqual((len(again), again.size, again.confirmed), (0, 0, 30))
        self.assertEqual(again.unsent(10), [])
        self.assertEqual(again.add({}).seq, 31)

    def test_seqGoesOnWhenTheNewestSegmentsWereConfirmedAndDeleted(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory, segmentBytes=200)
        for item in self.fill(spool, 20)[1:]:
            spool.confirm(item.seq)
        spool.close()
        self.assertEqual(len(segmentFiles(directory)), 1)  # the one with seq 1
        again = self.spool(directory, segmentBytes=200)
        replayed = seqs(again.unsent(100))  # 1 and, at least once, the rest of its segment
        self.assertEqual(replayed, list(range(1, len(replayed) + 1)))
        self.assertLess(len(replayed), 10)
        self.assertEqual(again.add({}).seq, 21)

    def test_aCrashedSpoolReplaysFromACopyOfItsDirectory(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory, segmentBytes=200)
        added = self.fill(spool, 30)
        for item in added[:25]:
            spool.confirm(item.seq)
        copy = self.mktemp()
        shutil.copytree(directory, copy)  # the files as a crash would leave them
        again = self.spool(copy, segmentBytes=200)
        replayed = again.unsent(100)
        self.assertEqual(replayed, added[replayed[0].seq - 1 :])
        self.assertLessEqual(replayed[0].seq, 26)
        self.assertEqual(again.add({}).seq, 31)

    def test_sigkillLosesNothingAndAPartialLineIsCutOff(self) -> None:
        directory = self.mktemp()
        script = textwrap.dedent(
            """
            import os, signal, sys
            from libvirt_twisted._spool import Spool
            spool = Spool(sys.argv[1], maxBytes=1 << 20, segmentBytes=1024)
            for n in range(50):
                spool.add({"n": n})
            for item in spool.unsent(30):
                spool.confirm(item.seq)
            print(spool.monitorId, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        path = os.pathsep.join(filter(None, [TOP, os.environ.get("PYTHONPATH")]))
        child = subprocess.run(
            [sys.executable, "-c", script, directory],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=path),
            timeout=60,
        )
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr.decode())
        monitorId = child.stdout.decode().strip()

        spool = self.spool(directory, segmentBytes=1024)
        self.assertEqual(spool.monitorId, monitorId)
        replayed = spool.unsent(100)
        self.assertEqual(seqs(replayed), list(range(replayed[0].seq, 51)))
        self.assertLessEqual(replayed[0].seq, 31)
        self.assertEqual([json.loads(item.body)["n"] for item in replayed[-3:]], [47, 48, 49])
        spool.close()

        last = os.path.join(directory, segmentFiles(directory)[-1])
        with open(last, "ab") as f:
            f.write(b'{"n":50,"seq":51,"monitor":"' + monitorId[:10].encode())
        logged = warnings(self)
        again = self.spool(directory, segmentBytes=1024)
        self.assertEqual(again.unsent(100), replayed)
        with open(last, "rb") as f:
            self.assertTrue(f.read().endswith(b"}\n"))
        self.assertEqual(again.size, segmentBytesOnDisk(directory))
        self.assertIn("partial last line", formatEvent(logged[0]) or "")
        self.assertEqual(again.add({}).seq, 51)

    def test_theMonitorIdIsMadeOnceAndKept(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory)
        with open(os.path.join(directory, "monitor-id")) as f:
            self.assertEqual(f.read(), spool.monitorId + "\n")
        spool.close()
        self.assertEqual(self.spool(directory).monitorId, spool.monitorId)
        self.assertNotEqual(self.spool().monitorId, spool.monitorId)


class BoundTests(SpoolCase):
    def test_aFullSpoolDropsTheOldestAndWarnsOncePerDrop(self) -> None:
        directory = self.mktemp()
        logged = warnings(self)
        spool = self.spool(directory, maxBytes=2000, segmentBytes=500)
        added = self.fill(spool, 100)
        self.assertLessEqual(spool.size, 2000)
        self.assertEqual(spool.size, segmentBytesOnDisk(directory))
        self.assertGreater(spool.dropped, 0)
        self.assertEqual(len(spool) + spool.dropped, 100)
        self.assertEqual(spool.unsent(1000), added[spool.dropped :])
        self.assertEqual(spool.confirmed, spool.dropped)
        ranges = [(event["count"], event["first"], event["last"]) for event in logged]
        self.assertEqual(sum(count for count, _, _ in ranges), spool.dropped)
        expected = 1
        for count, first, last in ranges:
            self.assertEqual((first, last - first + 1), (expected, count))
            expected = last + 1
        self.assertEqual(
            formatEvent(logged[0]),
            f"spool {directory} full: dropped the {ranges[0][0]} oldest records"
            f" (seq 1 to {ranges[0][2]})",
        )

    def test_droppedRecordsAreDoneAndTheirLateConfirmsIgnored(self) -> None:
        spool = self.spool(maxBytes=2000, segmentBytes=500)
        early = self.fill(spool, 10)
        self.assertEqual(spool.unsent(10), early)
        self.fill(spool, 90)
        remaining = len(spool)
        spool.confirm(1)
        self.assertEqual(len(spool), remaining)
        spool.rewind()
        self.assertEqual(spool.unsent(1)[0].seq, spool.dropped + 1)

    def test_onlyUnconfirmedRecordsCountAsDropped(self) -> None:
        logged = warnings(self)
        spool = self.spool(maxBytes=2000, segmentBytes=500)
        self.fill(spool, 10)
        for seq in (1, 2, 3, 10):
            spool.confirm(seq)
        self.fill(spool, 90)
        self.assertEqual(logged[0]["first"], 4)
        for event in logged:
            unconfirmed = set(range(event["first"], event["last"] + 1)) - {1, 2, 3, 10}
            self.assertEqual(event["count"], len(unconfirmed))
        self.assertEqual(sum(event["count"] for event in logged), spool.dropped)
        self.assertEqual(len(spool) + spool.dropped, 100 - 4)

    def test_confirmedSegmentsAreDeletedInAnyOrder(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory, segmentBytes=200)
        added = self.fill(spool, 40)
        self.assertGreater(len(segmentFiles(directory)), 5)
        for item in reversed(added[:-1]):
            spool.confirm(item.seq)
        self.assertEqual(len(segmentFiles(directory)), 1)
        self.assertEqual((spool.confirmed, len(spool)), (39, 1))
        self.assertEqual(spool.size, segmentBytesOnDisk(directory))
        spool.confirm(added[-1].seq)
        self.assertEqual(spool.confirmed, 40)


class MemoryTests(SpoolCase):
    def countReads(self) -> list[str]:
        """The files the spool opens for reading from now on (C{open} in its module)."""
        reads: list[str] = []

        def counting(file: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if "r" in mode:
                reads.append(file)
            return open(file, mode, *args, **kwargs)

        setattr(_spool, "open", counting)  # noqa: B010 (shadows the builtin in the module)
        self.addCleanup(delattr, _spool, "open")
        return reads

    def test_aCaughtUpConsumerReadsNoFile(self) -> None:
        spool = self.spool(segmentBytes=1000)
        reads = self.countReads()
        for n in range(500):
            spool.add({"n": n})
            spool.add({"n": n})
            for item in spool.unsent(10):
                spool.confirm(item.seq)
            if n % 50 == 0:
                spool.rewind()
        self.assertEqual(reads, [])
        self.assertEqual(len(spool), 0)

    def test_aConsumerBehindTheTailReadsTheSegments(self) -> None:
        spool = self.spool(segmentBytes=300)
        spool.memoryItems = 5
        added = self.fill(spool, 50)
        reads = self.countReads()
        got: list[SpoolItem] = []
        while batch := spool.unsent(3):
            got.extend(batch)
        self.assertEqual(got, added)
        self.assertNotEqual(reads, [])
        for item in added[10:20]:
            spool.confirm(item.seq)
        spool.confirm(2)
        spool.rewind()
        self.assertEqual(spool.unsent(100), [added[0], *added[2:10], *added[20:]])

    def test_restartedItemsComeFromDiskThenNewOnesFromMemory(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory)
        old = self.fill(spool, 5)
        spool.close()
        again = self.spool(directory)
        new = self.fill(again, 3)
        reads = self.countReads()
        self.assertEqual(again.unsent(6), old + new[:1])
        self.assertEqual(len(reads), 1)
        self.assertEqual(again.unsent(6), new[1:])
        self.assertEqual(len(reads), 1)


class ErrorTests(SpoolCase):
    def test_aSecondSpoolOnTheSameDirectoryIsRefused(self) -> None:
        directory = self.mktemp()
        spool = self.spool(directory)
        error = self.assertRaises(SpoolError, Spool, directory, 1 << 20)
        self.assertIn(directory, str(error))
        self.assertIn("locked by another monitor", str(error))
        spool.close()
        self.spool(directory)

    def test_aDirectoryThatCannotBeMade(self) -> None:
        regular = self.mktemp()
        with open(regular, "w"):
            pass
        for directory in (os.path.join(regular, "spool"), regular):
            error = self.assertRaises(SpoolError, Spool, directory, 1 << 20)
            self.assertIn(directory, str(error))
            self.assertEqual(str(error).splitlines(), [str(error)])
            self.assertIn("directory", str(error))

    def test_maxBytesUnderTwoSegments(self) -> None:
        directory = self.mktemp()
        for maxBytes, segmentBytes in ((1000, 501), (100_000, None), (10, 0)):
            error = self.assertRaises(ValueError, Spool, directory, maxBytes, segmentBytes)
            self.assertEqual(str(error).splitlines(), [str(error)])
        self.assertFalse(os.path.exists(directory))
        self.spool(directory, 1000, 500)

    def test_anUnreadableStateOrMonitorId(self) -> None:
        for name in ("state.json", "monitor-id"):
            directory = self.mktemp()
            self.spool(directory).close()
            with open(os.path.join(directory, name), "w") as f:
                f.write("{not")
            error = self.assertRaises(SpoolError, Spool, directory, 1 << 20)
            self.assertIn(name, str(error))
            self.assertIn(directory, str(error))
            os.remove(os.path.join(directory, name))
            self.spool(directory)  # the failed one let go of the lock


class SpoolModel(RuleBasedStateMachine):
    """
    Random adds, hand-outs, confirms, rewinds, restarts and crashes against
    a model: the seqs not yet confirmed nor dropped (C{live}, the drops being
    the oldest), and the last seq handed out since the last rewind.
    """

    root: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(dir=self.root)
        self.bodies: dict[int, bytes] = {}
        self.live: set[int] = set()
        self.lastSeq = self.cursor = self.droppedSeen = 0
        self.spool: Spool | None = None

    def teardown(self) -> None:
        if self.spool is not None:
            self.spool.close()
        shutil.rmtree(self.directory)

    def open(self) -> Spool:
        self.spool = Spool(self.directory, self.maxBytes, self.segmentBytes)
        self.spool.memoryItems = self.memoryItems
        self.droppedSeen = 0
        return self.spool

    @property
    def current(self) -> Spool:
        assert self.spool is not None
        return self.spool

    @initialize(
        bounds=st.sampled_from([(1200, 300), (1 << 20, 300), (4000, 2000)]),
        memoryItems=st.sampled_from([3, 10_000]),
    )
    def start(self, bounds: tuple[int, int], memoryItems: int) -> None:
        self.maxBytes, self.segmentBytes = bounds
        self.memoryItems = memoryItems
        self.monitorId = self.open().monitorId

    @rule(payloads=st.lists(st.text(max_size=30) | st.integers(), min_size=1, max_size=8))
    def add(self, payloads: list[object]) -> None:
        for payload in payloads:
            self.addOne(payload)

    def addOne(self, payload: object) -> None:
        item = self.current.add({"p": payload})
        assert item.seq == self.lastSeq + 1, (item.seq, self.lastSeq)
        assert json.loads(item.body) == {"p": payload, "seq": item.seq, "monitor": self.monitorId}
        self.lastSeq = item.seq
        self.bodies[item.seq] = item.body
        self.live.add(item.seq)
        dropped, self.droppedSeen = self.current.dropped - self.droppedSeen, self.current.dropped
        for seq in sorted(self.live)[:dropped]:
            self.live.remove(seq)

    @rule(limit=st.integers(1, 12))
    def unsent(self, limit: int) -> None:
        got = self.current.unsent(limit)
        assert seqs(got) == sorted(s for s in self.live if s > self.cursor)[:limit]
        assert all(item.body == self.bodies[item.seq] for item in got)
        if got:
            self.cursor = got[-1].seq

    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        """Confirm some of what was handed out, in any order, and maybe any seq."""
        handed = sorted(seq for seq in self.live if seq <= self.cursor)
        some = data.draw(st.lists(st.sampled_from(handed), max_size=6) if handed else st.just([]))
        for seq in [*some, data.draw(st.integers(-1, self.lastSeq + 2))]:
            self.current.confirm(seq)
            self.live.discard(seq)

    @rule(data=st.data())
    def catchUp(self, data: st.DataObject) -> None:
        """A publisher that keeps up: everything handed out, all of it confirmed."""
        self.unsent(1 << 30)
        for seq in data.draw(st.permutations(sorted(self.live))):
            self.current.confirm(seq)
        self.live.clear()

    @rule()
    def rewind(self) -> None:
        self.current.rewind()
        self.cursor = 0

    @rule()
    def restart(self) -> None:
        persisted = self.current.confirmed
        self.current.close()
        self.resync(self.open(), persisted)

    @rule()
    def crash(self) -> None:
        copy = tempfile.mkdtemp(dir=self.root)
        shutil.copytree(self.directory, copy, dirs_exist_ok=True)
        self.current.close()
        shutil.rmtree(self.directory)
        self.directory = copy
        self.resync(self.open(), 0)

    def resync(self, spool: Spool, persisted: int) -> None:
        """After a restart: every live record replays, in order, and maybe some
        confirmed after the state last written (never those up to it)."""
        assert spool.monitorId == self.monitorId
        replayed = spool.unsent(1 << 30)
        spool.rewind()
        assert seqs(replayed) == sorted(set(seqs(replayed)))
        assert self.live <= set(seqs(replayed)), (self.live, seqs(replayed))
        assert all(persisted < item.seq <= self.lastSeq for item in replayed)
        assert all(item.body == self.bodies[item.seq] for item in replayed)
        self.live, self.cursor = set(seqs(replayed)), 0

    @invariant()
    def counts(self) -> None:
        if self.spool is None:
            return
        assert len(self.spool) == len(self.live)
        assert self.spool.confirmed == (min(self.live) - 1 if self.live else self.lastSeq)
        assert self.spool.size <= self.maxBytes
        assert self.spool.size == segmentBytesOnDisk(self.directory)


class ModelTests(SynchronousTestCase):
    def test_randomSequencesAgainstTheModel(self) -> None:
        root = self.mktemp()
        os.makedirs(root)
        SpoolModel.root = root
        run_state_machine_as_test(
            SpoolModel, settings=settings(max_examples=80, stateful_step_count=40, deadline=None)
        )
