"""
The C{libvirt-monitor} console script: the monitor that C{twistd} and
C{twist} run, with Twisted's log on standard error, so that standard output
carries records only (C{libvirt-monitor --format json | jq .}).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import ClassVar, NoReturn

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from ._monitoroptions import Options


class ScriptOptions(Options):
    """The monitor's options, and the log's level."""

    optParameters: ClassVar[list[list[str | None]]] = [
        [
            "log-level",
            None,
            "info",
            "Log events at this level and above: debug, info, warn, error.",
        ],
    ]

    def postOptions(self) -> None:
        try:
            self["log-level"] = LogLevel.levelWithName(self["log-level"])
        except Exception:
            raise ValueError(
                f"--log-level must be debug, info, warn, error or critical,"
                f" not {self['log-level']!r}"
            ) from None
        super().postOptions()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the monitor until it is stopped (SIGTERM, SIGINT, C{--stop-after}); exit 0."""
    options = ScriptOptions()
    options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(options["log-level"])]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    from twisted.internet import reactor

    from ._monitor import makeService

    service = makeService(options)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    sys.exit(0)
