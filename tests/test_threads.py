"""
The event loop called from many threads at once, as libvirt does.
"""

from __future__ import annotations

import os
import random
import threading
from typing import Any

import libvirt
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from libvirt_twisted import EventLoop

from ._harness import PATIENCE, Recorder, until

READABLE = libvirt.VIR_EVENT_HANDLE_READABLE
WRITABLE = libvirt.VIR_EVENT_HANDLE_WRITABLE


class ThreadTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.freed = Recorder()
        self.loop = EventLoop(reactor, free=self.freed)
        self.pool = ThreadPool(minthreads=8, maxthreads=8, name="threads-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)

    def inThreads(self, count: int, work: Any) -> Any:
        return gatherResults(
            [
                deferToThreadPool(IReactorFromThreads(reactor), self.pool, work, i)
                for i in range(count)
            ]
        )

    async def test_churnFromManyThreads(self) -> None:
        """
        Threads add, update and remove watches and timers on fds that are
        always readable, so that descriptors come and go while callbacks
        fire: every callback runs on the reactor thread, none after its free,
        every free exactly once.
        """
        journal: list[tuple[str, Any]] = []
        threads: set[threading.Thread] = set()
        self.loop = EventLoop(reactor, free=lambda opaque: journal.append(("free", opaque)))
        pipes = [os.pipe() for _ in range(8)]
        for r, w in pipes:
            os.write(w, b"x")
            self.addCleanup(os.close, r)
            self.addCleanup(os.close, w)

        def called(*args: Any) -> None:
            threads.add(threading.current_thread())
            journal.append(("call", args[-1]))

        def churn(seed: int) -> list[int]:
            rng = random.Random(seed)
            ids = []
            for n in range(300):
                r, _ = rng.choice(pipes)
                token = (seed, n)
                watch = self.loop.addHandle(r, rng.choice([0, READABLE]), called, token)
                timer = self.loop.addTimeout(rng.choice([-1, 0, 1]), called, (*token, "t"))
                self.loop.updateHandle(watch, rng.choice([0, READABLE]))
                self.loop.updateTimeout(timer, rng.choice([-1, 0, 5]))
                self.loop.removeHandle(watch)
                self.loop.removeTimeout(timer)
                ids += [watch, timer]
            # At least one callback of each thread's runs before its removal.
            r, _ = rng.choice(pipes)
            ran = threading.Event()

            def seen(*args: Any) -> None:
                called(*args)
                ran.set()

            watch = self.loop.addHandle(r, READABLE, seen, (seed, "last"))
            self.assertTrue(ran.wait(PATIENCE))
            self.loop.removeHandle(watch)
            return [*ids, watch]

        results = await self.inThreads(16, churn)
        await self.loop.drain()
        allIds = [i for ids in results for i in ids]
        self.assertEqual(len(allIds), len(set(allIds)), "an id was handed out twice")
        self.assertTrue(all(i > 0 for i in allIds))
        self.assertTrue(self.loop.isIdle(), self.loop)
        freed = [opaque for kind, opaque in journal if kind == "free"]
        self.assertEqual(len(freed), len(allIds))
        self.assertEqual(len(set(freed)), len(freed), "a free ran twice")
        afterFree = set()
        seenFree: set[Any] = set()
        for kind, opaque in journal:
            if kind == "free":
                seenFree.add(opaque)
            elif opaque in seenFree:
                afterFree.add(opaque)
        self.assertEqual(afterFree, set(), "called after its free")
        calledBack = {opaque for kind, opaque in journal if kind == "call"}
        self.assertLessEqual({(seed, "last") for seed in range(16)}, calledBack)
        self.assertLessEqual(threads, {threading.main_thread()})
        fds = {r for r, _ in pipes}
        self.assertEqual([d for d in reactor.getReaders() if d.fileno() in fds], [])
        self.assertEqual([d for d in reactor.getWriters() if d.fileno() in fds], [])

    async def test_watchAddedInAThreadFiresOnTheReactor(self) -> None:
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        threads: list[threading.Thread] = []
        seen = Recorder(
            lambda watch, fd, events, opaque: threads.append(threading.current_thread())
        )
        watch = (await self.inThreads(1, lambda _: self.loop.addHandle(r, READABLE, seen, None)))[0]
        os.write(w, b"x")
        await seen.called()
        self.assertIs(threads[0], threading.main_thread())
        self.loop.removeHandle(watch)
        await self.loop.drain()

    async def test_neverWaitsForTheReactor(self) -> None:
        """
        libvirt holds its own locks while it calls the event loop, and its
        callbacks take the same locks on the reactor thread: a thread that
        waited for the reactor here would deadlock.
        """
        libvirtLock = threading.Lock()
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        entered = threading.Event()
        released = threading.Event()
        done: list[bool] = []

        def callback(watch: int, fd: int, events: int, opaque: Any) -> None:
            os.read(fd, 1)
            entered.set()
            with libvirtLock:
                done.append(True)

        watch = self.loop.addHandle(r, READABLE, callback, None)

        def holdLockAndCallLoop(_: int) -> None:
            with libvirtLock:
                os.write(w, b"x")
                self.assertTrue(entered.wait(PATIENCE))
                # The reactor thread is blocked on libvirtLock in callback.
                for _ in range(50):
                    timer = self.loop.addTimeout(0, lambda t, o: None, None)
                    self.loop.updateHandle(watch, READABLE)
                    self.loop.removeTimeout(timer)
                released.set()

        await self.inThreads(1, holdLockAndCallLoop)
        await until(lambda: done)
        self.assertTrue(released.is_set())
        self.loop.removeHandle(watch)
        await self.loop.drain()
        self.assertTrue(self.loop.isIdle())
