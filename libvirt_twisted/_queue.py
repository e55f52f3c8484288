"""
EventQueue: a bounded DeferredQueue that can stand in for an event callback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, DeferredQueue, fail
from twisted.logger import Logger

from ._connectionstatus import ConnectionStatus

T = TypeVar("T")


class EventQueueFinished(Exception):
    """The queue was finished: no item will come."""


class EventQueue(DeferredQueue[T]):
    """
    A C{DeferredQueue} to pass wherever a libvirt event callback goes: it
    receives the callback's arguments as a tuple, on a later reactor turn.

    Bound: it holds at most C{size} items that no consumer has taken.  When a
    consumer falls behind, the oldest waiting event is dropped to make room for
    the newest, C{dropped} counts the losses and a warning is logged once per
    overflow episode: memory stays bounded and the freshest state wins.  A
    L{ConnectionStatus} is never dropped: it tells the consumer to
    resynchronise, which is what it must do after losses too.

    L{finish} deregisters the queue from everything it was registered with;
    consumers first get the items still waiting, then C{async for} ends and
    C{get()} fails with L{EventQueueFinished}.

    @param size: the bound, at least 1.
    @ivar bound: the most items it holds that no consumer has taken.
    @ivar dropped: how many events it dropped to stay within its bound.
    @ivar finished: whether L{finish} was called.
    @ivar waiting: the Deferreds of the consumers waiting for an item, as
        C{DeferredQueue} has them.
    @cvar log: where an overflow, and a deregistration that failed, are
        logged.
    """

    log = Logger()

    def __init__(self, size: int = 10_000) -> None:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"EventQueue size must be an int, not {size!r}")
        if size < 1:
            raise ValueError(f"EventQueue size must be at least 1, not {size}")
        super().__init__()
        self.bound = size
        self.dropped = 0
        self.finished = False
        self._overflowing = False
        self._registrations: list[Callable[[], object]] = []

    def __repr__(self) -> str:
        return (
            f"<EventQueue waiting={len(self.pending)} bound={self.bound}"
            f" dropped={self.dropped}{' finished' if self.finished else ''}>"
        )

    def put(self, obj: T) -> None:
        """
        Hand C{obj} to a waiting consumer, or keep it, dropping the oldest
        event if full.  Nothing happens once the queue is finished.

        @param obj: the item: an event's arguments as a tuple, or a
            L{ConnectionStatus}, from whatever it is registered with.
        """
        if self.finished:
            return
        if self.waiting:
            self.waiting.pop(0).callback(obj)
            self._overflowing = False
            return
        if len(self.pending) >= self.bound:
            self._dropOldestEvent()
            if not self._overflowing:
                self._overflowing = True
                self.log.warn(
                    "{queue!r}: consumer falls behind; dropping the oldest events",
                    queue=self,
                )
        self.pending.append(obj)

    def _dropOldestEvent(self) -> None:
        for index, item in enumerate(self.pending):
            if not isinstance(item, ConnectionStatus):
                del self.pending[index]
                self.dropped += 1
                return

    def get(self) -> Deferred[T]:
        """
        The next item.

        @return: a Deferred that fires with the next item, or fails with
            L{EventQueueFinished} once the queue is finished and empty.
        """
        if self.pending:
            self._overflowing = False
            return super().get()
        if self.finished:
            return fail(EventQueueFinished("the queue is finished"))
        return super().get()

    def finish(self) -> None:
        """
        Deregister the queue from every connection it was registered with,
        and end its consumers once the items still waiting are taken.  A
        second call does nothing, so that clean-up code may run twice.
        """
        if self.finished:
            return
        self.finished = True
        registrations, self._registrations = self._registrations, []
        for deregister in registrations:
            try:
                deregister()
            except Exception:
                self.log.failure("deregistering {queue!r} failed", queue=self)
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.errback(EventQueueFinished("the queue is finished"))

    def registered(self, deregister: Callable[[], object]) -> Callable[[], None]:
        """
        Called by whatever registers this queue as a callback: C{deregister}
        undoes that registration on L{finish}.

        @param deregister: undoes the registration; called at most once.
        @return: a function to call instead when the registration ends some
            other way, so that L{finish} does not undo it.
        """
        self._registrations.append(deregister)

        def forget() -> None:
            if deregister in self._registrations:
                self._registrations.remove(deregister)

        return forget

    def __aiter__(self) -> AsyncIterator[T]:
        """C{async for item in queue}: every item, until L{finish}."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.get()
            except EventQueueFinished:
                return
            yield item
