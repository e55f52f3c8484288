"""
What the package needs of a Twisted reactor, and what it must know about
reactors' behaviour: which thread is the reactor's, and how Twisted's epoll
reactor's bookkeeping survives an fd closed under it.

The needs are L{typing.Protocol}s, so that any reactor (and a test's fake
one) fits them without declaring anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorFromThreads,
    IReadDescriptor,
    IWriteDescriptor,
)
from twisted.python import threadable

R = TypeVar("R")


class Scheduler(Protocol):
    """What schedules retries, timeouts and deliveries: a reactor, or a test's C{Clock}."""

    def callLater(
        self, delay: float, callable: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> IDelayedCall: ...
    def seconds(self) -> float: ...


class EventLoopReactor(Scheduler, Protocol):
    """
    What the event loop needs of a reactor: fd sets and time, and
    C{callFromThread} (L{IReactorFromThreads}) unless every call comes from
    the reactor thread, as with a test's fake reactor.
    """

    def addReader(self, reader: IReadDescriptor) -> None: ...
    def addWriter(self, writer: IWriteDescriptor) -> None: ...
    def removeReader(self, reader: IReadDescriptor) -> None: ...
    def removeWriter(self, writer: IWriteDescriptor) -> None: ...


class ThreadsReactor(Scheduler, Protocol):
    """
    What the connection layer needs of a reactor: time, and a shutdown
    trigger to stop libvirt's threads with it.  Results come back from those
    threads through C{callFromThread}, which every real reactor has
    (L{IReactorFromThreads}, checked by L{fromThreads}) although Twisted's
    annotation of the global reactor leaves it out.
    """

    def addSystemEventTrigger(
        self,
        phase: str,
        eventType: str,
        callable: Callable[..., Any],
        /,
        *args: Any,
        **kw: Any,
    ) -> Any: ...


def fromThreads(reactor: object) -> IReactorFromThreads:
    """C{reactor} as L{IReactorFromThreads}, or a TypeError saying it is not one."""
    adapted = IReactorFromThreads(reactor, None)
    if adapted is None:
        raise TypeError(f"{reactor!r} has no callFromThread: it is not a reactor")
    return adapted


def resolve(reactor: R | None) -> R:
    """C{reactor}, or the global reactor (installed by now) if C{None}."""
    if reactor is not None:
        return reactor
    from twisted.internet import reactor as globalReactor

    found: Any = globalReactor
    return found  # type: ignore[no-any-return]


def onReactorThread() -> bool:
    """
    Whether the caller is on the reactor thread.  Before any reactor has run,
    the main thread counts as the reactor thread: that is where programs set
    things up before C{reactor.run()}.
    """
    ioThread = threadable.ioThread
    if ioThread is None:
        return threading.current_thread() is threading.main_thread()
    return bool(ioThread == threading.get_ident())


def dropStaleEpollEntry(reactor: object, fd: int) -> None:
    """
    Twisted's epoll reactor deletes its record of a descriptor before asking
    the kernel, so a failed removal leaves the fd number marked as watched,
    which would make it ignore the next descriptor on that number.
    """
    for name in ("_reads", "_writes"):
        fds = getattr(reactor, name, None)
        if isinstance(fds, set):
            fds.discard(fd)
    selectables = getattr(reactor, "_selectables", None)
    if isinstance(selectables, dict):
        selectables.pop(fd, None)
