"""
libvirt's timers on the reactor's clock.

A libvirt timer fires every C{interval} ms: -1 disables it, 0 means on every
iteration of the loop.  Each running timer is one C{callLater}, reset rather
than replaced when libvirt changes its interval.  A timer set to 0 while a
watch is being dispatched (libvirt's event queue, filled by what the watch
read) fires right after that dispatch, in the same reactor iteration, rather
than costing a reactor turn of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ._reactor import Scheduler

TimeoutCallback = Callable[[int, Any], None]


class Timer:
    """One libvirt timer: interval in ms (-1 disabled, 0 every iteration)."""

    __slots__ = ("call", "callback", "id", "interval", "live", "opaque")

    def __init__(self, id: int, interval: int, callback: TimeoutCallback, opaque: Any) -> None:
        self.id = id
        self.interval = interval
        self.callback = callback
        self.opaque = opaque
        self.live = True
        self.call: IDelayedCall | None = None


class Timers:
    """
    The event loop's timers: by id (changed under the event loop's lock),
    and their countdowns on the reactor (on the reactor thread only).

    @param log: where a timer callback that raises is logged (the loop's).
    @ivar byId: the live timers, by id.
    @ivar dispatching: true while the event loop dispatches a watch; a timer
        set to 0 meanwhile waits for L{fireDue}.
    @ivar fired: how many timer callbacks ran.
    """

    def __init__(self, reactor: Scheduler, log: Logger) -> None:
        self.byId: dict[int, Timer] = {}
        self.dispatching = False
        self.fired = 0
        self._reactor = reactor
        self._log = log
        self._dueNow: list[Timer] = []

    def sync(self, timer: Timer) -> None:
        """(Re)start C{timer}'s countdown on the reactor, or stop it."""
        call = timer.call
        if not timer.live or timer.interval < 0:
            if call is not None and call.active():
                call.cancel()
            timer.call = None
        elif timer.interval == 0 and self.dispatching:
            if call is not None and call.active():
                call.cancel()
            timer.call = None
            if timer not in self._dueNow:
                self._dueNow.append(timer)
        elif call is not None and call.active():
            call.reset(timer.interval / 1000)
        else:
            timer.call = self._reactor.callLater(timer.interval / 1000, self._fire, timer)

    def fireDue(self) -> None:
        """Fire the timers set to 0 during the dispatch that just ended."""
        while self._dueNow:
            timer = self._dueNow.pop(0)
            if timer.live and timer.interval == 0 and timer.call is None:
                self._fire(timer)

    def _fire(self, timer: Timer) -> None:
        timer.call = None
        if not timer.live or timer.interval < 0:
            return
        self.fired += 1
        try:
            timer.callback(timer.id, timer.opaque)
        except Exception:
            self._log.failure("libvirt callback for timer {timer} raised", timer=timer.id)
        if timer.call is None and timer.live and timer.interval >= 0:
            timer.call = self._reactor.callLater(timer.interval / 1000, self._fire, timer)
