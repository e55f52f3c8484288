"""
The monitor's Prometheus metrics: one collector that reads every host's
counts and inventory at scrape time, so that a scrape makes no libvirt call
and the event path pays only a dict update.

Label sets stay bounded: C{uri} takes the configured URIs (passwords
masked), C{kind} and C{event} libvirt's own names, and the domain-state
series exist only for the domains a host has now (a removed host's or
domain's series go with it, since nothing is kept between scrapes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ._hostmonitor import HostMonitor

PREFIX = "libvirt_monitor_"


class SpoolStats(Protocol):
    """What the metrics read of the AMQP output's spool (attributes only)."""

    dropped: int

    def __len__(self) -> int: ...
    @property
    def size(self) -> int: ...


class PublisherStats(Protocol):
    """What the metrics read of the AMQP output (attributes only)."""

    published: int
    confirmed: int
    unspooled: int

    @property
    def spool(self) -> SpoolStats: ...


class MonitorCollector(Collector):
    """
    The monitor's metrics, built afresh from its hosts at each scrape.

    prometheus_client's Twisted resource collects in a thread of the
    reactor's pool while the reactor thread updates the counts: every read
    here copies a builtin dict or reads one attribute, which the GIL makes
    atomic, so a scrape sees each host's counts as they were at one moment.
    """

    def __init__(
        self, hosts: Callable[[], Iterable[HostMonitor]], publisher: PublisherStats | None = None
    ) -> None:
        self._hosts = hosts
        self._publisher = publisher

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for host in list(self._hosts()):
            families.add(host)
        yield from families.all()
        if self._publisher is not None:
            yield from _publisherFamilies(self._publisher)


def _publisherFamilies(publisher: PublisherStats) -> Iterator[Metric]:
    """
    The AMQP output: records waiting in the spool, their bytes, records
    dropped from a full spool or never spooled, messages sent and confirmed.
    """
    spool = publisher.spool
    yield GaugeMetricFamily(
        PREFIX + "spool_records", "Records waiting for the broker's confirmation.", len(spool)
    )
    yield GaugeMetricFamily(PREFIX + "spool_bytes", "Bytes the spool holds on disk.", spool.size)
    yield CounterMetricFamily(
        PREFIX + "spool_dropped_records",
        "Records dropped unconfirmed because the spool was full.",
        spool.dropped,
    )
    yield CounterMetricFamily(
        PREFIX + "unspooled_records",
        "Records the spool could not take (a full disk...): written to --output only.",
        publisher.unspooled,
    )
    yield CounterMetricFamily(
        PREFIX + "amqp_published_messages",
        "Messages sent to the broker, a record sent again after a reconnection included.",
        publisher.published,
    )
    yield CounterMetricFamily(
        PREFIX + "amqp_confirmed_messages",
        "Messages the broker confirmed.",
        publisher.confirmed,
    )


class _Families:
    """The metric families of one scrape, filled host by host."""

    def __init__(self) -> None:
        uri = ["uri"]
        self.events = CounterMetricFamily(
            PREFIX + "events",
            "Events received, by kind and lifecycle event.",
            labels=["uri", "kind", "event"],
        )
        self.up = GaugeMetricFamily(
            PREFIX + "connection_up", "1 while the host's connection is open.", labels=uri
        )
        self.reconnections = CounterMetricFamily(
            PREFIX + "reconnections", "Connections made again after one was lost.", labels=uri
        )
        self.failures = CounterMetricFamily(
            PREFIX + "failed_attempts", "Connection attempts that failed.", labels=uri
        )
        self.synthesized = CounterMetricFamily(
            PREFIX + "synthesized_events",
            "Events synthesized from a snapshot to explain a change seen in no event.",
            labels=uri,
        )
        self.lost = CounterMetricFamily(
            PREFIX + "lost_events",
            "Events libvirt did not send while connected, found by the drift checks.",
            labels=uri,
        )
        self.lastEvent = GaugeMetricFamily(
            PREFIX + "last_event_timestamp_seconds",
            "When the host's last event came, in seconds since the epoch.",
            labels=uri,
        )
        self.domainState = GaugeMetricFamily(
            PREFIX + "domain_state",
            "1 for each domain, labelled with its state (RUNNING, PAUSED, SHUTOFF...).",
            labels=["uri", "domain", "uuid", "state"],
        )
        self.domains = GaugeMetricFamily(
            PREFIX + "domains", "Domains the host's inventory holds.", labels=uri
        )

    def add(self, host: HostMonitor) -> None:
        uri, stats = host.uri, host.stats
        for (kind, event), count in stats.events.copy().items():
            self.events.add_metric([uri, kind, event], count)
        self.up.add_metric([uri], 1.0 if host.connected else 0.0)
        self.reconnections.add_metric([uri], stats.reconnections)
        self.failures.add_metric([uri], stats.failedAttempts)
        self.synthesized.add_metric([uri], stats.synthesized)
        self.lost.add_metric([uri], host.libvirt.lostEvents)
        last = stats.lastEvent
        if last is not None:
            self.lastEvent.add_metric([uri], last)
        inventory = host.libvirt.inventory
        if inventory is not None:
            records = tuple(inventory.domains.values())
            self.domains.add_metric([uri], len(records))
            for record in records:
                self.domainState.add_metric([uri, record.name, record.uuid, record.state], 1.0)

    def all(self) -> Iterator[Metric]:
        yield self.events
        yield self.up
        yield self.reconnections
        yield self.failures
        yield self.synthesized
        yield self.lost
        yield self.lastEvent
        yield self.domains
        yield self.domainState


def monitorRegistry(
    hosts: Callable[[], Iterable[HostMonitor]], publisher: PublisherStats | None = None
) -> CollectorRegistry:
    """
    A registry of the monitor's own: its metrics and its process's (memory,
    CPU, open files), not whatever else the program registered globally.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(hosts, publisher))
    ProcessCollector(registry=registry)
    return registry
