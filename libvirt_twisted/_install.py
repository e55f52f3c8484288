"""
Registering the reactor with libvirt: once per process, before any connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import libvirt
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.logger import Logger

from ._debug import threshold, warnUnclosed
from ._eventloop import EventLoop
from ._reactor import EventLoopReactor
from ._uri import isEmbedded, maskPasswords, maskURI

log = Logger()

_lock = threading.Lock()
_installed: EventLoop | None = None


class EventLoopInstallError(RuntimeError):
    """libvirt already has an event loop that is not this reactor's."""


class NoEventLoopError(RuntimeError):
    """
    A connection has no event loop to deliver its events: it was opened
    before L{install}, or install() was never called.  Open connections
    after it.
    """


def install(
    reactor: EventLoopReactor | None = None,
    logErrors: bool = True,
    debug: bool | float | None = None,
) -> EventLoop:
    """
    Make C{reactor} (the global reactor by default) libvirt's event loop and
    return the implementation.  Call it before opening any connection; calling
    it again with the same reactor returns the same object.

    @param reactor: the reactor to run libvirt's watches and timers on (an
        C{IReactorFDSet} and C{IReactorTime}); the global reactor if
        C{None}.
    @param logErrors: send libvirt's error reports to the Twisted log (debug
        level) instead of stderr, which is where libvirt prints every error,
        even one the program catches as a C{libvirtError}.
    @param debug: a developer's warnings: a libvirt call through a
        L{LibvirtConnection} that blocks the reactor thread longer than 50 ms
        (C{True}) or C{debug} ms (a number) is logged with its name, and at
        reactor shutdown each connection never closed is named.  C{None}
        reads C{LIBVIRT_TWISTED_DEBUG} (C{1}, or milliseconds).

    @return: the installed L{EventLoop}.
    @raise TypeError: C{reactor} is not a reactor with file descriptors and
        timers.
    @raise EventLoopInstallError: libvirt accepts one event loop per process,
        and it is already another reactor or another implementation.
    """
    limit = threshold(debug)
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    if not (IReactorFDSet.providedBy(reactor) and IReactorTime.providedBy(reactor)):
        raise TypeError(f"install() needs a reactor (IReactorFDSet, IReactorTime), not {reactor!r}")
    with _lock:
        if _installed is not None:
            if _installed.reactor is reactor:
                _debugging(_installed, limit, reactor)
                return _installed
            raise EventLoopInstallError(
                f"libvirt's event loop is already this package's, on"
                f" {_installed.reactor!r}; libvirt accepts one event loop per"
                f" process, so call install() once, with the reactor the program"
                f" runs, and open connections after it"
            )
        loop = _register(reactor, logErrors)
    _addShutdownTriggers(loop, reactor)
    _debugging(loop, limit, reactor)
    log.info("libvirt event loop now runs on {reactor}", reactor=reactor)
    return loop


def _register(reactor: EventLoopReactor, logErrors: bool) -> EventLoop:
    """
    Make a new event loop on C{reactor} libvirt's, and the installed one
    (under the lock); refuse if libvirt already has another.
    """
    global _installed
    _refuseForeignLoop()
    loop = EventLoop(reactor)
    try:
        libvirt.virEventRegisterImpl(
            loop.addHandle,
            loop.updateHandle,
            loop.removeHandle,
            loop.addTimeout,
            loop.updateTimeout,
            loop.removeTimeout,
        )
    except RuntimeError as e:
        raise _foreign(str(e)) from e
    _installed = loop
    if logErrors:
        libvirt.registerErrorHandler(_logLibvirtError, None)
    return loop


def _addShutdownTriggers(loop: EventLoop, reactor: object) -> None:
    """Tell the loop when the reactor shuts down, if the reactor says."""
    addTrigger = getattr(reactor, "addSystemEventTrigger", None)
    if addTrigger is not None:
        # Shutting down drops every descriptor: libvirt must not hear of
        # that.  Once the "before" phase (services closing connections) is
        # over, run the free callbacks that are still due, from a clean stack.
        addTrigger("before", "shutdown", loop.shuttingDown)
        addTrigger("during", "shutdown", loop.shutDown)


def _debugging(loop: EventLoop, limit: float | None, reactor: object) -> None:
    """Turn debug mode on (once for each loop) when asked."""
    if limit is None:
        return
    first = loop.slowCallThreshold is None
    loop.slowCallThreshold = limit
    addTrigger = getattr(reactor, "addSystemEventTrigger", None)
    if first and addTrigger is not None:
        # After the "before" phase, in which services close their connections.
        addTrigger("during", "shutdown", warnUnclosed)


def installed() -> EventLoop | None:
    """The installed event loop, or C{None} before L{install}."""
    return _installed


def _refuseForeignLoop() -> None:
    """
    libvirt-python refuses a second Python implementation itself, but not
    one registered before it in C (C{virEventRegisterDefaultImpl}); adding a
    disabled timer tells whether any implementation is already there.
    """
    try:
        timer = libvirt.virEventAddTimeout(-1, _never, None)
    except libvirt.libvirtError:
        return
    libvirt.virEventRemoveTimeout(timer)
    raise _foreign("another event loop implementation is registered")


_expecting = threading.local()


@contextlib.contextmanager
def errorsExpected() -> Iterator[None]:
    """
    In this thread, libvirt's error reports are not logged: the calls made
    meanwhile are expected to fail (tearing down a lost connection, each of
    its deregistrations refused), and their callers deal with that.
    """
    _expecting.depth = getattr(_expecting, "depth", 0) + 1
    try:
        yield
    finally:
        _expecting.depth -= 1


_lastReported = threading.local()


def errorCode(error: libvirt.libvirtError) -> int | None:
    """
    The code of a C{libvirtError}.  libvirt-python reads it from libvirt's
    last error of the thread when it makes the exception, and any libvirt
    call between resets that (a C{virDomainFree} that the garbage collector
    ran meanwhile, say); then the code this thread last reported stands in
    (reported to this package's error handler: not with C{logErrors=False}).
    """
    code = error.get_error_code()
    if code is None:
        code = getattr(_lastReported, "code", None)
    return code


def _logLibvirtError(context: Any, error: Any) -> None:
    """libvirt's error report, logged; the caller gets it as an exception."""
    _lastReported.code = error[0] if isinstance(error[0], int) else None
    if getattr(_expecting, "depth", 0):
        return
    # Not "message": legacy log observers overwrite that key.
    text = maskPasswords(error[2]) if isinstance(error[2], str) else error[2]
    log.debug("libvirt: {text}", text=text, code=error[0], domain=error[1])


def _never(timer: int, opaque: Any) -> None:
    """A timer callback for a timer that never fires."""


def _foreign(detail: str) -> EventLoopInstallError:
    return EventLoopInstallError(
        f"cannot make the reactor libvirt's event loop: {detail}. libvirt"
        f" accepts one event loop per process: do not call"
        f" virEventRegisterDefaultImpl() or libvirtaio, and call install()"
        f" before anything else registers one"
    )


def checkWatched(conn: libvirt.virConnect, loop: EventLoop) -> None:
    """
    Refuse a remote connection that has no watch in the event loop: one
    opened before install(), which would deliver its events, keepalives and
    close notice only while a call of its own is under way.  One round trip
    tells (libvirt updates the socket's watch from the calling thread), or
    up to three if another thread's call takes ours along with it (libvirt
    lets one thread do the others' I/O): a connection that other threads
    keep busy all along could be refused wrongly.

    @raise NoEventLoopError: it has no watch.
    """
    uri = conn.getURI()
    if isEmbedded(uri):
        return
    for _ in range(3):
        before = loop.watchUpdates()
        conn.getLibVersion()
        if loop.watchUpdates() != before:
            return
    raise NoEventLoopError(
        f"{maskURI(uri)} was opened before libvirt_twisted.install(): libvirt gave it"
        f" no watch in the event loop, so it would deliver events, keepalives and its"
        f" close only during calls of its own; call install() first, then open it"
    )
