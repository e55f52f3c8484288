"""
Load: 100,000 lifecycle events from several producer processes through the
private daemon, consumed through a LibvirtConnection queue and through the
monitor's JSON output: every event exactly once, in order per domain, with
memory flat.
"""

from __future__ import annotations

import json
import os
from typing import Any

import libvirt
from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase

from libvirt_twisted import EventQueue, LibvirtConnection

from ._harness import startDaemon, until
from ._monitorprocess import spawnMonitor
from ._producers import spawnProducer

PRODUCERS = 4
DOMAINS_EACH = 12_500  # two events per domain: 100,000 in all
STARTED = libvirt.VIR_DOMAIN_EVENT_STARTED
STOPPED = libvirt.VIR_DOMAIN_EVENT_STOPPED
#: RSS may wobble with the allocator, not grow with the events.
FLAT = 16 * 1024 * 1024


def readText(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def rss(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class InOrder:
    """Checks each domain's events come STARTED then STOPPED, once; keeps no history."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.done = 0
        self.errors: list[str] = []

    def see(self, name: str, event: str) -> None:
        if event == "STARTED" and name not in self.open:
            self.open.add(name)
        elif event == "STOPPED" and name in self.open:
            self.open.remove(name)
            self.done += 1
        else:
            self.errors.append(f"{name}: {event} out of order or twice")


class LoadTests(TestCase):
    timeout = 600

    async def test_hundredThousandEvents(self) -> None:
        daemon = startDaemon(self)
        output = os.path.abspath(self.mktemp())
        monitor = spawnMonitor(
            self,
            "--uri",
            daemon.testURI,
            "--format",
            "json",
            "--events",
            "domain.lifecycle",
            "--output",
            output,
        )
        queue: EventQueue[tuple[Any, ...]] = EventQueue(size=1_000_000)
        connection = await LibvirtConnection.open(daemon.testURI, onDomainChange=queue)
        self.addCleanup(connection.close)
        await until(lambda: "inventory" in readText(output))
        producers = [
            spawnProducer(self, daemon.testURI, f"load{n}", DOMAINS_EACH) for n in range(PRODUCERS)
        ]
        consumer = InOrder()
        total = 2 * PRODUCERS * DOMAINS_EACH
        early = monitorEarly = 0
        for count in range(total):
            _, domain, event, _, _ = await queue.get()
            consumer.see(domain.name(), "STARTED" if event == STARTED else "STOPPED")
            if count == total // 5:
                early, monitorEarly = rss(), rss(monitor.process.pid)
        made = await gatherResults([p.ended for p in producers])
        self.assertEqual(sum(made), PRODUCERS * DOMAINS_EACH)
        self.assertEqual(consumer.errors, [])
        self.assertEqual((consumer.done, consumer.open), (PRODUCERS * DOMAINS_EACH, set()))
        self.assertEqual(queue.dropped, 0)
        self.assertLess(rss() - early, FLAT)
        self.assertEqual(queue.pending, [])

        # The monitor saw the same, once each and in order.
        await until(lambda: readText(output).count('"domain.lifecycle"') >= total, interval=0.5)
        self.assertLess(rss(monitor.process.pid) - monitorEarly, FLAT)
        self.assertEqual(await monitor.terminate(), 0)
        seen = InOrder()
        with open(output) as f:
            for line in f:
                record = json.loads(line)
                if record["kind"] == "domain.lifecycle":
                    seen.see(record["name"], record["event"])
        self.assertEqual(seen.errors, [])
        self.assertEqual((seen.done, seen.open), (PRODUCERS * DOMAINS_EACH, set()))
