"""
The monitor's command line: options that, with the C{--config} file's
settings, make a L{MonitorConfig}, every error told in one line before the
reactor runs.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

from twisted.python import usage

from . import events
from ._amqpsettings import (
    DEFAULT_EXCHANGE,
    AMQPSettings,
    AMQPSettingsError,
    amqpSettings,
    pikaOrExit,
)
from ._monitorconfig import ConfigError, MonitorConfig, loadConfig
from ._uri import checkURI

#: The options a config file can also set; None means not given here.
SETTINGS = (
    "events",
    "format",
    "output",
    "keepalive",
    "retry-initial",
    "retry-max",
    "resync",
    "metrics",
    "stop-after",
)


class Options(usage.Options):
    """
    The monitor's command line.  After parsing, C{options.config} is the
    L{MonitorConfig} it runs: the command line over the config file's hosts
    and settings, over the defaults.
    """

    synopsis = "[options]"
    longdesc = (
        "Watch libvirt hypervisors and write every event, one per line, as text"
        " or JSON. Every URI is watched on its own connection, reconnected with"
        " backoff when lost. Options given here override the --config file's;"
        " SIGHUP reloads that file and reopens --output."
    )
    optFlags: ClassVar[list[list[str | None]]] = [
        ["read-only", None, "Open the connections read-only."],
        ["demo", None, "Start and stop test domains on test:// URIs, to see events."],
    ]
    optParameters: ClassVar[list[list[str | None]]] = [
        ["config", "c", None, "A fleet config file (TOML): settings and [[host]] tables."],
        ["events", None, None, "Event kinds or families, comma-separated (default: all)."],
        ["format", None, None, "Output format: text (default) or json (one object per line)."],
        ["output", "o", None, "File to append records to; - for standard output (default)."],
        ["keepalive", None, None, "Keepalive INTERVAL:COUNT in seconds, or off (default: 5:3)."],
        ["retry-initial", None, None, "Seconds before the first reconnection attempt (1)."],
        ["retry-max", None, None, "Longest wait between reconnection attempts, in seconds (60)."],
        ["stop-after", None, None, "Stop by itself after this many seconds."],
        [
            "resync",
            None,
            None,
            "Seconds between checks of each host's inventory against a fresh listing"
            " (each difference is a lost event, written as a record), or off (60).",
        ],
        [
            "metrics",
            None,
            None,
            "Serve /metrics, /healthz and /readyz on this Twisted endpoint"
            " (e.g. tcp:9177:interface=127.0.0.1).",
        ],
        ["amqp", None, None, "Publish every record to RabbitMQ: amqp://user:password@host/vhost."],
        ["amqp-exchange", None, DEFAULT_EXCHANGE, "The topic exchange to publish to."],
        ["amqp-password-file", None, None, "Read the broker's password from this file."],
        ["amqp-password-env", None, None, "Read the broker's password from this variable."],
        [
            "spool",
            None,
            None,
            "Where records wait for the broker's confirmation (default: spool/ in"
            " $STATE_DIRECTORY, as systemd sets it).",
        ],
        ["spool-size", None, "256M", "The spool's size limit: bytes, or with K, M or G."],
    ]

    config: MonitorConfig
    #: With --amqp: the broker, and where records wait for it.
    amqp: AMQPSettings | None = None
    spool: tuple[str, int] | None = None

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["uris"] = []

    def opt_uri(self, uri: str) -> None:
        """A libvirt URI to watch; repeat for a fleet (default: test:///default)."""
        self["uris"].append(checkURI(uri))

    def opt_list_events(self) -> None:
        """List the event kinds of the installed libvirt and exit."""
        for kind in sorted(events.allKinds()):
            print(kind)
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        # twistd answers a usage error with the whole help text; an operator
        # who mistyped one option wants one line saying which.
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except (usage.UsageError, ValueError, TypeError) as e:
            raise SystemExit(f"libvirt-monitor: {e}") from None

    def postOptions(self) -> None:
        try:
            self.config = loadConfig(self["config"], self.commandLine())
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["amqp"] is not None:
            self._amqp()

    def _amqp(self) -> None:
        try:
            pikaOrExit()
            self.amqp = amqpSettings(
                self["amqp"],
                self["amqp-exchange"],
                self["amqp-password-file"],
                self["amqp-password-env"],
            )
        except AMQPSettingsError as e:
            raise usage.UsageError(str(e)) from None
        directory = self["spool"]
        if directory is None:
            state = os.environ.get("STATE_DIRECTORY")
            if not state:
                raise usage.UsageError(
                    "--amqp needs --spool DIR: where records wait for the broker"
                )
            directory = os.path.join(state.split(":")[0], "spool")
        self.spool = (directory, _bytes("--spool-size", self["spool-size"]))

    def commandLine(self) -> dict[str, Any]:
        """What the command line says, for L{loadConfig}: given settings only."""
        given: dict[str, Any] = {name: self[name] for name in SETTINGS if self[name] is not None}
        if self["uris"]:
            given["uris"] = list(self["uris"])
        if self["read-only"]:
            given["read-only"] = True
        return given


def _bytes(name: str, value: str) -> int:
    """A size in bytes, C{K}, C{M} or C{G} (powers of 1024) allowed."""
    match = re.fullmatch(r"([0-9]+)([KMG]?)", value.strip().upper())
    if match is None or int(match[1]) == 0:
        raise usage.UsageError(
            f"{name} must be a number of bytes (K, M or G allowed), not {value!r}"
        )
    return int(match[1]) * 1024 ** " KMG".index(match[2] or " ")  # type: ignore[no-any-return]
