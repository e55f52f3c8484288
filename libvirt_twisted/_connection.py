"""
LibvirtConnection: one libvirt connection's lifetime, in Twisted terms.

The connection holds its L{Registrations} (the events registered with
libvirt), a L{Delivery} (how their events reach listeners) and its
L{CloseListeners} (who hears that it closed), and its event methods come
from L{LibvirtConnectionEvents}.  This module holds the rest: wrapping,
forwarding, and the one way from open to closed.  A type checker sees the
forwarded methods as virConnect's, and those of C{connection.inThread} as
theirs returning Deferreds (L{LibvirtConnectionInThread}).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import libvirt
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ._closelisteners import CloseListeners
from ._debug import closing, opened, timed
from ._delivery import CloseDispatcher, Delivery, Target
from ._eventloop import EventLoop
from ._eventmethods import LibvirtConnectionEvents
from ._install import NoEventLoopError, checkWatched, errorsExpected, installed
from ._reactor import ThreadsReactor, fromThreads, resolve
from ._registrations import ConnectionClosedError, Registrations, quietly
from ._registry import Key
from ._statewait import DomainSpec, StateWait, checkStates, waitOn
from ._threads import InThread, deferToLibvirtPool
from ._uri import isEmbedded, maskURI, openURI
from .events import closeReasonName

if TYPE_CHECKING:
    from ._connectionapi import ConnectInThread, VirConnectMethods, deferred

    # What a type checker sees: the methods the wrapper forwards, with
    # libvirt-python's annotations, and in a thread, returning Deferreds.
    _Forwarded = VirConnectMethods
    _ConnectionInThreadBase = ConnectInThread
else:
    _Forwarded = object
    _ConnectionInThreadBase = InThread

log = Logger()

CLOSE_REASON_CLIENT: int = libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT

OnClose = Callable[["LibvirtConnection", int], object] | Deferred[int]


class ConnectionState(enum.Enum):
    """
    Where a L{LibvirtConnection} is in its life.  It only ever moves
    forward: C{OPEN}, then C{CLOSING} (closed by the program, or lost; no
    event is delivered any more, and libvirt is being told), then C{CLOSED}
    (libvirt has let go of everything the connection registered, and
    C{closeReason} says why it closed).

    @cvar OPEN: open: events are delivered.
    @cvar CLOSING: closed by the program, or lost; nothing is delivered any
        more, and libvirt is being told.
    @cvar CLOSED: closed; C{closeReason} says why.
    """

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class LibvirtConnection(LibvirtConnectionEvents, _Forwarded):
    """
    Wraps an open C{libvirt.virConnect} (opened after L{install}): callbacks
    become Deferreds and queues, every event registration made through it is
    tracked and torn down when the connection closes, whatever the reason,
    so that the connection can be garbage collected.

    Everything not defined here is forwarded to the wrapped connection,
    C{virConnect}, so the wrapper is a drop-in replacement for it.

    Callbacks: a plain callable runs inside libvirt's dispatch, as with
    libvirt itself (it may call libvirt, but on a remote connection each
    call blocks the reactor for its round trip, and it must never wait for
    something the reactor delivers); a Deferred or a queue fires on a later
    reactor turn.

    Wrapping registers a close callback, and registering an event is a round
    trip on a remote connection: L{open} does both off the reactor thread,
    and C{connection.inThread.domainEventRegisterAny(...)} registers there.

    @param conn: the open connection to wrap, opened after L{install}: a
        remote one opened before is refused with L{NoEventLoopError}.
    @param onClose: a callable C{(connection, reason)}, or a Deferred fired
        with the reason (C{libvirt.VIR_CONNECT_CLOSE_REASON_*}), once the
        connection closed and every registration was torn down.
    @param onDomainChange: a callable, or a DeferredQueue receiving the
        arguments as a tuple, for every domain lifecycle event.
    @param reactor: the reactor events are delivered on (the global one by
        default).
    @param eventLoop: the event loop libvirt uses (the one L{install}
        registered, by default); it tells which thread is the reactor's and
        when libvirt has freed what a closed connection held.
    @ivar virConnect: the wrapped C{libvirt.virConnect}.
    @ivar maskedURI: the connection's URI with its password masked
        (L{maskURI}), for logs.
    @ivar state: the L{ConnectionState}.
    @ivar closeReason: why the connection closed
        (C{libvirt.VIR_CONNECT_CLOSE_REASON_*}), once it has; C{None} before.
    """

    def __init__(
        self,
        conn: libvirt.virConnect,
        onClose: OnClose | None = None,
        onDomainChange: Target | None = None,
        reactor: ThreadsReactor | None = None,
        *,
        eventLoop: EventLoop | None = None,
    ) -> None:
        if not isinstance(conn, libvirt.virConnect):
            raise TypeError(f"LibvirtConnection wraps a libvirt.virConnect, not {conn!r}")
        loop = eventLoop if eventLoop is not None else installed()
        if loop is None:
            raise NoEventLoopError(
                "call libvirt_twisted.install() before opening the connection to wrap"
            )
        self._closeListeners: CloseListeners[LibvirtConnection] = CloseListeners(onClose)
        self.virConnect = conn
        self.state = ConnectionState.OPEN
        self.closeReason: int | None = None
        self._reactor = resolve(reactor)
        self._fromThreads = fromThreads(self._reactor)
        self._loop = loop
        self._delivery = Delivery(self._reactor)
        uri = conn.getURI()
        self.maskedURI = maskURI(uri)
        self._registrations = Registrations(
            conn, self._deliver, self._reactor, loop, self.maskedURI
        )
        # An embedded driver never closes by itself, nor keeps a close
        # callback: libvirt-python's reference to it would never be dropped,
        # and would keep the virConnect alive for ever.
        if not isEmbedded(uri):
            conn.registerCloseCallback(CloseDispatcher(self._libvirtClosed), None)
        try:
            checkWatched(conn, loop)
            if onDomainChange is not None:
                self.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, onDomainChange
                )
        except BaseException:
            quietly(conn.unregisterCloseCallback)
            raise
        self._dropped = opened(self)

    @classmethod
    def open(
        cls,
        uri: str,
        readOnly: bool = False,
        auth: list[Any] | None = None,
        onClose: OnClose | None = None,
        onDomainChange: Target | None = None,
        reactor: ThreadsReactor | None = None,
    ) -> Deferred[LibvirtConnection]:
        """
        Open C{uri} and wrap it, both off the reactor thread (each is a
        round trip to a remote daemon).

        @param uri: the libvirt URI to open (C{"qemu:///system"}...).
        @param readOnly: open it read-only (C{virConnectOpenReadOnly}).
        @param auth: C{libvirt.openAuth}'s credential list
            (C{[credentialTypes, callback, opaque]}), for a connection that
            asks for credentials; the callback runs off the reactor thread.
            C{None} opens it with C{libvirt.open} (or C{openReadOnly}).
        @param onClose: as the constructor takes it.
        @param onDomainChange: as the constructor takes it.
        @param reactor: as the constructor takes it.
        @return: a Deferred that fires with the new L{LibvirtConnection}, or
            fails with the C{libvirtError} of the open (the connection opened
            is closed again if wrapping it fails).
        """

        def openAndWrap() -> LibvirtConnection:
            conn = openURI(uri, readOnly, auth)
            try:
                return cls(conn, onClose, onDomainChange, reactor)
            except BaseException:
                quietly(conn.close)
                raise

        return deferToLibvirtPool(reactor, openAndWrap)

    def __repr__(self) -> str:
        return f"<LibvirtConnection {self.state.value} callbacks={len(self._registrations)}>"

    if not TYPE_CHECKING:
        # A type checker sees the forwarded methods as virConnect's
        # (VirConnectMethods): a name virConnect does not have is an error.

        def __getattr__(self, name: str) -> Any:
            """
            Anything not defined here is the wrapped C{virConnect}'s; in debug
            mode (see L{install}) its methods are timed on the reactor thread.

            @param name: the attribute's name.
            """
            attribute = getattr(self.virConnect, name)
            limit = self._loop.slowCallThreshold
            if limit is not None and callable(attribute):
                return timed(attribute, name, limit, self._loop.onReactorThread, self.maskedURI)
            return attribute

    def registerCloseCallback(self, cb: Callable[..., object], opaque: Any = None) -> int:
        """
        Like virConnect's: one close callback, called C{(connection, reason,
        opaque)} once the connection closed, after the teardown.

        @param cb: the callback; it replaces any registered before.
        @param opaque: passed to C{cb} as its last argument.
        @return: 0, as libvirt does.
        """
        self._closeListeners.register(cb, opaque)
        return 0

    def unregisterCloseCallback(self) -> None:
        """
        Like virConnect's: forget the callback given to
        L{registerCloseCallback}.
        """
        self._closeListeners.unregister()

    # Lifetime.

    @property
    def inThread(self) -> LibvirtConnectionInThread:
        """
        This connection's methods (its own registrations included), run on
        the libvirt call pool, returning Deferreds.
        """
        return LibvirtConnectionInThread(self, self._reactor)

    def whenClosed(self) -> Deferred[int]:
        """
        A Deferred that fires with the close reason once the connection is
        closed; cancelling it stops waiting.
        """
        if self.closeReason is not None:
            return succeed(self.closeReason)
        return self._closeListeners.wait()

    def whenDomainState(
        self, domain: DomainSpec, states: str | Iterable[str], timeout: float | None = None
    ) -> Deferred[str]:
        """
        A Deferred that fires with the state's name (C{"RUNNING"}...) once
        C{domain} (a virDomain, a name or a UUID) is in one of C{states}
        (one name or several), at once if it already is.  It listens for the
        domain's lifecycle events before it reads the state (off the reactor
        thread), so no change falls between.  It fails with
        L{DomainStateTimeout} after C{timeout} seconds, L{DomainUndefinedError}
        if the domain is not there or goes, and L{ConnectionClosedError} if
        the connection closes; cancelling it, or its end, leaves nothing
        registered.

        @param domain: a C{libvirt.virDomain} of this connection, or a
            domain's name or UUID.
        @param states: a domain state's name (C{"RUNNING"}, C{"SHUTOFF"}...,
            as L{events.domainState<libvirt_twisted.events.domainState>}
            names them), or several.
        @param timeout: seconds to wait at most; C{None} waits for ever.
        @return: a Deferred that fires with the name of the state reached.
        """
        if self.state is not ConnectionState.OPEN:
            closed = StateWait(domain, checkStates(states), self._reactor, self._reactor, None)
            closed.fail(ConnectionClosedError("the connection is closed"))
            return closed.deferred
        return waitOn(self, domain, checkStates(states), self._reactor, timeout)

    def close(self) -> Deferred[int]:  # type: ignore[override]
        """
        Close the connection, off the reactor thread, with the same teardown
        as a lost one.  The Deferred fires with the close reason
        (C{VIR_CONNECT_CLOSE_REASON_CLIENT} unless the connection was lost
        before) once the libvirt calls under way on it have ended, every
        event registration and the close callback are deregistered, the
        virConnect is closed, and the event loop has freed the watches and
        timers libvirt removed meanwhile.  libvirt keeps the connection (and
        a remote one's socket) open while the program still holds one of its
        objects (a virDomain, a virNetwork...): it closes it with the last.
        """
        return self._closeDown(CLOSE_REASON_CLIENT)

    def _closeDown(self, reason: int) -> Deferred[int]:
        """
        The one way from open to closed, on the reactor thread: no listener
        hears anything more, then, on the call pool, the calls under way end,
        libvirt is told, and the virConnect is closed; once libvirt has freed
        what it held, the connection is closed for C{reason}.
        """
        closed = self.whenClosed()
        if self.state is not ConnectionState.OPEN:
            return closed
        self._moveTo(ConnectionState.CLOSING, reason)
        closing(self, self._dropped)
        leftovers = self._registrations.shutDown()

        def letGo() -> None:
            # A lost connection refuses every deregistration: one line was
            # logged for the loss, not one for each.
            with errorsExpected() if reason != CLOSE_REASON_CLIENT else nullcontext():
                self._registrations.release(leftovers)
                quietly(self.virConnect.unregisterCloseCallback)
                quietly(self.virConnect.close)

        done = deferToLibvirtPool(self._reactor, letGo)
        done.addErrback(lambda f: log.failure("closing {conn} failed", f, conn=repr(self)))
        done.addCallback(lambda _: self._loop.drain())
        done.addCallback(lambda _: self._closed(reason))
        return closed

    def _closed(self, reason: int) -> None:
        """Tell everyone who asked that the connection is closed."""
        self.closeReason = reason
        self._moveTo(ConnectionState.CLOSED, reason)
        self._closeListeners.tell(self, reason)

    def _moveTo(self, state: ConnectionState, reason: int) -> None:
        log.debug(
            "{conn} -> {state} ({reason})",
            conn=repr(self),
            state=state.value,
            reason=closeReasonName(reason),
        )
        self.state = state

    # What libvirt calls.

    def _deliver(self, key: Key, args: tuple[Any, ...]) -> None:
        """libvirt's dispatch of one event: call or queue every listener of C{key}."""
        if not self._loop.onReactorThread():
            self._fromThreads.callFromThread(self._deliver, key, args)
            return
        delivery = self._delivery
        for listener in self._registrations.listenersOf(key):
            delivery.give(listener.target, (self, *args, listener.opaque))

    def _libvirtClosed(self, reason: int) -> None:
        """libvirt's close callback: any thread, inside libvirt's dispatch."""
        if self._loop.onReactorThread():
            self._reactor.callLater(0, self._lost, reason)
        else:
            self._fromThreads.callFromThread(self._lost, reason)

    def _lost(self, reason: int) -> None:
        if self.state is ConnectionState.OPEN and not self._closeListeners.asked:
            # Nobody asked to be told (a service asks, and logs it itself).
            log.info(
                "{uri}: connection lost ({reason})",
                uri=self.maskedURI,
                reason=closeReasonName(reason),
            )
        self._closeDown(reason)


class LibvirtConnectionInThread(_ConnectionInThreadBase):
    """
    C{connection.inThread}: a L{LibvirtConnection}'s methods on the call
    pool, returning Deferreds, except C{close} and C{whenClosed}, which
    already return them and stay on the reactor thread.
    """

    if TYPE_CHECKING:
        # What a type checker sees: virConnect's methods (ConnectInThread),
        # but the wrapper's own where it has them.
        domainEventRegisterAny = deferred(LibvirtConnection.domainEventRegisterAny)
        networkEventRegisterAny = deferred(LibvirtConnection.networkEventRegisterAny)
        storagePoolEventRegisterAny = deferred(LibvirtConnection.storagePoolEventRegisterAny)
        nodeDeviceEventRegisterAny = deferred(LibvirtConnection.nodeDeviceEventRegisterAny)
        secretEventRegisterAny = deferred(LibvirtConnection.secretEventRegisterAny)
        domainEventDeregisterAny = deferred(LibvirtConnection.domainEventDeregisterAny)
        networkEventDeregisterAny = deferred(LibvirtConnection.networkEventDeregisterAny)
        storagePoolEventDeregisterAny = deferred(LibvirtConnection.storagePoolEventDeregisterAny)
        nodeDeviceEventDeregisterAny = deferred(LibvirtConnection.nodeDeviceEventDeregisterAny)
        secretEventDeregisterAny = deferred(LibvirtConnection.secretEventDeregisterAny)
        subscribe = deferred(LibvirtConnection.subscribe)
        tracked = deferred(LibvirtConnection.tracked)
        deregisterCallbacks = deferred(LibvirtConnection.deregisterCallbacks)
        registerCloseCallback = deferred(LibvirtConnection.registerCloseCallback)
        unregisterCloseCallback = deferred(LibvirtConnection.unregisterCloseCallback)

        def close(self) -> Deferred[int]: ...
        def whenClosed(self) -> Deferred[int]: ...

    else:

        def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
            if name in ("close", "whenClosed"):
                method: Callable[..., Deferred[Any]] = getattr(self._target, name)
                return method
            return super().__getattr__(name)
