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
from twisted.python.failure import Failure

from ._connection import LibvirtConnection, OnClose
from ._eventloop import EventLoop
from ._reactor import ThreadsReactor
from ._registrations import quietly
from ._subscriptions import Registered, Subscription, Subscriptions
from ._uri import openURI

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
        if self.keepalive is not None:
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


@dataclass(eq=False)
class SetUp:
    """What an attempt made: the connection, and what it registered or why it failed."""

    connection: LibvirtConnection
    registered: Registered
    failure: Failure | None = None


def setUp(
    connector: Connector,
    subscriptions: Subscriptions,
    snapshot: list[Subscription],
    onClose: OnClose,
    reactor: ThreadsReactor,
    eventLoop: EventLoop | None,
) -> SetUp:
    """
    Open, wrap, subscribe: all the round trips, blocking.  A failure after
    wrapping comes back with the connection, for the reactor thread to close.
    """
    conn = connector.open()
    try:
        connection = LibvirtConnection(conn, onClose=onClose, reactor=reactor, eventLoop=eventLoop)
    except BaseException:
        quietly(conn.close)
        raise
    try:
        return SetUp(connection, subscriptions.registerAll(connection, snapshot))
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
        if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
