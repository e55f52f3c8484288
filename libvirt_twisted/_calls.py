"""
libvirt calls that do not block the reactor.

On a remote connection nearly every libvirt call is a blocking round trip.
These helpers run them on a bounded thread pool of their own, one per
reactor, started and stopped with it, and return Deferreds.  This is safe
because the event loop accepts libvirt's calls from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

#: Threads per reactor unless L{setThreadPoolSize} says otherwise.
DEFAULT_THREADS = 10

_lock = threading.Lock()
_pools: dict[int, tuple[object, ThreadPool]] = {}


def threadPool(reactor: Any = None) -> ThreadPool:
    """The libvirt call pool of C{reactor} (the global reactor by default)."""
    reactor = _resolve(reactor)
    with _lock:
        entry = _pools.get(id(reactor))
        if entry is not None and entry[0] is reactor:
            return entry[1]
        pool = ThreadPool(minthreads=0, maxthreads=DEFAULT_THREADS, name="libvirt-calls")
        _pools[id(reactor)] = (reactor, pool)
    core = IReactorCore(reactor)
    core.callWhenRunning(pool.start)
    core.addSystemEventTrigger("during", "shutdown", _stop, reactor, pool)
    return pool


def _stop(reactor: object, pool: ThreadPool) -> None:
    """Stop C{pool}; the next call makes a new one (trial restarts reactors)."""
    with _lock:
        if _pools.get(id(reactor), (None, None))[1] is pool:
            del _pools[id(reactor)]
    pool.stop()


def setThreadPoolSize(threads: int, reactor: Any = None) -> None:
    """Allow at most C{threads} concurrent libvirt calls on C{reactor}."""
    if not isinstance(threads, int) or isinstance(threads, bool):
        raise TypeError(f"thread pool size must be an int, not {threads!r}")
    if threads < 1:
        raise ValueError(f"thread pool size must be at least 1, not {threads}")
    threadPool(reactor).adjustPoolsize(minthreads=0, maxthreads=threads)


def callInThread(
    reactor: Any, function: Callable[..., T], *args: Any, **kwargs: Any
) -> Deferred[T]:
    """
    Call C{function(*args, **kwargs)} on C{reactor}'s libvirt pool (the
    global reactor if L{None}); the Deferred fires on the reactor thread with
    its result or fails with its exception (a C{libvirtError}, typically).
    """
    reactor = _resolve(reactor)
    return deferToThreadPool(
        IReactorFromThreads(reactor), threadPool(reactor), function, *args, **kwargs
    )


class InThread:
    """
    A libvirt object (connection, domain, network, pool...) whose every
    method call runs on the libvirt pool and returns a Deferred::

        domain = await inThread(conn).lookupByName("web1")
        await inThread(domain).suspend()
    """

    def __init__(self, target: object, reactor: Any = None) -> None:
        if target is None:
            raise TypeError("inThread() needs a libvirt object, not None")
        self._target = target
        self._reactor = reactor

    def __repr__(self) -> str:
        return f"<InThread {self._target!r}>"

    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        method = getattr(self._target, name)
        if not callable(method):
            raise TypeError(f"{name!r} of {self._target!r} is not a method")

        def call(*args: Any, **kwargs: Any) -> Deferred[Any]:
            return callInThread(self._reactor, method, *args, **kwargs)

        call.__name__ = name
        return call


def inThread(target: object, reactor: Any = None) -> InThread:
    """Wrap a libvirt object so that its methods run off the reactor thread."""
    return InThread(target, reactor)


def _resolve(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor
