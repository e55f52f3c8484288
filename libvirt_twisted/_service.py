"""
LibvirtService: a connection that comes back.

The service opens its URI off the reactor thread, turns keepalive on, wraps
the connection, and registers its subscriptions; when the connection is lost
it reconnects with backoff and registers them again, telling observers (and
queue subscribers, in-band) of the gap.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import libvirt
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredQueue, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _calls
from ._connection import Callback, LibvirtConnection, _checkEventID
from ._fanout import FAMILIES
from ._install import installed
from ._uri import checkURI, maskURI, scrubber

State = Literal["connected", "disconnected", "reconnected", "failed", "stopped"]


@dataclass(frozen=True)
class ConnectionStatus:
    """
    A change in a service's connection: what observers receive, and what
    queue subscribers find in their queue between events.

    @ivar state: C{connected} (first time), C{disconnected} (with the close
        reason), C{reconnected}, C{failed} (an attempt failed; it will retry)
        or C{stopped}.
    @ivar uri: the URI, its password masked.
    @ivar reason: the close reason's name (C{EOF}, C{KEEPALIVE}...) or the
        error of a failed attempt.
    """

    state: State
    uri: str
    reason: str | None = None
    failures: int = 0


@dataclass(eq=False)
class _Subscription:
    family: str
    eventID: int
    callback: Callback
    opaque: Any
    objectFilter: str | None
    connectionId: int | None = None


class LibvirtService(Service):
    """
    A long-lived libvirt connection as a Twisted service.

    @param uri: the libvirt URI, e.g. C{qemu+ssh://host/system}.
    @param readOnly: open it read-only.
    @param auth: credentials for C{libvirt.openAuth}: C{[credtypes,
        callback, opaque]}, as libvirt-python takes them.
    @param keepalive: C{(interval, count)} in seconds, or L{None} for none;
        skipped where the driver has no keepalive.
    @param retryPolicy: seconds to wait after C{n} failed attempts, like
        C{ClientService}'s; Twisted's C{backoffPolicy()} by default.
    @param reactor: runs the libvirt calls' threads; also the clock unless
        C{clock} is given.
    """

    log = Logger()

    def __init__(
        self,
        uri: str,
        readOnly: bool = False,
        auth: list[Any] | None = None,
        keepalive: tuple[int, int] | None = (5, 3),
        retryPolicy: Callable[[int], float] | None = None,
        reactor: Any = None,
        clock: Any = None,
    ) -> None:
        self.uri = checkURI(uri)
        self.maskedURI = maskURI(uri)
        self._scrub = scrubber(uri)
        if keepalive is not None:
            interval, count = keepalive
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in keepalive):
                raise TypeError(f"keepalive must be (interval, count) ints, not {keepalive!r}")
            if interval < 1 or count < 0:
                raise ValueError(
                    f"keepalive interval must be >= 1 and count >= 0, not {keepalive!r}"
                )
        if retryPolicy is not None and not callable(retryPolicy):
            raise TypeError(f"retryPolicy must be a callable, not {retryPolicy!r}")
        if auth is not None and not (
            isinstance(auth, (list, tuple)) and len(auth) == 3 and callable(auth[1])
        ):
            raise TypeError(
                f"auth must be [credtypes, callback, opaque] as libvirt.openAuth takes it,"
                f" not {auth!r}"
            )
        self.readOnly = readOnly
        self.keepalive = keepalive
        self._auth = auth
        self._retryPolicy = retryPolicy or backoffPolicy()
        self._reactor = _calls._resolve(reactor)
        self._clock = clock if clock is not None else self._reactor
        self.connection: LibvirtConnection | None = None
        self._ids = itertools.count()
        self._subscriptions: dict[int, _Subscription] = {}
        self._observers: list[Callable[[ConnectionStatus], object]] = []
        self._waiters: list[tuple[int | None, Deferred[LibvirtConnection]]] = []
        self._failures = 0
        self._everConnected = False
        self._attempt: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._lastFailure: Failure | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connection else "running" if self.running else "stopped"
        return f"<LibvirtService {self.maskedURI} {state}>"

    # Subscriptions: kept across reconnections.

    def subscribe(
        self,
        family: str,
        eventID: int,
        callback: Callback,
        opaque: Any = None,
        objectFilter: str | None = None,
    ) -> int:
        """
        Receive C{family} events with C{eventID} on every connection the
        service makes, as the wrapper's C{*EventRegisterAny} would deliver
        them; C{objectFilter} (a UUID, or a node device name) limits them to
        one object.  A queue also receives a L{ConnectionStatus} whenever the
        connection goes and comes back.  Returns an id for L{unsubscribe}.
        """
        if family not in FAMILIES:
            raise ValueError(f"unknown event family {family!r}; known: {', '.join(FAMILIES)}")
        _checkEventID(family, eventID)
        if not (callable(callback) or isinstance(callback, DeferredQueue)):
            raise TypeError(f"the callback must be a callable or a DeferredQueue, not {callback!r}")
        if objectFilter is not None and not isinstance(objectFilter, str):
            raise TypeError(f"objectFilter is a UUID or name string, not {objectFilter!r}")
        subscriptionId = next(self._ids)
        subscription = _Subscription(family, eventID, callback, opaque, objectFilter)
        self._subscriptions[subscriptionId] = subscription
        if self.connection is not None:
            self._registerInThread(self.connection, [subscription])
        return subscriptionId

    def unsubscribe(self, subscriptionId: int) -> None:
        """Stop a subscription made with L{subscribe}."""
        subscription = self._subscriptions.pop(subscriptionId, None)
        if subscription is None:
            raise ValueError(f"no subscription {subscriptionId!r} on {self!r}")
        connection = self.connection
        if connection is not None and subscription.connectionId is not None:
            connection._unsubscribe(subscription.family, subscription.connectionId, missingOK=True)

    def addObserver(self, observer: Callable[[ConnectionStatus], object]) -> None:
        """Call C{observer} with a L{ConnectionStatus} on every change."""
        self._observers.append(observer)

    def removeObserver(self, observer: Callable[[ConnectionStatus], object]) -> None:
        self._observers.remove(observer)

    def whenConnected(self, failAfterFailures: int | None = None) -> Deferred[LibvirtConnection]:
        """
        The current connection, or the next one.  With C{failAfterFailures},
        fail with the last error after that many failed attempts in a row.
        """
        if self.connection is not None:
            return succeed(self.connection)
        d: Deferred[LibvirtConnection] = Deferred()
        if failAfterFailures is not None and self._failures >= failAfterFailures:
            assert self._lastFailure is not None
            d.errback(self._lastFailure)
            return d
        self._waiters.append((failAfterFailures, d))
        return d

    # Service.

    def startService(self) -> None:
        if installed() is None:
            raise RuntimeError("call libvirt_twisted.install() before starting a LibvirtService")
        super().startService()  # type: ignore[no-untyped-call]
        self.log.info("libvirt service for {uri} starting", uri=self.maskedURI)
        self._connect()

    def stopService(self) -> Deferred[None]:
        """Stop retrying, close the connection; fires once libvirt freed it all."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.errback(CancelledError(f"{self!r} stopped"))
        attempt = self._attempt if self._attempt is not None else succeed(None)
        stopped: Deferred[None] = Deferred()

        def close(_: object) -> Deferred[Any]:
            connection, self.connection = self.connection, None
            if connection is None:
                loop = installed()
                assert loop is not None
                return loop.drain()
            return connection.close()

        def done(_: object) -> None:
            self.log.info("libvirt service for {uri} stopped", uri=self.maskedURI)
            self._notify(ConnectionStatus("stopped", self.maskedURI))
            stopped.callback(None)

        attempt.addBoth(close).addBoth(done)
        return stopped

    # Connecting.

    def _connect(self) -> None:
        self._retry = None
        self._attempt = _calls.callInThread(self._reactor, self._openInThread)
        self._attempt.addCallbacks(self._opened, self._failed)

    def _openInThread(self) -> libvirt.virConnect:
        flags = libvirt.VIR_CONNECT_RO if self.readOnly else 0
        if self._auth is not None:
            conn = libvirt.openAuth(self.uri, self._auth, flags)
        elif self.readOnly:
            conn = libvirt.openReadOnly(self.uri)
        else:
            conn = libvirt.open(self.uri)
        if self.keepalive is not None:
            try:
                conn.setKeepAlive(*self.keepalive)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    conn.close()
                    raise
        return conn

    def _opened(self, conn: libvirt.virConnect) -> None:
        self._attempt = None
        if not self.running:
            _calls.callInThread(self._reactor, conn.close)
            return
        connection = LibvirtConnection(conn, onClose=self._lost, reactor=self._reactor)

        def abandon(failure: Failure) -> None:
            connection.close()
            self._failed(failure)

        self._attempt = self._registerInThread(connection, list(self._subscriptions.values()))
        self._attempt.addCallback(lambda _: self._established(connection))
        self._attempt.addErrback(abandon)
        return None

    def _registerInThread(
        self, connection: LibvirtConnection, subscriptions: list[_Subscription]
    ) -> Deferred[None]:
        def register() -> None:
            for subscription in subscriptions:
                self._registerOne(connection, subscription)

        return _calls.callInThread(self._reactor, register)

    def _registerOne(self, connection: LibvirtConnection, subscription: _Subscription) -> None:
        obj = None
        if subscription.objectFilter is not None:
            obj = _lookup(connection.virConnect, subscription.family, subscription.objectFilter)
            if obj is None:
                self.log.warn(
                    "{uri}: no {family} {name} to watch (yet)",
                    uri=self.maskedURI,
                    family=subscription.family,
                    name=subscription.objectFilter,
                )
                return
        try:
            subscription.connectionId = connection._subscribe(
                subscription.family,
                obj,
                subscription.eventID,
                subscription.callback,
                subscription.opaque,
            )
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            # One driver lacks some families' events (test:///default has no
            # secret events): the other subscriptions still hold.
            self.log.info(
                "{uri}: {family} events not supported here: {error}",
                uri=self.maskedURI,
                family=subscription.family,
                error=self._scrub(str(e)),
            )

    def _established(self, connection: LibvirtConnection) -> None:
        self._attempt = None
        if not self.running:
            connection.close()
            return
        if connection.closeReason is not None:
            raise ConnectionError("the connection closed while subscribing")
        state: State = "reconnected" if self._everConnected else "connected"
        self._everConnected = True
        self._failures = 0
        self._lastFailure = None
        self.connection = connection
        self.log.info("{uri}: {state}", uri=self.maskedURI, state=state)
        self._notify(ConnectionStatus(state, self.maskedURI), connection)
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.callback(connection)

    def _failed(self, failure: Failure) -> None:
        self._attempt = None
        if not self.running:
            return
        self._failures += 1
        self._lastFailure = failure
        delay = self._retryPolicy(self._failures)
        message = self._scrub(failure.getErrorMessage())
        self.log.warn(
            "{uri}: connection attempt {failures} failed ({error}); retrying in {delay:.1f}s",
            uri=self.maskedURI,
            failures=self._failures,
            error=message,
            delay=delay,
        )
        self._retry = self._clock.callLater(delay, self._connect)
        self._notify(ConnectionStatus("failed", self.maskedURI, message, self._failures))
        for entry in list(self._waiters):
            limit, waiter = entry
            if limit is not None and self._failures >= limit:
                self._waiters.remove(entry)
                waiter.errback(failure)

    def _lost(self, connection: LibvirtConnection, reason: int) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        for subscription in self._subscriptions.values():
            subscription.connectionId = None
        from .events import closeEvent

        name = str(closeEvent(reason).fields["reason"])
        self.log.warn("{uri}: disconnected ({reason})", uri=self.maskedURI, reason=name)
        if self.running:
            self._retry = self._clock.callLater(self._retryPolicy(0), self._connect)
        self._notify(ConnectionStatus("disconnected", self.maskedURI, name), connection)

    def _notify(self, status: ConnectionStatus, via: LibvirtConnection | None = None) -> None:
        """
        Tell the observers; with C{via}, also queue subscribers, in order
        with the events that connection queued for them.
        """
        for observer in list(self._observers):
            try:
                observer(status)
            except Exception:
                self.log.failure("observer {observer!r} raised", observer=observer)
        if via is None or status.state not in ("disconnected", "reconnected"):
            return
        for subscription in self._subscriptions.values():
            if isinstance(subscription.callback, DeferredQueue):
                via._enqueue(subscription.callback, status)


def _lookup(conn: libvirt.virConnect, family: str, key: str) -> Any:
    lookups = {
        "domain": conn.lookupByUUIDString,
        "network": conn.networkLookupByUUIDString,
        "storage_pool": conn.storagePoolLookupByUUIDString,
        "node_device": conn.nodeDeviceLookupByName,
        "secret": conn.secretLookupByUUIDString,
    }
    try:
        return lookups[family](key)
    except libvirt.libvirtError:
        return None
