"""
One connection attempt of a LibvirtService: open the URI, turn keepalive
on, wrap the connection and register the subscriptions, all in one call-pool
thread, since each is a round trip that a frozen daemon could hold for ever
(and keepalive, not on yet, needs the reactor to notice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _snapshot
from ._connection import LibvirtConnection, OnClose
from ._eventloop import EventLoop
from ._install import errorCode
from ._reactor import Scheduler, ThreadsReactor
from ._registrations import quietly
from ._snapshot import Snapshot
from ._subscriptions import Registered, Subscription, Subscriptions
from ._uri import isEmbedded, openURI

log = Logger()

#: Opens a URI: C{(uri, readOnly, auth)} -> an open C{virConnect}.
Opener = Callable[[str, bool, "list[Any] | None"], libvirt.virConnect]


@dataclass(frozen=True)
class Connector:
    """
    How a service connects: the URI and how to open it.  The arguments are
    checked when it is made, so that a bad one fails the service's
    construction, not its first attempt.
    """

    uri: str
    readOnly: bool
    auth: list[Any] | None
    keepalive: tuple[int, int] | None
    opener: Opener = openURI

    def __post_init__(self) -> None:
        _checkKeepalive(self.keepalive)
        if not callable(self.opener):
            raise TypeError(f"opener must be a callable, not {self.opener!r}")
        auth = self.auth
        if auth is not None and not (
            isinstance(auth, (list, tuple)) and len(auth) == 3 and callable(auth[1])
        ):
            raise TypeError(
                f"auth must be [credtypes, callback, opaque] as libvirt.openAuth"
                f" takes it, not {auth!r}"
            )

    def open(self) -> libvirt.virConnect:
        """Open the URI and turn keepalive on where the driver has it: blocking."""
        conn = self.opener(self.uri, self.readOnly, self.auth)
        if self.keepalive is not None and not isEmbedded(self.uri):
            try:
                _setKeepAlive(conn, *self.keepalive)
            except BaseException:
                quietly(conn.close)
                raise
        return conn


@dataclass(eq=False)
class Attempt:
    """One connection attempt; abandoned when the service stops meanwhile."""

    over: Deferred[None] = field(default_factory=Deferred)
    abandoned: bool = False

    def endedOrAfter(self, clock: Scheduler, timeout: float, uri: str) -> Deferred[None]:
        """
        Fires once the attempt is over, or after C{timeout} seconds (a
        frozen daemon can hold an open for ever): then the abandoned attempt
        closes its connection itself whenever it ends.
        """
        ended: Deferred[None] = Deferred()

        def giveUp() -> None:
            log.warn(
                "{uri}: a connection attempt is still under way after {timeout}s;"
                " stopping without it",
                uri=uri,
                timeout=timeout,
            )
            ended.callback(None)

        timer = clock.callLater(timeout, giveUp)

        def over(_: object) -> None:
            if timer.active():
                timer.cancel()
                ended.callback(None)

        self.over.addBoth(over)
        return ended


@dataclass(eq=False)
class _Waiter:
    deferred: Deferred[LibvirtConnection]
    failuresLeft: int | None


class Waiters:
    """Those waiting for a service's next connection (C{whenConnected})."""

    def __init__(self) -> None:
        self._waiting: list[_Waiter] = []

    def wait(self, failAfterFailures: int | None) -> Deferred[LibvirtConnection]:
        """The next connection; or its failure once C{failAfterFailures} attempts failed."""
        waiter = _Waiter(Deferred(lambda _: self._waiting.remove(waiter)), failAfterFailures)
        self._waiting.append(waiter)
        return waiter.deferred

    def connected(self, connection: LibvirtConnection) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.deferred.callback(connection)

    def failed(self, failure: Failure) -> None:
        """One more attempt failed: those who gave it that many get C{failure}."""
        for waiter in list(self._waiting):
            if waiter.failuresLeft is None:
                continue
            waiter.failuresLeft -= 1
            if waiter.failuresLeft <= 0:
                self._waiting.remove(waiter)
                waiter.deferred.errback(failure)

    def cancel(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.deferred.errback(error)


@dataclass(eq=False)
class SetUp:
    """
    What an attempt made: the connection, what it registered and the
    snapshot it took once subscribed, or why it failed.
    """

    connection: LibvirtConnection
    registered: Registered
    failure: Failure | None = None
    snapshot: Snapshot | None = None


def setUp(
    connector: Connector,
    subscriptions: Subscriptions,
    snapshot: list[Subscription],
    onClose: OnClose,
    reactor: ThreadsReactor,
    eventLoop: EventLoop | None,
    families: Callable[[Registered], list[str]] | None = None,
) -> SetUp:
    """
    Open, wrap, subscribe and, given C{families} (which families to take a
    snapshot of, from what holds), take a snapshot: all the round trips,
    blocking.  A failure after wrapping comes back with the connection, for
    the reactor thread to close.
    """
    conn = connector.open()
    try:
        connection = LibvirtConnection(conn, onClose=onClose, reactor=reactor, eventLoop=eventLoop)
    except BaseException:
        quietly(conn.close)
        raise
    try:
        registered = subscriptions.registerAll(connection, snapshot)
        taken = None
        if families is not None:
            taken = _snapshot.take(conn, families(registered))
        return SetUp(connection, registered, snapshot=taken)
    except Exception:
        return SetUp(connection, {}, Failure())  # type: ignore[no-untyped-call]


def _checkKeepalive(keepalive: object) -> None:
    if keepalive is None:
        return
    if not (
        isinstance(keepalive, tuple)
        and len(keepalive) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in keepalive)
    ):
        raise TypeError(f"keepalive must be (interval, count) ints, not {keepalive!r}")
    interval, count = keepalive
    if interval < 1 or count < 0:
        raise ValueError(f"keepalive interval must be >= 1 and count >= 0, not {keepalive!r}")


def _setKeepAlive(conn: libvirt.virConnect, interval: int, count: int) -> None:
    """Turn keepalive on where the driver has it (test:///default has not)."""
    try:
        conn.setKeepAlive(interval, count)
    except libvirt.libvirtError as e:
        if errorCode(e) != libvirt.VIR_ERR_NO_SUPPORT:
            raise
