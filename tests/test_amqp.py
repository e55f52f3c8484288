"""
The monitor's AMQP output against a private RabbitMQ: routing keys and
bodies, a broker killed and restarted under load, a broker down at start and
a monitor restarted on its spool, a full spool, and bad settings.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pika
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from libvirt_twisted import AMQPPublisher, AMQPSettingsError, SpoolError
from libvirt_twisted.events import Event

from ._harness import churn, readText, spawnPython, startDaemon, until
from ._monitorprocess import Monitor, has, spawnMonitor
from ._producers import spawnProducer
from ._rabbitmq import PrivateRabbitMQ, requireRabbitMQ

EXCHANGE = "libvirt"
EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples"
)
HOST = socket.gethostname().replace(".", "_")


def bindQueue(
    url: str, queue: str, key: str = "#", exchange: str = EXCHANGE, maxLength: int | None = None
) -> None:
    """
    A durable queue bound to the exchange, declared as the monitor does
    (a topic exchange), or as a direct one if its name says so.
    """
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        kind = "direct" if exchange.startswith("direct") else "topic"
        channel.exchange_declare(exchange, exchange_type=kind, durable=True)
        arguments = None
        if maxLength is not None:
            arguments = {"x-max-length": maxLength, "x-overflow": "reject-publish"}
        channel.queue_declare(queue, durable=True, arguments=arguments)
        channel.queue_purge(queue)
        channel.queue_bind(queue, exchange, routing_key=key)
    finally:
        connection.close()


def onChannel(url: str, action: Callable[[Any], object]) -> None:
    """C{action(channel)} on a channel of a connection of its own."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        action(connection.channel())
    finally:
        connection.close()


def deleteExchange(url: str, exchange: str) -> None:
    onChannel(url, lambda channel: channel.exchange_delete(exchange))


def deleteQueue(url: str, queue: str) -> None:
    onChannel(url, lambda channel: channel.queue_delete(queue))


def drain(url: str, queue: str) -> list[tuple[str, bytes]]:
    """Every message in C{queue} now: routing key and body, acknowledged."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    messages: list[tuple[str, bytes]] = []
    try:
        channel = connection.channel()
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((str(method.routing_key), body or b""))
    finally:
        connection.close()


class Collector:
    """Messages of a queue, drained again until a condition holds."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.messages: list[tuple[str, bytes]] = []

    async def until(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> None:
        """Drain the queue every 0.2 s until C{condition} holds for what came."""
        deadline = reactor.seconds() + timeout
        while True:
            self.messages += await deferToThread(drain, self.url, self.queue)
            if condition(self.records()):
                return
            if reactor.seconds() > deadline:
                raise AssertionError(f"{self.queue}: condition not met: {len(self.messages)}")
            await deferLater(reactor, 0.2, lambda: None)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.messages]


def lifecycleNames(records: list[dict[str, Any]], prefix: str) -> set[tuple[str, str]]:
    return {
        (r["name"], r["event"])
        for r in records
        if r["kind"] == "domain.lifecycle" and str(r.get("name")).startswith(prefix)
    }


class AMQPTests(TestCase):
    """One broker for the class: started by the first test, stopped at exit."""

    timeout = 180
    broker: PrivateRabbitMQ | None = None

    def setUp(self) -> None:
        requireRabbitMQ()
        if AMQPTests.broker is None:
            AMQPTests.broker = PrivateRabbitMQ()
            AMQPTests.broker.start()
        self.rabbit = AMQPTests.broker
        self.queue = self.id().rsplit(".", 1)[-1]

    async def bind(
        self,
        queue: str | None = None,
        key: str = "#",
        exchange: str = EXCHANGE,
        maxLength: int | None = None,
    ) -> None:
        """
        Bind a queue (the test's own by default), deleted after the test: a
        queue left bound would take, or refuse, every later test's records.
        """
        queue = queue or self.queue
        await deferToThread(bindQueue, self.rabbit.url, queue, key, exchange, maxLength)
        self.addCleanup(deferToThread, deleteQueue, self.rabbit.url, queue)

    def monitor(self, *args: str, spool: str | None = None) -> Monitor:
        self.spool = spool or os.path.abspath(self.mktemp())
        return spawnMonitor(
            self, "--format", "json", "--amqp", self.rabbit.url, "--spool", self.spool, *args
        )

    async def test_recordsHaveTheDocumentedKeysAndTheJSONLinesAsBodies(self) -> None:
        daemon = startDaemon(self)
        await self.bind(self.queue)
        monitor = self.monitor("--uri", daemon.testURI)
        await monitor.when(has("inventory", daemon.testURI))
        await deferToThread(churn, daemon.testURI, "keyed")
        await monitor.when(has("domain.lifecycle", name="keyed", event="STOPPED"))
        self.assertEqual(await monitor.terminate(), 0)
        collected = Collector(self.rabbit.url, self.queue)
        await collected.until(
            lambda records: bool(records) and records[-1]["kind"] == "connection.stopped"
        )
        lines = [line.encode() for line in monitor.text]
        self.assertEqual([body for _, body in collected.messages], lines)
        keys = [key for key, _ in collected.messages]
        self.assertEqual(keys[:2], [f"{HOST}.connection.connected._", f"{HOST}.inventory._._"])
        self.assertIn(f"{HOST}.domain.lifecycle.STARTED", keys)
        self.assertIn(f"{HOST}.domain.lifecycle.STOPPED", keys)
        records = collected.records()
        self.assertEqual(
            [r["seq"] for r in records],
            list(range(records[0]["seq"], records[0]["seq"] + len(records))),
        )
        self.assertEqual({r["monitor"] for r in records}, {records[0]["monitor"]})

    async def test_theBrokerFromTheConfigFile(self) -> None:
        """
        The file sets the broker, its password (from a file beside it) and
        the spool; the command line's exchange wins over the file's.
        """
        daemon = startDaemon(self)
        await self.bind(self.queue)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "amqp.password"), "w") as f:
            f.write("guest\n")
        config = os.path.join(directory, "monitor.toml")
        with open(config, "w") as f:
            f.write(
                f'amqp = "{self.rabbit.url.replace("guest:guest@", "guest@")}"\n'
                f'amqp-exchange = "elsewhere"\n'
                f'amqp-password-file = "amqp.password"\n'
                f'spool = "{os.path.join(directory, "spool")}"\n'
                f'[[host]]\nuri = "{daemon.testURI}"\n'
            )
        monitor = spawnMonitor(
            self, "--format", "json", "--config", config, "--amqp-exchange", "libvirt"
        )
        await monitor.when(has("inventory", daemon.testURI))
        await deferToThread(churn, daemon.testURI, "configured")
        await monitor.when(has("domain.lifecycle", name="configured", event="STOPPED"))
        collected = Collector(self.rabbit.url, self.queue)
        await collected.until(
            lambda records: ("configured", "STOPPED") in lifecycleNames(records, "c")
        )
        # A reload that changes the broker's settings warns that they take a
        # restart, and records keep going where they went.
        with open(config) as f:
            text = f.read()
        with open(config, "w") as f:
            f.write('spool-size = "1M"\n' + text)
        monitor.process.signalProcess("HUP")
        await until(lambda: "take a restart" in readText(monitor.logfile))
        await deferToThread(churn, daemon.testURI, "reloaded")
        await collected.until(
            lambda records: ("reloaded", "STOPPED") in lifecycleNames(records, "r")
        )
        self.assertEqual(await monitor.terminate(), 0)
        self.assertTrue(os.path.exists(os.path.join(directory, "spool", "state.json")))
        log = readText(monitor.logfile)
        self.assertIn("amqp://guest:***@127.0.0.1", log)
        self.assertNotIn("guest:guest", log)

    async def test_theLibraryExamplePublishesWithoutTheMonitor(self) -> None:
        """
        docs/examples/publish.py: a LibvirtService's events through an
        AMQPPublisher, all confirmed before it stops; the records are the
        monitor's, stamped with seq and monitor.
        """
        await self.bind(self.queue, "*.domain.lifecycle.*")
        spool = os.path.abspath(self.mktemp())
        example = Monitor()
        args = [os.path.join(EXAMPLES, "publish.py"), self.rabbit.url, spool]
        example.process = spawnPython(self, example, args, example.ended)
        self.assertEqual(await example.ended, 0)
        self.assertEqual(example.text, ["published: demo STARTED", "published: demo STOPPED"])
        messages = await deferToThread(drain, self.rabbit.url, self.queue)
        records = [json.loads(body) for _, body in messages]
        self.assertEqual(
            [(r["kind"], r["name"], r["event"], r["uri"]) for r in records],
            [
                ("domain.lifecycle", "demo", "STARTED", "test:///default"),
                ("domain.lifecycle", "demo", "STOPPED", "test:///default"),
            ],
        )
        self.assertEqual([r["seq"] for r in records], [1, 2])
        self.assertEqual(
            [key for key, _ in messages],
            [f"{HOST}.domain.lifecycle.STARTED", f"{HOST}.domain.lifecycle.STOPPED"],
        )
        with open(os.path.join(spool, "monitor-id")) as f:
            self.assertEqual({r["monitor"] for r in records}, {f.read().strip()})

    async def test_whenConfirmedInProcess(self) -> None:
        """
        The publisher in this process: whenConfirmed fires at once with
        nothing waiting, once the broker has what was published before it
        started, and fails with CancelledError when it stops first.
        """
        await self.bind(self.queue, "#")
        spool = os.path.abspath(self.mktemp())
        publisher = AMQPPublisher(self.rabbit.url, spool)
        self.assertIsNone(self.successResultOf(publisher.whenConfirmed()))
        record = {"time": "2026-12-02T00:00:00Z", "uri": "test:///default", "kind": "note"}
        body = publisher.publish(record)
        self.assertEqual(
            json.loads(body), {**record, "seq": 1, "monitor": publisher.spool.monitorId}
        )
        waiting = publisher.whenConfirmed()
        cancelled = publisher.whenConfirmed()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.assertNoResult(waiting)
        publisher.startService()
        await waiting
        self.assertEqual(publisher.confirmed, 1)
        await publisher.stopService()
        self.assertEqual(
            await deferToThread(drain, self.rabbit.url, self.queue), [(f"{HOST}.note._._", body)]
        )

        again = AMQPPublisher(self.rabbit.url, spool)  # not started: nothing is confirmed
        again.publish(record)
        never = again.whenConfirmed()
        await again.stopService()
        self.failureResultOf(never, CancelledError)
        self.failureResultOf(again.whenConfirmed(), CancelledError)  # stopped: at once
        with self.assertRaises(SpoolError):
            again.publish(record)

    def test_badInputIsRefusedAtOnce(self) -> None:
        spool = os.path.abspath(self.mktemp())
        with self.assertRaises(AMQPSettingsError):
            AMQPPublisher("http://rabbit/", spool)
        self.assertFalse(os.path.exists(spool), "a refused publisher made its spool")
        publisher = AMQPPublisher(self.rabbit.url, spool)
        self.addCleanup(publisher.spool.close)
        event = Event("domain", "domain.lifecycle", "vm", "0" * 32, {"event": "STARTED"})
        with self.assertRaises(TypeError):
            publisher.publish(event)
        with self.assertRaises(TypeError):
            publisher.publish({"kind": "note"}, "test:///default")
        self.assertEqual(publisher.spool.last, 0, "a refused record was spooled")
        other = os.path.abspath(self.mktemp())
        with self.assertRaises(ValueError):
            AMQPPublisher(self.rabbit.url, other, window=0)
        with self.assertRaises(TypeError):
            AMQPPublisher(publisher.settings, other, password="other")
        self.assertFalse(os.path.exists(other), "a refused publisher made its spool")

    async def test_theExampleConsumerPrintsTheRecords(self) -> None:
        daemon = startDaemon(self)
        key = "*.domain.lifecycle.*"
        await self.bind(self.queue, key)
        consumer = Monitor()
        example = os.path.join(EXAMPLES, "consumer.py")
        args = [example, self.rabbit.url, "--queue", self.queue, "--bind", key, "--count", "2"]
        consumer.process = spawnPython(self, consumer, args, consumer.ended)
        monitor = self.monitor("--uri", daemon.testURI)
        await monitor.when(has("inventory", daemon.testURI))
        await deferToThread(churn, daemon.testURI, "consumed")
        self.assertEqual(await consumer.ended, 0)
        self.assertEqual(
            [(r["name"], r["event"]) for r in consumer.records],
            [("consumed", "STARTED"), ("consumed", "STOPPED")],
        )
        # The broker may hand a record on before the monitor flushes its file
        # (at most FLUSH_DELAY later).
        await monitor.when(has("domain.lifecycle", name="consumed", event="STOPPED"))
        published = [r for r in monitor.records if r.get("name") == "consumed"]
        self.assertEqual(consumer.records, published)
        self.assertEqual(await monitor.terminate(), 0)

    async def test_brokerKilledAndRestartedUnderLoad(self) -> None:
        daemon = startDaemon(self)
        await self.bind(self.queue, "*.domain.lifecycle.*")
        monitor = self.monitor("--uri", daemon.testURI, "--events", "domain.lifecycle")
        await monitor.when(has("inventory", daemon.testURI))
        producers = [spawnProducer(self, daemon.testURI, f"load{i}", 1500) for i in range(2)]
        await monitor.when(has("domain.lifecycle", count=1000))
        await deferToThread(self.rabbit.kill)
        await monitor.when(has("domain.lifecycle", count=3000))
        await deferToThread(self.rabbit.restart)
        for producer in producers:
            await producer.ended
        expected = {
            (f"load{i}-{n}", e)
            for i in range(2)
            for n in range(1500)
            for e in ("STARTED", "STOPPED")
        }
        collected = Collector(self.rabbit.url, self.queue)
        await collected.until(lambda records: lifecycleNames(records, "load") >= expected)
        self.assertEqual(await monitor.terminate(), 0)
        records = collected.records()
        bySeq: dict[int, bytes] = {}
        for _, body in collected.messages:
            seq = json.loads(body)["seq"]
            self.assertEqual(bySeq.setdefault(seq, body), body, "a duplicate differs")
        ordered = [json.loads(bySeq[seq]) for seq in sorted(bySeq)]
        started = {r["name"]: r["seq"] for r in ordered if r["event"] == "STARTED"}
        for r in ordered:
            if r["event"] == "STOPPED":
                self.assertLess(started[r["name"]], r["seq"])
        seqs = sorted(bySeq)
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))), "a seq is missing")
        self.assertGreaterEqual(len(records), len(seqs))

    async def test_brokerDownAtStartThenTheMonitorRestartedOnItsSpool(self) -> None:
        daemon = startDaemon(self)
        await self.bind(self.queue)
        # A clean stop: a broker killed right after a declaration may not
        # have written the new queue to disk, and would come back without it.
        await deferToThread(self.rabbit.terminate)
        try:
            first = self.monitor("--uri", daemon.testURI)
            await first.when(has("inventory", daemon.testURI))
            for i in range(20):
                await deferToThread(churn, daemon.testURI, f"spooled-{i}")
            await first.when(has("domain.lifecycle", name="spooled-19", event="STOPPED"))
            self.assertEqual(await first.terminate(), 0)
        finally:
            await deferToThread(self.rabbit.restart)
        second = self.monitor("--uri", daemon.testURI, spool=self.spool)
        await second.when(has("inventory", daemon.testURI))
        collected = Collector(self.rabbit.url, self.queue)
        wanted = [line.encode() for line in first.text]
        await collected.until(lambda records: {b for _, b in collected.messages} >= set(wanted))
        self.assertEqual(await second.terminate(), 0)
        self.assertEqual([b for _, b in collected.messages][: len(wanted)], wanted)

    async def test_aHungBrokerIsSeenThroughHeartbeats(self) -> None:
        daemon = startDaemon(self)
        await self.bind(self.queue)
        monitor = self.monitor("--uri", daemon.testURI, "--amqp", self.rabbit.url + "?heartbeat=2")
        await monitor.when(has("inventory", daemon.testURI))
        logfile = monitor.logfile
        await until(lambda: "AMQP: publishing to" in readText(logfile))
        await deferToThread(self.rabbit.pause)
        try:
            await deferToThread(churn, daemon.testURI, "while-hung")
            await monitor.when(has("domain.lifecycle", name="while-hung", event="STOPPED"))
            # pika misses two heartbeats, then gives up on the connection.
            await until(lambda: "AMQP: lost" in readText(logfile), timeout=40)
            [lost] = [line for line in readText(logfile).splitlines() if "AMQP: lost" in line]
            self.assertIn("Heartbeat", lost)
        finally:
            await deferToThread(self.rabbit.resume)
        collected = Collector(self.rabbit.url, self.queue)
        wanted = {("while-hung", "STARTED"), ("while-hung", "STOPPED")}
        await collected.until(lambda records: lifecycleNames(records, "while-hung") >= wanted)
        self.assertEqual(await monitor.terminate(), 0)

    async def test_nackedRecordsAreSentAgain(self) -> None:
        daemon = startDaemon(self)
        await self.bind(self.queue, "#", EXCHANGE, 5)
        monitor = self.monitor("--uri", daemon.testURI, "--events", "domain.lifecycle")
        await monitor.when(has("inventory", daemon.testURI))
        names = [f"nacked-{i}" for i in range(10)]
        for name in names:
            await deferToThread(churn, daemon.testURI, name)
        # The queue takes five at a time: the broker refuses the rest until
        # they are read, and each refusal starts the sending again.
        collected = Collector(self.rabbit.url, self.queue)
        wanted = {(name, event) for name in names for event in ("STARTED", "STOPPED")}
        await collected.until(lambda records: lifecycleNames(records, "nacked-") >= wanted)
        self.assertEqual(await monitor.terminate(), 0)
        self.assertIn("AMQP: refused by", readText(monitor.logfile))

    async def test_aChannelTheBrokerClosesIsOpenedAgain(self) -> None:
        daemon = startDaemon(self)
        await self.bind(self.queue)
        monitor = self.monitor("--uri", daemon.testURI)
        await monitor.when(has("inventory", daemon.testURI))
        logfile = monitor.logfile
        await until(lambda: "AMQP: publishing to" in readText(logfile))
        await deferToThread(deleteExchange, self.rabbit.url, EXCHANGE)
        await deferToThread(churn, daemon.testURI, "into-nothing")
        await until(lambda: "AMQP: channel closed by" in readText(logfile))
        await until(
            lambda: "AMQP: publishing to" in readText(logfile).split("channel closed by")[-1]
        )
        # The monitor declared the exchange again; bind the queue again too.
        await self.bind(self.queue)
        await deferToThread(churn, daemon.testURI, "after-reopen")
        collected = Collector(self.rabbit.url, self.queue)
        await collected.until(
            lambda records: ("after-reopen", "STOPPED") in lifecycleNames(records, "after-")
        )
        self.assertIn("NOT_FOUND", readText(logfile))
        self.assertEqual(await monitor.terminate(), 0)

    async def test_aFullSpoolDropsTheOldest(self) -> None:
        daemon = startDaemon(self)
        await self.bind(self.queue)
        # A clean stop: a broker killed right after a declaration may not
        # have written the new queue to disk, and would come back without it.
        await deferToThread(self.rabbit.terminate)
        try:
            monitor = self.monitor(
                "--uri", daemon.testURI, "--events", "domain.lifecycle", "--spool-size", "256K"
            )
            await monitor.when(has("inventory", daemon.testURI))
            producer = spawnProducer(self, daemon.testURI, "full", 1500)
            await producer.ended
            await monitor.when(has("domain.lifecycle", name="full-1499", event="STOPPED"))
            size = sum(os.path.getsize(os.path.join(self.spool, n)) for n in os.listdir(self.spool))
            self.assertLess(size, 256 * 1024 + 64 * 1024)
        finally:
            await deferToThread(self.rabbit.restart)
        collected = Collector(self.rabbit.url, self.queue)
        await collected.until(
            lambda records: ("full-1499", "STOPPED") in lifecycleNames(records, "full")
        )
        self.assertEqual(await monitor.terminate(), 0)
        got = lifecycleNames(collected.records(), "full")
        self.assertNotIn(("full-0", "STARTED"), got)
        with open(monitor.logfile) as f:
            self.assertIn("full: dropped the", f.read())

    async def test_badSettings(self) -> None:
        daemon = startDaemon(self)
        for args, message in [
            (["--amqp", "http://127.0.0.1/"], "--amqp must be an amqp:// or amqps:// URL"),
            (["--amqp", "amqp://h:port/"], "the port is not a number"),
            (["--amqp", self.rabbit.url], "--amqp needs --spool DIR"),
        ]:
            monitor = spawnMonitor(self, "--uri", daemon.testURI, *args)
            self.assertNotEqual(await monitor.ended, 0)
            lines = monitor.stderr.decode().splitlines()
            self.assertEqual(len(lines), 1, monitor.stderr)
            self.assertIn(message, lines[0])

    async def test_refusalsAreLoggedOnceWhileEventsFlow(self) -> None:
        daemon = startDaemon(self)
        await self.bind("direct-queue", "k", "direct-x")
        base = self.rabbit.url.rsplit("/", 1)[0]
        wrongPassword = base.replace("guest:guest@", "guest:wrong@") + "/%2F"
        for args, message in [
            (["--amqp", wrongPassword], "ACCESS_REFUSED"),
            (["--amqp", base + "/nowhere"], "nowhere"),
            (["--amqp", self.rabbit.url, "--amqp-exchange", "direct-x"], "PRECONDITION_FAILED"),
        ]:
            monitor = self.monitor("--uri", daemon.testURI, *args)
            await monitor.when(has("inventory", daemon.testURI))
            # Three attempts, each refused: one error in the log, then quiet.
            logfile = monitor.logfile
            await until(lambda: readText(logfile).count("again:") >= 2, timeout=30)  # noqa: B023
            log = readText(logfile)
            errors = [line for line in log.splitlines() if "#error] AMQP: cannot publish" in line]
            self.assertEqual(len(errors), 1, errors)
            self.assertIn(message, errors[0])
            self.assertNotIn("wrong", log)
            self.assertNotIn("Traceback", log)
            await deferToThread(churn, daemon.testURI, "flowing")
            await monitor.when(has("domain.lifecycle", name="flowing", event="STOPPED"))
            self.assertEqual(await monitor.terminate(), 0)
