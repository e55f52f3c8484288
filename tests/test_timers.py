"""
Timer semantics of the event loop, on a deterministic clock (exact times) and
on the running reactor (iterations).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import libvirt
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import EventLoop

from ._harness import FakeReactor, Recorder, logMessages, turns, until


def clockLoop() -> tuple[EventLoop, FakeReactor, Recorder]:
    clock = FakeReactor()
    freed = Recorder()
    return EventLoop(clock, free=freed, isReactorThread=lambda: True), clock, freed


class TimerOnClockTests(SynchronousTestCase):
    """Intervals, updates and removal, with exact times."""

    def test_disabledTimerNeverFires(self) -> None:
        loop, clock, _ = clockLoop()
        fired = Recorder()
        loop.addTimeout(-1, fired, None)
        clock.advance(3600)
        self.assertEqual(fired.calls, [])

    def test_intervalRepeats(self) -> None:
        loop, clock, _ = clockLoop()
        fired = Recorder()
        timer = loop.addTimeout(100, fired, "opaque")
        clock.advance(0.099)
        self.assertEqual(fired.calls, [])
        clock.advance(0.001)
        self.assertEqual(fired.calls, [(timer, "opaque")])
        for _ in range(4):
            clock.advance(0.1)
        self.assertEqual(len(fired.calls), 5)

    def test_updateRestartsCountdown(self) -> None:
        loop, clock, _ = clockLoop()
        fired = Recorder()
        timer = loop.addTimeout(100, fired, None)
        clock.advance(0.06)
        loop.updateTimeout(timer, 100)
        clock.advance(0.06)
        self.assertEqual(fired.calls, [], "the update did not restart the countdown")
        clock.advance(0.04)
        self.assertEqual(len(fired.calls), 1)

    def test_updateChangesInterval(self) -> None:
        loop, clock, _ = clockLoop()
        fired = Recorder()
        timer = loop.addTimeout(-1, fired, None)
        loop.updateTimeout(timer, 500)
        clock.advance(0.5)
        self.assertEqual(len(fired.calls), 1)
        loop.updateTimeout(timer, -1)
        clock.advance(5)
        self.assertEqual(len(fired.calls), 1)
        loop.updateTimeout(timer, 10)
        clock.advance(0.01)
        self.assertEqual(len(fired.calls), 2)

    def test_updateFromOwnCallback(self) -> None:
        loop, clock, _ = clockLoop()
        fired = Recorder(lambda timer, _: loop.updateTimeout(timer, 300))
        loop.addTimeout(100, fired, None)
        clock.advance(0.1)
        clock.advance(0.299)
        self.assertEqual(len(fired.calls), 1)
        clock.advance(0.001)
        self.assertEqual(len(fired.calls), 2)

    def test_disableFromOwnCallback(self) -> None:
        loop, clock, _ = clockLoop()
        fired = Recorder(lambda timer, _: loop.updateTimeout(timer, -1))
        loop.addTimeout(100, fired, None)
        clock.advance(10)
        self.assertEqual(len(fired.calls), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_removeFromOwnCallback(self) -> None:
        loop, clock, freed = clockLoop()
        inside: list[bool] = []

        def callback(timer: int, opaque: Any) -> None:
            loop.removeTimeout(timer)
            inside.append(bool(freed.calls))

        loop.addTimeout(100, callback, "mine")
        clock.advance(0.1)
        self.assertEqual(inside, [False], "freed inside its own callback")
        clock.advance(0)
        self.assertEqual(freed.calls, [("mine",)])
        clock.advance(10)
        self.assertEqual(inside, [False])
        self.assertTrue(loop.isIdle())

    def test_removeAnotherTimerFromCallback(self) -> None:
        loop, clock, freed = clockLoop()
        other = Recorder()
        otherId = loop.addTimeout(100, other, "other")

        def remover(timer: int, opaque: Any) -> None:
            loop.removeTimeout(timer)
            loop.removeTimeout(otherId)

        loop.addTimeout(100, remover, "remover")
        # Both are due at the same instant; whichever runs first, the other
        # timer never fires once removed.
        clock.advance(0.1)
        clock.advance(1)
        self.assertLessEqual(len(other.calls), 1)
        calls = len(other.calls)
        clock.advance(1)
        self.assertEqual(len(other.calls), calls)
        self.assertEqual(sorted(freed.calls), [("other",), ("remover",)])

    def test_removedFromAnotherThreadNeverFires(self) -> None:
        clock = FakeReactor()
        onReactor = [True]
        loop = EventLoop(clock, free=Recorder(), isReactorThread=lambda: onReactor[0])
        fired = Recorder()
        timer = loop.addTimeout(100, fired, None)
        # Removed by another thread: the countdown runs out before the
        # reactor thread gets to cancel it.
        onReactor[0] = False
        loop.removeTimeout(timer)
        onReactor[0] = True
        clock.advance(0.1)
        self.assertEqual(fired.calls, [])
        clock.runThreadCalls()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_freeRunsOnceOnALaterTurn(self) -> None:
        loop, clock, freed = clockLoop()
        timer = loop.addTimeout(10, Recorder(), "opaque")
        self.assertEqual(loop.removeTimeout(timer), 0)
        self.assertEqual(freed.calls, [], "freed inside removeTimeout")
        self.assertFalse(loop.isIdle())
        clock.advance(0)
        self.assertEqual(freed.calls, [("opaque",)])
        clock.advance(10)
        self.assertEqual(freed.calls, [("opaque",)])
        self.assertTrue(loop.isIdle())

    def test_doubleRemove(self) -> None:
        loop, clock, freed = clockLoop()
        timer = loop.addTimeout(10, Recorder(), "opaque")
        loop.removeTimeout(timer)
        with self.assertRaises(KeyError) as raised:
            loop.removeTimeout(timer)
        self.assertIn(f"unknown timer {timer}", str(raised.exception))
        clock.advance(0)
        self.assertEqual(freed.calls, [("opaque",)])

    def test_updateAfterRemoveIsIgnored(self) -> None:
        loop, clock, _ = clockLoop()
        fired = Recorder()
        timer = loop.addTimeout(10, fired, None)
        loop.removeTimeout(timer)
        loop.updateTimeout(timer, 0)
        loop.updateTimeout(987654321, 5)
        clock.advance(1)
        self.assertEqual(fired.calls, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_armingNoTimerSaysLibvirtLostAnEvent(self) -> None:
        """
        libvirt sets timer -1 to 0 only when it queued an event after the
        queue's timer went with the last registration (tests/_anchor.py):
        the event is lost, and a warning says so.  A stopped keepalive
        updates timer -1 with its interval, which is no cause for alarm.
        """
        loop, clock, _ = clockLoop()
        messages = logMessages(self)
        loop.updateTimeout(-1, 1000)
        loop.updateTimeout(-1, -1)
        self.assertEqual(messages, [])
        loop.updateTimeout(-1, 0)
        clock.advance(1)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(messages), 1)
        self.assertIn("libvirt lost an event", messages[0])

    def test_lostEventObserversHearOnALaterTurn(self) -> None:
        loop, clock, _ = clockLoop()
        heard: list[str] = []

        def observer() -> None:
            heard.append("lost")

        loop.addLostEventObserver(observer)
        loop.updateTimeout(-1, 0)  # inside libvirt's locks: not now
        self.assertEqual(heard, [])
        clock.advance(0)
        self.assertEqual(heard, ["lost"])
        loop.removeLostEventObserver(observer)
        loop.updateTimeout(-1, 0)
        clock.advance(0)
        self.assertEqual(heard, ["lost"])

    def test_idsArePositiveAndNeverReused(self) -> None:
        loop, _clock, _ = clockLoop()
        other, _, _ = clockLoop()
        seen: set[int] = set()
        for _ in range(50):
            ids = [loop.addTimeout(-1, Recorder(), None), other.addTimeout(-1, Recorder(), None)]
            for timer in ids:
                self.assertGreater(timer, 0)
                self.assertNotIn(timer, seen)
                seen.add(timer)
            loop.removeTimeout(ids[0])
            other.removeTimeout(ids[1])

    def test_raisingCallbackIsLoggedAndKeepsFiring(self) -> None:
        loop, clock, _ = clockLoop()

        def boom(timer: int, opaque: Any) -> None:
            raise ZeroDivisionError("from a timer")

        loop.addTimeout(100, boom, None)
        clock.advance(0.1)
        clock.advance(0.1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_badArguments(self) -> None:
        loop, clock, _ = clockLoop()
        self.assertRaises(TypeError, loop.addTimeout, "10", Recorder(), None)
        self.assertRaises(ValueError, loop.addTimeout, -2, Recorder(), None)
        self.assertRaises(TypeError, loop.addTimeout, 10, "not callable", None)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(loop.isIdle())


class TimerSetDuringDispatchTests(SynchronousTestCase):
    """A timer set to 0 by a watch's callback fires right after that callback."""

    def setUp(self) -> None:
        self.loop, self.clock, _ = clockLoop()
        self.r, w = os.pipe()
        os.write(w, b"x")
        os.close(w)
        self.addCleanup(os.close, self.r)
        self.order: list[str] = []

    def dispatchOnce(self, timerAction: Callable[[int], None]) -> int:
        timer = self.loop.addTimeout(-1, lambda t, o: self.order.append("timer"), None)

        def watched(watch: int, fd: int, events: int, opaque: Any) -> None:
            self.order.append("watch in")
            timerAction(timer)
            self.order.append("watch out")

        watch = self.loop.addHandle(self.r, libvirt.VIR_EVENT_HANDLE_READABLE, watched, None)
        (reader,) = self.clock.getReaders()
        reader.doRead()
        self.loop.removeHandle(watch)
        return timer

    def test_firesAfterTheWatchInTheSameIteration(self) -> None:
        timer = self.dispatchOnce(lambda t: self.loop.updateTimeout(t, 0))
        self.assertEqual(self.order, ["watch in", "watch out", "timer"])
        # Still 0: it fires again on every reactor iteration.
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(self.order.count("timer"), 3)
        self.loop.removeTimeout(timer)

    def test_setBackBeforeTheWatchReturns(self) -> None:
        def zeroThenOff(timer: int) -> None:
            self.loop.updateTimeout(timer, 0)
            self.loop.updateTimeout(timer, -1)

        timer = self.dispatchOnce(zeroThenOff)
        self.clock.advance(1)
        self.assertEqual(self.order, ["watch in", "watch out"])
        self.loop.removeTimeout(timer)


class TimerOnReactorTests(TestCase):
    """Iteration semantics on the reactor trial runs."""

    timeout = 60

    def setUp(self) -> None:
        self.freed = Recorder()
        self.loop = EventLoop(reactor, free=self.freed)

    async def test_zeroFiresEveryIterationWithoutStarving(self) -> None:
        fired = Recorder()
        timer = self.loop.addTimeout(0, fired, None)
        await turns(20)
        # One firing per iteration; turns() itself costs one iteration each.
        self.assertGreaterEqual(len(fired.calls), 10)
        # Other timed work still runs while the timer spins.
        other = Recorder()
        reactor.callLater(0.01, other)
        await other.called()
        self.loop.updateTimeout(timer, -1)
        count = len(fired.calls)
        await turns(5)
        self.assertEqual(len(fired.calls), count)
        self.loop.removeTimeout(timer)
        await self.loop.drain()
        self.assertEqual(self.freed.calls, [(None,)])

    async def test_intervalFiresRepeatedly(self) -> None:
        fired = Recorder()
        timer = self.loop.addTimeout(5, fired, "tick")
        await fired.called(3)
        self.loop.removeTimeout(timer)
        count = len(fired.calls)
        await self.loop.drain()
        await turns(3)
        self.assertEqual(len(fired.calls), count)
        self.assertEqual(set(fired.calls), {(timer, "tick")})

    async def test_disabledStaysQuietWhileOthersFire(self) -> None:
        disabled = Recorder()
        ticking = Recorder()
        quiet = self.loop.addTimeout(-1, disabled, None)
        loud = self.loop.addTimeout(1, ticking, None)
        await ticking.called(5)
        self.assertEqual(disabled.calls, [])
        self.loop.removeTimeout(quiet)
        self.loop.removeTimeout(loud)
        await self.loop.drain()
        await until(self.loop.isIdle)
