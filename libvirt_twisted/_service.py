"""
LibvirtService: a connection that comes back.

The service opens its URI, turns keepalive on, wraps the connection and
registers its subscriptions, all off the reactor thread (each is a round trip
that a frozen daemon could hold forever, and keepalive needs the reactor to
notice); when the connection is lost it reconnects with backoff and registers
them again, telling observers (and queue subscribers, in-band) of the gap.

Its life is a L{ServiceState}; it uses nothing of L{LibvirtConnection} but
its public methods.  Its event methods (subscribe, watch, observers) come
from L{LibvirtServiceEvents}, and how it stops is L{Stop}'s.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._attempt import Attempt, Connector, Opener, SetUp, Waiters, setUp
from ._audience import Audience
from ._connection import ConnectionState, LibvirtConnection
from ._connectionstatus import ConnectionStatus, State
from ._eventloop import EventLoop
from ._install import installed
from ._inventory import Inventory
from ._keeper import InventoryKeeper
from ._reactor import Scheduler, ThreadsReactor, resolve
from ._serviceevents import LibvirtServiceEvents
from ._statewait import DomainSpec, checkStates, waitAcross
from ._stopping import Closings, Stop
from ._subscriptions import Subscriptions
from ._threads import deferToLibvirtPool
from ._uri import checkURI, maskURI, openURI, scrubber, scrubFailure
from .events import closeReasonName

log = Logger()


class ServiceState(enum.Enum):
    """
    Where a L{LibvirtService} is: C{IDLE} until started; C{CONNECTING} while
    an attempt (open, keepalive, wrap, subscribe) is under way; C{CONNECTED};
    C{WAITING} to try again after a failed attempt or a lost connection;
    C{STOPPING} from C{stopService()} until the attempt under way and every
    connection it made are over; then C{STOPPED} (it may start again).

    @cvar IDLE: made, not started yet.
    @cvar CONNECTING: an attempt (open, keepalive, wrap, subscribe) is under
        way.
    @cvar CONNECTED: the service has an open connection.
    @cvar WAITING: waiting to try again, after a failed attempt or a lost
        connection.
    @cvar STOPPING: stopping: the attempt under way and every connection it
        made are not over yet.
    @cvar STOPPED: stopped; it may start again.
    """

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"
    STOPPING = "stopping"
    STOPPED = "stopped"


class LibvirtService(LibvirtServiceEvents, Service):
    """
    A long-lived libvirt connection as a Twisted service.

    @param uri: the libvirt URI, e.g. C{qemu+ssh://host/system}.
    @param readOnly: open it read-only.
    @param auth: credentials for C{libvirt.openAuth}: C{[credtypes,
        callback, opaque]}, as libvirt-python takes them.
    @param keepalive: C{(interval, count)} in seconds, or C{None} for none;
        skipped where the driver has no keepalive.
    @param retryPolicy: seconds to wait after C{n} failed attempts, like
        C{ClientService}'s; Twisted's C{backoffPolicy()} by default.
    @param stopTimeout: how long L{stopService} waits for a connection
        attempt under way (a frozen daemon can hold one forever) before it
        leaves that attempt to close its connection whenever it ends.
    @param reactor: delivers events and runs the libvirt calls' threads;
        also the clock unless C{clock} is given.
    @param clock: schedules the retries and the stop timeout.
    @param opener: opens the URI, in a call-pool thread: C{(uri, readOnly,
        auth)} -> C{virConnect}; C{libvirt.open} and its kin by default.
    @param eventLoop: the event loop libvirt uses; the installed one by
        default.
    @param inventory: keep an L{Inventory} of the host (C{service.inventory}),
        resynchronised after every (re)connection.
    @param resync: with C{inventory}, compare it with a fresh snapshot every
        C{resync} seconds (C{None}: never), to repair what libvirt lost.
    @ivar uri: the libvirt URI, as given.
    @ivar maskedURI: the URI with its password masked (L{maskURI}), for
        logs.
    @ivar readOnly: whether connections are opened read-only.
    @ivar keepalive: C{(interval, count)}, or C{None}, as given.
    @ivar state: the L{ServiceState}.
    @ivar connection: the current L{LibvirtConnection}, or C{None} while
        there is none.
    @ivar inventory: the L{Inventory}, or C{None} without C{inventory=True}.
    @ivar lostEvents: how many events libvirt did not send while connected,
        by what the drift checks found, since the service was made.
    """

    def __init__(
        self,
        uri: str,
        readOnly: bool = False,
        auth: list[Any] | None = None,
        keepalive: tuple[int, int] | None = (5, 3),
        retryPolicy: Callable[[int], float] | None = None,
        stopTimeout: float = 3.0,
        reactor: ThreadsReactor | None = None,
        clock: Scheduler | None = None,
        *,
        opener: Opener | None = None,
        eventLoop: EventLoop | None = None,
        inventory: bool = False,
        resync: float | None = 60.0,
    ) -> None:
        self.uri = checkURI(uri)
        self.maskedURI = maskURI(uri)
        self._scrub = scrubber(uri)
        _checkArguments(retryPolicy, stopTimeout, resync)
        self._connector = Connector(uri, readOnly, auth, keepalive, opener or openURI)
        self.readOnly = readOnly
        self.keepalive = keepalive
        self.state = ServiceState.IDLE
        self.connection: LibvirtConnection | None = None
        self._retryPolicy = retryPolicy or backoffPolicy()
        self._stopTimeout = float(stopTimeout)
        self._reactor: ThreadsReactor = resolve(reactor)
        self._clock: Scheduler = clock if clock is not None else self._reactor
        self._eventLoop = eventLoop
        self._audience = Audience(self._reactor, lambda: self.connection)
        self._subscriptions = Subscriptions(
            self.maskedURI,
            self._scrub,
            self._reactor,
            self._audience.event,
            lambda: self.connection,
        )
        self._waiters = Waiters()
        self._attempt: Attempt | None = None
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._connections = 0
        self._closings = Closings()
        self._stop: Stop | None = None
        self.inventory: Inventory | None = None
        self._keeper: InventoryKeeper | None = None
        if inventory:
            self._keepInventory(resync)

    def _keepInventory(self, resync: float | None) -> None:
        """
        Keep an L{Inventory} of the host, fed by the lifecycle subscriptions
        its keeper makes now, before any of the service's users can.
        """
        self.inventory = Inventory(self._clock)
        self._keeper = InventoryKeeper(
            self.inventory,
            self.maskedURI,
            resync,
            self._subscriptions,
            self._audience,
            lambda: self.connection,
            self._reactor,
            self._clock,
        )

    def __repr__(self) -> str:
        return f"<LibvirtService {self.maskedURI} {self.state.value}>"

    @property
    def lostEvents(self) -> int:
        """
        How many events libvirt did not send while connected, by what the
        inventory's drift checks found (0 without an inventory).
        """
        return self._keeper.lostEvents if self._keeper is not None else 0

    # Connections.

    def whenConnected(self, failAfterFailures: int | None = None) -> Deferred[LibvirtConnection]:
        """
        The current connection, or the next one (before C{startService()}
        too, as with C{ClientService}, and while the current one is
        closing).  With C{failAfterFailures}, fail with the last error once
        that many attempts from now have failed; fail with C{CancelledError}
        if the service is (or gets) stopped.

        @param failAfterFailures: how many failed attempts to wait through
            at most; C{None} waits for ever.
        @return: a Deferred that fires with the open L{LibvirtConnection}.
        """
        connection = self.connection
        if connection is not None and connection.state is ConnectionState.OPEN:
            return succeed(connection)
        if self.state in (ServiceState.STOPPING, ServiceState.STOPPED):
            return fail(CancelledError(f"{self!r} is stopped"))
        return self._waiters.wait(failAfterFailures)

    def whenDomainState(
        self, domain: DomainSpec, states: str | Iterable[str], timeout: float | None = None
    ) -> Deferred[str]:
        """
        L{LibvirtConnection.whenDomainState} across reconnections: on each
        connection the service makes, it listens and reads the state afresh,
        so that a state reached while disconnected is seen once connected
        again.  It fails as the connection's does, but for a lost connection,
        and with C{CancelledError} once the service stops.

        @param domain: a domain's name or UUID (or a C{libvirt.virDomain},
            whose UUID names it on the next connections).
        @param states: a domain state's name (C{"RUNNING"}...), or several.
        @param timeout: seconds to wait at most, across connections; C{None}
            waits for ever.
        @return: a Deferred that fires with the name of the state reached.
        """
        wanted = checkStates(states)
        return waitAcross(self.whenConnected, domain, wanted, self._reactor, self._clock, timeout)

    # Service.

    def startService(self) -> None:
        """
        Start connecting, off the reactor thread; the connection comes back
        whenever it is lost, until L{stopService}.

        @raise RuntimeError: no event loop is installed (see L{install}).
        """
        if self._loop() is None:
            raise RuntimeError("call libvirt_twisted.install() before starting a LibvirtService")
        super().startService()  # type: ignore[no-untyped-call]
        self._failures = 0
        self._connections = 0
        log.info("libvirt service for {uri} starting", uri=self.maskedURI)
        if self._keeper is not None:
            self._keeper.start(self._loop())
        self._connect()

    def stopService(self) -> Deferred[None]:
        """
        Stop retrying, close the connection; fires once libvirt freed it all.
        Called again while stopping, it fires with the first; on a service
        that is not running, at once.
        """
        if self.state is ServiceState.STOPPING:
            assert self._stop is not None
            return self._stop.join()
        if self.state in (ServiceState.IDLE, ServiceState.STOPPED):
            return succeed(None)
        super().stopService()  # type: ignore[no-untyped-call]
        self._moveTo(ServiceState.STOPPING)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._waiters.cancel(CancelledError(f"{self!r} stopped"))
        connection, self.connection = self.connection, None
        self._subscriptions.disown()
        if self._keeper is not None:
            self._keeper.stop()
        if connection is not None:
            self._closings.close(connection)
        log.info("libvirt service for {uri} stopping", uri=self.maskedURI)
        self._tell(ConnectionStatus("stopped", self.maskedURI))
        attempt = self._attempt
        if attempt is not None:
            attempt.abandoned = True
        stop = self._stop = Stop(self.maskedURI)
        stopped = stop.join()
        stop.waitFor(
            attempt, self._clock, self._stopTimeout, self._closings, self._loop, self._over
        )
        return stopped

    def _over(self, stop: Stop) -> None:
        """C{stop} is over: stopped, unless restarted meanwhile."""
        # Restarted and stopped again meanwhile: that stop says when.
        if self.state is ServiceState.STOPPING and self._stop is stop:
            self._moveTo(ServiceState.STOPPED)
        log.info("libvirt service for {uri} stopped", uri=self.maskedURI)

    # Connecting, off the reactor thread.

    def _connect(self) -> None:
        self._retry = None
        self._moveTo(ServiceState.CONNECTING)
        snapshot = self._subscriptions.snapshot()
        attempt = self._attempt = Attempt()
        d = deferToLibvirtPool(
            self._reactor,
            setUp,
            self._connector,
            self._subscriptions,
            snapshot,
            self._lost,
            self._reactor,
            self._eventLoop,
            self._keeper.families if self._keeper is not None else None,
        )
        d.addCallback(self._opened, attempt, {s.id for s in snapshot})
        d.addErrback(self._failed, attempt)

        def over(_: object) -> None:
            if self._attempt is attempt:
                self._attempt = None
            attempt.over.callback(None)

        d.addBoth(over)

    def _opened(self, made: SetUp, attempt: Attempt, snapshot: set[int]) -> None:
        connection = made.connection
        if attempt.abandoned:
            self._drop(connection)
            return
        if made.failure is not None:
            self._drop(connection)
            made.failure.raiseException()
        if connection.state is not ConnectionState.OPEN:
            self._drop(connection)
            raise ConnectionError("the connection closed while it was being set up")
        self.connection = connection
        self._subscriptions.adopt(connection, made.registered, snapshot)
        state: State = "reconnected" if self._connections else "connected"
        self._connections += 1
        self._failures = 0
        self._moveTo(ServiceState.CONNECTED)
        log.info("{uri}: {state}", uri=self.maskedURI, state=state)
        changes = []
        if self._keeper is not None:
            changes = self._keeper.connected(connection, made.snapshot)
        synthesized = tuple(event for change in changes for event in change.events)
        status = ConnectionStatus(state, self.maskedURI, changes=synthesized)
        self._audience.connected(
            connection,
            status,
            self._subscriptions.queues(),
            self._subscriptions.decodedFor(synthesized),
        )
        self._waiters.connected(connection)

    def _failed(self, failure: Failure, attempt: Attempt) -> None:
        if attempt.abandoned:
            return
        scrubFailure(failure, self._scrub)
        self._failures += 1
        delay = self._retryPolicy(self._failures)
        message = failure.getErrorMessage()
        log.warn(
            "{uri}: connection attempt {failures} failed ({error}); retrying in {delay:.1f}s",
            uri=self.maskedURI,
            failures=self._failures,
            error=message,
            delay=delay,
        )
        self._retryIn(delay)
        self._audience.notify(ConnectionStatus("failed", self.maskedURI, message, self._failures))
        self._waiters.failed(failure)

    def _lost(self, connection: LibvirtConnection, reason: int) -> None:
        """The connection closed (it has let go of everything): reconnect."""
        self._audience.forget(connection)
        if connection is not self.connection:
            return
        self.connection = None
        self._subscriptions.disown()
        if self._keeper is not None:
            self._keeper.disconnected()
        name = closeReasonName(reason)
        log.warn("{uri}: disconnected ({reason})", uri=self.maskedURI, reason=name)
        if self.running:
            self._retryIn(self._retryPolicy(0))
        self._tell(ConnectionStatus("disconnected", self.maskedURI, name))

    def _retryIn(self, delay: float) -> None:
        self._retry = self._clock.callLater(delay, self._connect)
        self._moveTo(ServiceState.WAITING)

    # Bookkeeping.

    def _tell(self, status: ConnectionStatus) -> None:
        self._audience.tell(status, self._subscriptions.queues())

    def _moveTo(self, state: ServiceState) -> None:
        log.debug(
            "{uri}: {old} -> {new}", uri=self.maskedURI, old=self.state.value, new=state.value
        )
        self.state = state

    def _loop(self) -> EventLoop | None:
        return self._eventLoop if self._eventLoop is not None else installed()

    def _drop(self, connection: LibvirtConnection) -> None:
        """Close a connection that never became current, and drop what it held."""
        self._audience.forget(connection)
        self._closings.close(connection)


def _checkArguments(retryPolicy: object, stopTimeout: object, resync: object) -> None:
    if resync is not None and (
        not isinstance(resync, (int, float)) or isinstance(resync, bool) or not resync > 0
    ):
        raise ValueError(f"resync must be a positive number of seconds or None, not {resync!r}")
    if retryPolicy is not None and not callable(retryPolicy):
        raise TypeError(f"retryPolicy must be a callable, not {retryPolicy!r}")
    if not isinstance(stopTimeout, (int, float)) or isinstance(stopTimeout, bool):
        raise TypeError(f"stopTimeout must be a number of seconds, not {stopTimeout!r}")
    if not stopTimeout >= 0:
        raise ValueError(f"stopTimeout must be at least 0 seconds, not {stopTimeout!r}")
