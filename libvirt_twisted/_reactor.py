"""
What the package needs of a Twisted reactor, and what it must know about
reactors' behaviour: which thread is the reactor's, and how Twisted's epoll
reactor's bookkeeping survives an fd closed under it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReadDescriptor, IWriteDescriptor
from twisted.python import threadable


class EventLoopReactor(Protocol):
    """
    What the event loop needs of a reactor: fd sets and time, and
    C{callFromThread} (L{IReactorFromThreads}) unless every call comes from
    the reactor thread, as with a test's fake reactor.
    """

    def addReader(self, reader: IReadDescriptor) -> None: ...
    def addWriter(self, writer: IWriteDescriptor) -> None: ...
    def removeReader(self, reader: IReadDescriptor) -> None: ...
    def removeWriter(self, writer: IWriteDescriptor) -> None: ...
    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall: ...


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
