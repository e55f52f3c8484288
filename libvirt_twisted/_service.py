"""
LibvirtService: a connection that comes back.

The service opens its URI, turns keepalive on, wraps the connection and
registers its subscriptions, all off the reactor thread (each is a round trip
that a frozen daemon could hold forever, and keepalive needs the reactor to
notice); when the connection is lost it reconnects with backoff and registers
them again, telling observers (and queue subscribers, in-band) of the gap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import libvirt
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _calls
from ._connection import LibvirtConnection
from ._fanout import Delivery
from ._install import installed
from ._registrations import Callback, _quietly
from ._status import ConnectionStatus, State
from ._subscriptions import Registered, Subscription, Subscriptions
from ._uri import checkURI, maskURI, openURI, scrubber
from .events import closeReasonName


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
    @param stopTimeout: how long L{stopService} waits for a connection
        attempt under way (a frozen daemon can hold one forever) before it
        leaves that attempt to close its connection whenever it ends.
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
        stopTimeout: float = 3.0,
        reactor: Any = None,
        clock: Any = None,
    ) -> None:
        self.uri = checkURI(uri)
        self.maskedURI = maskURI(uri)
        self._scrub = scrubber(uri)
        _checkKeepalive(keepalive)
        if retryPolicy is not None and not callable(retryPolicy):
            raise TypeError(f"retryPolicy must be a callable, not {retryPolicy!r}")
        if not isinstance(stopTimeout, (int, float)) or isinstance(stopTimeout, bool):
            raise TypeError(f"stopTimeout must be a number of seconds, not {stopTimeout!r}")
        if not stopTimeout >= 0:
            raise ValueError(f"stopTimeout must be at least 0 seconds, not {stopTimeout!r}")
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
        self._stopTimeout = float(stopTimeout)
        self._reactor = _calls._resolve(reactor)
        self._clock = clock if clock is not None else self._reactor
        self.connection: LibvirtConnection | None = None
        self._subscriptions = Subscriptions(self.maskedURI, self._scrub, self._reactor)
        self._observers: list[Callable[[ConnectionStatus], object]] = []
        self._waiters: list[tuple[list[int | None], Deferred[LibvirtConnection]]] = []
        self._generation = 0
        self._failures = 0
        self._everConnected = False
        self._attempt: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._closings: list[Deferred[Any]] = []
        # The latest connection's delivery: markers for queues go through
        # it, so that they follow the events and markers it still holds.
        self._delivery: Delivery | None = None

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
        connection goes and comes back, and when the service stops; an
        L{EventQueue}'s C{finish()} ends the subscription.  Returns an id for
        L{unsubscribe}.
        """
        subscriptionId = self._subscriptions.add(
            family,
            eventID,
            callback,
            opaque,
            objectFilter,
            onFinish=lambda finished: self.unsubscribe(finished, missingOK=True),
        )
        connection = self.connection
        if connection is not None:
            self._subscriptions.registerLater(
                connection, subscriptionId, lambda: connection is self.connection
            )
        return subscriptionId

    def unsubscribe(self, subscriptionId: int, missingOK: bool = False) -> None:
        """Stop a subscription made with L{subscribe}."""
        if not self._subscriptions.remove(subscriptionId, self.connection) and not missingOK:
            raise ValueError(f"no subscription {subscriptionId!r} on {self!r}")

    def addObserver(self, observer: Callable[[ConnectionStatus], object]) -> None:
        """Call C{observer} with a L{ConnectionStatus} on every change."""
        self._observers.append(observer)

    def removeObserver(self, observer: Callable[[ConnectionStatus], object]) -> None:
        self._observers.remove(observer)

    def whenConnected(self, failAfterFailures: int | None = None) -> Deferred[LibvirtConnection]:
        """
        The current connection, or the next one.  With C{failAfterFailures},
        fail with the last error once that many attempts from now have
        failed; fail with C{CancelledError} if the service is (or gets)
        stopped.
        """
        if self.connection is not None:
            return succeed(self.connection)
        if not self.running:
            return fail(CancelledError(f"{self!r} is not running"))
        d: Deferred[LibvirtConnection] = Deferred()
        self._waiters.append(([failAfterFailures], d))
        return d

    # Service.

    def startService(self) -> None:
        if installed() is None:
            raise RuntimeError("call libvirt_twisted.install() before starting a LibvirtService")
        super().startService()  # type: ignore[no-untyped-call]
        self._generation += 1
        self._failures = 0
        self._everConnected = False
        self.log.info("libvirt service for {uri} starting", uri=self.maskedURI)
        self._connect()

    def stopService(self) -> Deferred[None]:
        """Stop retrying, close the connection; fires once libvirt freed it all."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._generation += 1
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.errback(CancelledError(f"{self!r} stopped"))
        connection, self.connection = self.connection, None
        self._subscriptions.disown()
        status = ConnectionStatus("stopped", self.maskedURI)
        for queue in self._subscriptions.queues():
            if self._delivery is not None:
                self._delivery.enqueue(queue, status)
            else:
                queue.put(status)
        if connection is not None:
            self._closeLater(connection)
        self.log.info("libvirt service for {uri} stopping", uri=self.maskedURI)
        self._notify(status)
        stopped: Deferred[None] = Deferred()

        def waitForCloses(_: object) -> Deferred[Any]:
            loop = installed()
            assert loop is not None
            return DeferredList(list(self._closings)).addCallback(lambda _: loop.drain())

        def done(_: object) -> None:
            self.log.info("libvirt service for {uri} stopped", uri=self.maskedURI)
            stopped.callback(None)

        self._attemptOver().addBoth(waitForCloses).addBoth(done)
        return stopped

    def _attemptOver(self) -> Deferred[None]:
        """
        Fires once the connection attempt under way, if any, is over, or
        after C{stopTimeout}: then the attempt closes its connection itself
        whenever it ends, since its generation is past.
        """
        attempt = self._attempt
        if attempt is None:
            return succeed(None)
        over: Deferred[None] = Deferred()

        def giveUp() -> None:
            self.log.warn(
                "{uri}: a connection attempt is still under way after {timeout}s;"
                " stopping without it",
                uri=self.maskedURI,
                timeout=self._stopTimeout,
            )
            over.callback(None)

        timer = self._clock.callLater(self._stopTimeout, giveUp)

        def ended(_: object) -> None:
            if timer.active():
                timer.cancel()
                over.callback(None)

        attempt.addBoth(ended)
        return over

    # Connecting, off the reactor thread.

    def _connect(self) -> None:
        self._retry = None
        generation = self._generation
        snapshot = self._subscriptions.snapshot()
        attempt = _calls.callInThread(self._reactor, self._attemptInThread, snapshot)
        attempt.addCallback(self._opened, generation, {i for i, _ in snapshot})
        attempt.addErrback(self._failed, generation)
        self._attempt = attempt

        def over(result: object) -> object:
            if self._attempt is attempt:
                self._attempt = None
            return result

        attempt.addBoth(over)

    def _attemptInThread(
        self, snapshot: list[tuple[int, Subscription]]
    ) -> tuple[LibvirtConnection, Registered]:
        """Open, turn keepalive on, wrap, subscribe: all the round trips."""
        conn = openURI(self.uri, self.readOnly, self._auth)
        try:
            if self.keepalive is not None:
                _setKeepAlive(conn, *self.keepalive)
            connection = LibvirtConnection(
                conn, onClose=self._lost, reactor=self._reactor, _holdQueues=True
            )
        except BaseException:
            _quietly(conn.close)
            raise
        try:
            return connection, self._subscriptions.registerAll(connection, snapshot)
        except BaseException:
            connection._closeNow()
            raise

    def _opened(
        self,
        result: tuple[LibvirtConnection, Registered],
        generation: int,
        snapshot: set[int],
    ) -> Deferred[Any] | None:
        connection, registered = result
        if generation != self._generation or not self.running:
            return self._closeLater(connection)
        if connection.closeReason is not None or connection._fanOut.closed:
            self._closeLater(connection)
            raise ConnectionError("the connection closed while it was being set up")
        self.connection = connection
        self._delivery = connection._delivery
        self._subscriptions.adopt(
            connection, registered, snapshot, lambda: connection is self.connection
        )
        state: State = "reconnected" if self._everConnected else "connected"
        self._everConnected = True
        self._failures = 0
        self.log.info("{uri}: {state}", uri=self.maskedURI, state=state)
        status = ConnectionStatus(state, self.maskedURI)
        connection._release([(queue, status) for queue in self._subscriptions.queues()])
        self._notify(status)
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.callback(connection)
        return None

    def _failed(self, failure: Failure, generation: int) -> None:
        if generation != self._generation or not self.running:
            return
        _scrubFailure(failure, self._scrub)
        self._failures += 1
        delay = self._retryPolicy(self._failures)
        message = failure.getErrorMessage()
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
            remaining, waiter = entry
            if remaining[0] is None:
                continue
            remaining[0] -= 1
            if remaining[0] <= 0:
                self._waiters.remove(entry)
                waiter.errback(failure)

    def _lost(self, connection: LibvirtConnection, reason: int) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self._subscriptions.disown()
        name = closeReasonName(reason)
        self.log.warn("{uri}: disconnected ({reason})", uri=self.maskedURI, reason=name)
        # Release the dead connection's socket now, whoever still holds it.
        self._closeLater(connection)
        if self.running:
            self._retry = self._clock.callLater(self._retryPolicy(0), self._connect)
        status = ConnectionStatus("disconnected", self.maskedURI, name)
        for queue in self._subscriptions.queues():
            connection._enqueue(queue, status)
        self._notify(status)

    def _closeLater(self, connection: LibvirtConnection) -> Deferred[Any]:
        """Close C{connection}; L{stopService} waits for it."""
        closing: Deferred[Any] = connection.close()
        self._closings.append(closing)

        def closed(result: object) -> object:
            self._closings.remove(closing)
            return result

        return closing.addBoth(closed)

    def _notify(self, status: ConnectionStatus) -> None:
        for observer in list(self._observers):
            try:
                observer(status)
            except Exception:
                self.log.failure("observer {observer!r} raised", observer=observer)


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


def _scrubFailure(failure: Failure, scrub: Callable[[str], str]) -> None:
    """Hide the URI's password in an error that may quote it, keeping its type."""
    error = failure.value
    if error is None:
        return
    error.args = tuple(scrub(a) if isinstance(a, str) else a for a in error.args)
    err = getattr(error, "err", None)
    if isinstance(err, tuple):
        setattr(error, "err", tuple(scrub(a) if isinstance(a, str) else a for a in err))  # noqa: B010
