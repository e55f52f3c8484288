"""
The libvirt-monitor plugin, run as a real twistd (and twist) process against
the private daemon.
"""

from __future__ import annotations

import io
import json
import os
import signal
from datetime import UTC, datetime
from typing import Any

import libvirt
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import LibvirtService, _monitor, events
from libvirt_twisted._eventrecords import (
    encodeEventRecord,
    encodeRecord,
    eventFields,
    isoTime,
    makeRecord,
)
from libvirt_twisted._hostmonitor import HostMonitor
from libvirt_twisted._monitoroutput import FLUSH_DELAY, Output, RecordWriter
from libvirt_twisted._resync import GRACE

from ._harness import daemonClients, startDaemon, testDomainXML, until
from ._monitorprocess import TWIST, TWISTD, Monitor, has, spawnMonitor


class MonitorProcessTests(TestCase):
    timeout = 60

    def spawn(self, *args: str, runner: str = TWISTD) -> Monitor:
        monitor = spawnMonitor(self, *args, runner=runner)
        self.logfile = monitor.logfile
        return monitor

    async def test_eventsAsJSONLinesAndACleanSigterm(self) -> None:
        daemon = startDaemon(self)
        monitor = self.spawn("--uri", daemon.testURI, "--format", "json", "--keepalive", "1:2")
        await monitor.when(has("inventory"))
        inventory = next(r for r in monitor.records if r["kind"] == "inventory")
        self.assertEqual([d["name"] for d in inventory["domains"]], ["test"])
        self.assertEqual(inventory["domains"][0]["state"], "RUNNING")
        conn = libvirt.open(daemon.testURI)
        conn.createXML(testDomainXML("watched"), 0).destroy()
        conn.close()
        await monitor.when(has("domain.lifecycle", name="watched", event="STOPPED"))
        started = next(r for r in monitor.records if r.get("event") == "STARTED")
        self.assertEqual(started["uri"], daemon.testURI)
        self.assertEqual(started["detail"], "BOOTED")
        self.assertRegex(started["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertRegex(started["uuid"], r"^[0-9a-f-]{36}$")
        self.assertEqual(await monitor.terminate(), 0)
        self.assertEqual(monitor.kinds()[0], "connection.connected")
        self.assertEqual(monitor.kinds()[-1], "connection.stopped")
        self.assertNotIn(b"Traceback", monitor.stderr)

    async def test_daemonRestart(self) -> None:
        daemon = startDaemon(self)
        monitor = self.spawn(
            "--uri",
            daemon.testURI,
            "--format",
            "json",
            "--retry-initial",
            "0.1",
            "--retry-max",
            "0.5",
        )
        await monitor.when(has("inventory"))
        daemon.kill()
        await monitor.when(has("connection.disconnected", reason="EOF"))
        daemon.start()
        await monitor.when(has("inventory", count=2))
        kinds = [k for k in monitor.kinds() if k != "connection.failed"]
        self.assertEqual(
            kinds,
            [
                "connection.connected",
                "inventory",
                "connection.disconnected",
                "connection.reconnected",
                "inventory",
            ],
        )
        conn = libvirt.open(daemon.testURI)
        conn.createXML(testDomainXML("after-restart"), 0).destroy()
        conn.close()
        await monitor.when(has("domain.lifecycle", name="after-restart", event="STOPPED"))
        self.assertEqual(await monitor.terminate(signal.SIGINT), 0)

    async def test_aGapIsExplainedBySyntheticRecords(self) -> None:
        daemon = startDaemon(self)
        conn = libvirt.open(daemon.testURI)  # keeps the test driver's state
        self.addCleanup(conn.close)
        others = daemonClients(daemon)
        monitor = self.spawn(
            "--uri",
            daemon.testURI,
            "--format",
            "json",
            "--keepalive",
            "off",
            "--retry-initial",
            "3",
            "--retry-max",
            "3",
            "--events",
            "domain.lifecycle",
        )
        await monitor.when(has("inventory"))
        (ours,) = daemonClients(daemon) - others
        daemon.virtAdmin("client-disconnect", "libvirtd", ours)
        await monitor.when(has("connection.disconnected"))
        conn.defineXML(testDomainXML("unseen")).create()
        await monitor.when(has("domain.lifecycle", event="STARTED", synthetic=True))
        synthetic = [r for r in monitor.records if r.get("synthetic")]
        self.assertEqual(
            [(r["kind"], r["name"], r["event"]) for r in synthetic],
            [("domain.lifecycle", "unseen", "DEFINED"), ("domain.lifecycle", "unseen", "STARTED")],
        )
        # Live records carry no such field; each field keeps its type.
        live = [
            r for r in monitor.records if r["kind"] == "domain.lifecycle" and r not in synthetic
        ]
        self.assertEqual(live, [])
        kinds = monitor.kinds()
        reconnected = kinds.index("connection.reconnected")
        self.assertEqual(
            kinds[reconnected + 1 : reconnected + 4],
            ["inventory", "domain.lifecycle", "domain.lifecycle"],
        )
        self.assertEqual(await monitor.terminate(), 0)

    async def test_aDeadHostDoesNotHoldUpALiveOne(self) -> None:
        daemon = startDaemon(self)
        dead = "test+unix:///default?socket=/nonexistent/libvirt-sock"
        monitor = self.spawn(
            "--uri", dead, "--uri", daemon.testURI, "--format", "json", "--retry-initial", "0.2"
        )
        await monitor.when(has("inventory", uri=daemon.testURI))
        conn = libvirt.open(daemon.testURI)
        conn.createXML(testDomainXML("alive"), 0).destroy()
        conn.close()
        await monitor.when(
            has("domain.lifecycle", uri=daemon.testURI, name="alive", event="STOPPED")
        )
        await monitor.when(has("connection.failed", uri=dead, count=2))
        self.assertNotIn("connection.connected", monitor.kinds(dead))
        self.assertEqual(await monitor.terminate(), 0)

    async def test_sigtermWhileAHostIsFrozen(self) -> None:
        daemon = startDaemon(self)
        daemon.pause()
        self.addCleanup(daemon.resume)
        monitor = self.spawn(
            "--uri", daemon.testURI, "--uri", "test:///default", "--format", "json"
        )
        await monitor.when(has("inventory", uri="test:///default"))
        # The frozen host's connection attempt never ends; stopping does.
        self.assertEqual(await monitor.terminate(), 0)
        self.assertEqual(monitor.kinds()[-1], "connection.stopped")
        with open(self.logfile) as f:
            self.assertIn("still under way", f.read())

    async def test_passwordsNeverPrinted(self) -> None:
        uri = "test+unix://admin:s3cret@localhost/default?socket=/nonexistent/libvirt-sock"
        monitor = self.spawn("--uri", uri, "--format", "json", "--retry-initial", "0.1")
        await monitor.when(has("connection.failed", count=2))
        self.assertEqual(await monitor.terminate(), 0)
        with open(self.logfile, "rb") as f:
            everything = b"\n".join([f.read(), monitor.stderr, *(t.encode() for t in monitor.text)])
        self.assertIn(b"admin:***@localhost", everything)
        self.assertNotIn(b"s3cret", everything)

    async def test_demoOnTheEmbeddedDriverStopsByItself(self) -> None:
        output = os.path.abspath(self.mktemp())
        monitor = self.spawn("--demo", "--stop-after", "2", "--output", output)
        self.assertEqual(await monitor.ended, 0)
        with open(output) as f:
            lines = f.read().splitlines()
        self.assertIn("test:///default connection.connected", lines[0])
        self.assertTrue(
            any("domain.lifecycle demo-1" in line and "event=STOPPED" in line for line in lines)
        )
        self.assertIn("connection.stopped", lines[-1])
        self.assertEqual(monitor.text, [])

    async def test_runsUnderTwist(self) -> None:
        monitor = self.spawn("--stop-after", "1", "--format", "json", runner=TWIST)
        self.assertEqual(await monitor.ended, 0)
        self.assertEqual(monitor.kinds()[:2], ["connection.connected", "inventory"])

    async def test_badOptionsGiveOneLine(self) -> None:
        for args, message in [
            (["--format", "xml"], "--format must be text or json"),
            (["--uri", "not a uri"], "malformed libvirt URI"),
            (["--bogus"], "option --bogus not recognized"),
            (["--keepalive", "-5:3"], "--keepalive must be INTERVAL:COUNT"),
            (["--events", "domain.nope"], "unknown event kind 'domain.nope'"),
            (["--retry-max", "soon"], "--retry-max must be a number of seconds"),
        ]:
            monitor = self.spawn(*args)
            code = await monitor.ended
            self.assertNotEqual(code, 0, args)
            lines = monitor.stderr.decode().splitlines()
            self.assertEqual(len(lines), 1, monitor.stderr)
            self.assertTrue(lines[0].startswith("libvirt-monitor: "), lines)
            self.assertIn(message, lines[0])
            self.assertEqual(monitor.text, [])


class LostEventRecordTests(TestCase):
    """The records of a drift repair, made in-process through a real service."""

    timeout = 30

    async def test_aLostEventIsARecordAndItsCorrectionToo(self) -> None:
        clock = Clock()
        service = LibvirtService("test:///default", inventory=True, resync=10.0, clock=clock)
        path = os.path.abspath(self.mktemp())
        output = Output(path, "json", clock.seconds)
        output.open()
        self.addCleanup(output.close)
        HostMonitor(service, ["domain.lifecycle"], output, clock.seconds)
        service.startService()
        self.addCleanup(service.stopService)
        connection = await service.whenConnected()
        assert service.inventory is not None
        realFollow = service.inventory.follow
        service.inventory.follow = lambda *args: None  # type: ignore[method-assign]
        domain = connection.createXML(testDomainXML("lost"), 0)
        self.addCleanup(domain.destroy)
        await until(lambda: _records(path)[-1]["kind"] == "domain.lifecycle")
        service.inventory.follow = realFollow  # type: ignore[method-assign]
        clock.advance(10.0)
        await until(clock.getDelayedCalls)
        clock.advance(GRACE)
        await until(lambda: _kinds(path, "connection.lost_event"))
        records = _records(path)
        tail = [r for r in records if r["kind"] != "inventory"][-3:]
        self.assertEqual(
            [(r["kind"], r.get("lost"), r.get("missed"), r.get("synthetic")) for r in tail],
            [
                ("connection.resynced", 1, None, None),
                ("connection.lost_event", None, "STARTED", None),
                ("domain.lifecycle", None, None, True),
            ],
        )
        self.assertEqual(tail[1]["name"], "lost")
        self.assertEqual(tail[1]["family"], "domain")
        self.assertRegex(tail[1]["uuid"], r"^[0-9a-f-]{36}$")


def _records(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _kinds(path: str, kind: str) -> bool:
    return any(r["kind"] == kind for r in _records(path))


class OptionsTests(SynchronousTestCase):
    """The command line, parsed in-process."""

    def parse(self, *args: str) -> _monitor.Options:
        options = _monitor.Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self) -> None:
        config = self.parse().config
        [host] = config.hosts
        self.assertEqual(host.uri, "test:///default")
        self.assertEqual(host.kinds, tuple(sorted(events.allKinds())))
        self.assertEqual(host.keepalive, (5, 3))
        self.assertFalse(host.readOnly)
        self.assertEqual(config.format, "text")
        self.assertEqual(config.output, "-")
        self.assertEqual(config.resync, 60.0)
        self.assertIsNone(config.metrics)
        self.assertIsNone(self.parse("--resync", "off").config.resync)
        self.assertEqual(self.parse("--resync", "2.5").config.resync, 2.5)

    def test_fleetKindsAndFamilies(self) -> None:
        config = self.parse(
            "--uri",
            "qemu+ssh://a/system",
            "--uri",
            "qemu+ssh://b/system",
            "--events",
            "network,domain.lifecycle",
            "--keepalive",
            "off",
            "--read-only",
        ).config
        self.assertEqual(
            [h.uri for h in config.hosts], ["qemu+ssh://a/system", "qemu+ssh://b/system"]
        )
        for host in config.hosts:
            self.assertEqual(host.kinds[-1], "domain.lifecycle")
            self.assertEqual(
                set(host.kinds[:-1]), {k for k in events.allKinds() if k.startswith("network.")}
            )
            self.assertIsNone(host.keepalive)
            self.assertTrue(host.readOnly)

    def test_badValuesExitWithOneLine(self) -> None:
        for args in (
            ["--format", "yaml"],
            ["--keepalive", "5"],
            ["--stop-after", "0"],
            ["--resync", "never"],
            ["--uri", ""],
        ):
            with self.assertRaises(SystemExit) as raised:
                self.parse(*args)
            self.assertTrue(str(raised.exception.code).startswith("libvirt-monitor: "))


#: Field values as events hold them, and keys that include the record's own.
FIELD_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=5,
)
FIELD_KEYS = st.sampled_from(["event", "detail", "time", "uri", "reason"]) | st.text()
CORE = ("family", "kind", "name", "uuid", "synthetic")


class RecordWriterTests(SynchronousTestCase):
    """Records as lines: the time's format, the JSON, and one flush per FLUSH_DELAY."""

    @settings(max_examples=300, deadline=None)
    @given(
        uri=st.text(),
        kind=st.text(),
        name=st.none() | st.text() | st.integers(),
        uuid=st.none() | st.text() | st.integers(),
        fields=st.dictionaries(FIELD_KEYS, st.none() | st.integers() | st.text(), max_size=4)
        | st.dictionaries(FIELD_KEYS, FIELD_VALUES, max_size=4),
        synthetic=st.booleans(),
        seconds=st.floats(0, 4e9),
    )
    def test_anEventsLineIsItsRecordsJSON(
        self,
        uri: str,
        kind: str,
        name: str | int | None,
        uuid: str | int | None,
        fields: dict[str, Any],
        synthetic: bool,
        seconds: float,
    ) -> None:
        """The monitor's short cut for events writes what the general encoder would."""
        fields = {k: v for k, v in fields.items() if k not in CORE}
        event = events.Event("domain", kind, name, uuid, fields, synthetic)  # type: ignore[arg-type]
        general = encodeRecord(makeRecord(uri, *eventFields(event), seconds))
        self.assertEqual(encodeEventRecord(uri, event, seconds), general)

    def test_isoTimeAgreesWithDatetime(self) -> None:
        for seconds in (0.0, 1.5, 1796173648.186347, 1796173648.9999996, 951782400.000001):
            expected = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")
            self.assertEqual(isoTime(seconds), expected.replace("+00:00", "Z"), seconds)

    def test_aBurstIsFlushedOnceAfterTheDelay(self) -> None:
        clock = Clock()
        stream = io.StringIO()
        flushes: list[int] = []
        stream.flush = lambda: flushes.append(len(stream.getvalue()))  # type: ignore[method-assign]
        writer = RecordWriter(stream, "json", clock.seconds, scheduler=clock)
        for n in range(3):
            writer.write("test:///default", "domain.lifecycle", {"n": n})
            clock.advance(FLUSH_DELAY / 4)
        self.assertEqual(flushes, [])
        clock.advance(FLUSH_DELAY / 4)
        self.assertEqual(flushes, [len(stream.getvalue())])
        self.assertEqual(
            [json.loads(line)["n"] for line in stream.getvalue().splitlines()], [0, 1, 2]
        )
        writer.write("test:///default", "domain.lifecycle", {"n": 3})
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_aFailingFlushStillClosesTheOutput(self) -> None:
        """A flush that fails (a broken pipe) is raised, and the output is closed all the same."""

        class Broken(io.StringIO):
            def flush(self) -> None:
                raise BrokenPipeError(32, "Broken pipe")

        clock = Clock()
        output = Output("-", "json", clock.seconds, stdout=Broken(), scheduler=clock)
        output.open()
        output.write("test:///default", "connection.connected", {})
        self.assertRaises(BrokenPipeError, output.close)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertRaises(RuntimeError, output.write, "test:///default", "connection.stopped", {})
        output.close()  # closed already: nothing to do

    def test_closingFlushesAndCancelsTheDelay(self) -> None:
        """Closing or reopening the output writes what waits, and leaves no call behind."""
        clock = Clock()
        first, second = self.mktemp(), self.mktemp()
        output = Output(first, "json", clock.seconds, scheduler=clock)
        output.open()
        output.write("test:///default", "connection.connected", {})
        output.reopen(second)
        with open(first) as f:
            self.assertEqual(len(f.readlines()), 1)
        self.assertEqual(clock.getDelayedCalls(), [])
        output.write("test:///default", "connection.stopped", {})
        output.close()
        with open(second) as f:
            self.assertEqual([json.loads(line)["kind"] for line in f], ["connection.stopped"])
        self.assertEqual(clock.getDelayedCalls(), [])
