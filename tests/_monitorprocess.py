"""
A libvirt-monitor process for tests: its JSON records as they come, its
stderr, its end, and conditions to wait for.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from ._harness import spawnPython

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.exit(run())"
TWIST = "import sys; from twisted.application.twist._twist import Twist; Twist.main()"
#: The console script, run as it is installed.
SCRIPT = "libvirt-monitor"
Records = list[dict[str, Any]]


class Monitor(ProcessProtocol):
    """A monitor process: its JSON records as they come, its stderr, its end."""

    process: IProcessTransport
    logfile: str

    def __init__(self) -> None:
        self.records: Records = []
        self.text: list[str] = []
        self.stderr = b""
        self.ended: Deferred[int | None] = Deferred()
        self._buffer = b""
        self._waiters: list[tuple[Callable[[Records], bool], Deferred[Records]]] = []

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.text.append(line.decode())
            if line.startswith(b"{"):
                self.records.append(json.loads(line))
        for entry in list(self._waiters):
            condition, d = entry
            if condition(self.records):
                self._waiters.remove(entry)
                d.callback(self.records)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))

    def when(self, condition: Callable[[Records], bool]) -> Deferred[Records]:
        d: Deferred[Records] = Deferred()
        if condition(self.records):
            d.callback(self.records)
        else:
            self._waiters.append((condition, d))
        return d

    def kinds(self, uri: str | None = None) -> list[str]:
        return [r["kind"] for r in self.records if uri is None or r["uri"] == uri]

    async def terminate(self, signum: int = signal.SIGTERM) -> int | None:
        """Signal the monitor and wait for its exit status."""
        self.process.signalProcess(signum)
        return await self.ended


def spawnMonitor(
    case: TestCase,
    *args: str,
    runner: str = TWISTD,
    env: dict[str, str] | None = None,
    logfile: bool = True,
) -> Monitor:
    """
    Start C{libvirt-monitor args} under twistd (or twist, or as the console
    script, L{SCRIPT}), its log to a file unless C{logfile} is false; killed
    at cleanup.
    """
    monitor = Monitor()
    monitor.logfile = os.path.abspath(case.mktemp())
    command = [script()] if runner is SCRIPT else ["-c", runner]
    if runner is TWISTD:
        command += ["-n", "--pidfile="]
        if logfile:
            command += [f"--logfile={monitor.logfile}"]
    elif runner is TWIST and logfile:
        command += [f"--log-file={monitor.logfile}"]
    if runner is not SCRIPT:
        command.append("libvirt-monitor")
    monitor.process = spawnPython(case, monitor, [*command, *args], monitor.ended, env)
    return monitor


def script() -> str:
    """The installed C{libvirt-monitor} console script, beside this Python."""
    return os.path.join(os.path.dirname(sys.executable), "libvirt-monitor")


def has(
    kind: str, uri: str | None = None, count: int = 1, **fields: Any
) -> Callable[[Records], bool]:
    """A condition: at least C{count} records of C{kind} with C{fields}."""

    def condition(records: Records) -> bool:
        found = [
            r
            for r in records
            if r["kind"] == kind
            and (uri is None or r["uri"] == uri)
            and all(r.get(k) == v for k, v in fields.items())
        ]
        return len(found) >= count

    return condition
