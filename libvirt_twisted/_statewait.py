"""
Waiting for a domain to reach a state: the part that connections and
services share.  A L{StateWait} is told what the domain's state is, from a
read, an event or an inventory change, and fires once it is one of those
asked for; it fails on a timeout or when the domain is gone, and whatever
ends it (cancelling too) runs its clean-ups.
"""

from __future__ import annotations

import contextlib
import uuid as uuids
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import libvirt
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from ._install import errorCode
from ._lifecycle import DomainState, domainAfter, stateReason
from ._reactor import Scheduler, ThreadsReactor
from ._registrations import ConnectionClosedError, UnknownCallbackError
from ._threads import deferToLibvirtPool
from .events import decode, domainState

#: What names a domain to wait for: the domain itself, its name, or its UUID.
DomainSpec = libvirt.virDomain | str


class DomainStateTimeout(TimeoutError):
    """The domain did not reach the states asked for in time."""


class DomainUndefinedError(LookupError):
    """The domain is not there (any more): it will reach no state."""


def checkStates(states: str | Iterable[str]) -> frozenset[str]:
    """C{"SHUTOFF"} or C{("RUNNING", "PAUSED")}, checked against libvirt's names."""
    wanted = frozenset([states] if isinstance(states, str) else states)
    known = {domainState(code) for code in range(16)} - {f"UNKNOWN({n})" for n in range(16)}
    unknown = sorted(wanted - known)
    if not wanted or unknown:
        raise ValueError(
            f"domain states are {', '.join(sorted(known))}; not {unknown or 'nothing'}"
        )
    return wanted


class StateWait:
    """
    One wait.  C{deferred} fires with the state's name; its callbacks run
    on a later reactor turn (never inside libvirt's dispatch).

    @param domain: the domain, its name or its UUID.
    @param reactor: fires the Deferred, on a later turn.
    @param clock: runs the timeout.
    @param timeout: seconds before failing with L{DomainStateTimeout}, or
        C{None}.
    """

    def __init__(
        self,
        domain: DomainSpec,
        states: frozenset[str],
        reactor: Scheduler,
        clock: Scheduler,
        timeout: float | None,
    ) -> None:
        if isinstance(domain, libvirt.virDomain):
            self._uuid: str | None = domain.UUIDString()
            self._name: str | None = None
            self.shown = domain.name()
        elif isinstance(domain, str) and domain:
            self._uuid = _asUUID(domain)
            self._name = None if self._uuid else domain
            self.shown = domain
        else:
            raise TypeError(f"a domain is a virDomain, a name or a UUID, not {domain!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ValueError(f"timeout is a number of seconds or None, not {timeout!r}")
        self.states = states
        self.known: DomainState | None = None
        # Events that come before the state is read: applied to what it says.
        self._early: list[tuple[str, str]] | None = []
        self._reactor = reactor
        self._cleanups: list[Callable[[], object]] = []
        self._ended = False
        self.deferred: Deferred[str] = Deferred(lambda _: self._end())
        self._timer: IDelayedCall | None = None
        if timeout is not None:
            self._timer = clock.callLater(timeout, self._timedOut, timeout)

    @property
    def ended(self) -> bool:
        return self._ended

    def matches(self, name: str | None, uuid: str | None) -> bool:
        """Whether an object with that name and UUID is the domain waited for."""
        if self._uuid is not None:
            return uuid == self._uuid
        return name == self._name

    def onEnd(self, cleanup: Callable[[], object]) -> None:
        """Run C{cleanup} when the wait ends, however (at once if it has)."""
        if self._ended:
            cleanup()
        else:
            self._cleanups.append(cleanup)

    def observe(self, state: DomainState | None) -> None:
        """
        The domain is in C{state}, or gone (C{None}), as a read or an
        inventory says; the events that came before it are applied to it
        (they came after the wait began, and each leaves the domain in a
        state of its own, so that in order they end where the domain is).
        """
        if self._ended:
            return
        early, self._early = self._early or [], None
        if state is None and "SHUTOFF" in self.states and ("STOPPED" in (e for e, _ in early)):
            self._finish("SHUTOFF")  # a transient domain stopped, and was gone when read
            return
        self._moved(state)
        for event, detail in early:
            self._apply(event, detail)

    def event(self, name: str | None, uuid: str | None, event: str, detail: str) -> None:
        """A lifecycle event, named: it moves the domain from what is known."""
        if self._ended or not self.matches(name, uuid):
            return
        if self._early is not None:
            self._early.append((event, detail))  # nothing known to move from yet
        else:
            self._apply(event, detail)

    def _apply(self, event: str, detail: str) -> None:
        if self._ended:
            return
        after = domainAfter(self.known, event, detail)
        if after is None and event == "STOPPED" and "SHUTOFF" in self.states:
            self._finish("SHUTOFF")  # a transient domain stops, and is gone
            return
        self._moved(after)

    def _moved(self, state: DomainState | None) -> None:
        self.known = state
        if state is None:
            self.fail(DomainUndefinedError(f"domain {self.shown!r} is not defined"))
        elif state.state in self.states:
            self._finish(state.state)

    def fail(self, error: Exception) -> None:
        if not self._ended:
            self._end()
            failure = Failure(error)  # type: ignore[no-untyped-call]
            self._reactor.callLater(0, self.deferred.errback, failure)

    def reached(self, state: str) -> None:
        """The domain reached C{state}, one of those waited for."""
        if not self._ended:
            self._finish(state)

    def _finish(self, state: str) -> None:
        self._end()
        self._reactor.callLater(0, self.deferred.callback, state)

    def _timedOut(self, timeout: float) -> None:
        self._timer = None
        now = self.known.state if self.known is not None else "not known yet"
        wanted = " or ".join(sorted(self.states))
        self.fail(
            DomainStateTimeout(
                f"domain {self.shown!r} did not become {wanted} within {timeout}s (it is {now})"
            )
        )

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            cleanup()


def read(conn: libvirt.virConnect, wait: StateWait, domain: DomainSpec) -> DomainState | None:
    """The domain's state now, blocking (round trips); C{None} if it is not there."""
    try:
        if isinstance(domain, libvirt.virDomain):
            found = conn.lookupByUUIDString(domain.UUIDString())
        elif wait.matches(None, domain):
            found = conn.lookupByUUIDString(domain)
        else:
            found = conn.lookupByName(domain)
        code, reason = (int(value) for value in found.state())
        persistent = bool(found.isPersistent())
    except libvirt.libvirtError as e:
        if errorCode(e) == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
    state, why = stateReason(code, reason)
    return DomainState(state, why, persistent)


def trapCancel(failure: Failure) -> None:
    """For clean-up Deferreds cancelled on purpose."""
    failure.trap(CancelledError)  # type: ignore[no-untyped-call]


def _asUUID(text: str) -> str | None:
    try:
        return str(uuids.UUID(text))
    except ValueError:
        return None


class Watched(Protocol):
    """What a wait needs of a connection: L{LibvirtConnection}'s public methods."""

    virConnect: libvirt.virConnect

    def subscribe(
        self, family: str, eventID: int, callback: Any, opaque: Any = None, obj: Any = None
    ) -> int: ...
    def unsubscribe(self, callbackID: int) -> Deferred[None]: ...
    def whenClosed(self) -> Deferred[int]: ...


def waitOn(
    connection: Watched,
    domain: DomainSpec,
    states: frozenset[str],
    reactor: ThreadsReactor,
    timeout: float | None,
) -> Deferred[str]:
    """
    Wait on an open connection: listen for the domain's lifecycle events,
    then read its state, both on the call pool; fail if the connection
    closes; unsubscribe when the wait ends, however.
    """
    wait = StateWait(domain, states, reactor, reactor, timeout)
    lifecycle = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE

    def listen(_: object, *args: Any) -> None:
        event = decode("domain", lifecycle, args[:-1])
        wait.event(event.name, event.uuid, str(event.fields["event"]), str(event.fields["detail"]))

    def stopListening(listenerId: int) -> None:
        with contextlib.suppress(UnknownCallbackError):  # closed: nothing is left
            connection.unsubscribe(listenerId)

    def listenAndRead() -> tuple[int, DomainState | None]:
        listenerId = connection.subscribe("domain", lifecycle, listen)
        try:
            return listenerId, read(connection.virConnect, wait, domain)
        except BaseException:
            stopListening(listenerId)
            raise

    def listening(result: tuple[int, DomainState | None]) -> None:
        listenerId, state = result
        wait.onEnd(lambda: stopListening(listenerId))
        wait.observe(state)

    closed = connection.whenClosed()
    closed.addCallbacks(
        lambda _: wait.fail(ConnectionClosedError("the connection closed")), trapCancel
    )
    wait.onEnd(closed.cancel)
    started = deferToLibvirtPool(reactor, listenAndRead)
    started.addCallbacks(listening, lambda f: wait.fail(f.value))
    return wait.deferred


def waitAcross(
    whenConnected: Callable[[], Deferred[Any]],
    domain: DomainSpec,
    states: frozenset[str],
    reactor: Scheduler,
    clock: Scheduler,
    timeout: float | None,
) -> Deferred[str]:
    """
    Wait on each connection C{whenConnected} gives in turn (a service's),
    afresh after each loss, until the domain is in one of C{states}.
    """
    wait = StateWait(domain, states, reactor, clock, timeout)
    pending: Deferred[Any] | None = None

    def onConnection(connection: Any) -> None:
        nonlocal pending
        pending = connection.whenDomainState(domain, states)
        pending.addCallbacks(wait.reached, ended)

    def ended(failure: Failure) -> None:
        if failure.check(ConnectionClosedError):  # type: ignore[no-untyped-call]
            again()
        else:
            wait.fail(failure.value)  # type: ignore[arg-type]

    def again() -> None:
        nonlocal pending
        if not wait.ended:
            pending = whenConnected()
            pending.addCallbacks(onConnection, lambda f: wait.fail(f.value))

    wait.onEnd(lambda: pending.cancel() if pending is not None else None)
    again()
    return wait.deferred
