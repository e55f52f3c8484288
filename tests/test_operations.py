"""
The monitor in an operator's stack, as real processes against private
daemons: a fleet config reloaded by SIGHUP, logrotate, systemd's
notifications, output a pipe can trust, bad options up front, and a real
Prometheus scraping the metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ._harness import churn, readText, startDaemon, until
from ._http import freePort
from ._monitorprocess import SCRIPT, TWIST, TWISTD, Monitor, Records, has, spawnMonitor
from ._prometheus import PrivatePrometheus, requirePrometheus, values

FAST = ["--retry-initial", "0.1", "--retry-max", "0.5", "--keepalive", "1:2"]


def produce(uri: str, names: list[str]) -> Callable[[], None]:
    """Start and destroy one domain per name, in order, from another connection."""

    def run() -> None:
        for name in names:
            churn(uri, name)

    return run


def lifecycles(records: Records, uri: str, prefix: str) -> list[tuple[str, str]]:
    """The (name, event) of every lifecycle record of C{uri} whose name has C{prefix}."""
    return [
        (r["name"], r["event"])
        for r in records
        if r["kind"] == "domain.lifecycle" and r["uri"] == uri and r["name"].startswith(prefix)
    ]


def readRecords(*paths: str) -> Records:
    records: Records = []
    for path in paths:
        if os.path.exists(path):
            with open(path) as f:
                records.extend(json.loads(line) for line in f if line.strip())
    return records


class ReloadTests(TestCase):
    timeout = 90

    def writeConfig(self, path: str, *uris: str) -> None:
        hosts = "".join(f'[[host]]\nuri = "{uri}"\n\n' for uri in uris)
        with open(path + ".new", "w") as f:
            f.write(f'format = "json"\nretry-initial = 0.1\nretry-max = 0.5\n\n{hosts}')
        os.rename(path + ".new", path)

    async def test_sighupAddsAndRemovesHostsWhileEventsFlow(self) -> None:
        kept, added = startDaemon(self), startDaemon(self)
        removed = "test:///default"
        config = os.path.abspath(self.mktemp())
        self.writeConfig(config, kept.testURI, removed)
        monitor = spawnMonitor(self, "--config", config)
        await monitor.when(has("inventory", kept.testURI))
        await monitor.when(has("inventory", removed))
        names = [f"flow-{i}" for i in range(30)]
        flowing = deferToThread(produce(kept.testURI, names))
        await monitor.when(has("domain.lifecycle", kept.testURI, count=5))
        self.writeConfig(config, kept.testURI, added.testURI)
        monitor.process.signalProcess("HUP")
        await flowing
        await monitor.when(has("domain.lifecycle", kept.testURI, count=60))
        await monitor.when(has("inventory", added.testURI))
        await monitor.when(has("connection.stopped", removed))
        self.assertEqual(
            lifecycles(monitor.records, kept.testURI, "flow-"),
            [(name, event) for name in names for event in ("STARTED", "STOPPED")],
        )
        self.assertEqual(monitor.kinds(kept.testURI)[:2], ["connection.connected", "inventory"])
        self.assertNotIn("connection.disconnected", monitor.kinds(kept.testURI))
        self.assertEqual(monitor.kinds(kept.testURI).count("inventory"), 1)
        self.assertEqual(monitor.kinds(removed)[-1], "connection.stopped")
        self.assertEqual(await monitor.terminate(), 0)

    async def test_anInvalidConfigOnReloadKeepsTheRunningSet(self) -> None:
        daemon = startDaemon(self)
        config = os.path.abspath(self.mktemp())
        self.writeConfig(config, daemon.testURI)
        monitor = spawnMonitor(self, "--config", config)
        await monitor.when(has("inventory", daemon.testURI))
        with open(config, "a") as f:
            f.write("[[host]]\nuri = 'qemu:///system'\nreadonly = true\n")
        monitor.process.signalProcess("HUP")
        await until(lambda: "reload: " in readText(monitor.logfile))
        errors = [line for line in readText(monitor.logfile).splitlines() if "reload: " in line]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("unknown key 'readonly'", errors[0])
        self.assertIn("still watching the same hosts", errors[0])
        await deferToThread(churn, daemon.testURI, "after-bad-reload")
        await monitor.when(has("domain.lifecycle", daemon.testURI, name="after-bad-reload"))
        self.assertNotIn("connection.stopped", monitor.kinds())
        self.assertEqual(await monitor.terminate(), 0)

    async def test_logrotateRenameAndSighupLoseNothing(self) -> None:
        daemon = startDaemon(self)
        output = os.path.abspath(self.mktemp())
        rotated = output + ".1"
        monitor = spawnMonitor(
            self, "--uri", daemon.testURI, "--format", "json", "--output", output, *FAST
        )
        await until(lambda: any(r["kind"] == "inventory" for r in readRecords(output)))
        names = [f"rot-{i}" for i in range(20)]
        flowing = deferToThread(produce(daemon.testURI, names))
        await until(lambda: len(lifecycles(readRecords(output), daemon.testURI, "rot-")) >= 6)
        os.rename(output, rotated)
        monitor.process.signalProcess("HUP")
        await flowing
        await deferToThread(churn, daemon.testURI, "rot-last")
        names.append("rot-last")
        expected = [(name, event) for name in names for event in ("STARTED", "STOPPED")]
        await until(
            lambda: (
                lifecycles(readRecords(rotated, output), daemon.testURI, "rot-")[-1:]
                == expected[-1:]
            )
        )
        self.assertEqual(lifecycles(readRecords(rotated, output), daemon.testURI, "rot-"), expected)
        self.assertIn(("rot-last", "STOPPED"), lifecycles(readRecords(output), daemon.testURI, ""))
        self.assertEqual(await monitor.terminate(), 0)


class SystemdTests(TestCase):
    timeout = 60

    def notifySocket(self) -> tuple[socket.socket, str]:
        """A datagram socket where systemd would listen, and its address."""
        directory = tempfile.mkdtemp(prefix="ltw-notify-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "notify")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.setblocking(False)
        return listener, path

    async def test_readyWatchdogAndStopping(self) -> None:
        daemon = startDaemon(self)
        listener, path = self.notifySocket()
        messages: list[str] = []

        def received(*wanted: str) -> bool:
            while True:
                try:
                    messages.append(listener.recv(4096).decode())
                except BlockingIOError:
                    break
            return all(any(w in m for m in messages) for w in wanted)

        monitor = spawnMonitor(
            self,
            "--uri",
            daemon.testURI,
            "--uri",
            "test:///default",
            "--format",
            "json",
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"},
        )
        await until(lambda: received("READY=1"))
        ready = next(m for m in messages if "READY=1" in m)
        self.assertIn("STATUS=watching 2 hosts", ready)
        await until(lambda: received("READY=1") and sum("WATCHDOG=1" in m for m in messages) >= 3)
        self.assertEqual(await monitor.terminate(), 0)
        await until(lambda: received("STOPPING=1"))
        self.assertEqual(sum("READY=1" in m for m in messages), 1)
        self.assertIn("STOPPING=1", messages[-1])


class PipedOutputTests(TestCase):
    timeout = 60

    def assertRecordsOnly(self, monitor: Monitor) -> None:
        self.assertTrue(monitor.text, monitor.stderr)
        for line in monitor.text:
            json.loads(line)
        self.assertTrue(any(r["kind"] == "domain.lifecycle" for r in monitor.records))
        self.assertTrue(monitor.stderr.strip(), "the log went nowhere")
        self.assertNotIn(b"Traceback", monitor.stderr)

    async def test_consoleScript(self) -> None:
        monitor = spawnMonitor(
            self, "--demo", "--stop-after", "2", "--format", "json", runner=SCRIPT
        )
        self.assertEqual(await monitor.ended, 0)
        self.assertRecordsOnly(monitor)

    async def test_twistdWithoutALogfile(self) -> None:
        monitor = spawnMonitor(
            self, "--demo", "--stop-after", "2", "--format", "json", logfile=False
        )
        self.assertEqual(await monitor.ended, 0)
        self.assertRecordsOnly(monitor)

    async def test_twistWithItsDefaultLog(self) -> None:
        monitor = spawnMonitor(
            self, "--demo", "--stop-after", "2", "--format", "json", runner=TWIST, logfile=False
        )
        self.assertEqual(await monitor.ended, 0)
        self.assertRecordsOnly(monitor)


class BadOptionTests(TestCase):
    timeout = 60

    async def assertOneLine(self, runner: str, args: list[str], message: str) -> None:
        monitor = spawnMonitor(self, *args, runner=runner)
        code = await monitor.ended
        self.assertNotEqual(code, 0, args)
        lines = monitor.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, (args, monitor.stderr))
        self.assertTrue(lines[0].startswith("libvirt-monitor: "), lines)
        self.assertIn(message, lines[0])
        self.assertEqual(monitor.text, [])
        self.assertNotIn("Traceback", readText(monitor.logfile))

    async def test_eachBadOptionUpFront(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        badTOML = os.path.abspath(self.mktemp())
        with open(badTOML, "w") as f:
            f.write('format = "json"\n[[host]\nuri = 1\n')
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port: int = busy.getsockname()[1]
        forbidden = "/sys/forbidden" if os.geteuid() == 0 else self.readOnlyDirectory() + "/x"
        cases: list[tuple[list[str], str]] = [
            (["--output", "/nonexistent/x"], "--output /nonexistent/x: No such file or directory"),
            (["--output", directory], "Is a directory"),
            (["--output", forbidden], "Permission denied"),
            (["--config", "/nonexistent.toml"], "/nonexistent.toml: cannot read"),
            (["--config", badTOML], f"{badTOML}: line 2"),
            (["--metrics", f"tcp:{port}:interface=127.0.0.1"], "Address already in use"),
            (["--metrics", "bogus:1"], "--metrics 'bogus:1'"),
        ]
        for runner in (TWISTD, SCRIPT):
            for args, message in cases:
                await self.assertOneLine(runner, args, message)

    def readOnlyDirectory(self) -> str:
        path: str = os.path.abspath(self.mktemp())
        os.mkdir(path, 0o500)
        return path


class PrometheusTests(TestCase):
    """A real Prometheus scrapes the monitor; the values come back through its API."""

    timeout = 90

    async def test_anEventCounterAndADomainState(self) -> None:
        # The class's only test starts the server (trial has no setUpClass).
        requirePrometheus()
        self.port = freePort()
        self.prometheus = PrivatePrometheus([f"127.0.0.1:{self.port}"])
        self.addCleanup(self.prometheus.stop)
        self.prometheus.start()
        daemon = startDaemon(self)
        metrics = f"tcp:{self.port}:interface=127.0.0.1"
        monitor = spawnMonitor(
            self, "--uri", daemon.testURI, "--format", "json", "--metrics", metrics
        )
        await monitor.when(has("inventory", daemon.testURI))
        await deferToThread(churn, daemon.testURI, "scraped")
        await monitor.when(has("domain.lifecycle", daemon.testURI, name="scraped", event="STOPPED"))
        uri = daemon.testURI
        started = f'libvirt_monitor_events_total{{uri="{uri}",event="STARTED"}}'
        result = await self.prometheus.waitFor(started, lambda r: values(r) == [1.0])
        self.assertEqual(result[0]["metric"]["kind"], "domain.lifecycle")
        state = f'libvirt_monitor_domain_state{{uri="{uri}",domain="test"}}'
        result = await self.prometheus.waitFor(state, lambda r: values(r) == [1.0])
        self.assertEqual(result[0]["metric"]["state"], "RUNNING")
        up = await self.prometheus.waitFor(
            f'up{{instance="127.0.0.1:{self.port}"}}', lambda r: values(r) == [1.0]
        )
        self.assertEqual(values(up), [1.0])
        self.assertEqual(await monitor.terminate(), 0)
