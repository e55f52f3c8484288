"""
The one trace libvirt leaves when its event-queue race loses an event in
this process, and who is told of it.

libvirt checks that an event queue has a timer before taking the queue's
lock; if the connection's last event registration goes in between, the
event lands in a queue whose timer was just removed, and libvirt arms timer
-1 (C{updateTimeout(-1, 0)}).  Queueing is the only caller that sets a timer
to 0 (keepalive, once stopped, updates timer -1 with its interval, which
means nothing).  That event is never delivered, and if the connection
registers again before its registrations all go, none after it is either.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

log = Logger()

Observer = Callable[[], object]


class LostEvents:
    """
    @param later: calls a function on a later reactor turn, from any thread
        (the trace comes inside libvirt's locks, from whichever thread).
    """

    def __init__(self, later: Callable[[Callable[[], None]], None]) -> None:
        self._later = later
        self._observers: list[Observer] = []

    def seen(self) -> None:
        """libvirt armed timer -1: say so, and tell the observers on a later turn."""
        log.warn(
            "libvirt lost an event: it queued one just as the connection's last"
            " event registration went (a libvirt race); should that connection"
            " register again, it may deliver no events until every registration"
            " on it is gone"
        )
        if self._observers:
            self._later(self._tell)

    def addObserver(self, observer: Observer) -> None:
        self._observers.append(observer)

    def removeObserver(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def _tell(self) -> None:
        for observer in list(self._observers):
            try:
                observer()
            except Exception:
                log.failure("lost-event observer {observer!r} raised", observer=observer)
