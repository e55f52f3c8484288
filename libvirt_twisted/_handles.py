"""
libvirt's watches (its "handles") and the reactor's descriptors for them.

libvirt may watch one fd several times, but the reactor keys descriptors by
fd number.  L{Handles} keeps every live L{Watch} by id, one L{FileWatch} per
watched fd, and the reactor's read and write interest in each fd equal to
the union of its live watches' events.  An fd whose last watch goes is
retired with its L{FileWatch}: by the time libvirt watches that number
again, it may name another file.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.logger import Logger

from ._fdwatch import ALWAYS, READABLE, WRITABLE, FileWatch, HandleCallback, Owner, Watch
from ._reactor import EventLoopReactor, dropStaleEpollEntry


class Handles:
    """
    The event loop's watches (changed under its lock, from any thread), and
    the descriptors the reactor holds for them (on the reactor thread only).

    @param owner: what each L{FileWatch} reports to: the event loop.
    @param lock: the event loop's lock, under which the watches change.
    @param log: where a watch callback that raises is logged (the loop's).
    @ivar watches: the live watches, by id.
    @ivar files: the L{FileWatch} of each watched fd.
    @ivar dispatched: how many watch callbacks ran.
    """

    def __init__(
        self, reactor: EventLoopReactor, owner: Owner, lock: threading.Lock, log: Logger
    ) -> None:
        self.watches: dict[int, Watch] = {}
        self.files: dict[int, FileWatch] = {}
        self.dispatched = 0
        self._reactor = reactor
        self._owner = owner
        self._lock = lock
        self._log = log
        self._inReactor: dict[int, FileWatch] = {}

    def add(self, id: int, fd: int, events: int, callback: HandleCallback, opaque: Any) -> Watch:
        """A new watch on C{fd}, with a new L{FileWatch} if it is the first (under the lock)."""
        fileWatch = self.files.get(fd)
        if fileWatch is None:
            fileWatch = self.files[fd] = FileWatch(fd, self._owner)
        watch = Watch(id, fileWatch, events, callback, opaque)
        fileWatch.watches[watch.id] = watch
        self.watches[watch.id] = watch
        return watch

    def discard(self, watch: Watch, locked: bool = False) -> None:
        """Forget a watch (under the lock); retire its fd if it was the last."""
        if not locked:
            with self._lock:
                self.discard(watch, locked=True)
            return
        watch.live = False
        self.watches.pop(watch.id, None)
        fileWatch = watch.file
        fileWatch.watches.pop(watch.id, None)
        if not fileWatch.watches and not fileWatch.retired:
            fileWatch.retired = True
            del self.files[fileWatch.fd]

    def call(self, fileWatch: FileWatch, events: int) -> int:
        """
        Call every live watch on the fd whose events intersect C{events};
        return how many returned without raising.
        """
        with self._lock:
            watches = tuple(fileWatch.watches.values())
        called = 0
        for watch in watches:
            got = events & (watch.events | ALWAYS)
            if got and watch.live:
                self.dispatched += 1
                try:
                    watch.callback(watch.id, watch.fd, got, watch.opaque)
                    called += 1
                except Exception:
                    self._log.failure(
                        "libvirt callback for watch {watch} on fd {fd} raised",
                        watch=watch.id,
                        fd=watch.fd,
                    )
        return called

    def sync(self, fileWatch: FileWatch) -> None:
        """Make the reactor's interest in an fd match its live watches."""
        if fileWatch.retired:
            self._takeOut(fileWatch)
            return
        with self._lock:
            wanted = fileWatch.wanted()
        reading = bool(wanted & READABLE)
        writing = bool(wanted & WRITABLE)
        owner = self._inReactor.get(fileWatch.fd)
        if owner is not None and owner is not fileWatch and (reading or writing):
            # The reactor keys descriptors by fd number: the retired one
            # that had this number must leave before the new one arrives.
            self._takeOut(owner)
        if reading != fileWatch.reading:
            if reading:
                self._reactor.addReader(fileWatch)
            else:
                self._reactor.removeReader(fileWatch)
            fileWatch.reading = reading
        if writing != fileWatch.writing:
            if writing:
                self._reactor.addWriter(fileWatch)
            else:
                self._reactor.removeWriter(fileWatch)
            fileWatch.writing = writing
        if reading or writing:
            self._inReactor[fileWatch.fd] = fileWatch
        elif self._inReactor.get(fileWatch.fd) is fileWatch:
            del self._inReactor[fileWatch.fd]

    def dropped(self, fileWatch: FileWatch) -> None:
        """The reactor dropped C{fileWatch} by itself: it holds it no more."""
        if self._inReactor.get(fileWatch.fd) is fileWatch:
            del self._inReactor[fileWatch.fd]

    def _takeOut(self, fileWatch: FileWatch) -> None:
        """
        Take a descriptor out of the reactor, even if its fd was closed
        meanwhile (a watch removed from another thread, then its fd closed
        before the reactor thread got to it).
        """
        try:
            if fileWatch.reading:
                self._reactor.removeReader(fileWatch)
            if fileWatch.writing:
                self._reactor.removeWriter(fileWatch)
        except OSError:
            self._log.warn(
                "fd {fd} was closed while the reactor still watched it; an fd"
                " must stay open until its watch's free callback has run",
                fd=fileWatch.fd,
            )
            dropStaleEpollEntry(self._reactor, fileWatch.fd)
        fileWatch.reading = fileWatch.writing = False
        self.dropped(fileWatch)
