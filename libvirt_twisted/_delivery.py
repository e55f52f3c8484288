"""
Handing events to listeners: a callable at once (inside libvirt's dispatch,
as with libvirt itself), a queue on the next reactor turn, in order with
everything else sent to queues; and the callables libvirt holds, which
refer to their connection weakly.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import MethodType
from typing import Any, cast

from twisted.internet.defer import DeferredQueue
from twisted.logger import Logger

from ._connectionstatus import ConnectionStatus
from ._reactor import Scheduler
from ._registry import Key
from .events import Event

#: What receives events: a callable, or a queue that receives them as tuples
#: (a service's also receives L{ConnectionStatus}es).  A DeferredQueue's item
#: type is invariant: a queue of tuples, of tuples and statuses, or of
#: anything, is one; a queue of other items is refused.
Target = (
    Callable[..., object]
    | DeferredQueue[tuple[Any, ...]]
    | DeferredQueue[tuple[Any, ...] | ConnectionStatus]
    | DeferredQueue[object]
)

#: What receives decoded events (a service's C{watch}): a callable of one
#: L{Event}, or a queue of events and statuses (or of anything).
EventTarget = (
    Callable[[Event], object] | DeferredQueue[Event | ConnectionStatus] | DeferredQueue[object]
)

#: Either: what a service keeps for a subscriber of raw or of decoded events.
Listener = Target | EventTarget


class Delivery:
    """
    Hands items to targets, on the reactor thread: a callable at once (for
    an event, inside libvirt's dispatch, as with libvirt itself); a queue on
    the next reactor turn, outside it, in the order this L{Delivery} was
    given its items.  A target that raises is logged, never passed on.
    """

    log = Logger()

    def __init__(self, clock: Scheduler) -> None:
        self._clock = clock
        self._queued: list[tuple[DeferredQueue[Any], object]] = []

    def give(
        self, target: Callable[..., object] | DeferredQueue[Any], item: tuple[Any, ...]
    ) -> None:
        """Call C{target} with C{item}, or send C{item} to it if it is a queue."""
        if isinstance(target, DeferredQueue):
            self.send(target, item)
            return
        try:
            target(*item)
        except Exception:
            self.log.failure("event callback {callback!r} raised", callback=target)

    def giveOne(self, target: Callable[..., object] | DeferredQueue[Any], value: object) -> None:
        """Call C{target} with C{value} alone, or send it to it if it is a queue."""
        if isinstance(target, DeferredQueue):
            self.send(target, value)
        else:
            self.give(target, (value,))

    def send(self, queue: DeferredQueue[Any], item: object) -> None:
        """Put C{item} in C{queue} on the next reactor turn, in order."""
        if not self._queued:
            self._clock.callLater(0, self._putQueued)
        self._queued.append((queue, item))

    def _putQueued(self) -> None:
        queued, self._queued = self._queued, []
        for queue, item in queued:
            try:
                queue.put(item)
            except Exception:
                self.log.failure("could not queue an event for {queue!r}", queue=queue)


#: A connection's delivery method, held weakly: its connection, and its function.
WeakDelivery = tuple["weakref.ref[Any]", Callable[[Any, Key, tuple[Any, ...]], None]]


def weakDelivery(deliver: Callable[[Key, tuple[Any, ...]], None]) -> WeakDelivery:
    """C{deliver}, a bound method, as a weak reference to its object and its function."""
    method = cast(MethodType, deliver)
    return weakref.ref(method.__self__), method.__func__


class Dispatcher:
    """
    The callback libvirt holds for one key.  It refers to the connection
    weakly: libvirt-python keeps callbacks alive from C, where the garbage
    collector cannot see the cycle.  (A weak reference and a function rather
    than a C{WeakMethod}, which makes a bound method on every event.)
    """

    __slots__ = ("_function", "_key", "_owner")

    def __init__(
        self,
        owner: weakref.ref[Any],
        function: Callable[[Any, Key, tuple[Any, ...]], None],
        key: Key,
    ) -> None:
        self._owner = owner
        self._function = function
        self._key = key

    def __call__(self, virConnect: Any, *args: Any) -> None:
        owner = self._owner()
        if owner is not None:
            # libvirt passes (connection, object, details..., opaque).
            self._function(owner, self._key, args[:-1])


class CloseDispatcher:
    """The close callback libvirt holds; it refers to the wrapper weakly."""

    def __init__(self, closed: Callable[[int], None]) -> None:
        self._closed = weakref.WeakMethod(closed)

    def __call__(self, conn: Any, reason: int, opaque: Any) -> None:
        closed = self._closed()
        if closed is not None:
            closed(reason)
