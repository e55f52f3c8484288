"""
Spool: the monitor's records on disk until the broker has confirmed them.

Every record the publisher sends goes through a L{Spool} and leaves it only
once the broker confirmed it: delivery is at least once, across lost
connections and restarts.  The spool is a directory: segment files
(C{segment-<first seq, 20 digits>.jsonl}, one JSON record a line),
C{state.json} (C{{"confirmed": N, "next": M}}), C{monitor-id} (the monitor's
stable instance id) and C{lock}, which keeps a second monitor out.

Durability: a record is handed to the OS in one unbuffered write before
L{Spool.add} returns, so it survives the monitor's death by any signal,
SIGKILL included.  There is no C{fsync} per record: a power loss or a kernel
crash may lose the last ones.  L{Spool.close} fsyncs.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import uuid
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from twisted.logger import Logger

from ._eventrecords import encodeRecord

SEGMENT = re.compile(r"segment-\d{20}\.jsonl")
STATE_EVERY = 1000
FULL = "spool {directory} full: dropped the {count} oldest records (seq {first} to {last})"


@dataclass(frozen=True)
class SpoolItem:
    """One spooled record: its C{seq} and its JSON line, without the newline."""

    seq: int
    body: bytes


class SpoolError(Exception):
    """The spool cannot go on; the message is one line naming its directory."""


@dataclass(eq=False)
class Segment:
    """A segment file: each seq from C{first} to C{last} is in it or done, and
    C{pending} of them are neither confirmed nor dropped.  Reading it back
    resumes at C{readPos}, before which every line's seq is under C{readSeq}."""

    path: str
    first: int
    last: int
    size: int = 0
    pending: int = 0
    readSeq: int = 0
    readPos: int = 0


def seqOf(line: bytes) -> int | None:
    """The C{"seq"} of a spooled JSON line, or C{None} if it is not one."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    seq = value.get("seq") if isinstance(value, dict) else None
    return seq if type(seq) is int and seq > 0 else None


class Spool:
    """
    A bounded on-disk spool of records, replayed in order after a restart.

    L{add} writes a record; L{unsent} hands records out, L{confirm} lets them
    go, L{rewind} hands out again what was not confirmed.  Beyond C{maxBytes}
    the oldest segments go, confirmed or not: C{dropped} counts the losses.
    The latest records stay in memory too (at most C{memoryItems} and
    C{memoryBytes}), so a publisher that keeps up never reads the disk.  One
    thread only: the reactor's.
    """

    log = Logger()
    memoryItems = 10_000
    memoryBytes = 8 << 20

    def __init__(self, directory: str, maxBytes: int, segmentBytes: int | None = None) -> None:
        if segmentBytes is None:
            segmentBytes = max(64 << 10, maxBytes // 16)
        if segmentBytes < 1 or maxBytes < 2 * segmentBytes:
            raise ValueError(f"spool maxBytes {maxBytes} is not twice segmentBytes {segmentBytes}")
        self.directory, self.maxBytes, self.segmentBytes = directory, maxBytes, segmentBytes
        self.dropped = self._confirmed = self._unconfirmed = self._size = self._sinceState = 0
        self._next = self._cursor = 1
        self._closed = False
        self._segments: list[Segment] = []  # in seq order; the current one, if any, last
        self._current: Segment | None = None
        self._writer: io.FileIO | None = None
        self._tail: deque[SpoolItem] = deque()  # the latest records, seqs in a row to next - 1
        self._tailBytes = 0
        self._ahead: set[int] = set()  # seqs above confirmed that are done
        self._lock = self._takeLock()
        try:
            self.monitorId = self._monitorId()
            self._recover()
        except BaseException:
            os.close(self._lock)
            raise

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    @contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """Turn an C{OSError} into a one-line L{SpoolError} saying what failed."""
        try:
            yield
        except OSError as e:
            raise SpoolError(f"spool {self.directory}: {what}: {e.strerror or e}") from e

    def _takeLock(self) -> int:
        """Make the directory if need be and lock it: one monitor a spool."""
        if os.path.lexists(self.directory) and not os.path.isdir(self.directory):
            raise SpoolError(f"spool {self.directory}: not a directory")
        with self._failing("cannot create the directory"):
            os.makedirs(self.directory, exist_ok=True)
        with self._failing("cannot open the lock file"):
            fd = os.open(self._path("lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            problem = "locked by another monitor" if isinstance(e, BlockingIOError) else e.strerror
            raise SpoolError(f"spool {self.directory}: {problem}") from None
        return fd

    def _replaceFile(self, name: str, data: bytes, sync: bool = False) -> None:
        """Write a small file atomically: a temporary file, then C{os.replace}."""
        with self._failing(f"cannot write {name}"):
            with open(self._path(name + ".tmp"), "wb") as f:
                f.write(data)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(self._path(name + ".tmp"), self._path(name))

    def _read(self, name: str) -> bytes | None:
        """A small file's contents, or C{None} if there is no such file."""
        failing = self._failing(f"cannot read {name}")
        with failing, suppress(FileNotFoundError), open(self._path(name), "rb") as f:
            return f.read()
        return None

    def _monitorId(self) -> str:
        """The monitor's id: made once, then read back for ever."""
        raw = self._read("monitor-id")
        if raw is None:
            raw = f"{uuid.uuid4()}\n".encode()
            self._replaceFile("monitor-id", raw, sync=True)
        text = raw.decode("ascii", "replace").strip()
        try:
            uuid.UUID(text)
        except ValueError:
            raise SpoolError(f"spool {self.directory}: monitor-id is not a UUID") from None
        return text

    def _readState(self) -> tuple[int, int]:
        raw = self._read("state.json") or b'{"confirmed": 0, "next": 1}'
        try:
            state = json.loads(raw)
            confirmed, next = state["confirmed"], state["next"]
        except (ValueError, KeyError, TypeError):
            confirmed = next = None
        if type(confirmed) is not int or type(next) is not int or confirmed < 0 or next < 1:
            raise SpoolError(f"spool {self.directory}: state.json is unreadable: {raw[:60]!r}")
        return confirmed, next

    def _scan(self, path: str, after: int) -> tuple[list[int], int]:
        """The seqs in a segment file, each above C{after} and the one before,
        and its size once a partial last line (a write cut short) is cut off."""
        seqs: list[int] = []
        good = bad = 0
        with open(path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                good += len(raw)
                seq = seqOf(raw)
                if seq is None or seq <= after:
                    bad += 1
                else:
                    seqs.append(after := seq)
            if os.fstat(f.fileno()).st_size > good:
                os.truncate(path, good)
                self.log.warn("spool {path}: cut off a partial last line", path=path)
        if bad:
            self.log.warn("spool {path}: skipped {count} unreadable lines", path=path, count=bad)
        return seqs, good

    def _recover(self) -> None:
        """Rebuild the spool from its files; delete the segments all done."""
        confirmed, next = self._readState()
        done: list[str] = []
        last = 0
        with self._failing("cannot read the segments"):
            for name in sorted(filter(SEGMENT.fullmatch, os.listdir(self.directory))):
                seqs, size = self._scan(self._path(name), last)
                last = seqs[-1] if seqs else last
                if not (live := [seq for seq in seqs if seq > confirmed]):
                    done.append(self._path(name))
                    continue
                for before, after in pairwise(live):  # lines lost: their seqs are done
                    self._ahead.update(range(before + 1, after))
                self._segments.append(Segment(self._path(name), live[0], live[-1], size, len(live)))
                self._size += size
                self._unconfirmed += len(live)
        self._confirmed, self._next = confirmed, max(next, last + 1, confirmed + 1)
        self._advance()
        self._cursor = self._confirmed + 1
        self._writeState()
        for path in done:
            self._unlink(path)

    def _writeState(self, sync: bool = False) -> None:
        state = {"confirmed": self._confirmed, "next": self._next}
        self._replaceFile("state.json", json.dumps(state).encode(), sync)
        self._sinceState = 0

    def _unlink(self, path: str) -> None:
        with self._failing(f"cannot delete {os.path.basename(path)}"), suppress(FileNotFoundError):
            os.unlink(path)

    def add(self, record: Mapping[str, Any]) -> SpoolItem:
        """Stamp a copy of C{record} with C{seq} and C{monitor}, write it, keep it."""
        if self._closed:
            raise SpoolError(f"spool {self.directory}: closed")
        seq = self._next
        stamped = {key: value for key, value in record.items() if key not in ("seq", "monitor")}
        stamped["seq"], stamped["monitor"] = seq, self.monitorId
        body = encodeRecord(stamped).encode("utf-8")
        segment, writer = self._segmentForWriting()
        data = memoryview(body + b"\n")
        try:
            while data:
                data = data[writer.write(data) :]
        except OSError as e:
            with suppress(OSError):
                os.ftruncate(writer.fileno(), segment.size)
            raise SpoolError(f"spool {self.directory}: cannot write: {e.strerror}") from e
        segment.size += len(body) + 1
        self._size += len(body) + 1
        segment.last, self._next = seq, seq + 1
        segment.pending += 1
        self._unconfirmed += 1
        self._tail.append(item := SpoolItem(seq, body))
        self._tailBytes += len(body)
        while len(self._tail) > self.memoryItems or self._tailBytes > self.memoryBytes:
            self._tailBytes -= len(self._tail.popleft().body)
        if self._size > self.maxBytes:
            self._dropOldest()
        return item

    def _segmentForWriting(self) -> tuple[Segment, io.FileIO]:
        """The current segment, or a new one once it has reached C{segmentBytes}."""
        segment, writer = self._current, self._writer
        if segment is not None and writer is not None:
            if segment.size < self.segmentBytes:
                return segment, writer
            writer.close()
            self._current = self._writer = None
            if segment.pending == 0:
                self._delete([segment])
        path = self._path(f"segment-{self._next:020d}.jsonl")
        with self._failing(f"cannot open {os.path.basename(path)}"):
            writer = open(path, "ab", buffering=0)  # noqa: SIM115 (open until the next segment)
        segment = Segment(path, self._next, self._next - 1, os.fstat(writer.fileno()).st_size)
        self._segments.append(segment)
        self._size += segment.size
        self._current, self._writer = segment, writer
        return segment, writer

    def _dropOldest(self) -> None:
        """Delete the oldest segments, never the current one, until under C{maxBytes}."""
        size, gone = self._size, []
        for segment in self._segments[:-1]:
            if size <= self.maxBytes:
                break
            gone.append(segment)
            size -= segment.size
        if lost := [segment for segment in gone if segment.pending]:
            first, last = max(lost[0].first, self._confirmed + 1), lost[-1].last
            while first in self._ahead:
                first += 1
            while last in self._ahead:
                last -= 1
            count = sum(segment.pending for segment in lost)
            self.dropped += count
            self._unconfirmed -= count
            self.log.warn(FULL, directory=self.directory, count=count, first=first, last=last)
        if gone:
            self._delete(gone)

    def _delete(self, gone: list[Segment]) -> None:
        """Forget segments, write the state that says so, then delete their files."""
        for segment in gone:
            self._segments.remove(segment)
            self._size -= segment.size
        self._advance()
        self._writeState()
        for segment in gone:
            self._unlink(segment.path)

    def _advance(self) -> None:
        """Move C{confirmed} over the seqs done in a row; forget what it passes."""
        confirmed, ahead = self._confirmed, self._ahead
        for segment in self._segments:
            if segment.last <= confirmed:
                continue
            if segment.first - 1 > confirmed:  # jump the seqs in no segment
                ahead.difference_update([seq for seq in ahead if seq < segment.first])
                confirmed = segment.first - 1
            while confirmed < segment.last and confirmed + 1 in ahead:
                confirmed += 1
                ahead.discard(confirmed)
            if confirmed < segment.last:
                break
        else:
            confirmed = self._next - 1
            ahead.clear()
        self._confirmed = confirmed
        while self._tail and self._tail[0].seq <= confirmed:
            self._tailBytes -= len(self._tail.popleft().body)

    def unsent(self, limit: int) -> list[SpoolItem]:
        """The next (at most C{limit}) items not handed out since the last L{rewind}."""
        if self._closed or limit <= 0:
            return []
        cursor, tail = max(self._cursor, self._confirmed + 1), self._tail
        tailStart = tail[0].seq if tail else self._next
        items: list[SpoolItem] = []
        if cursor < tailStart:
            items = self._readBack(cursor, tailStart, limit)
            cursor = items[-1].seq + 1 if len(items) == limit else tailStart
        if len(items) < limit and tail:
            index, ahead = cursor - tailStart, self._ahead
            while index < len(tail) and len(items) < limit:
                item = tail[index]
                index += 1
                if item.seq not in ahead:
                    items.append(item)
            cursor = tailStart + index
        self._cursor = cursor
        return items

    def _readBack(self, cursor: int, stop: int, limit: int) -> list[SpoolItem]:
        """Items from C{cursor} to before C{stop}, read from the segment files."""
        items: list[SpoolItem] = []
        start = bisect_left(self._segments, cursor, key=lambda segment: segment.last)
        for segment in self._segments[start:]:
            if segment.first >= stop or len(items) >= limit:
                break
            if segment.readSeq > cursor:  # behind where the last read stopped: start over
                segment.readSeq = segment.readPos = 0
            name = os.path.basename(segment.path)
            with self._failing(f"cannot read {name}"), open(segment.path, "rb") as f:
                f.seek(segment.readPos)
                for raw in f:
                    seq = seqOf(raw) if raw.endswith(b"\n") else stop
                    if seq is not None and seq >= stop:
                        break
                    segment.readPos += len(raw)
                    if seq is None:
                        continue
                    segment.readSeq = seq + 1
                    if seq >= cursor and seq > self._confirmed and seq not in self._ahead:
                        items.append(SpoolItem(seq, raw[:-1]))
                        if len(items) >= limit:
                            break
        return items

    def confirm(self, seq: int) -> None:
        """The broker confirmed C{seq}: let it go (in any order; unknown seqs are ignored)."""
        if self._closed or seq <= self._confirmed or seq >= self._next or seq in self._ahead:
            return
        segments = self._segments
        if segments and seq >= segments[-1].first:
            index = len(segments) - 1
        else:
            index = bisect_right(segments, seq, key=lambda segment: segment.first) - 1
        if index < 0 or seq > segments[index].last:
            return  # dropped, or lost in a crash
        segment = segments[index]
        self._ahead.add(seq)
        segment.pending -= 1
        self._unconfirmed -= 1
        self._sinceState += 1
        if seq == self._confirmed + 1:
            self._advance()
        if segment.pending == 0 and segment is not self._current:
            self._delete([segment])
        elif self._sinceState >= STATE_EVERY:
            self._writeState()

    def rewind(self) -> None:
        """The broker connection was lost: hand out again all that is unconfirmed."""
        self._cursor = self._confirmed + 1

    def __len__(self) -> int:
        return self._unconfirmed

    @property
    def size(self) -> int:
        """Bytes on disk in segment files."""
        return self._size

    @property
    def last(self) -> int:
        """The seq of the newest record added (the one before the first, if none)."""
        return self._next - 1

    @property
    def confirmed(self) -> int:
        """The highest seq such that every seq up to it is confirmed or dropped."""
        return self._confirmed

    def close(self) -> None:
        """Write the state, fsync, delete a current segment all confirmed, unlock."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                with suppress(OSError):
                    os.fsync(self._writer.fileno())
                self._writer.close()
            self._writeState(sync=True)
            segment, self._current, self._writer = self._current, None, None
            if segment is not None and segment.pending == 0:
                self._segments.remove(segment)
                self._size -= segment.size
                self._unlink(segment.path)
        finally:
            os.close(self._lock)
