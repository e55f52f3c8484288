"""
File-descriptor watches on the running reactor with real pipes and sockets:
libvirt's event-loop test matrix, hang-ups and errors, re-entrancy.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import threading
from typing import Any

import libvirt
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from libvirt_twisted import EventLoop
from libvirt_twisted._eventloop import READS_PER_TURN

from ._harness import LOOP, PATIENCE, Recorder, turns, until

READABLE = libvirt.VIR_EVENT_HANDLE_READABLE
WRITABLE = libvirt.VIR_EVENT_HANDLE_WRITABLE
ERROR = libvirt.VIR_EVENT_HANDLE_ERROR
HANGUP = libvirt.VIR_EVENT_HANDLE_HANGUP


def descriptorsOn(fd: int, readers: bool = True) -> list[Any]:
    """The reactor's readers (or writers) that watch C{fd}."""
    found = reactor.getReaders() if readers else reactor.getWriters()
    return [d for d in found if d.fileno() == fd]


def drainByte(watch: int, fd: int, events: int, opaque: Any) -> None:
    if events & READABLE:
        os.read(fd, 1)


class WatchTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.freed = Recorder()
        self.loop = EventLoop(reactor, free=self.freed)
        self.closed: set[int] = set()
        self.addCleanup(self.assertIdle)

    async def assertIdle(self) -> None:
        """Every test removes what it added: the loop ends idle and drained."""
        await self.loop.drain()
        self.assertTrue(self.loop.isIdle(), self.loop)

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        for fd in (r, w):
            self.addCleanup(self.close, fd)
        return r, w

    def close(self, fd: int) -> None:
        """Close one of the test's fds once; its number may then be reused."""
        if fd not in self.closed:
            self.closed.add(fd)
            os.close(fd)

    def socketpair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b

    def watch(self, fd: int, events: int, callback: Any, opaque: Any = None) -> int:
        """Add a watch that the test may remove; removed at cleanup if not."""
        watch = self.loop.addHandle(fd, events, callback, opaque)
        self.addCleanup(self.removeIfLive, watch)
        return watch

    def removeIfLive(self, watch: int) -> None:
        with contextlib.suppress(KeyError):
            self.loop.removeHandle(watch)


class MatrixTests(WatchTestCase):
    """The cases of libvirt's own event-loop test, on Twisted."""

    async def test_thirtyOnePipesAndTimers(self) -> None:
        pipes = [self.pipe() for _ in range(31)]
        handles = [Recorder(drainByte) for _ in pipes]
        watches = [
            self.watch(r, READABLE, rec, f"pipe{i}")
            for i, ((r, w), rec) in enumerate(zip(pipes, handles, strict=True))
        ]
        timers = [Recorder() for _ in range(31)]
        timerIds = [self.loop.addTimeout(-1, rec, f"timer{i}") for i, rec in enumerate(timers)]
        for i, (r, w) in enumerate(pipes):
            os.write(w, b"x")
            await handles[i].called(1)
            self.assertEqual(handles[i].calls, [(watches[i], r, READABLE, f"pipe{i}")])
            fired = [j for j, rec in enumerate(handles) if rec.calls]
            self.assertEqual(fired, list(range(i + 1)))
        for i, timer in enumerate(timerIds):
            self.loop.updateTimeout(timer, 1)
            await timers[i].called(1)
            self.loop.updateTimeout(timer, -1)
            self.assertEqual(timers[i].calls[0], (timer, f"timer{i}"))
            fired = [j for j, rec in enumerate(timers) if rec.calls]
            self.assertEqual(fired, list(range(i + 1)))
        for watch in watches:
            self.loop.removeHandle(watch)
        for timer in timerIds:
            self.loop.removeTimeout(timer)
        self.assertEqual(self.freed.calls, [])
        await self.loop.drain()
        opaques = sorted(call[0] for call in self.freed.calls)
        expected = sorted([f"pipe{i}" for i in range(31)] + [f"timer{i}" for i in range(31)])
        self.assertEqual(opaques, expected)
        for r, _ in pipes:
            self.assertEqual(descriptorsOn(r), [])

    async def test_removeBeforeDispatch(self) -> None:
        (r1, w1), (r2, w2) = self.pipe(), self.pipe()
        removed = Recorder(drainByte)
        sentinel = Recorder(drainByte)
        watch = self.watch(r1, READABLE, removed)
        self.watch(r2, READABLE, sentinel)
        self.loop.removeHandle(watch)
        os.write(w1, b"x")
        os.write(w2, b"x")
        await sentinel.called()
        await turns(3)
        self.assertEqual(removed.calls, [])
        self.assertEqual(descriptorsOn(r1), [])

    async def test_removeDuringDispatchFromAnotherThread(self) -> None:
        (r1, w1), (r2, w2) = self.pipe(), self.pipe()
        ids: dict[str, int] = {}
        calls: list[str] = []

        def removeTheOtherFromAThread(name: str, other: str) -> Any:
            def callback(watch: int, fd: int, events: int, opaque: Any) -> None:
                calls.append(name)
                if other in ids:
                    thread = threading.Thread(target=self.loop.removeHandle, args=(ids.pop(other),))
                    thread.start()
                    thread.join()
                    ids.pop(name)
                    self.loop.removeHandle(watch)

            return callback

        ids["a"] = self.watch(r1, READABLE, removeTheOtherFromAThread("a", "b"))
        ids["b"] = self.watch(r2, READABLE, removeTheOtherFromAThread("b", "a"))
        # Both become readable in the same iteration; the first one dispatched
        # removes the second from another thread before it can be called.
        os.write(w1, b"x")
        os.write(w2, b"x")
        await until(lambda: calls)
        await self.loop.drain()
        await turns(3)
        self.assertEqual(len(calls), 1, calls)
        self.assertEqual(ids, {})
        self.assertEqual(descriptorsOn(r1) + descriptorsOn(r2), [])

    async def test_removeItselfInsideDispatch(self) -> None:
        r, w = self.pipe()
        freedDuringCallback: list[int] = []

        def once(watch: int, fd: int, events: int, opaque: Any) -> None:
            self.loop.removeHandle(watch)
            freedDuringCallback.append(len(self.freed.calls))

        self.watch(r, READABLE, once, "self")
        os.write(w, b"x")
        await until(lambda: freedDuringCallback)
        os.write(w, b"y")
        await self.loop.drain()
        await turns(3)
        self.assertEqual(freedDuringCallback, [0])
        self.assertEqual(self.freed.calls, [("self",)])

    async def test_removeOthersInsideDispatch(self) -> None:
        (r1, w1), (r2, w2) = self.pipe(), self.pipe()
        sameFd = Recorder(drainByte)
        otherFd = Recorder(drainByte)
        sameId = self.watch(r1, READABLE, sameFd)
        otherId = self.watch(r2, READABLE, otherFd)

        def remover(watch: int, fd: int, events: int, opaque: Any) -> None:
            self.loop.removeHandle(sameId)
            self.loop.removeHandle(otherId)
            self.loop.removeHandle(watch)

        # Registered last, so it is not the first watch dispatched on r1:
        # sameFd may see this first byte, but never another.
        self.watch(r1, READABLE, remover)
        os.write(w1, b"x")
        await until(lambda: self.loop.isIdle())
        before = (len(sameFd.calls), len(otherFd.calls))
        os.write(w1, b"x")
        os.write(w2, b"x")
        await turns(5)
        self.assertEqual((len(sameFd.calls), len(otherFd.calls)), before)
        self.assertEqual(otherFd.calls, [])

    async def test_removedLaterInTheSameDispatch(self) -> None:
        r, w = self.pipe()
        second = Recorder()
        secondId: list[int] = []

        def first(watch: int, fd: int, events: int, opaque: Any) -> None:
            os.read(fd, 1)
            self.loop.removeHandle(secondId[0])
            self.loop.removeHandle(watch)

        # Both watch the same fd, and are dispatched in the order they came:
        # the second is removed while the first runs, in the same dispatch.
        self.watch(r, READABLE, first)
        secondId.append(self.watch(r, READABLE, second))
        os.write(w, b"x")
        await until(lambda: self.loop.isIdle())
        await turns(3)
        self.assertEqual(second.calls, [])

    async def test_sameFdTwiceOnceWithNoEvents(self) -> None:
        r, w = self.pipe()
        reading = Recorder(drainByte)
        idle = Recorder()
        self.watch(r, READABLE, reading)
        idleId = self.watch(r, 0, idle)
        self.assertEqual(len(descriptorsOn(r)), 1)
        os.write(w, b"x")
        await reading.called()
        await turns(2)
        self.assertEqual(idle.calls, [])
        # Hang-ups reach even the watch that asked for nothing.
        self.close(w)
        await idle.called()
        self.assertEqual(idle.calls[0], (idleId, r, HANGUP, None))

    async def test_interestIsTheUnionOfLiveWatches(self) -> None:
        a, _ = self.socketpair()
        fd = a.fileno()
        reader = self.watch(fd, READABLE, Recorder())
        writer = self.watch(fd, WRITABLE, Recorder())
        self.assertEqual(len(descriptorsOn(fd)), 1)
        self.assertEqual(descriptorsOn(fd, readers=False), descriptorsOn(fd))
        self.loop.updateHandle(writer, 0)
        self.assertEqual(len(descriptorsOn(fd)), 1)
        self.assertEqual(descriptorsOn(fd, readers=False), [])
        self.loop.updateHandle(reader, WRITABLE)
        self.assertEqual(descriptorsOn(fd), [])
        self.assertEqual(len(descriptorsOn(fd, readers=False)), 1)
        self.loop.removeHandle(reader)
        self.loop.removeHandle(writer)
        self.assertEqual(descriptorsOn(fd) + descriptorsOn(fd, readers=False), [])

    async def test_removedWatchNotCalledLaterInTheSameIteration(self) -> None:
        a, b = self.socketpair()
        fd = a.fileno()
        writing = Recorder()
        writer = self.watch(fd, 0, writing)

        def removeWriter(watch: int, fd: int, events: int, opaque: Any) -> None:
            self.loop.removeHandle(writer)
            self.loop.removeHandle(watch)

        b.send(b"x")
        # One step on the reactor thread: the next iteration finds the fd both
        # readable and writable, and doRead comes before doWrite.
        self.loop.updateHandle(writer, WRITABLE)
        self.watch(fd, READABLE, removeWriter)
        await until(lambda: self.loop.isIdle())
        await turns(3)
        self.assertEqual(writing.calls, [])


class HangupAndErrorTests(WatchTestCase):
    """HANGUP and ERROR reach callbacks as libvirt's own poll loop shows them."""

    async def test_pipeHangupWithoutData(self) -> None:
        r, w = self.pipe()
        seen = Recorder(lambda watch, *_: self.loop.removeHandle(watch))
        watch = self.watch(r, READABLE, seen)
        self.close(w)
        await seen.called()
        self.assertEqual(seen.calls, [(watch, r, HANGUP, None)])

    async def test_pipeHangupWithData(self) -> None:
        r, w = self.pipe()
        seen = Recorder(lambda watch, *_: self.loop.removeHandle(watch))
        watch = self.watch(r, READABLE, seen)
        os.write(w, b"last words")
        self.close(w)
        await seen.called()
        self.assertEqual(seen.calls, [(watch, r, READABLE | HANGUP, None)])

    async def test_socketPeerClosed(self) -> None:
        a, b = self.socketpair()
        seen = Recorder(lambda watch, *_: self.loop.removeHandle(watch))
        self.watch(a.fileno(), READABLE, seen)
        b.close()
        await seen.called()
        self.assertEqual(seen.calls[0][2], READABLE | HANGUP)

    async def test_errorOnWriteOnlyWatch(self) -> None:
        r, w = self.pipe()
        seen = Recorder()

        def untilError(watch: int, fd: int, events: int, opaque: Any) -> None:
            seen(watch, fd, events, opaque)
            if events & ERROR:
                self.loop.removeHandle(watch)

        self.watch(w, WRITABLE, untilError)
        await seen.called()
        self.close(r)
        await until(lambda: seen.calls[-1][2] & ERROR)
        self.assertEqual(seen.calls[-1][2] & ~WRITABLE, ERROR)

    async def test_hangupRepeatsUntilRemoved(self) -> None:
        r, w = self.pipe()
        seen = Recorder()
        watch = self.watch(r, READABLE, seen)
        self.close(w)
        await seen.called(3)
        self.assertEqual({call[2] for call in seen.calls}, {HANGUP})
        self.loop.removeHandle(watch)
        count = len(seen.calls)
        await turns(5)
        self.assertEqual(len(seen.calls), count)


class ReadAgainTests(WatchTestCase):
    """
    libvirt reads one message per call: a watch that leaves more to read is
    called again in the same turn, up to READS_PER_TURN times, and the
    timers it set to 0 fire once, after all of those reads.
    """

    async def readMessages(self, count: int) -> list[str]:
        a, b = self.socketpair()
        seen: list[str] = []
        timer = 0

        def fired(timer: int, opaque: Any) -> None:
            seen.append("timer")
            self.loop.updateTimeout(timer, -1)

        def readOne(watch: int, fd: int, events: int, opaque: Any) -> None:
            seen.append(os.read(fd, 1).decode())
            self.loop.updateTimeout(timer, 0)  # as libvirt queues an event

        timer = self.loop.addTimeout(-1, fired, None)
        self.addCleanup(self.loop.removeTimeout, timer)
        self.watch(a.fileno(), READABLE, readOne)
        b.send(b"x" * count)
        await until(lambda: len([s for s in seen if s == "x"]) == count and seen[-1] == "timer")
        return seen

    async def test_moreToReadIsReadInTheSameTurn(self) -> None:
        self.assertEqual(await self.readMessages(5), ["x"] * 5 + ["timer"])

    async def test_atMostReadsPerTurn(self) -> None:
        seen = await self.readMessages(READS_PER_TURN + 8)
        self.assertEqual(seen, ["x"] * READS_PER_TURN + ["timer"] + ["x"] * 8 + ["timer"])

    async def test_aWatchThatRaisesIsNotCalledAgainInTheTurn(self) -> None:
        """
        The raise ends the dispatch: its 0-timer fires before the next call
        (within one dispatch, it would fire after both).
        """
        a, b = self.socketpair()
        seen: list[str] = []

        def fired(timer: int, opaque: Any) -> None:
            seen.append("timer")
            self.loop.updateTimeout(timer, -1)

        def raising(watch: int, fd: int, events: int, opaque: Any) -> None:
            seen.append("call")
            self.loop.updateTimeout(timer, 0)
            if seen.count("call") == 1:
                raise RuntimeError("once")
            os.read(fd, 100)

        timer = self.loop.addTimeout(-1, fired, None)
        self.addCleanup(self.loop.removeTimeout, timer)
        watch = self.watch(a.fileno(), READABLE, raising)
        b.send(b"unread")
        await until(lambda: seen.count("timer") == 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        await turns(3)
        self.assertEqual(seen, ["call", "timer", "call", "timer"])
        self.loop.removeHandle(watch)

    async def test_aWatchThatStopsReadingIsNotCalledAgain(self) -> None:
        """A watch that stops asking for READABLE (libvirt does, while a thread reads) stops."""
        a, b = self.socketpair()
        seen: list[int] = []

        def once(watch: int, fd: int, events: int, opaque: Any) -> None:
            seen.append(events)
            self.loop.updateHandle(watch, 0)

        watch = self.watch(a.fileno(), READABLE, once)
        b.send(b"unread")
        await until(lambda: seen)
        await turns(3)
        self.assertEqual(seen, [READABLE])
        self.loop.removeHandle(watch)


class FreeOrderingTests(TestCase):
    """A free callback runs only once its fd has left the reactor."""

    timeout = 60

    def setUp(self) -> None:
        self.freedWhileWatched: list[bool] = []
        self.r, self.w = os.pipe()
        self.addCleanup(os.close, self.w)

    def free(self, opaque: Any) -> None:
        # What libvirt does when the last reference goes: close the fd.
        fd = opaque
        if fd is None:
            return
        self.freedWhileWatched.append(bool(descriptorsOn(fd) + descriptorsOn(fd, readers=False)))
        os.close(fd)

    async def test_removedOnTheReactorThread(self) -> None:
        loop = EventLoop(reactor, free=self.free)
        watch = loop.addHandle(self.r, READABLE | WRITABLE, drainByte, self.r)
        loop.removeHandle(watch)
        await loop.drain()
        self.assertEqual(self.freedWhileWatched, [False])

    async def test_removedFromAnotherThreadWhileOthersFlush(self) -> None:
        """
        Thread T removes the watch; before T has marked anything for the
        reactor, thread U changes another watch, which makes the reactor
        thread flush: it must not free T's watch while its fd is watched.
        """
        between, resume = threading.Event(), threading.Event()

        def isReactorThread() -> bool:
            thread = threading.current_thread()
            if thread.name == "T" and not between.is_set():
                between.set()
                resume.wait(PATIENCE)
            return thread is threading.main_thread()

        loop = EventLoop(reactor, free=self.free, isReactorThread=isReactorThread)
        other, otherW = os.pipe()
        self.addCleanup(os.close, other)
        self.addCleanup(os.close, otherW)
        watch = loop.addHandle(self.r, READABLE, drainByte, self.r)
        otherWatch = loop.addHandle(other, READABLE, drainByte, None)
        remover = threading.Thread(target=loop.removeHandle, args=(watch,), name="T")
        remover.start()
        self.assertTrue(between.wait(PATIENCE))
        # A real change (an update to the same events is a no-op, flushing nothing).
        updater = threading.Thread(target=loop.updateHandle, args=(otherWatch, 0))
        updater.start()
        updater.join()
        await until(lambda: self.freedWhileWatched)
        resume.set()
        remover.join()
        loop.removeHandle(otherWatch)
        await loop.drain()
        self.assertEqual(self.freedWhileWatched, [False])


class WakeUpTests(TestCase):
    """A change from another thread wakes an idle reactor."""

    # Nothing else wakes the reactor here: if the thread's change did not,
    # the test would only end when trial's timeout fires.
    timeout = 10

    async def test_watchAddedByAThreadWakesTheReactor(self) -> None:
        loop = EventLoop(reactor, free=lambda opaque: None)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        os.write(w, b"x")
        seen: Deferred[None] = Deferred()

        def callback(watch: int, fd: int, events: int, opaque: Any) -> None:
            loop.removeHandle(watch)
            seen.callback(None)

        thread = threading.Thread(target=loop.addHandle, args=(r, READABLE, callback, None))
        thread.start()
        thread.join()
        await seen
        await loop.drain()


class RobustnessTests(WatchTestCase):
    """Exceptions, bad input, removal errors and fd reuse."""

    async def test_raisingCallbackKeepsItsDescriptor(self) -> None:
        r, w = self.pipe()
        calls: list[int] = []

        def boom(watch: int, fd: int, events: int, opaque: Any) -> None:
            os.read(fd, 1)
            calls.append(events)
            raise ZeroDivisionError("from a watch")

        self.watch(r, READABLE, boom)
        os.write(w, b"x")
        await until(lambda: calls)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(descriptorsOn(r)), 1)
        os.write(w, b"y")
        await until(lambda: len(calls) == 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_badArgumentsRegisterNothing(self) -> None:
        r, _ = self.pipe()
        self.assertRaises(TypeError, self.loop.addHandle, "3", READABLE, drainByte, None)
        self.assertRaises(ValueError, self.loop.addHandle, -1, READABLE, drainByte, None)
        self.assertRaises(TypeError, self.loop.addHandle, r, None, drainByte, None)
        self.assertRaises(TypeError, self.loop.addHandle, r, READABLE, None, None)
        self.assertEqual(descriptorsOn(r), [])
        self.assertTrue(self.loop.isIdle())

    async def test_doubleRemoveAndUpdateAfterRemove(self) -> None:
        r, w = self.pipe()
        seen = Recorder(drainByte)
        watch = self.loop.addHandle(r, READABLE, seen, "opaque")
        self.assertEqual(self.loop.removeHandle(watch), 0)
        with self.assertRaises(KeyError) as raised:
            self.loop.removeHandle(watch)
        self.assertIn(f"unknown watch {watch}", str(raised.exception))
        self.loop.updateHandle(watch, READABLE)
        self.loop.updateHandle(987654321, READABLE)
        os.write(w, b"x")
        await self.loop.drain()
        await turns(3)
        self.assertEqual(seen.calls, [])
        self.assertEqual(self.freed.calls, [("opaque",)])
        self.assertEqual(descriptorsOn(r), [])

    async def test_fdReusedAfterRemovalAndCloseInAnotherThread(self) -> None:
        r, _w = self.pipe()
        watch = self.watch(r, READABLE, Recorder())
        r2, w2 = self.pipe()

        def removeCloseAndReuse() -> None:
            self.loop.removeHandle(watch)
            # The fd number now names another pipe, before the reactor thread
            # had a chance to stop watching the old one.
            os.dup2(r2, r)

        thread = threading.Thread(target=removeCloseAndReuse)
        thread.start()
        thread.join()
        seen = Recorder(drainByte)
        self.watch(r, READABLE, seen)
        os.write(w2, b"x")
        await seen.called()
        self.assertEqual(len(descriptorsOn(r)), 1)


class ThroughLibvirtTests(TestCase):
    """libvirt's own C entry points reach the installed loop."""

    timeout = 60

    async def test_handleAndTimerThroughLibvirt(self) -> None:
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        seen = Recorder(drainByte)
        before = LOOP.counts()
        watch = libvirt.virEventAddHandle(r, READABLE, seen, "handle")
        ticks = Recorder()
        timer = libvirt.virEventAddTimeout(1, ticks, "timer")
        self.assertEqual(LOOP.counts()["watches"], before["watches"] + 1)
        os.write(w, b"x")
        await seen.called()
        await ticks.called(2)
        self.assertEqual(seen.calls[0], (watch, r, READABLE, "handle"))
        self.assertEqual(ticks.calls[0], (timer, "timer"))
        libvirt.virEventUpdateHandle(watch, 0)
        libvirt.virEventRemoveHandle(watch)
        libvirt.virEventRemoveTimeout(timer)
        await LOOP.drain()
        self.assertEqual(LOOP.counts(), before)

    def test_removingUnknownIdFailsInLibvirt(self) -> None:
        # libvirt-python prints the exception that reports the failure; the
        # message must say what happened.
        stderr, sys.stderr = sys.stderr, io.StringIO()
        try:
            with self.assertRaises(libvirt.libvirtError):
                libvirt.virEventRemoveHandle(987654321)
            with self.assertRaises(libvirt.libvirtError):
                libvirt.virEventRemoveTimeout(987654322)
            printed = sys.stderr.getvalue()
        finally:
            sys.stderr = stderr
        self.assertIn("unknown watch 987654321", printed)
        self.assertIn("unknown timer 987654322", printed)
