"""
C{twistd libvirt-monitor}: watch one hypervisor or a fleet and write every
event as a line of text or JSON.

Each URI gets a L{LibvirtService} of its own, so a slow, dead or unreachable
host never delays the others; at start and after every reconnection the
monitor writes the connection's state and an inventory of its domains, so a
consumer can resynchronise after a gap.  Around the hosts: the metrics and
health endpoint, systemd's notifications, and SIGHUP's reload.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import libvirt
from twisted.application.internet import backoffPolicy
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ._fleet import Fleet
from ._hostmonitor import HostMonitor
from ._install import install
from ._monitorconfig import ConfigError, HostConfig, MonitorConfig, loadConfig
from ._monitoroptions import Options
from ._monitoroutput import Output, OutputError, claimStandardOutput
from ._monitorweb import MetricsEndpointError, MonitorWeb
from ._reactor import EventLoopReactor, ThreadsReactor
from ._service import LibvirtService
from ._systemd import Notifier, SystemdService, watchdogInterval
from ._threads import deferToLibvirtPool, setThreadPoolSize
from ._uri import maskURI

if TYPE_CHECKING:
    from ._amqppublisher import AMQPPublisher

__all__ = ["Options", "makeService"]

log = Logger()


class MonitorReactor(ThreadsReactor, EventLoopReactor, Protocol):
    """What the monitor needs of the reactor it runs on."""

    def callWhenRunning(self, callable: Any, /, *args: Any, **kw: Any) -> Any: ...
    def callFromThread(self, callable: Any, /, *args: Any, **kw: Any) -> None: ...
    def stop(self) -> None: ...
    def seconds(self) -> float: ...


#: What a host's connection depends on: the reload keeps a host whose key stays.
HostKey = tuple[HostConfig, float, float, "float | None"]


def hostKeys(config: MonitorConfig) -> list[HostKey]:
    return [(h, config.retryInitial, config.retryMax, config.resync) for h in config.hosts]


def makeService(options: Options) -> IService:
    """The monitor: one watched connection per URI, writing to one output."""
    from twisted.internet import reactor as globalReactor

    reactor = cast(MonitorReactor, globalReactor)
    config = options.config
    stdout = claimStandardOutput() if config.output == "-" else None
    output = Output(
        config.output,
        config.format,  # type: ignore[arg-type]
        reactor.seconds,
        stdout,
        scheduler=reactor,
    )
    publisher = _publisher(config, output, reactor)
    try:
        output.open()
    except OutputError as e:
        raise SystemExit(f"libvirt-monitor: {e}") from None
    top = MonitorService(output, reactor, options["config"], options.commandLine(), config)
    top.publisher = publisher
    if config.metrics is not None:
        try:
            web = MonitorWeb(reactor, config.metrics, top.fleet.hosts, publisher)
            web.setServiceParent(top)  # type: ignore[no-untyped-call]
        except MetricsEndpointError as e:
            output.close()
            raise SystemExit(f"libvirt-monitor: {e}") from None
    install(reactor)
    # Opening, keepalive and inventory calls run in threads: enough for every
    # host to hang at once without holding up the others.
    setThreadPoolSize(max(10, 3 * len(config.hosts)), reactor)
    notifier = Notifier.fromEnvironment()
    if notifier is not None:
        systemd = SystemdService(
            notifier, top.fleet.whenFirstAttempted, reactor, watchdogInterval(), top.status
        )
        systemd.setServiceParent(top)  # type: ignore[no-untyped-call]
    if options["demo"]:
        uris = [h.uri for h in config.hosts if h.uri.startswith("test")]
        _DemoDriver(uris, reactor).setServiceParent(top)  # type: ignore[no-untyped-call]
    if config.stopAfter is not None:
        _StopAfter(config.stopAfter, reactor).setServiceParent(top)  # type: ignore[no-untyped-call]
    return top


def _publisher(
    config: MonitorConfig, output: Output, reactor: MonitorReactor
) -> AMQPPublisher | None:
    """With C{--amqp}: the publisher, its spool open, fed by the output."""
    if config.amqp is None or config.spool is None:
        return None
    from ._amqppublisher import AMQPPublisher
    from ._amqpsettings import AMQPSettingsError
    from ._spool import SpoolError

    directory, size = config.spool
    try:
        publisher = AMQPPublisher(config.amqp, directory, spoolSize=size, reactor=reactor)
    except AMQPSettingsError as e:
        output.close()
        raise SystemExit(f"libvirt-monitor: {e}") from None
    except (SpoolError, ValueError) as e:
        output.close()
        raise SystemExit(f"libvirt-monitor: --spool {e}") from None

    def publish(record: Mapping[str, Any]) -> bytes | None:
        try:
            return publisher.publish(record)
        except SpoolError as e:
            # The record still goes to --output, without a seq.
            if not publisher.unspooled:
                log.error("{error}: records go to --output only until it works", error=str(e))
            publisher.unspooled += 1
            return None

    output.publish = publish
    return publisher


class MonitorService(MultiService):
    """
    The monitor's top service: the output is open before the hosts start and
    closes after every host has stopped and written its last record.  On
    SIGHUP it reopens the output and reloads the config file.
    """

    def __init__(
        self,
        output: Output,
        reactor: MonitorReactor,
        configPath: str | None,
        commandLine: dict[str, Any],
        config: MonitorConfig,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.output = output
        self.config = config
        self._reactor = reactor
        self._configPath = configPath
        self._commandLine = commandLine
        self.publisher: AMQPPublisher | None = None
        self.fleet = Fleet(self._makeHost)
        self.fleet.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.fleet.apply(hostKeys(config))

    def _makeHost(self, key: HostKey) -> HostMonitor:
        host, initial, maxDelay, resync = key
        service = LibvirtService(
            host.uri,
            readOnly=host.readOnly,
            auth=host.auth(),
            keepalive=host.keepalive,
            retryPolicy=backoffPolicy(initialDelay=initial, maxDelay=max(maxDelay, initial)),
            reactor=self._reactor,
            inventory=True,
            resync=resync,
        )
        return HostMonitor(service, host.kinds, self.output, self._reactor.seconds, key)

    def status(self) -> str:
        """One line for systemd's status: how many hosts, how many connected."""
        hosts = list(self.fleet.hosts())
        up = sum(host.connected for host in hosts)
        return f"watching {len(hosts)} hosts, {up} connected"

    def startService(self) -> None:
        if self.publisher is not None:
            self.publisher.startService()
        super().startService()  # type: ignore[no-untyped-call]
        self._reactor.callWhenRunning(self._handleSignals)

    def _handleSignals(self) -> None:
        """
        Stop on SIGTERM and SIGINT, and exit 0: asking a monitor to stop is
        not a failure.  (twistd's own handlers make the process die of the
        signal once the reactor has stopped.)  Reload on SIGHUP.
        """

        def stop(signum: int, frame: object) -> None:
            log.info("{signal} received: stopping", signal=signal.Signals(signum).name)
            self._reactor.callFromThread(self._reactor.stop)

        def reload(signum: int, frame: object) -> None:
            self._reactor.callFromThread(self.reload)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
        signal.signal(signal.SIGHUP, reload)

    def reload(self) -> Deferred[None]:
        """
        Read the config file again and watch its hosts: new ones connect,
        removed ones close, unchanged ones keep their connection; reopen the
        output (logrotate's postrotate).  An invalid config changes nothing
        but the output's reopening, and logs one error.
        """
        config = self.config
        if self._configPath is not None:
            try:
                config = loadConfig(self._configPath, self._commandLine)
            except ConfigError as e:
                log.error("reload: {error}; still watching the same hosts", error=str(e))
        try:
            self.output.reopen(config.output, config.format)  # type: ignore[arg-type]
        except OutputError as e:
            log.error(
                "reload: {error}; still writing to {path}", error=str(e), path=self.output.path
            )
        if config.metrics != self.config.metrics:
            log.warn("reload: a new --metrics endpoint takes a restart; still serving the old one")
        if (config.amqp, config.spool) != (self.config.amqp, self.config.spool):
            log.warn(
                "reload: new --amqp or --spool settings take a restart; still publishing as before"
            )
        self.config = config
        setThreadPoolSize(max(10, 3 * len(config.hosts)), self._reactor)
        log.info("reloaded: watching {count} hosts", count=len(config.hosts))
        return self.fleet.apply(hostKeys(config))

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[Any] = super().stopService()  # type: ignore[no-untyped-call]
        # The publisher goes last: the hosts' last records are spooled first.
        publisher = self.publisher
        if publisher is not None:
            stopped.addBoth(lambda result: publisher.stopService())
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
