"""
The monitor's command line: options that, with the C{--config} file's
settings, make a L{MonitorConfig}, every error told in one line before the
reactor runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.python import usage

from . import events
from ._amqpsettings import (
    DEFAULT_EXCHANGE,
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
    "amqp",
    "amqp-exchange",
    "amqp-password-file",
    "amqp-password-env",
    "spool",
    "spool-size",
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
        ["amqp-exchange", None, None, f"The topic exchange to publish to ({DEFAULT_EXCHANGE})."],
        ["amqp-password-file", None, None, "Read the broker's password from this file."],
        ["amqp-password-env", None, None, "Read the broker's password from this variable."],
        [
            "spool",
            None,
            None,
            "Where records wait for the broker's confirmation (default: spool/ in"
            " $STATE_DIRECTORY, as systemd sets it).",
        ],
        ["spool-size", None, None, "The spool's size limit: bytes, or with K, M or G (256M)."],
    ]

    config: MonitorConfig

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

    def commandLine(self) -> dict[str, Any]:
        """What the command line says, for L{loadConfig}: given settings only."""
        given: dict[str, Any] = {name: self[name] for name in SETTINGS if self[name] is not None}
        if self["uris"]:
            given["uris"] = list(self["uris"])
        if self["read-only"]:
            given["read-only"] = True
        return given
