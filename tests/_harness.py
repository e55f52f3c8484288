"""
Trial helpers shared by the test modules: the installed event loop, a
private libvirtd per test, QEMU domain XML, and ways to wait for conditions
on the reactor without sleeping.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from typing import Any, TypeVar, cast

import libvirt
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessTransport, IReactorFromThreads
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from libvirt_twisted import EventLoop, install
from libvirt_twisted.testing import PrivateLibvirtd, daemonUnavailable

T = TypeVar("T")
Calls = list[tuple[Any, ...]]

#: libvirt's event loop for the whole test run: the reactor trial runs.
LOOP: EventLoop = install()

#: How long a test waits for something that should happen within a second.
PATIENCE = 20.0

_sharedCache: str | None = None


def _qemuCache() -> str:
    """One QEMU capabilities cache for every daemon of this run."""
    global _sharedCache
    if _sharedCache is None:
        _sharedCache = tempfile.mkdtemp(prefix="libvirt-twisted-cache-")
        atexit.register(shutil.rmtree, _sharedCache, True)
    return _sharedCache


def requireDaemon() -> None:
    """
    Skip the calling test where no private libvirtd can run, except under
    CI (CI=true), where a skipped real-daemon test would hide a broken set-up.
    """
    reason = daemonUnavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        raise AssertionError(f"CI=true but no private libvirtd can run: {reason}")
    raise SkipTest(reason)


def startDaemon(case: TestCase, **config: str | int) -> PrivateLibvirtd:
    """
    A private libvirtd for C{case}, stopped (with its QEMUs) at cleanup;
    C{config} goes into its libvirtd.conf.
    """
    requireDaemon()
    daemon = PrivateLibvirtd(cacheDir=_qemuCache(), config=config)
    case.addCleanup(daemon.stop)
    daemon.start()
    return daemon


def openConnection(case: TestCase, uri: str) -> libvirt.virConnect:
    """Open C{uri}; at cleanup close it and wait until libvirt freed it."""
    conn = libvirt.open(uri)
    case.addCleanup(closeAndDrain, conn)
    return conn


def closeAndDrain(conn: libvirt.virConnect) -> Deferred[None]:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
    return LOOP.drain()


def turns(count: int = 1) -> Deferred[None]:
    """A Deferred that fires after C{count} more reactor iterations."""
    d: Deferred[None] = deferLater(reactor, 0, lambda: None)
    for _ in range(count - 1):
        d.addCallback(lambda _: deferLater(reactor, 0, lambda: None))
    return d


def until(
    condition: Callable[[], T], timeout: float = PATIENCE, interval: float = 0.005
) -> Deferred[T]:
    """
    A Deferred that fires with C{condition()} once it is true, checked on
    the reactor every few milliseconds; it fails after C{timeout} seconds.
    """
    result: Deferred[T] = Deferred()
    deadline = reactor.seconds() + timeout

    def check() -> None:
        value = condition()
        if value:
            result.callback(value)
        elif reactor.seconds() > deadline:
            result.errback(AssertionError(f"still false after {timeout}s: {condition!r}"))
        else:
            reactor.callLater(interval, check)

    check()
    return result


def spawnPython(
    case: TestCase,
    protocol: ProcessProtocol,
    args: list[str],
    ended: Deferred[Any],
    env: dict[str, str] | None = None,
) -> IProcessTransport:
    """
    Run this Python with C{args} and this environment (and C{env}), for
    C{protocol}; at cleanup, unless C{ended} has fired, kill it and wait for
    C{ended} (whose failure, a killed process's, is expected).
    """
    transport = reactor.spawnProcess(
        protocol, sys.executable, [sys.executable, *args], env={**os.environ, **(env or {})}
    )

    def stop() -> Deferred[Any] | None:
        if ended.called:
            return None
        transport.signalProcess("KILL")
        ended.addErrback(lambda failure: None)
        return ended

    case.addCleanup(stop)
    return transport


async def runPython(source: str) -> tuple[str, str, int]:
    """Run C{source} in a fresh interpreter (a plain script: no logging begun, no
    reactor running); return its output and status."""
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-c", textwrap.dedent(source)], env=dict(os.environ), path=os.getcwd()
    )
    return out.decode(), err.decode(), code


def readText(path: str) -> str:
    """A file's text so far (a log being written), or "" before it exists."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def logMessages(case: SynchronousTestCase) -> list[str]:
    """Every message logged from now until C{case} ends, formatted."""
    messages: list[str] = []

    def observe(event: LogEvent) -> None:
        messages.append(formatEvent(event) or "")

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return messages


def daemonClients(daemon: PrivateLibvirtd) -> set[str]:
    """The ids of the daemon's clients now, as its admin interface lists them."""
    listed = daemon.virtAdmin("client-list", "libvirtd")
    return {line.split()[0] for line in listed.splitlines()[2:] if line.strip()}


def openFds() -> set[int]:
    """This process's open file descriptors."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def testDomainXML(name: str) -> str:
    """A transient domain for libvirt's test driver."""
    return (
        f"<domain type='test'><name>{name}</name><memory>8192</memory>"
        f"<os><type>hvm</type></os></domain>"
    )


def churn(uri: str, name: str) -> None:
    """Start and destroy a test domain from a connection of its own: two events."""
    conn = libvirt.open(uri)
    try:
        conn.createXML(testDomainXML(name), 0).destroy()
    finally:
        conn.close()


def qemuDomainXML(name: str) -> str:
    """A disk-less QEMU domain that boots SeaBIOS and idles, under TCG."""
    emulator = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    return (
        f"<domain type='qemu'><name>{name}</name>"
        f"<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices><emulator>{emulator}</emulator></devices></domain>"
    )


@implementer(IReactorFromThreads)
class FakeReactor(MemoryReactorClock):
    """
    A fake reactor for exact timing: C{advance} runs one iteration (the calls
    due now, not those they add, so a 0 ms timer cannot spin it), and calls
    from other threads wait in C{fromThreads} until the test runs them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fromThreads: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kw: object) -> None:
        self.fromThreads.append((callable, args))

    def runThreadCalls(self) -> None:
        while self.fromThreads:
            calls, self.fromThreads = self.fromThreads, []
            for f, args in calls:
                f(*args)

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        due = sorted(
            (c for c in self.calls if c.getTime() <= self.seconds()), key=lambda c: c.getTime()
        )
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class Recorder:
    """
    A callable that records its calls and fires Deferreds once its calls
    meet a condition.  They fire on a later reactor turn: a test that went on
    inside a libvirt callback could deadlock on libvirt's own locks.
    """

    def __init__(self, action: Callable[..., Any] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._action = action
        self._waiters: list[tuple[Callable[[list[tuple[Any, ...]]], bool], Deferred[Calls]]] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)
        if self._action is not None:
            self._action(*args)
        for entry in list(self._waiters):
            condition, d = entry
            if condition(self.calls):
                self._waiters.remove(entry)
                reactor.callLater(0, d.callback, self.calls)

    def when(self, condition: Callable[[Calls], bool]) -> Deferred[Calls]:
        """Fires with the calls once C{condition(calls)} holds."""
        d: Deferred[Calls] = Deferred()
        if condition(self.calls):
            d.callback(self.calls)
        else:
            self._waiters.append((condition, d))
        return d

    def called(self, count: int = 1) -> Deferred[Calls]:
        """Fires once the recorder has been called C{count} times in all."""
        return self.when(lambda calls: len(calls) >= count)

    def calledWith(self, *args: Any) -> Deferred[Calls]:
        """Fires once the recorder has been called with C{args}."""
        return self.when(lambda calls: args in calls)
