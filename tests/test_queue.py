"""
EventQueue on its own: the bound and its policy, finishing, async iteration.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import EventQueue, EventQueueFinished

from ._harness import logMessages


class EventQueueTests(SynchronousTestCase):
    def test_handsItemsToWaitingConsumersFirst(self) -> None:
        queue: EventQueue[int] = EventQueue(size=2)
        got: list[int] = []
        queue.get().addCallback(got.append)
        queue.put(1)
        self.assertEqual(got, [1])
        self.assertEqual(queue.pending, [])

    def test_boundDropsTheOldestAndCounts(self) -> None:
        queue: EventQueue[int] = EventQueue(size=3)
        for i in range(10):
            queue.put(i)
        self.assertEqual(queue.pending, [7, 8, 9])
        self.assertEqual(queue.dropped, 7)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_overflowWarnsOncePerEpisode(self) -> None:
        messages = logMessages(self)

        def warnings() -> int:
            return sum("falls behind" in message for message in messages)

        queue: EventQueue[int] = EventQueue(size=1)
        for i in range(5):
            queue.put(i)
        self.assertEqual(warnings(), 1)
        queue.get()
        for i in range(5):
            queue.put(i)
        self.assertEqual(warnings(), 2)

    def test_finishEndsConsumersAfterTheRemainingItems(self) -> None:
        queue: EventQueue[str] = EventQueue()
        queue.put("last")
        waiting = EventQueue[str]()
        failures: list[object] = []
        waiting.get().addErrback(failures.append)
        queue.finish()
        waiting.finish()
        self.assertEqual(self.successResultOf(queue.get()), "last")
        self.failureResultOf(queue.get(), EventQueueFinished)
        self.assertEqual(len(failures), 1)
        queue.put("ignored")
        self.assertEqual(queue.pending, [])

    def test_finishTwiceDoesNothingTheSecondTime(self) -> None:
        queue: EventQueue[int] = EventQueue()
        calls: list[str] = []
        queue.registered(lambda: calls.append("deregistered"))
        queue.finish()
        queue.finish()  # clean-up code that runs twice
        self.assertEqual(calls, ["deregistered"])
        self.assertTrue(queue.finished)

    def test_finishRunsDeregistrations(self) -> None:
        queue: EventQueue[int] = EventQueue()
        calls: list[str] = []
        queue.registered(lambda: calls.append("a"))
        forget = queue.registered(lambda: calls.append("b"))
        forget()

        def broken() -> None:
            raise RuntimeError("deregistration failed")

        queue.registered(broken)
        queue.finish()
        self.assertEqual(calls, ["a"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_badSize(self) -> None:
        for size in (0, -1):
            self.assertRaises(ValueError, EventQueue, size)
        for wrong in ("10", 1.5, True, None):
            self.assertRaises(TypeError, EventQueue, wrong)


class AsyncIterationTests(TestCase):
    async def test_asyncForEndsWhenFinished(self) -> None:
        queue: EventQueue[int] = EventQueue()
        for i in range(3):
            queue.put(i)
        seen = []
        async for item in queue:
            seen.append(item)
            if item == 2:
                queue.finish()
        self.assertEqual(seen, [0, 1, 2])
