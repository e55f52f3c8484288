"""
C{twistd libvirt-monitor}: watch one hypervisor or a fleet and write every
event as a line of text or JSON.

Each URI gets a L{LibvirtService} of its own, so a slow, dead or unreachable
host never delays the others; at start and after every reconnection the
monitor writes the connection's state and an inventory of its domains, so a
consumer can resynchronise after a gap.
"""

from __future__ import annotations

import signal
from typing import Any, ClassVar, Protocol, cast

import libvirt
from twisted.application.internet import backoffPolicy
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python import usage

from . import events
from ._hostmonitor import HostMonitor
from ._install import install
from ._monitoroutput import Output
from ._reactor import EventLoopReactor, ThreadsReactor
from ._service import LibvirtService
from ._threads import deferToLibvirtPool, setThreadPoolSize
from ._uri import checkURI, maskURI

log = Logger()

DEFAULT_URI = "test:///default"


class MonitorReactor(ThreadsReactor, EventLoopReactor, Protocol):
    """What the monitor needs of the reactor it runs on."""

    def callWhenRunning(self, callable: Any, /, *args: Any, **kw: Any) -> Any: ...
    def callFromThread(self, callable: Any, /, *args: Any, **kw: Any) -> None: ...
    def stop(self) -> None: ...
    def seconds(self) -> float: ...


class Options(usage.Options):
    """The monitor's command line."""

    synopsis = "[options]"
    longdesc = (
        "Watch libvirt hypervisors and write every event, one per line, as text"
        " or JSON. Every URI is watched on its own connection, reconnected with"
        " backoff when lost."
    )
    optFlags: ClassVar[list[list[str | None]]] = [
        ["read-only", None, "Open the connections read-only."],
        ["demo", None, "Start and stop test domains on test:// URIs, to see events."],
    ]
    optParameters: ClassVar[list[list[str | None]]] = [
        ["events", None, "all", "Event kinds or families, comma-separated (see --list-events)."],
        ["format", None, "text", "Output format: text or json (one object per line)."],
        ["output", "o", "-", "File to append records to; - for standard output."],
        ["keepalive", None, "5:3", "Keepalive INTERVAL:COUNT in seconds, or off."],
        ["retry-initial", None, "1.0", "Seconds before the first reconnection attempt."],
        ["retry-max", None, "60.0", "Longest wait between reconnection attempts, in seconds."],
        ["stop-after", None, None, "Stop by itself after this many seconds."],
        [
            "resync",
            None,
            "60",
            "Seconds between checks of each host's inventory against a fresh listing"
            " (each difference is a lost event, written as a record), or off.",
        ],
    ]

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
        if not self["uris"]:
            self["uris"] = [DEFAULT_URI]
        self["kinds"] = _kinds(self["events"])
        if self["format"] not in ("text", "json"):
            raise usage.UsageError(f"--format must be text or json, not {self['format']!r}")
        self["keepalive"] = _keepalive(self["keepalive"])
        for name in ("retry-initial", "retry-max", "stop-after"):
            if self[name] is not None:
                self[name] = _positive(name, self[name])
        self["resync"] = None if self["resync"] == "off" else _positive("resync", self["resync"])


def makeService(options: Options) -> IService:
    """The monitor: one watched connection per URI, writing to one output."""
    from twisted.internet import reactor as globalReactor

    reactor = cast(MonitorReactor, globalReactor)
    install(reactor)
    uris: list[str] = options["uris"]
    # Opening, keepalive and inventory calls run in threads: enough for every
    # host to hang at once without holding up the others.
    setThreadPoolSize(max(10, 3 * len(uris)), reactor)
    output = Output(options["output"], options["format"], reactor.seconds)
    top = MonitorService(output, reactor)
    initial, maxDelay = options["retry-initial"], options["retry-max"]
    policy = backoffPolicy(initialDelay=initial, maxDelay=max(maxDelay, initial))
    children: list[Service] = []
    for uri in uris:
        service = LibvirtService(
            uri,
            readOnly=options["read-only"],
            keepalive=options["keepalive"],
            retryPolicy=policy,
            reactor=reactor,
            inventory=True,
            resync=options["resync"],
        )
        children.append(HostMonitor(service, options["kinds"], output))
    if options["demo"]:
        children.append(_DemoDriver([u for u in uris if u.startswith("test")], reactor))
    if options["stop-after"] is not None:
        children.append(_StopAfter(options["stop-after"], reactor))
    for child in children:
        child.setServiceParent(top)  # type: ignore[no-untyped-call]
    return top


class MonitorService(MultiService):
    """
    The monitor's top service: the output opens before the hosts start and
    closes after every host has stopped and written its last record.
    """

    def __init__(self, output: Output, reactor: MonitorReactor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.output = output
        self._reactor = reactor

    def startService(self) -> None:
        self.output.open()
        super().startService()  # type: ignore[no-untyped-call]
        self._reactor.callWhenRunning(self._handleSignals)

    def _handleSignals(self) -> None:
        """
        Stop on SIGTERM and SIGINT, and exit 0: asking a monitor to stop is
        not a failure.  (twistd's own handlers make the process die of the
        signal once the reactor has stopped.)
        """

        def stop(signum: int, frame: object) -> None:
            log.info("{signal} received: stopping", signal=signal.Signals(signum).name)
            self._reactor.callFromThread(self._reactor.stop)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[Any] = super().stopService()  # type: ignore[no-untyped-call]
        stopped.addBoth(lambda result: self.output.close())
        return stopped


class _DemoDriver(Service):
    """Starts, pauses, resumes and destroys a test domain every second."""

    def __init__(self, uris: list[str], reactor: ThreadsReactor) -> None:
        self._uris = uris
        self._reactor = reactor
        self._call: IDelayedCall | None = None
        self._count = 0

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._call = self._reactor.callLater(0.5, self._step)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _step(self) -> None:
        self._count += 1
        name = f"demo-{self._count}"
        for uri in self._uris:
            d = deferToLibvirtPool(self._reactor, self.cycle, uri, name)
            d.addErrback(self._failed, uri)
        self._call = self._reactor.callLater(1.0, self._step)

    @staticmethod
    def _failed(failure: Any, uri: str) -> None:
        log.warn("demo on {uri}: {error}", uri=maskURI(uri), error=failure.getErrorMessage())

    @staticmethod
    def cycle(uri: str, name: str) -> None:
        conn = libvirt.open(uri)
        try:
            xml = (
                f"<domain type='test'><name>{name}</name><memory>8192</memory>"
                f"<os><type>hvm</type></os></domain>"
            )
            domain = conn.createXML(xml, 0)
            domain.suspend()
            domain.resume()
            domain.destroy()
        finally:
            conn.close()


class _StopAfter(Service):
    """Stops the reactor after a while: the monitor then shuts down cleanly."""

    def __init__(self, seconds: float, reactor: MonitorReactor) -> None:
        self._seconds = seconds
        self._reactor = reactor
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._call = self._reactor.callLater(self._seconds, self._reactor.stop)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call is not None and self._call.active():
            self._call.cancel()


def _kinds(spec: str) -> list[str]:
    known = events.allKinds()
    if spec == "all":
        return sorted(known)
    chosen: list[str] = []
    for word in (w.strip() for w in spec.split(",")):
        matching = [k for k in known if k == word or k.startswith(word + ".")]
        if not matching:
            raise usage.UsageError(
                f"unknown event kind {word!r}; --list-events shows those of this libvirt"
            )
        chosen.extend(k for k in sorted(matching) if k not in chosen)
    return chosen


def _keepalive(spec: str) -> tuple[int, int] | None:
    if spec == "off":
        return None
    interval, sep, count = spec.partition(":")
    if not (sep and interval.isdigit() and count.isdigit()) or int(interval) < 1:
        raise usage.UsageError(
            f"--keepalive must be INTERVAL:COUNT (seconds >= 1, count >= 0) or off, not {spec!r}"
        )
    return int(interval), int(count)


def _positive(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise usage.UsageError(f"--{name} must be a number of seconds, not {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise usage.UsageError(f"--{name} must be a positive number of seconds, not {value!r}")
    return number
