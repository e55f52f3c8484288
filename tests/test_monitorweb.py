"""
The monitor's HTTP endpoint in-process: /metrics parsed with
prometheus_client's own parser, /healthz, and /readyz following a real
daemon's death and return.
"""

from __future__ import annotations

import json
import os

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from libvirt_twisted import AMQPPublisher, LibvirtService
from libvirt_twisted._hostmonitor import HostMonitor
from libvirt_twisted._monitoroutput import Output
from libvirt_twisted._monitorweb import MetricsEndpointError, MonitorWeb
from libvirt_twisted._spool import Spool

from ._harness import startDaemon, testDomainXML, until
from ._http import freePort, get, getUntil


class MonitorWebTests(TestCase):
    timeout = 60

    def host(self, service: LibvirtService) -> HostMonitor:
        output = Output(os.path.abspath(self.mktemp()), "json", reactor.seconds)
        output.open()
        self.addCleanup(output.close)
        host = HostMonitor(service, ["domain.lifecycle"], output, reactor.seconds)
        host.startService()
        self.addCleanup(host.stopService)
        return host

    def web(self, *hosts: HostMonitor) -> str:
        web = MonitorWeb(reactor, "tcp:0:interface=127.0.0.1", lambda: hosts)
        web.startService()
        self.addCleanup(web.stopService)
        assert web.port is not None
        return f"http://127.0.0.1:{web.port.getHost().port}"  # type: ignore[attr-defined]

    async def test_metricsFromTheEventsAndTheInventory(self) -> None:
        service = LibvirtService("test:///default", inventory=True, resync=None)
        host = self.host(service)
        url = self.web(host)
        connection = await service.whenConnected()
        before = reactor.seconds()
        domain = connection.createXML(testDomainXML("scraped"), 0)
        await until(lambda: host.stats.events)
        domain.suspend()
        await until(lambda: host.stats.events["domain.lifecycle", "SUSPENDED"])
        code, body = await get(url + "/metrics")
        self.assertEqual(code, 200)
        samples = _samples(body.decode())
        uri = {"uri": "test:///default"}
        self.assertEqual(
            samples["libvirt_monitor_events_total"],
            [
                Sample("libvirt_monitor_events_total", {**uri, "kind": k, "event": e}, 1.0)
                for k, e in [("domain.lifecycle", "STARTED"), ("domain.lifecycle", "SUSPENDED")]
            ],
        )
        self.assertEqual(
            {
                (s.labels["domain"], s.labels["state"])
                for s in samples["libvirt_monitor_domain_state"]
            },
            {("test", "RUNNING"), ("scraped", "PAUSED")},
        )
        self.assertEqual(samples["libvirt_monitor_connection_up"][0].value, 1.0)
        self.assertEqual(samples["libvirt_monitor_domains"][0].value, 2.0)
        [last] = samples["libvirt_monitor_last_event_timestamp_seconds"]
        self.assertTrue(before <= last.value <= reactor.seconds(), (before, last))
        for name in ("reconnections", "failed_attempts", "lost_events", "synthesized_events"):
            self.assertEqual(samples[f"libvirt_monitor_{name}_total"][0].value, 0.0, name)
        self.assertIn("process_resident_memory_bytes", samples)
        domain.destroy()
        await until(lambda: host.stats.events["domain.lifecycle", "STOPPED"])
        _, body = await get(url + "/metrics")
        states = _samples(body.decode())["libvirt_monitor_domain_state"]
        self.assertEqual([s.labels["domain"] for s in states], ["test"])

    async def test_passwordsNeverInLabels(self) -> None:
        service = LibvirtService(
            "test+tcp://monitor:s3cret@127.0.0.1:1/default", inventory=True, resync=None
        )
        host = self.host(service)
        url = self.web(host)
        await until(lambda: host.stats.failedAttempts)
        _, metrics = await get(url + "/metrics")
        code, ready = await get(url + "/readyz")
        self.assertEqual(code, 503)
        for body in (metrics, ready):
            self.assertNotIn(b"s3cret", body)
            self.assertIn(b"monitor:***@", body)

    async def test_thePublishersCounts(self) -> None:
        """The AMQP output's counts: its spool's, and what it did with the broker."""
        spool = Spool(os.path.abspath(self.mktemp()), 256 * 1024, 64 * 1024)
        publisher = AMQPPublisher("amqp://127.0.0.1:1/", spool)  # never started
        self.addCleanup(spool.close)
        for n in range(3):
            publisher.publish({"kind": "domain.lifecycle", "n": n})
        spool.confirm(1)
        publisher.published, publisher.confirmed, publisher.unspooled = 5, 4, 1
        web = MonitorWeb(reactor, "tcp:0:interface=127.0.0.1", lambda: [], publisher)
        web.startService()
        self.addCleanup(web.stopService)
        assert web.port is not None
        port = web.port.getHost().port  # type: ignore[attr-defined]
        _, body = await get(f"http://127.0.0.1:{port}/metrics")
        samples = _samples(body.decode())
        self.assertEqual(samples["libvirt_monitor_spool_records"][0].value, 2.0)
        self.assertEqual(samples["libvirt_monitor_spool_bytes"][0].value, float(spool.size))
        self.assertEqual(samples["libvirt_monitor_spool_dropped_records_total"][0].value, 0.0)
        self.assertEqual(samples["libvirt_monitor_unspooled_records_total"][0].value, 1.0)
        self.assertEqual(samples["libvirt_monitor_amqp_published_messages_total"][0].value, 5.0)
        self.assertEqual(samples["libvirt_monitor_amqp_confirmed_messages_total"][0].value, 4.0)

    async def test_healthz(self) -> None:
        code, body = await get(self.web() + "/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))

    async def test_readyzFollowsTheDaemon(self) -> None:
        daemon = startDaemon(self)
        service = LibvirtService(
            daemon.testURI, keepalive=(1, 2), retryPolicy=lambda attempt: 0.2, inventory=True
        )
        host = self.host(service)
        url = self.web(host) + "/readyz"
        _, body = await getUntil(url, lambda code, body: code == 200)
        self.assertEqual(
            json.loads(body),
            {"ready": True, "hosts": {daemon.testURI: {"state": "connected", "lastError": None}}},
        )
        daemon.kill()
        _, body = await getUntil(url, lambda code, body: code == 503)
        state = json.loads(body)["hosts"][daemon.testURI]
        self.assertIn(state["state"], ("disconnected", "failed"))
        self.assertIsNotNone(state["lastError"])
        daemon.start()
        _, body = await getUntil(url, lambda code, body: code == 200)
        self.assertEqual(json.loads(body)["hosts"][daemon.testURI]["state"], "reconnected")

    def test_anEndpointThatCannotListen(self) -> None:
        port = freePort()
        web = MonitorWeb(reactor, f"tcp:{port}:interface=127.0.0.1", lambda: [])
        self.addCleanup(web.stopService)
        with self.assertRaises(MetricsEndpointError) as raised:
            MonitorWeb(reactor, f"tcp:{port}:interface=127.0.0.1", lambda: [])
        self.assertIn(f"--metrics 'tcp:{port}:interface=127.0.0.1': ", str(raised.exception))
        self.assertIn("Address already in use", str(raised.exception))
        with self.assertRaises(MetricsEndpointError) as raised:
            MonitorWeb(reactor, "bogus:9177", lambda: [])
        self.assertIn("--metrics 'bogus:9177': ", str(raised.exception))


def _samples(text: str) -> dict[str, list[Sample]]:
    """The samples of a scrape by name, parsed by prometheus_client."""
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples
