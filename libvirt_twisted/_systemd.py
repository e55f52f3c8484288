"""
systemd's C{Type=notify} protocol, for the monitor run as a service: ready,
still alive (the watchdog), stopping.  It is one datagram per message to the
C{AF_UNIX} socket named by C{$NOTIFY_SOCKET}, too little for a dependency.
Notifying is best effort: systemd gone or restarting must not stop the
monitor, so a failed send is logged once and never raised.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._reactor import Scheduler

log = Logger()


class Notifier:
    """
    Sends messages to systemd's socket at C{address} (C{$NOTIFY_SOCKET}: a
    path, or C{@name} in Linux's abstract namespace) on one non-blocking
    datagram socket, opened at the first send and released by L{close}.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._target = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str] = os.environ) -> Notifier | None:
        """A notifier for C{$NOTIFY_SOCKET}, or L{None} when not run by systemd."""
        address = environ.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        if not address.startswith(("/", "@")):
            log.warn("NOTIFY_SOCKET={address!r} is no socket path: not notifying", address=address)
            return None
        return cls(address)

    def notify(self, **fields: object) -> None:
        """
        Send C{fields} as one message: C{notify(READY=1, STATUS="watching")}.
        A newline in a value would start another assignment: it becomes a space.
        """
        lines = (f"{name}={str(value).replace(chr(10), ' ')}" for name, value in fields.items())
        self.send("\n".join(lines))

    def send(self, message: str) -> None:
        """Send C{message}, newline-separated assignments, as one datagram."""
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode("utf-8"), self._target)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warn(
                    "cannot notify systemd at {address}: {error} (later failures are not logged)",
                    address=self.address,
                    error=e,
                )

    def close(self) -> None:
        """Release the socket; a later send opens another."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdogInterval(environ: Mapping[str, str] = os.environ) -> float | None:
    """
    Seconds between C{WATCHDOG=1} messages: half of C{$WATCHDOG_USEC}, so that
    one late ping does not get the service killed.  L{None} when there is no
    watchdog, the value is not a positive number of microseconds, or
    C{$WATCHDOG_PID} names another process (the watchdog is not ours).
    """
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and _count(pid) != os.getpid():
        return None
    usec = _count(environ.get("WATCHDOG_USEC", ""))
    return None if not usec else usec / 2_000_000


def _count(text: str) -> int | None:
    """C{text} as a number written in ASCII digits only (no sign, space or C{_})."""
    return int(text) if text.isascii() and text.isdigit() else None


class SystemdService(Service):
    """
    Tells systemd about the monitor: C{READY=1} once the L{Deferred} of
    C{whenReady()} (called at each start, and this service's: its result is
    consumed) fires, with C{STATUS=status()} if given; C{WATCHDOG=1} every
    C{watchdog} seconds (see L{watchdogInterval}) while running; C{STOPPING=1}
    when stopped.  A stop before READY cancels nothing: READY is just never
    sent.  Added last to the monitor's top service, it stops first, so that
    systemd hears of the stop before the hosts are shut down.
    """

    def __init__(
        self,
        notifier: Notifier,
        whenReady: Callable[[], Deferred[Any]],
        clock: Scheduler,
        watchdog: float | None,
        status: Callable[[], str] | None = None,
    ) -> None:
        if watchdog is not None and not watchdog > 0:
            raise ValueError(f"watchdog must be a positive number of seconds, not {watchdog!r}")
        self._notifier = notifier
        self._whenReady = whenReady
        self._clock = clock
        self._watchdog = watchdog
        self._status = status
        self._pinger: LoopingCall | None = None
        self._waiting: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._watchdog is not None:
            self._pinger = LoopingCall(self._notifier.notify, WATCHDOG=1)
            self._pinger.clock = cast(IReactorTime, self._clock)
            self._pinger.start(self._watchdog, now=True)
        waiting = self._waiting = self._whenReady()
        waiting.addBoth(self._settled, waiting)

    def _settled(self, result: object, waiting: Deferred[Any]) -> None:
        """READY=1 or an error, unless this wait was overtaken by a stop."""
        if waiting is not self._waiting:
            return
        self._waiting = None
        if isinstance(result, Failure):
            log.failure("waiting to be ready failed: systemd is not told READY=1", result)
            return
        fields: dict[str, object] = {"READY": 1}
        if self._status is not None:
            try:
                fields["STATUS"] = self._status()
            except Exception:
                log.failure("the systemd status text failed; sending READY without it")
        self._notifier.notify(**fields)

    def stopService(self) -> None:
        if not self.running:
            return
        super().stopService()  # type: ignore[no-untyped-call]
        self._waiting = None
        self._notifier.notify(STOPPING=1)
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        self._pinger = None
        self._notifier.close()
