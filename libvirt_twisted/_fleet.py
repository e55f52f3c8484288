"""
The monitor's hosts as one service: made from a list of host settings, and
changed to another list on reload, keeping the hosts that did not change.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.logger import Logger

from ._hostmonitor import HostMonitor

log = Logger()


class Fleet(MultiService):
    """
    The hosts a monitor watches, each a L{HostMonitor} made by C{makeHost}
    from its key (hashable settings: a URI with everything its connection
    depends on).  L{apply} moves to a new list of keys: a host whose key is
    still there keeps its connection and its counts.
    """

    def __init__(self, makeHost: Callable[[Any], HostMonitor]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._makeHost = makeHost
        self._hosts: dict[Hashable, HostMonitor] = {}

    def hosts(self) -> Iterator[HostMonitor]:
        """The hosts, in the order they were added."""
        return iter(list(self._hosts.values()))

    def __len__(self) -> int:
        return len(self._hosts)

    def apply(self, keys: Sequence[Hashable]) -> Deferred[None]:
        """
        Watch exactly the hosts of C{keys}: make the new ones (started at
        once if the fleet runs), stop and drop the ones no longer listed.
        Fires once the dropped hosts have stopped.
        """
        wanted = dict.fromkeys(keys)
        stopping: list[Deferred[Any]] = []
        for key in [k for k in self._hosts if k not in wanted]:
            host = self._hosts.pop(key)
            log.info("no longer watching {uri}", uri=host.uri)
            stopped = self.removeService(host)  # type: ignore[no-untyped-call]
            if stopped is not None:
                stopping.append(stopped)
        for key in wanted:
            if key not in self._hosts:
                host = self._makeHost(key)
                self._hosts[key] = host
                host.setServiceParent(self)  # type: ignore[no-untyped-call]
        done: Deferred[Any] = DeferredList(stopping, consumeErrors=True)
        return done.addCallback(lambda _: None)

    def whenFirstAttempted(self) -> Deferred[None]:
        """Fires once every host has ended its first connection attempt."""
        attempts = [host.whenFirstAttempted() for host in self._hosts.values()]
        done: Deferred[Any] = gatherResults(attempts)
        return done.addCallback(lambda _: None)
