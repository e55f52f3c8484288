"""
The leak check for tests: a test fails if it leaves a L{LibvirtConnection}
open, or watches or timers in the event loop that were not there before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred

from ._debug import unclosed
from ._install import installed


class _Case(Protocol):
    """What L{checkForLeaks} needs of a test case: a trial one's C{addCleanup}."""

    failureException: type[BaseException]

    def addCleanup(self, function: Callable[..., object], /, *args: Any, **kw: Any) -> None: ...


#: What the event loop holds that a test must give back (its running totals aside).
_HELD = ("watches", "fds", "timers")


def checkForLeaks(case: _Case) -> None:
    """
    Fail C{case} (a trial test case: the check's clean-up returns a
    Deferred, which pyunit would ignore), once its own clean-ups have run,
    if it left a C{LibvirtConnection} open, or watches or timers in the event loop that
    were not there when this was called (counted once the loop has freed
    what libvirt removed).  Call it first thing in C{setUp}, so that its
    check runs after every clean-up the test adds.

    @param case: the running test case; the check is one of its clean-ups.
    """
    before = set(unclosed())
    loop = installed()
    held = {name: loop.counts()[name] for name in _HELD} if loop is not None else {}

    async def check() -> None:
        problems = [
            f"{connection!r} on {connection.maskedURI} was never closed"
            for connection in unclosed()
            if connection not in before
        ]
        if loop is not None:
            await loop.drain()
            now = {name: loop.counts()[name] for name in _HELD}
            if now != held:
                problems.append(f"the event loop holds {now}, not {held} as before")
        if problems:
            raise case.failureException("; ".join(problems))

    def cleanUp() -> Deferred[None]:
        return ensureDeferred(check())

    case.addCleanup(cleanUp)


class LeakChecks:
    """
    A mixin for trial test cases (put it before C{TestCase}): each test
    fails if it leaves a connection open or libvirt registrations behind
    (see L{checkForLeaks}).
    """

    def setUp(self) -> Any:
        """
        Start the leak check (L{checkForLeaks}), then run the next class's
        C{setUp}.
        """
        checkForLeaks(self)  # type: ignore[arg-type]
        return super().setUp()  # type: ignore[misc]
