"""
The Twisted reactor as libvirt's event loop.

libvirt delivers everything asynchronous (object events, keepalive, the close
notice) through six functions registered with C{virEventRegisterImpl}.
L{EventLoop} implements them on a reactor: fd watches become one reactor
descriptor per fd (L{FileWatch}), timers become C{reactor.callLater} calls.

Threads: libvirt calls the six functions from whichever thread makes an API
call, often holding its own locks.  Ids are handed out at once under a lock;
anything that touches the reactor is done at once on the reactor thread and
otherwise recorded and applied by one coalesced C{callFromThread}.  Nothing
here ever waits for the reactor.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any, Protocol

import libvirt
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorFromThreads,
    IReadDescriptor,
    IWriteDescriptor,
)
from twisted.logger import Logger
from twisted.python import threadable

from ._fdwatch import ALWAYS, READABLE, WRITABLE, FileWatch, HandleCallback, Watch

TimeoutCallback = Callable[[int, Any], None]
FreeFunction = Callable[[Any], None]

#: Watch and timer ids come from one process-wide counter: positive, never
#: reused, whatever the number of L{EventLoop} objects.
_ids = itertools.count(1)


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
    if threadable.ioThread is None:
        return threading.current_thread() is threading.main_thread()
    return threadable.isInIOThread()


class Timer:
    """One libvirt timer: interval in ms (-1 disabled, 0 every iteration)."""

    __slots__ = ("call", "callback", "id", "interval", "live", "opaque")

    def __init__(self, id: int, interval: int, callback: TimeoutCallback, opaque: Any) -> None:
        self.id = id
        self.interval = interval
        self.callback = callback
        self.opaque = opaque
        self.live = True
        self.call: IDelayedCall | None = None


class EventLoop:
    """
    libvirt's event loop on a Twisted reactor.  L{install} creates and
    registers the one a process may have; constructing one directly is for
    tests that drive the six functions themselves.

    @param reactor: the reactor to run libvirt's watches and timers on.
    @param free: how to run the free callback libvirt attached to an opaque;
        libvirt-python's C{virEventInvokeFreeCallback} unless a test needs a
        stand-in.
    @param isReactorThread: tells whether the caller is on the reactor thread.
    """

    log = Logger()

    def __init__(
        self,
        reactor: EventLoopReactor,
        free: FreeFunction = libvirt.virEventInvokeFreeCallback,
        isReactorThread: Callable[[], bool] = onReactorThread,
    ) -> None:
        self.reactor = reactor
        self._fromThreads = IReactorFromThreads(reactor, None)
        self._free = free
        self._isReactorThread = isReactorThread
        self._lock = threading.Lock()
        self._watches: dict[int, Watch] = {}
        self._files: dict[int, FileWatch] = {}
        self._timers: dict[int, Timer] = {}
        self._retiring: dict[int, list[FileWatch]] = {}
        self._dirtyFiles: set[FileWatch] = set()
        self._dirtyTimers: set[Timer] = set()
        self._toFree: list[Any] = []
        self._flushPending = False
        self._drainWaiters: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return (
            f"<EventLoop watches={len(self._watches)} fds={len(self._files)}"
            f" timers={len(self._timers)} unfreed={len(self._toFree)}>"
        )

    # The six functions libvirt calls (names and signatures: libvirt-python's).

    def addHandle(self, fd: int, events: int, cb: HandleCallback, opaque: Any) -> int:
        """Watch C{fd} for C{events}; return the new watch id."""
        _checkInt("fd", fd, minimum=0)
        _checkInt("events", events)
        if not callable(cb):
            raise TypeError(f"addHandle: callback {cb!r} is not callable")
        with self._lock:
            watch = Watch(next(_ids), fd, events, cb, opaque)
            fileWatch = self._files.get(fd)
            if fileWatch is None:
                fileWatch = self._files[fd] = FileWatch(fd, self._dispatch, self._lost)
            fileWatch.watches[watch.id] = watch
            self._watches[watch.id] = watch
        self._fileChanged(fileWatch)
        return watch.id

    def updateHandle(self, watch: int, events: int) -> None:
        """Replace the events of C{watch}; an unknown id is ignored."""
        with self._lock:
            found = self._watches.get(watch)
            if found is None:
                return
            found.events = events
            fileWatch = self._files[found.fd]
        self._fileChanged(fileWatch)

    def removeHandle(self, watch: int) -> int:
        """
        Stop C{watch}.  Its free callback runs on a later reactor turn.
        libvirt-python reports failure to libvirt only when this raises.
        """
        with self._lock:
            found = self._watches.pop(watch, None)
            if found is None:
                raise KeyError(f"libvirt removed unknown watch {watch!r}")
            found.live = False
            fileWatch = self._files[found.fd]
            del fileWatch.watches[watch]
            if not fileWatch.watches:
                fileWatch.retired = True
                del self._files[found.fd]
                self._retiring.setdefault(found.fd, []).append(fileWatch)
            self._toFree.append(found.opaque)
        self._fileChanged(fileWatch, freeing=True)
        return 0

    def addTimeout(self, timeout: int, cb: TimeoutCallback, opaque: Any) -> int:
        """Add a timer firing every C{timeout} ms; return its id."""
        _checkInt("timeout", timeout, minimum=-1)
        if not callable(cb):
            raise TypeError(f"addTimeout: callback {cb!r} is not callable")
        with self._lock:
            timer = Timer(next(_ids), timeout, cb, opaque)
            self._timers[timer.id] = timer
        self._timerChanged(timer)
        return timer.id

    def updateTimeout(self, timer: int, timeout: int) -> None:
        """Change the interval of C{timer}, restarting its countdown."""
        with self._lock:
            found = self._timers.get(timer)
            if found is None:
                return
            found.interval = timeout
        self._timerChanged(found)

    def removeTimeout(self, timer: int) -> int:
        """Stop C{timer}; its free callback runs on a later reactor turn."""
        with self._lock:
            found = self._timers.pop(timer, None)
            if found is None:
                raise KeyError(f"libvirt removed unknown timer {timer!r}")
            found.live = False
            self._toFree.append(found.opaque)
        self._timerChanged(found, freeing=True)
        return 0

    # Idleness, for programs that must not stop the reactor too early.

    def isIdle(self) -> bool:
        """Whether no watch or timer is registered and nothing awaits freeing."""
        with self._lock:
            return not (self._watches or self._timers or self._toFree)

    def drain(self) -> Deferred[None]:
        """
        A Deferred that fires once every removed watch and timer has been
        freed, so that libvirt has let go of the connections they belonged to.
        """
        with self._lock:
            if not (self._toFree or self._flushPending):
                return succeed(None)
            waiter: Deferred[None] = Deferred()
            self._drainWaiters.append(waiter)
            return waiter

    def counts(self) -> dict[str, int]:
        """Live watches, watched fds, live timers and unfreed registrations."""
        with self._lock:
            return {
                "watches": len(self._watches),
                "fds": len(self._files),
                "timers": len(self._timers),
                "unfreed": len(self._toFree),
            }

    # Applying changes to the reactor.

    def _fileChanged(self, fileWatch: FileWatch, freeing: bool = False) -> None:
        if self._isReactorThread():
            self._syncFile(fileWatch)
            if freeing:
                self._scheduleFlush(fromReactor=True)
        else:
            with self._lock:
                self._dirtyFiles.add(fileWatch)
            self._scheduleFlush(fromReactor=False)

    def _timerChanged(self, timer: Timer, freeing: bool = False) -> None:
        if self._isReactorThread():
            self._syncTimer(timer)
            if freeing:
                self._scheduleFlush(fromReactor=True)
        else:
            with self._lock:
                self._dirtyTimers.add(timer)
            self._scheduleFlush(fromReactor=False)

    def _scheduleFlush(self, fromReactor: bool) -> None:
        with self._lock:
            if self._flushPending:
                return
            self._flushPending = True
        if fromReactor or self._fromThreads is None:
            self.reactor.callLater(0, self._flush)
        else:
            self._fromThreads.callFromThread(self._flush)

    def _flush(self) -> None:
        """
        On the reactor thread, from a clean stack: apply what other threads
        changed, then run the free callbacks, fds first so that no fd is still
        in the reactor when freeing lets libvirt close it.
        """
        with self._lock:
            self._flushPending = False
            files, self._dirtyFiles = self._dirtyFiles, set()
            timers, self._dirtyTimers = self._dirtyTimers, set()
            frees, self._toFree = self._toFree, []
        for fileWatch in files:
            self._syncFile(fileWatch)
        for timer in timers:
            self._syncTimer(timer)
        for opaque in frees:
            try:
                self._free(opaque)
            except Exception:
                self.log.failure("libvirt free callback raised")
        with self._lock:
            if self._toFree or self._flushPending:
                return
            waiters, self._drainWaiters = self._drainWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _syncFile(self, fileWatch: FileWatch) -> None:
        """
        Make the reactor's interest in an fd match its live watches.  A
        retired descriptor on the same fd number leaves the reactor first, or
        the reactor would take the new one for it.
        """
        with self._lock:
            wanted = 0 if fileWatch.retired else fileWatch.wanted()
            retiring = self._retiring.pop(fileWatch.fd, ())
        for previous in retiring:
            if previous is not fileWatch:
                self._syncFile(previous)
        if fileWatch.retired and not fileWatch.stillSameFile():
            self._forget(fileWatch)
            return
        reading = bool(wanted & READABLE)
        writing = bool(wanted & WRITABLE)
        if reading != fileWatch.reading:
            if reading:
                self.reactor.addReader(fileWatch)
            else:
                self.reactor.removeReader(fileWatch)
            fileWatch.reading = reading
        if writing != fileWatch.writing:
            if writing:
                self.reactor.addWriter(fileWatch)
            else:
                self.reactor.removeWriter(fileWatch)
            fileWatch.writing = writing

    def _forget(self, fileWatch: FileWatch) -> None:
        """
        The fd was closed (and perhaps reused) while still watched: a watch
        removed from another thread, then the fd closed before the reactor
        thread could take it out.  The kernel has dropped it already; make the
        reactor forget it too without failing on the stale fd.
        """
        if not (fileWatch.reading or fileWatch.writing):
            return
        self.log.warn(
            "fd {fd} was closed while the reactor still watched it; libvirt"
            " fds must stay open until the watch's free callback has run",
            fd=fileWatch.fd,
        )
        for remove in (self.reactor.removeReader, self.reactor.removeWriter):
            try:
                remove(fileWatch)
            except OSError:
                _dropStaleEpollEntry(self.reactor, fileWatch.fd)
        fileWatch.reading = fileWatch.writing = False

    def _lost(self, fileWatch: FileWatch) -> None:
        """The reactor dropped an fd that reported a hang-up or error."""
        if not fileWatch.retired:
            self.reactor.callLater(0, self._syncFile, fileWatch)

    def _dispatch(self, fileWatch: FileWatch, events: int) -> None:
        """Call every live watch on the fd whose events intersect C{events}."""
        if not events:
            return
        with self._lock:
            watches = tuple(fileWatch.watches.values())
        for watch in watches:
            got = events & (watch.events | ALWAYS)
            if got and watch.live:
                try:
                    watch.callback(watch.id, watch.fd, got, watch.opaque)
                except Exception:
                    self.log.failure(
                        "libvirt callback for watch {watch} on fd {fd} raised",
                        watch=watch.id,
                        fd=watch.fd,
                    )

    def _syncTimer(self, timer: Timer) -> None:
        """(Re)start C{timer}'s countdown on the reactor, or stop it."""
        call = timer.call
        if not timer.live or timer.interval < 0:
            if call is not None and call.active():
                call.cancel()
            timer.call = None
        elif call is not None and call.active():
            call.reset(timer.interval / 1000)
        else:
            timer.call = self.reactor.callLater(timer.interval / 1000, self._fire, timer)

    def _fire(self, timer: Timer) -> None:
        timer.call = None
        if not timer.live or timer.interval < 0:
            return
        try:
            timer.callback(timer.id, timer.opaque)
        except Exception:
            self.log.failure("libvirt callback for timer {timer} raised", timer=timer.id)
        if timer.call is None and timer.live and timer.interval >= 0:
            timer.call = self.reactor.callLater(timer.interval / 1000, self._fire, timer)


def _checkInt(name: str, value: object, minimum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")


def _dropStaleEpollEntry(reactor: object, fd: int) -> None:
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
