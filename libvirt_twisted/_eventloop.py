"""
The Twisted reactor as libvirt's event loop.

libvirt delivers everything asynchronous (object events, keepalive, the close
notice) through six functions registered with C{virEventRegisterImpl}.
L{EventLoop} implements them on a reactor: fd watches become one reactor
descriptor per fd (L{Handles}), timers become C{reactor.callLater} calls
(L{Timers}).

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
from typing import Any

import libvirt
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from ._fdwatch import READABLE, FileWatch, HandleCallback
from ._handles import Handles
from ._lostevents import LostEvents
from ._reactor import EventLoopReactor, onReactorThread
from ._timers import TimeoutCallback, Timer, Timers

FreeFunction = Callable[[Any], None]

#: Watch and timer ids come from one process-wide counter: positive, never
#: reused, whatever the number of L{EventLoop} objects.
_ids = itertools.count(1)

#: The most times one reactor turn calls a watch that has more to read.
READS_PER_TURN = 32


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
    @ivar reactor: the reactor libvirt's watches and timers run on.
    @ivar slowCallThreshold: in debug mode (see L{install}), the seconds a
        libvirt call through a L{LibvirtConnection} may block the reactor
        thread before a warning names it; C{None} otherwise.
    @cvar log: where a callback or free callback that raised, or a reactor
        update that failed, is logged.
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
        self._handles = Handles(reactor, self, self._lock, self.log)
        self._timers = Timers(reactor, self.log)
        self._dirty: set[FileWatch | Timer] = set()
        self._toFree: list[tuple[FileWatch | Timer, Any]] = []
        self._flushPending = False
        self._drainWaiters: list[Deferred[None]] = []
        self._shuttingDown = False
        self._lostEvents = LostEvents(self._later)
        self._perThread = threading.local()
        self.slowCallThreshold: float | None = None

    def __repr__(self) -> str:
        return (
            f"<EventLoop watches={len(self._handles.watches)} fds={len(self._handles.files)}"
            f" timers={len(self._timers.byId)} unfreed={len(self._toFree)}>"
        )

    @property
    def fired(self) -> int:
        """How many timer callbacks ran (for wake-up accounting)."""
        return self._timers.fired

    @property
    def dispatched(self) -> int:
        """How many watch callbacks ran."""
        return self._handles.dispatched

    # The six functions libvirt calls (names and signatures: libvirt-python's).

    def addHandle(self, fd: int, events: int, cb: HandleCallback, opaque: Any) -> int:
        """
        Watch C{fd} for C{events}: libvirt's C{virEventAddHandleFunc}.

        @param fd: the file descriptor, which stays libvirt's (nothing here
            reads, writes or closes it).
        @param events: a mask of C{libvirt.VIR_EVENT_HANDLE_*}.
        @param cb: called C{(watch, fd, events, opaque)} on the reactor
            thread with the events that occurred.
        @param opaque: passed to C{cb}; freed by the free callback libvirt
            attached to it once the watch is removed.
        @return: the new watch id (positive, never reused).
        """
        _checkInt("fd", fd, minimum=0)
        _checkInt("events", events)
        if not callable(cb):
            raise TypeError(f"addHandle: callback {cb!r} is not callable")
        with self._lock:
            watch = self._handles.add(next(_ids), fd, events, cb, opaque)
        try:
            self._changed(watch.file)
        except BaseException:
            self._handles.discard(watch)
            self._syncSafely(watch.file)
            raise
        return watch.id

    def updateHandle(self, watch: int, events: int) -> None:
        """
        Replace the events of C{watch}: libvirt's
        C{virEventUpdateHandleFunc}.  An unknown id is ignored.

        @param watch: an id from L{addHandle}.
        @param events: the new mask of C{libvirt.VIR_EVENT_HANDLE_*}.
        """
        self._perThread.watchUpdates = getattr(self._perThread, "watchUpdates", 0) + 1
        with self._lock:
            found = self._handles.watches.get(watch)
            if found is None or found.events == events:
                return
            found.events = events
        self._changed(found.file)

    def removeHandle(self, watch: int) -> int:
        """
        Stop C{watch}: libvirt's C{virEventRemoveHandleFunc}.  Its free
        callback runs on a later reactor turn.  libvirt-python reports
        failure to libvirt only when this raises.

        @param watch: an id from L{addHandle}.
        @return: 0.
        @raise KeyError: no watch has that id.
        """
        with self._lock:
            found = self._handles.watches.get(watch)
            if found is None:
                raise KeyError(f"libvirt removed unknown watch {watch!r}")
            self._handles.discard(found, locked=True)
            self._toFree.append((found.file, found.opaque))
        self._changed(found.file, freeing=True)
        return 0

    def addTimeout(self, timeout: int, cb: TimeoutCallback, opaque: Any) -> int:
        """
        Add a timer firing every C{timeout} ms: libvirt's
        C{virEventAddTimeoutFunc}.

        @param timeout: the interval in milliseconds; 0 fires on every loop
            iteration, -1 disables the timer.
        @param cb: called C{(timer, opaque)} on the reactor thread.
        @param opaque: passed to C{cb}; freed by the free callback libvirt
            attached to it once the timer is removed.
        @return: the new timer id (positive, never reused).
        """
        _checkInt("timeout", timeout, minimum=-1)
        if not callable(cb):
            raise TypeError(f"addTimeout: callback {cb!r} is not callable")
        with self._lock:
            timer = Timer(next(_ids), timeout, cb, opaque)
            self._timers.byId[timer.id] = timer
        self._changed(timer)
        return timer.id

    def updateTimeout(self, timer: int, timeout: int) -> None:
        """
        Change the interval of C{timer}, restarting its countdown.  An
        unknown id is ignored; arming timer -1 is libvirt's trace of a lost
        event (see C{_lostevents.py}).  libvirt's
        C{virEventUpdateTimeoutFunc}.

        @param timer: an id from L{addTimeout}.
        @param timeout: the new interval in milliseconds, as L{addTimeout}
            takes it.
        """
        if timer == -1 and timeout == 0:
            self._lostEvents.seen()
            return
        with self._lock:
            found = self._timers.byId.get(timer)
            if found is None:
                return
            found.interval = timeout
        # The hot path: libvirt updates timers on every RPC and every event.
        if self._isReactorThread():
            self._timers.sync(found)
        else:
            self._changed(found)

    def removeTimeout(self, timer: int) -> int:
        """
        Stop C{timer}: libvirt's C{virEventRemoveTimeoutFunc}.  Its free
        callback runs on a later reactor turn.

        @param timer: an id from L{addTimeout}.
        @return: 0.
        @raise KeyError: no timer has that id.
        """
        with self._lock:
            found = self._timers.byId.pop(timer, None)
            if found is None:
                raise KeyError(f"libvirt removed unknown timer {timer!r}")
            found.live = False
            self._toFree.append((found, found.opaque))
        self._changed(found, freeing=True)
        return 0

    def addLostEventObserver(self, observer: Callable[[], object]) -> None:
        """
        Call C{observer}, on a later reactor turn, whenever libvirt loses an
        event to its race in this process (which connection's, libvirt does
        not say): a service with an inventory resyncs at once.

        @param observer: called with no argument.
        """
        self._lostEvents.addObserver(observer)

    def removeLostEventObserver(self, observer: Callable[[], object]) -> None:
        """
        Stop calling C{observer}.

        @param observer: one given to L{addLostEventObserver}.
        """
        self._lostEvents.removeObserver(observer)

    def _later(self, function: Callable[[], None]) -> None:
        """Call C{function} on a later reactor turn, from any thread."""
        if self._isReactorThread() or self._fromThreads is None:
            self.reactor.callLater(0, function)
        else:
            self._fromThreads.callFromThread(function)

    def watchUpdates(self) -> int:
        """
        How many times libvirt has updated a watch from the calling thread.
        A remote connection's every round trip updates its socket's watch
        from the thread that makes it, unless the connection has no watch in
        this loop (it was opened before L{install}).
        """
        count: int = getattr(self._perThread, "watchUpdates", 0)
        return count

    def onReactorThread(self) -> bool:
        """Whether the caller is on the thread that runs this loop's reactor."""
        return self._isReactorThread()

    # Idleness, for programs that must not stop the reactor too early.

    def isIdle(self) -> bool:
        """Whether no watch or timer is registered and nothing awaits freeing."""
        with self._lock:
            return not (self._handles.watches or self._timers.byId or self._toFree)

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
                "watches": len(self._handles.watches),
                "fds": len(self._handles.files),
                "timers": len(self._timers.byId),
                "unfreed": len(self._toFree),
            }

    def shuttingDown(self) -> None:
        """
        The reactor is shutting down: it is about to drop every descriptor,
        which says nothing about libvirt's fds, so libvirt must not hear of it.
        """
        self._shuttingDown = True

    def shutDown(self) -> None:
        """
        The reactor is shutting down and the services have closed their
        connections: run the free callbacks still due, from a clean stack.
        """
        self._flush()

    # Applying changes to the reactor.

    def _changed(self, thing: FileWatch | Timer, freeing: bool = False) -> None:
        if self._isReactorThread():
            self._sync(thing)
            if freeing:
                self._scheduleFlush(fromReactor=True)
        else:
            with self._lock:
                self._dirty.add(thing)
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
        changed, then run the free callbacks, each after its own fd or timer
        has left the reactor, so that freeing cannot let libvirt close an fd
        the reactor still watches.
        """
        with self._lock:
            self._flushPending = False
            dirty, self._dirty = self._dirty, set()
            frees, self._toFree = self._toFree, []
        for thing in dirty:
            self._syncSafely(thing)
        for thing, opaque in frees:
            self._syncSafely(thing)
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

    def _syncSafely(self, thing: FileWatch | Timer) -> None:
        try:
            self._sync(thing)
        except Exception:
            self.log.failure("updating the reactor for {thing!r} failed", thing=thing)

    def _sync(self, thing: FileWatch | Timer) -> None:
        if isinstance(thing, Timer):
            self._timers.sync(thing)
        else:
            self._handles.sync(thing)

    def dispatch(
        self, fileWatch: FileWatch, events: int, again: Callable[[], int] | None = None
    ) -> None:
        """
        Call every live watch on the fd whose events intersect C{events}.
        With C{again} (what the fd's read side hears now), a watch that read
        and left more to read is called again, up to L{READS_PER_TURN} times
        in all: libvirt reads one message per call, and each reactor turn
        costs more than the message.  Timers set to 0 meanwhile (libvirt's
        event queue, filled by what the watch read) fire right after, in
        this same iteration, once for all the messages read.  The reactor
        descriptors call it; a program does not.

        @param fileWatch: the reactor descriptor of the fd.
        @param events: the C{libvirt.VIR_EVENT_HANDLE_*} that occurred.
        @param again: asks the fd, without blocking, what its read side hears now.
        """
        if not events:
            return
        timers = self._timers
        timers.dispatching = True
        try:
            reads = 0
            # Again while there is more to read and no hang-up (that waits for
            # the next turn), a watch still reads, and none raised (logged once
            # a turn, not once a read).
            while self._handles.call(fileWatch, events) and again is not None:
                reads += 1
                if reads >= READS_PER_TURN or fileWatch.retired:
                    break
                events = again()
                if events != READABLE:
                    break
        finally:
            timers.dispatching = False
        timers.fireDue()

    def lost(self, fileWatch: FileWatch, events: int) -> None:
        """
        The reactor dropped an fd.  Tell its watches what poll() sees and, as
        libvirt's own loop is level-triggered, put it back next turn while
        watches remain; unless the reactor is merely shutting down.  The
        reactor descriptors call it; a program does not.

        @param fileWatch: the reactor descriptor the reactor dropped.
        @param events: the C{libvirt.VIR_EVENT_HANDLE_*} that poll() sees on
            its fd.
        """
        self._handles.dropped(fileWatch)
        if self._shuttingDown or not events:
            return
        self.dispatch(fileWatch, events)
        if not fileWatch.retired:
            self.reactor.callLater(0, self._syncSafely, fileWatch)


def _checkInt(name: str, value: object, minimum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
