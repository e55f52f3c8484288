"""
libvirt's threads: where libvirt calls run so that they never block the
reactor.

On a remote connection nearly every libvirt call is a blocking round trip.
These helpers run them on a bounded pool of threads, one pool per reactor,
started with it and stopped with it, and return Deferreds.  This is safe
because the event loop accepts libvirt's calls from any thread.

The pool's threads are daemon threads and stopping it waits only briefly: a
call stuck on a frozen daemon (whose keepalive cannot fire once the reactor
has stopped) must not hold the process up at exit.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from incremental import Version
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.deprecate import deprecated
from twisted.python.failure import Failure

from ._reactor import ThreadsReactor, fromThreads, resolve

if TYPE_CHECKING:
    import libvirt

    from ._connectionapi import (
        ConnectInThread,
        DomainCheckpointInThread,
        DomainInThread,
        DomainSnapshotInThread,
        InterfaceInThread,
        NetworkInThread,
        NetworkPortInThread,
        NodeDeviceInThread,
        NWFilterBindingInThread,
        NWFilterInThread,
        SecretInThread,
        StoragePoolInThread,
        StorageVolInThread,
        StreamInThread,
    )

T = TypeVar("T")

#: Threads per reactor unless L{setThreadPoolSize} says otherwise.
DEFAULT_THREADS = 10

#: How long stopping a pool waits for its threads, in all.
STOP_WAIT = 2.0


class CallPool:
    """
    At most C{maxThreads} threads running libvirt calls, created as work
    comes and kept, idle, until the reactor stops; lowering C{maxThreads}
    retires the extra ones as they finish a call.  Results return through
    C{callFromThread}.
    """

    log = Logger()
    _numbers = itertools.count(1)

    def __init__(self, reactor: ThreadsReactor, maxThreads: int = DEFAULT_THREADS) -> None:
        self._reactor = fromThreads(reactor)
        self.maxThreads = maxThreads
        # One lock for the work and the idle count, so that a call sees
        # exactly how many threads wait for work: none is counted idle once
        # it has taken an item, and no item waits while the pool could grow.
        self._condition = threading.Condition()
        self._work: collections.deque[tuple[Deferred[Any], Callable[..., Any], Any, Any]]
        self._work = collections.deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._stopped = False

    def __repr__(self) -> str:
        return f"<CallPool threads={len(self._threads)} max={self.maxThreads}>"

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run C{function} on a pool thread; fire with its result on the reactor."""
        d: Deferred[T] = Deferred()
        with self._condition:
            if self._stopped:
                return fail(RuntimeError("the libvirt call pool has stopped with its reactor"))
            self._work.append((d, function, args, kwargs))
            if len(self._work) > self._idle and len(self._threads) < self.maxThreads:
                thread = threading.Thread(
                    target=self._worker, name=f"libvirt-call-{next(self._numbers)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._condition.notify()
        return d

    def stop(self) -> None:
        """Let the threads finish the calls queued and go; wait for them only briefly."""
        with self._condition:
            self._stopped = True
            threads = list(self._threads)
            self._condition.notify_all()
        deadline = _now() + STOP_WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - _now()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.log.warn("libvirt calls still running at shutdown: {threads}", threads=stuck)

    def _worker(self) -> None:
        while True:
            with self._condition:
                self._idle += 1
                while not self._work and not self._stopped:
                    self._condition.wait()
                self._idle -= 1
                if not self._work:
                    self._threads.remove(threading.current_thread())
                    return
                d, function, args, kwargs = self._work.popleft()
            try:
                result = function(*args, **kwargs)
            except BaseException:
                self._reactor.callFromThread(d.errback, Failure())  # type: ignore[no-untyped-call]
            else:
                self._reactor.callFromThread(d.callback, result)
            del d, function, args, kwargs
            with self._condition:
                if len(self._threads) > self.maxThreads:
                    self._threads.remove(threading.current_thread())
                    return


_lock = threading.Lock()
_pools: dict[int, tuple[object, CallPool]] = {}


def callPool(reactor: ThreadsReactor | None = None) -> CallPool:
    """The libvirt call pool of C{reactor} (the global reactor by default)."""
    reactor = resolve(reactor)
    with _lock:
        entry = _pools.get(id(reactor))
        if entry is not None and entry[0] is reactor:
            return entry[1]
        pool = CallPool(reactor)
        _pools[id(reactor)] = (reactor, pool)
    reactor.addSystemEventTrigger("during", "shutdown", _stop, reactor, pool)
    return pool


def _stop(reactor: object, pool: CallPool) -> None:
    """Stop C{pool}; the next call makes a new one (trial restarts reactors)."""
    with _lock:
        if _pools.get(id(reactor), (None, None))[1] is pool:
            del _pools[id(reactor)]
    pool.stop()


def setThreadPoolSize(threads: int, reactor: ThreadsReactor | None = None) -> None:
    """
    Allow at most C{threads} concurrent libvirt calls on C{reactor}; the
    default is 10.  Lowering it retires the extra threads as they finish a
    call.

    @param threads: the pool's new size, at least 1.
    @param reactor: the reactor whose pool to size (the global reactor if
        C{None}).
    @raise TypeError: C{threads} is not an int.
    @raise ValueError: C{threads} is less than 1.
    """
    if not isinstance(threads, int) or isinstance(threads, bool):
        raise TypeError(f"thread pool size must be an int, not {threads!r}")
    if threads < 1:
        raise ValueError(f"thread pool size must be at least 1, not {threads}")
    callPool(reactor).maxThreads = threads


def deferToLibvirtPool(
    reactor: ThreadsReactor | None, function: Callable[..., T], *args: Any, **kwargs: Any
) -> Deferred[T]:
    """
    Call C{function(*args, **kwargs)} on C{reactor}'s libvirt call pool
    (the global reactor's if C{None}), as Twisted's C{deferToThreadPool}
    does on a thread pool: the Deferred fires on the reactor thread with
    its result, or fails with its exception (a C{libvirtError}, typically).

    @param reactor: the reactor whose pool runs the call, and on whose
        thread the Deferred fires; the global reactor if C{None}.
    @param function: what to call, on a pool thread.
    @param args: its positional arguments.
    @param kwargs: its keyword arguments.
    @return: a Deferred that fires with C{function}'s result, or fails with
        its exception; it fails with C{RuntimeError} once the reactor has
        stopped.
    """
    return callPool(reactor).call(function, *args, **kwargs)


@deprecated(Version("libvirt-twisted", 0, 1, 0), "libvirt_twisted.deferToLibvirtPool")
def callInThread(
    reactor: ThreadsReactor | None, function: Callable[..., T], *args: Any, **kwargs: Any
) -> Deferred[T]:
    """
    L{deferToLibvirtPool} under its old name: Twisted's own C{callInThread}
    returns nothing, while this returns a Deferred.  Deprecated since
    libvirt-twisted 0.1.0 (calling it warns): use L{deferToLibvirtPool},
    which takes the same arguments.

    @param reactor: as L{deferToLibvirtPool} takes it.
    @param function: as L{deferToLibvirtPool} takes it.
    @param args: as L{deferToLibvirtPool} takes them.
    @param kwargs: as L{deferToLibvirtPool} takes them.
    @return: as L{deferToLibvirtPool} returns it.
    """
    return deferToLibvirtPool(reactor, function, *args, **kwargs)


class InThread:
    """
    A libvirt object (connection, domain, network, pool...) whose every
    method call runs on the libvirt pool and returns a Deferred::

        domain = await inThread(conn).lookupByName("web1")
        await inThread(domain).suspend()

    An attribute that is not callable raises C{TypeError}.

    @param target: the libvirt object (or any object) whose methods to run
        on the pool; not C{None}.
    @param reactor: the reactor whose pool runs the calls (see
        L{deferToLibvirtPool}); the global reactor if C{None}.
    """

    def __init__(self, target: object, reactor: ThreadsReactor | None = None) -> None:
        if target is None:
            raise TypeError("inThread() needs a libvirt object, not None")
        self._target = target
        self._reactor = reactor

    def __repr__(self) -> str:
        return f"<InThread {self._target!r}>"

    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        """
        The target's method C{name}, as a function that calls it on the
        libvirt call pool and returns a Deferred of its result.

        @param name: the method's name.
        @raise TypeError: the target's C{name} is not callable.
        """
        method = getattr(self._target, name)
        if not callable(method):
            raise TypeError(f"{name!r} of {self._target!r} is not a method")

        def call(*args: Any, **kwargs: Any) -> Deferred[Any]:
            return deferToLibvirtPool(self._reactor, method, *args, **kwargs)

        call.__name__ = name
        return call


# A type checker sees the methods of each libvirt class, each returning a
# Deferred of its result (see _connectionapi); of anything else, any name.


@overload
def inThread(
    target: libvirt.virConnect, reactor: ThreadsReactor | None = None
) -> ConnectInThread: ...
@overload
def inThread(
    target: libvirt.virDomain, reactor: ThreadsReactor | None = None
) -> DomainInThread: ...
@overload
def inThread(
    target: libvirt.virDomainCheckpoint, reactor: ThreadsReactor | None = None
) -> DomainCheckpointInThread: ...
@overload
def inThread(
    target: libvirt.virDomainSnapshot, reactor: ThreadsReactor | None = None
) -> DomainSnapshotInThread: ...
@overload
def inThread(
    target: libvirt.virInterface, reactor: ThreadsReactor | None = None
) -> InterfaceInThread: ...
@overload
def inThread(
    target: libvirt.virNetwork, reactor: ThreadsReactor | None = None
) -> NetworkInThread: ...
@overload
def inThread(
    target: libvirt.virNetworkPort, reactor: ThreadsReactor | None = None
) -> NetworkPortInThread: ...
@overload
def inThread(
    target: libvirt.virNodeDevice, reactor: ThreadsReactor | None = None
) -> NodeDeviceInThread: ...
@overload
def inThread(
    target: libvirt.virNWFilter, reactor: ThreadsReactor | None = None
) -> NWFilterInThread: ...
@overload
def inThread(
    target: libvirt.virNWFilterBinding, reactor: ThreadsReactor | None = None
) -> NWFilterBindingInThread: ...
@overload
def inThread(
    target: libvirt.virSecret, reactor: ThreadsReactor | None = None
) -> SecretInThread: ...
@overload
def inThread(
    target: libvirt.virStoragePool, reactor: ThreadsReactor | None = None
) -> StoragePoolInThread: ...
@overload
def inThread(
    target: libvirt.virStorageVol, reactor: ThreadsReactor | None = None
) -> StorageVolInThread: ...
@overload
def inThread(
    target: libvirt.virStream, reactor: ThreadsReactor | None = None
) -> StreamInThread: ...
@overload
def inThread(target: object, reactor: ThreadsReactor | None = None) -> InThread: ...


def inThread(target: object, reactor: ThreadsReactor | None = None) -> InThread:
    """
    Wrap a libvirt object so that its methods run off the reactor thread.

    @param target: the libvirt object (connection, domain...) to wrap.
    @param reactor: the reactor whose pool runs the calls; the global
        reactor if C{None}.
    @return: an L{InThread} whose methods return Deferreds; for a type
        checker, one that knows the methods of C{target}'s libvirt class and
        what their Deferreds fire with.
    """
    return InThread(target, reactor)


def _now() -> float:
    return time.monotonic()
