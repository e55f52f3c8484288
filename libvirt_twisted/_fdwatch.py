"""
The reactor's side of one file descriptor that libvirt watches.

libvirt may register the same fd several times, but epoll and poll reactors
key descriptors by fd number, so a second descriptor object on the same fd
would silently steal the first one's events.  L{FileWatch} is therefore the
single reactor descriptor for an fd, whatever the number of libvirt watches on
it; the event loop keeps the reactor's read/write interest equal to the union
of the live watches' events.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, Protocol

import libvirt
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

READABLE: int = libvirt.VIR_EVENT_HANDLE_READABLE
WRITABLE: int = libvirt.VIR_EVENT_HANDLE_WRITABLE
ERROR: int = libvirt.VIR_EVENT_HANDLE_ERROR
HANGUP: int = libvirt.VIR_EVENT_HANDLE_HANGUP

#: Conditions that reach a watch's callback whatever events it asked for.
ALWAYS: int = ERROR | HANGUP

HandleCallback = Callable[[int, int, int, Any], None]


class Watch:
    """
    One libvirt watch: what libvirt passed to C{addHandle}.

    C{live} turns false, under the event loop's lock, the moment libvirt
    removes the watch; dispatch checks it right before every call, so that a
    watch removed on the reactor thread is never called again, even later in
    the same iteration.
    """

    __slots__ = ("callback", "events", "fd", "file", "id", "live", "opaque")

    def __init__(
        self,
        id: int,
        file: FileWatch,
        events: int,
        callback: HandleCallback,
        opaque: Any,
    ) -> None:
        self.id = id
        self.file = file
        self.fd = file.fd
        self.events = events
        self.callback = callback
        self.opaque = opaque
        self.live = True


class Owner(Protocol):
    """What a L{FileWatch} reports to: the event loop."""

    def dispatch(
        self, file: FileWatch, events: int, again: Callable[[], int] | None = None
    ) -> None: ...
    def lost(self, file: FileWatch, events: int) -> None: ...


def pollEvents(poller: select.poll) -> int:
    """
    Ask the kernel, without blocking, what C{poll()} reports for the fd now,
    as libvirt event flags.

    Twisted's C{doRead} says only "readable"; libvirt needs to know whether
    the peer hung up as well (C{POLLIN|POLLHUP}), or it reads end-of-file and
    reports the close reason ERROR instead of EOF.
    """
    try:
        ready = poller.poll(0)
    except OSError:
        return ERROR
    if not ready:
        return 0
    revents = ready[0][1]
    events = 0
    if revents & select.POLLIN:
        events |= READABLE
    if revents & select.POLLOUT:
        events |= WRITABLE
    if revents & (select.POLLERR | select.POLLNVAL):
        events |= ERROR
    if revents & select.POLLHUP:
        events |= HANGUP
    return events


@implementer(IReadDescriptor, IWriteDescriptor)
class FileWatch:
    """
    The reactor descriptor for one fd.  It never reads, writes or closes the
    fd: the fd belongs to libvirt.

    @ivar watches: the live libvirt watches on this fd, by id.
    @ivar reading: whether the reactor has this object as a reader (only
        touched on the reactor thread; likewise C{writing}).
    @ivar retired: set when the last watch went away; a later watch on the same
        fd number gets a fresh L{FileWatch}, since the number may by then name
        another file.
    """

    def __init__(self, fd: int, owner: Owner) -> None:
        self.fd = fd
        self.watches: dict[int, Watch] = {}
        self.reading = False
        self.writing = False
        self.retired = False
        self._owner = owner
        # The reactor asks for it around every read and write.
        self._logPrefix = f"libvirt fd {fd}"
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN | select.POLLOUT)

    def __repr__(self) -> str:
        return f"<FileWatch fd={self.fd} watches={sorted(self.watches)}>"

    def wanted(self) -> int:
        """The union of the live watches' events (caller holds the lock)."""
        events = 0
        for watch in self.watches.values():
            events |= watch.events
        return events

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return self._logPrefix

    def doRead(self) -> None:
        # Errors and hang-ups go with the read side when there is one.
        self._owner.dispatch(self, self.readEvents(), self.readEvents)

    def readEvents(self) -> int:
        """What the read side hears now: readable, errors and hang-ups."""
        return pollEvents(self._poller) & (READABLE | ALWAYS)

    def doWrite(self) -> None:
        mask = WRITABLE if self.reading else WRITABLE | ALWAYS
        self._owner.dispatch(self, pollEvents(self._poller) & mask)

    def connectionLost(self, reason: Failure) -> None:
        """
        epoll and poll reactors report a hang-up without pending input (and
        the select reactor an fd it cannot poll) here, after dropping the
        descriptor; so does a reactor that shuts down, for every descriptor.
        The event loop decides what the watches hear of it.
        """
        self.reading = self.writing = False
        self._owner.lost(self, pollEvents(self._poller))
