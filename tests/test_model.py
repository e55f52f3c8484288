"""
The event loop against a simple model: hypothesis drives random sequences of
adds, updates and removals of watches and timers, from the reactor thread and
from "other threads" (whose changes wait for the reactor, as real ones do),
with callbacks that remove things, and checks the invariants after each step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.trial.unittest import TestCase

from libvirt_twisted import EventLoop

from ._harness import FakeReactor

READABLE = libvirt.VIR_EVENT_HANDLE_READABLE
WRITABLE = libvirt.VIR_EVENT_HANDLE_WRITABLE
EVENTS = st.sampled_from([0, READABLE, WRITABLE, READABLE | WRITABLE])
INTERVALS = st.sampled_from([-1, 0, 10, 50])
BEHAVIOURS = st.sampled_from(["nothing", "removeSelf", "removeAnother", "zeroATimer"])


@dataclass
class Registration:
    """What the model knows of one watch or timer."""

    id: int
    kind: str
    fd: int = -1
    events: int = 0
    live: bool = True
    removedAt: int | None = None
    freed: int = 0
    calls: list[int] = field(default_factory=list)


class EventLoopModel(RuleBasedStateMachine):
    watches = Bundle("watches")
    timers = Bundle("timers")

    def __init__(self) -> None:
        super().__init__()
        self.reactor = FakeReactor()
        self.onReactor = True
        self.inCallback = False
        self.step = 0
        self.byId: dict[int, Registration] = {}
        self.errors: list[str] = []
        self.loop = EventLoop(self.reactor, free=self.free, isReactorThread=lambda: self.onReactor)
        self.pipes = [os.pipe() for _ in range(3)]
        for _, w in self.pipes:
            os.write(w, b"x")
        self.fds = [fd for pair in self.pipes for fd in pair]

    def teardown(self) -> None:
        for fd in self.fds:
            os.close(fd)

    # libvirt's side: the six functions, from the reactor or another thread.

    def free(self, opaque: Registration) -> None:
        if self.inCallback:
            self.errors.append(f"free of {opaque.id} inside a callback")
        opaque.freed += 1
        if opaque.kind == "watch" and not any(
            r.live and r.kind == "watch" and r.fd == opaque.fd for r in self.byId.values()
        ):
            watching = self.reactor.getReaders() + self.reactor.getWriters()
            if any(d.fileno() == opaque.fd for d in watching):
                self.errors.append(f"watch {opaque.id} freed while fd {opaque.fd} is watched")

    def callback(self, registration: Registration, behaviour: str) -> Callable[..., None]:
        def called(*args: Any) -> None:
            registration.calls.append(self.step)
            if self.inCallback:
                self.errors.append(
                    f"{registration.kind} {registration.id} called inside a callback"
                )
            if not registration.live:
                self.errors.append(f"{registration.kind} {registration.id} called after removal")
            self.inCallback = True
            try:
                if behaviour == "removeSelf" and registration.live:
                    self.remove(registration)
                elif behaviour == "removeAnother":
                    others = [r for r in self.byId.values() if r.live and r is not registration]
                    if others:
                        self.remove(others[0])
                elif behaviour == "zeroATimer":
                    timers = [r for r in self.byId.values() if r.live and r.kind == "timer"]
                    if timers:
                        self.loop.updateTimeout(timers[-1].id, 0)
                        timers[-1].events = 0
            finally:
                self.inCallback = False

        return called

    def remove(self, registration: Registration) -> None:
        freed = registration.freed
        if registration.kind == "watch":
            self.loop.removeHandle(registration.id)
        else:
            self.loop.removeTimeout(registration.id)
        if registration.freed != freed:
            self.errors.append(f"{registration.kind} {registration.id} freed inside remove")
        registration.live = False
        registration.removedAt = self.step

    @rule(
        target=watches,
        fdIndex=st.integers(0, 5),
        events=EVENTS,
        onReactor=st.booleans(),
        behaviour=BEHAVIOURS,
    )
    def addWatch(self, fdIndex: int, events: int, onReactor: bool, behaviour: str) -> Registration:
        self.onReactor = onReactor
        registration = Registration(0, "watch", fd=self.fds[fdIndex], events=events)
        registration.id = self.loop.addHandle(
            registration.fd, events, self.callback(registration, behaviour), registration
        )
        self.onReactor = True
        self.byId[registration.id] = registration
        return registration

    @rule(target=timers, interval=INTERVALS, onReactor=st.booleans(), behaviour=BEHAVIOURS)
    def addTimer(self, interval: int, onReactor: bool, behaviour: str) -> Registration:
        self.onReactor = onReactor
        registration = Registration(0, "timer", events=interval)
        registration.id = self.loop.addTimeout(
            interval, self.callback(registration, behaviour), registration
        )
        self.onReactor = True
        self.byId[registration.id] = registration
        return registration

    @rule(registration=watches, events=EVENTS, onReactor=st.booleans())
    def updateWatch(self, registration: Registration, events: int, onReactor: bool) -> None:
        self.onReactor = onReactor
        self.loop.updateHandle(registration.id, events)
        self.onReactor = True
        if registration.live:
            registration.events = events

    @rule(registration=timers, interval=INTERVALS, onReactor=st.booleans())
    def updateTimer(self, registration: Registration, interval: int, onReactor: bool) -> None:
        self.onReactor = onReactor
        self.loop.updateTimeout(registration.id, interval)
        self.onReactor = True
        if registration.live:
            registration.events = interval

    @rule(registration=consumes(watches) | consumes(timers), onReactor=st.booleans())
    def removeOne(self, registration: Registration, onReactor: bool) -> None:
        self.onReactor = onReactor
        try:
            if registration.live:
                self.remove(registration)
            else:
                removeFunction = (
                    self.loop.removeHandle
                    if registration.kind == "watch"
                    else self.loop.removeTimeout
                )
                try:
                    removeFunction(registration.id)
                except KeyError:
                    pass
                else:
                    self.errors.append(f"double removal of {registration.id} accepted")
        finally:
            self.onReactor = True

    # The reactor's side: a turn runs other threads' changes, due timers and ready fds.

    @rule(seconds=st.sampled_from([0, 0.01, 0.05]), threadsLate=st.booleans())
    def turn(self, seconds: float, threadsLate: bool) -> None:
        # A real thread's change can also land after the iteration's thread
        # calls ran, just before a timer that it removed comes due.
        self.step += 1
        if not threadsLate:
            self.runThreadCalls()
        self.reactor.advance(seconds)
        if threadsLate:
            self.runThreadCalls()
        for reader in list(self.reactor.getReaders()):
            if reader in self.reactor.getReaders():
                reader.doRead()
        for writer in list(self.reactor.getWriters()):
            if writer in self.reactor.getWriters():
                writer.doWrite()

    def runThreadCalls(self) -> None:
        self.reactor.runThreadCalls()

    # Invariants.

    def settled(self) -> bool:
        """Whether other threads' changes have all reached the reactor."""
        return not self.reactor.fromThreads and self.loop.drain().called

    @invariant()
    def nothingWentWrong(self) -> None:
        assert not self.errors, self.errors

    @invariant()
    def freedAtMostOnce(self) -> None:
        for registration in self.byId.values():
            assert registration.freed <= (0 if registration.live else 1), registration

    @precondition(lambda self: self.settled())
    @invariant()
    def reactorInterestIsTheUnionOfLiveWatches(self) -> None:
        for fd in self.fds:
            live = [r for r in self.byId.values() if r.kind == "watch" and r.live and r.fd == fd]
            wanted = 0
            for registration in live:
                wanted |= registration.events
            readers = [d for d in self.reactor.getReaders() if d.fileno() == fd]
            writers = [d for d in self.reactor.getWriters() if d.fileno() == fd]
            assert len(readers) == (1 if wanted & READABLE else 0), (fd, wanted, readers)
            assert len(writers) == (1 if wanted & WRITABLE else 0), (fd, wanted, writers)
            if readers and writers:
                assert readers[0] is writers[0], "two descriptors for one fd"

    def end(self) -> None:
        """Remove what is left: then every registration is freed exactly once."""
        for registration in list(self.byId.values()):
            if registration.live:
                self.remove(registration)
        self.runThreadCalls()
        self.reactor.advance(0)
        self.runThreadCalls()
        for registration in self.byId.values():
            assert registration.freed == 1, registration
        assert self.loop.isIdle(), self.loop
        assert not self.reactor.getReaders()
        assert not self.reactor.getWriters()


class EventLoopModelTests(TestCase):
    def test_model(self) -> None:
        class Machine(EventLoopModel):
            def teardown(self) -> None:
                try:
                    self.end()
                finally:
                    super().teardown()

        run_state_machine_as_test(
            Machine, settings=settings(max_examples=400, stateful_step_count=40, deadline=None)
        )
