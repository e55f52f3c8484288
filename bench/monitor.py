"""
The event monitor (the C{libvirt-monitor} console script) against C{virsh
event --all --loop}, and the monitor at scale.

    .venv/bin/python -m bench.monitor [--quick] [--rounds 3] [--rate 2000,0]

Event path: one private libvirtd; producer processes (L{bench._producers})
create and destroy transient test-driver domains; each contender is a
program started fresh for each run, writing every event to a file.  Its CPU
time (every thread, from its process CPU clock) over the measurement window,
divided by the lifecycle lines it wrote in that window.  C{monitor-amqp} also
publishes every record to a private RabbitMQ (the test suite's
L{tests._rabbitmq.PrivateRabbitMQ}, started once for the run) with publisher
confirms through its on-disk spool: its spool is sampled from C{/metrics}
over the window, the broker's CPU is measured beside the monitor's, and the
queue must hold every record afterwards.

Scale: the monitor watching 1,000 URIs of one daemon (one busy, the others
quiet), against the same monitor watching the busy one alone: memory per
URI, CPU per event while events flow on the busy one, and how long a SIGHUP
that adds 100 hosts holds the reactor, probed from outside through
C{/healthz}.  Writes C{bench/results/monitor.json} and C{monitor.md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import libvirt

from libvirt_twisted.testing import PrivateLibvirtd, daemonUnavailable

from . import _external
from ._analysis import medians
from ._harness import runProducers
from ._machine import describe, summary
from ._probes import raiseFdLimit
from ._producers import DOMAIN_XML, EVENTS_PER_CYCLE

VIRSH_EVENT = b"event 'lifecycle' for domain"
MONITOR_EVENT = b'"kind":"domain.lifecycle"'
CONNECTION_RECORD = b'"kind":"connection.'
READY_PREFIX = "bench-ready-"

T = TypeVar("T")


def monitorScript() -> str:
    """The C{libvirt-monitor} console script beside this interpreter."""
    return os.path.join(os.path.dirname(sys.executable), "libvirt-monitor")


@dataclass(frozen=True)
class Contender:
    """A program that writes every event of one URI, one line each, to a file."""

    name: str
    shown: str
    monitor: bool
    extra: tuple[str, ...] = ()
    #: Also publishes to the run's broker (C{--amqp}, C{--spool}, C{--metrics}
    #: are added by L{eventRun}).
    amqp: bool = False

    @property
    def marker(self) -> bytes:
        """What every lifecycle line it writes holds, once."""
        return MONITOR_EVENT if self.monitor else VIRSH_EVENT

    def command(self, uri: str, output: str) -> list[str]:
        if self.monitor:
            return [
                monitorScript(),
                *("--uri", uri, "--format", "json", "--output", output, "--events", "all"),
                *self.extra,
            ]
        return ["virsh", "-c", uri, "event", "--all", "--loop", *self.extra]


CONTENDERS = {
    c.name: c
    for c in (
        Contender("virsh", "virsh -c URI event --all --loop > FILE", False),
        Contender(
            "virsh-timestamp",
            "virsh -c URI event --all --loop --timestamp > FILE",
            False,
            ("--timestamp",),
        ),
        Contender(
            "monitor-resync-off",
            "libvirt-monitor --uri URI --format json --output FILE --events all --resync off",
            True,
            ("--resync", "off"),
        ),
        Contender(
            "monitor",
            "libvirt-monitor --uri URI --format json --output FILE --events all (resync 60)",
            True,
        ),
        Contender(
            "monitor-amqp",
            "libvirt-monitor --uri URI --format json --output FILE --events all --resync off"
            " --amqp URL --spool DIR --metrics tcp:0:interface=127.0.0.1",
            True,
            ("--resync", "off"),
            amqp=True,
        ),
    )
}
VIRSHES = ("virsh", "virsh-timestamp")
MONITORS = ("monitor-resync-off", "monitor")
#: The AMQP contender, and the same monitor writing the file alone.
AMQP, FILE_ONLY = "monitor-amqp", "monitor-resync-off"
#: The publisher's in-flight window (C{AMQPPublisher}'s default): a spool that
#: keeps up holds about this many records, those sent and not yet confirmed.
AMQP_WINDOW = 1000
#: Where the monitor publishes (its default), and the queue that gets it all.
AMQP_EXCHANGE = "libvirt"
AMQP_QUEUE = "bench-monitor"
METRICS_ENDPOINT = "tcp:0:interface=127.0.0.1"
SPOOL_METRICS = {
    "records": "libvirt_monitor_spool_records",
    "bytes": "libvirt_monitor_spool_bytes",
    "dropped": "libvirt_monitor_spool_dropped_records_total",
}


@dataclass
class Settings:
    """Everything a run was asked for; recorded with the results."""

    rounds: int = 3
    duration: float = 8.0
    warmup: float = 2.0
    grace: float = 3.0
    producers: int = 2
    rates: tuple[float, ...] = (2000.0, 0.0)
    contenders: tuple[str, ...] = tuple(CONTENDERS)
    parts: tuple[str, ...] = ("event", "scale")
    uris: int = 1000
    reloadHosts: int = 100
    scaleRounds: int = 2
    scaleRate: float = 2000.0
    scaleIdle: float = 10.0
    scaleResync: float = 60.0
    drift: bool = True
    profile: str = "auto"
    profileSeconds: float = 8.0
    probePeriod: float = 0.005
    spoolPeriod: float = 0.25
    drainTimeout: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)


def rateKey(rate: float) -> str:
    return f"paced {rate:.0f}/s" if rate > 0 else "flat out"


def rotated(names: Sequence[T], round: int) -> list[T]:
    shift = round % len(names)
    return list(names[shift:]) + list(names[:shift])


def sleepUntil(deadline: float, poll: Callable[[], object] | None = None) -> None:
    """Sleep until C{deadline} (monotonic seconds), calling C{poll} every 0.25 s."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.25))
        if poll is not None:
            poll()


def awaitReady(
    process: subprocess.Popen[bytes], uri: str, seen: Callable[[], bool], timeout: float
) -> int:
    """
    Create and destroy probe domains until the contender has written an
    event of one; how many probes it took (each yields two events).
    """
    conn = libvirt.open(uri)
    probes = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"exited with status {process.returncode} before it was ready")
            probes += 1
            domain = conn.createXML(DOMAIN_XML.format(name=f"{READY_PREFIX}{probes}"), 0)
            domain.destroy()
            waitUntil = time.monotonic() + 0.5
            while time.monotonic() < waitUntil:
                if seen():
                    return probes
                time.sleep(0.02)
    finally:
        conn.close()
    raise RuntimeError(f"wrote no event within {timeout}s")


def _sample(
    pid: int,
    counter: _external.LineCounter,
    poll: Callable[[], object],
    others: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    poll()
    cpu = _external.cpuSeconds(pid)
    return {
        "mono": time.monotonic(),
        "cpu": cpu,
        **{f"{name}Cpu": _external.cpuSeconds(p) for name, p in (others or {}).items()},
        "events": counter.count,
        "wakeups": _external.wakeups(pid),
        "ticks": _external.ticks(pid),
        "mainTicks": _external.ticks(pid, pid),
        **_external.status(pid),
    }


def measureEvents(
    settings: Settings,
    process: subprocess.Popen[bytes],
    uri: str,
    counter: _external.LineCounter,
    poll: Callable[[], object],
    rate: float,
    readyProbes: int,
    profile: str | None = None,
    others: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """
    Producers on C{uri} (C{rate} events/s in all, 0: flat out) from now on;
    the contender's CPU and lifecycle lines over the window after the
    warm-up, then whether every event arrived.  The CPU of C{others} (name:
    pid) is measured over the same window, C{NAMECpuPerEventUs} per event.
    The window's and the producers' end (C{windowMono}, C{producersEndMono},
    monotonic seconds) are for the caller to use and drop.
    """
    t0 = time.monotonic_ns() + int(settings.warmup * 1e9)
    t1 = t0 + int(settings.duration * 1e9)
    perProducer = rate / (EVENTS_PER_CYCLE * settings.producers) if rate > 0 else 0.0
    made: list[dict[str, int]] = []
    producers = threading.Thread(
        target=lambda: made.extend(
            runProducers(uri, settings.producers, {"t0": t0, "t1": t1}, perProducer)
        )
    )
    countBefore = counter.count
    producers.start()
    spy: subprocess.Popen[bytes] | None = None
    try:
        sleepUntil(t0 / 1e9, poll)
        machineBefore = _external.machine()
        before = _sample(process.pid, counter, poll, others)
        if profile is not None:
            spy = _pySpy(process.pid, settings.profileSeconds, profile)
        sleepUntil(t1 / 1e9, poll)
        after = _sample(process.pid, counter, poll, others)
        machineAfter = _external.machine()
    finally:
        producers.join()
        if spy is not None:
            spy.wait()
    expected = EVENTS_PER_CYCLE * sum(p["createdTotal"] for p in made)
    deadline = time.monotonic() + settings.grace
    last, lastChange = counter.count, time.monotonic()
    while counter.count - countBefore < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        poll()
        if counter.count != last:
            last, lastChange = counter.count, time.monotonic()
        elif time.monotonic() - lastChange > 1.0:
            break
    poll()
    caughtUp = time.monotonic() if counter.count - countBefore >= expected else None
    events = after["events"] - before["events"]
    seconds = after["mono"] - before["mono"]
    cpu = after["cpu"] - before["cpu"]
    allTicks = after["ticks"] - before["ticks"]
    otherFigures: dict[str, Any] = {}
    for name in others or {}:
        used = after[f"{name}Cpu"] - before[f"{name}Cpu"]
        otherFigures[f"{name}Cpu"] = used
        otherFigures[f"{name}CpuPerEventUs"] = used * 1e6 / events if events else None
        otherFigures[f"{name}CpuShare"] = used / seconds
    return {
        "seconds": seconds,
        "events": events,
        "cpu": cpu,
        "eventsPerSecond": events / seconds,
        "cpuPerEventUs": cpu * 1e6 / events if events else None,
        "cpuShare": cpu / seconds,
        "wakeupsPerEvent": (after["wakeups"] - before["wakeups"]) / events if events else None,
        "mainThreadShare": (after["mainTicks"] - before["mainTicks"]) / allTicks
        if allTicks
        else None,
        "expectedInWindow": EVENTS_PER_CYCLE * sum(p["created"] for p in made),
        "producedPerSecond": EVENTS_PER_CYCLE * sum(p["created"] for p in made) / seconds,
        "produced": expected,
        "deliveredRatio": (counter.count - countBefore) / expected if expected else None,
        # When the last produced event was in the file (0.1 s resolution).
        "caughtUpSecondsAfterProducers": caughtUp - t1 / 1e9 if caughtUp is not None else None,
        "producerErrors": sum(p["errors"] for p in made),
        "readyProbes": readyProbes,
        "rss": after["rss"],
        "threads": after["threads"],
        **otherFigures,
        **_external.otherLoad(machineBefore, machineAfter, seconds),
        "windowMono": [before["mono"], after["mono"]],
        "producersEndMono": t1 / 1e9,
    }


def _pySpy(pid: int, seconds: float, path: str) -> subprocess.Popen[bytes]:
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    spy = beside if os.access(beside, os.X_OK) else "py-spy"
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", "250", "--native", "--format", "raw", "-o", path]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def eventRun(
    settings: Settings,
    contender: Contender,
    uri: str,
    rate: float,
    work: str,
    tag: str,
    profile: str | None = None,
    broker: Broker | None = None,
) -> dict[str, Any]:
    """
    One fresh contender process through one window; with a C{broker}, its
    CPU over the window too; for an AMQP contender, a fresh spool, the
    queue purged before and after, and the spool's figures (L{amqpFigures}).
    """
    output = os.path.join(work, f"{contender.name}-{tag}.out")
    command = contender.command(uri, output)
    spool: str | None = None
    if contender.amqp:
        if broker is None:
            raise ValueError(f"{contender.name} needs a broker")
        spool = os.path.join(work, f"spool-{contender.name}-{tag}")
        command += ["--amqp", broker.url, "--spool", spool, "--metrics", METRICS_ENDPOINT]
        try:
            broker.purge()
        except Exception as e:
            error = f"cannot purge the queue: {type(e).__name__}: {e}"
            return {"error": error, "contender": contender.name, "rate": rate, "tag": tag}
    with open(output + ".log", "wb") as log, open(output, "wb") as out:
        target = subprocess.DEVNULL if contender.monitor else out
        process = _external.spawn(command, target, log)
    counter = _external.LineCounter(output, contender.marker, keep=(READY_PREFIX.encode(),))
    sampler: _external.MetricsSampler | None = None
    try:
        # The broker's CPU over every contender's window: it should be idle
        # but for monitor-amqp's.
        others = {"broker": broker.beamPid()} if broker is not None else {}
        if broker is not None and spool is not None:
            port = _metricsPort(output + ".log", process, 60)
            _awaitLog(output + ".log", process, "AMQP: publishing to", 60)
            sampler = _external.MetricsSampler(port, SPOOL_METRICS, settings.spoolPeriod, spool)
            sampler.start()
        probes = awaitReady(process, uri, lambda: bool(counter.update()), 60)
        result = measureEvents(
            settings, process, uri, counter, counter.update, rate, probes, profile, others
        )
        if broker is not None and sampler is not None:
            result.update(amqpFigures(settings, broker, sampler, output, result))
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}; log: {_tail(output + '.log')}"}
    finally:
        if sampler is not None:
            sampler.halt()
        _external.stop(process)
    if broker is not None and spool is not None:
        # Empty the queue now, and let the broker settle, so that the messages
        # of this run cost the next contender nothing.
        try:
            broker.purge()
            result["brokerSettleSeconds"] = broker.settle()
        except Exception as e:
            result.setdefault("error", f"cannot purge the queue: {type(e).__name__}: {e}")
    result.pop("windowMono", None)
    result.pop("producersEndMono", None)
    result.update(contender=contender.name, rate=rate, tag=tag)
    for path in (output, output + ".log"):
        os.unlink(path)
    if spool is not None:
        shutil.rmtree(spool, ignore_errors=True)
    return result


def _awaitLog(path: str, process: subprocess.Popen[bytes], text: str, timeout: float) -> None:
    """Wait until the log at C{path} says C{text}."""
    deadline = time.monotonic() + timeout
    while text not in _tail(path, 1 << 20):
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"never said {text!r} within {timeout:.0f}s")
        time.sleep(0.05)


def countLines(path: str) -> int:
    """The complete lines of a file (the monitor's records)."""
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


def amqpFigures(
    settings: Settings,
    broker: Broker,
    sampler: _external.MetricsSampler,
    output: str,
    result: dict[str, Any],
) -> dict[str, Any]:
    """
    Once the producers are done and every event is in the file: wait until
    the spool is empty (everything confirmed), then count the records in the
    file and the messages in the queue, which must be as many; and the
    spool over the window (L{spoolFigures}).
    """
    producersEnd = result["producersEndMono"]
    deadline = time.monotonic() + settings.drainTimeout
    drained: float | None = None
    while time.monotonic() < deadline:
        sample = sampler.sample()
        if sample is not None and sample["records"] == 0:
            drained = sample["mono"]
            break
        time.sleep(0.05)
    records = countLines(output)
    queued = broker.messages()
    # The first sample after the producers' end that found the spool empty.
    emptyAt = next(
        (s["mono"] for s in sampler.samples if s["mono"] >= producersEnd and s["records"] == 0),
        drained,
    )
    return {
        "records": records,
        "queued": queued,
        "queuedRatio": queued / records if records else None,
        "spoolDrained": drained is not None,
        "spoolEmptySecondsAfterProducers": emptyAt - producersEnd if emptyAt is not None else None,
        **spoolFigures(sampler.samples, *result["windowMono"]),
        "spoolDroppedTotal": sampler.samples[-1]["dropped"] if sampler.samples else None,
        "scrapes": len(sampler.samples),
        "scrapeErrors": sampler.errors,
    }


def spoolFigures(
    samples: Sequence[Mapping[str, float]], start: float, end: float
) -> dict[str, Any]:
    """
    The spool over the window [start, end]: records, bytes (the monitor's
    count) and the directory's files (from outside) at its start, its end
    and their maximum, and the records' trend (least squares, records/s).
    """
    inside = [s for s in samples if start <= s["mono"] <= end]
    if not inside:
        return {"spoolSamples": 0}
    out: dict[str, Any] = {"spoolSamples": len(inside)}
    for key, label in (("records", "Records"), ("bytes", "Bytes"), ("disk", "Disk")):
        values = [s[key] for s in inside if key in s]
        if values:
            out[f"spool{label}Start"] = values[0]
            out[f"spool{label}End"] = values[-1]
            out[f"spool{label}Max"] = max(values)
            out[f"spool{label}Mean"] = sum(values) / len(values)
    times = [s["mono"] for s in inside]
    records = [s["records"] for s in inside]
    meanT, meanR = sum(times) / len(times), sum(records) / len(records)
    spread = sum((t - meanT) ** 2 for t in times)
    out["spoolRecordsPerSecond"] = (
        sum((t - meanT) * (r - meanR) for t, r in zip(times, records, strict=True)) / spread
        if spread
        else None
    )
    return out


def _tail(path: str, size: int = 600) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-size:]
    except OSError:
        return ""


# -- The broker --------------------------------------------------------------


class Broker:
    """
    The run's private RabbitMQ (the test suite's L{PrivateRabbitMQ}) and a
    durable queue bound C{#} to the monitor's exchange, declared as the
    monitor declares it (topic, durable): every record published is routed
    there and stored.  Each operation opens a blocking pika connection of
    its own (a connection left idle between runs would miss heartbeats).
    """

    def __init__(self) -> None:
        from tests._rabbitmq import PrivateRabbitMQ

        self.server = PrivateRabbitMQ()

    @staticmethod
    def unavailable() -> str | None:
        """Why no private RabbitMQ can run here, or None."""
        from tests._rabbitmq import unavailable

        return unavailable()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> dict[str, Any]:
        """Start it and declare the queue; its version and idle CPU, as context."""
        self.server.start()
        with self._channel() as channel:
            channel.exchange_declare(exchange=AMQP_EXCHANGE, exchange_type="topic", durable=True)
            channel.queue_declare(queue=AMQP_QUEUE, durable=True)
            channel.queue_bind(queue=AMQP_QUEUE, exchange=AMQP_EXCHANGE, routing_key="#")
        try:
            version = self.server.ctl("version").strip()
        except Exception as e:
            version = f"unknown ({type(e).__name__})"
        time.sleep(2.0)
        beam = self.beamPid()
        before, started = _external.cpuSeconds(beam), time.monotonic()
        time.sleep(3.0)
        idle = (_external.cpuSeconds(beam) - before) / (time.monotonic() - started)
        return {"version": version, "idleCpuShare": idle}

    def beamPid(self) -> int:
        pid = self.server.beamPid
        if pid is None:
            raise RuntimeError(f"{self.server!r}: no beam.smp runs")
        return pid

    @contextmanager
    def _channel(self) -> Iterator[Any]:
        import pika

        parameters = pika.URLParameters(self.url)
        connection = pika.BlockingConnection(parameters)
        try:
            yield connection.channel()
        finally:
            connection.close()

    def settle(self, quiet: float = 0.02, period: float = 0.5, timeout: float = 30.0) -> float:
        """
        Wait until the broker uses under C{quiet} of a core over C{period};
        the seconds it took (C{timeout} at most).
        """
        beam, started = self.beamPid(), time.monotonic()
        while time.monotonic() - started < timeout:
            before, at = _external.cpuSeconds(beam), time.monotonic()
            time.sleep(period)
            if (_external.cpuSeconds(beam) - before) / (time.monotonic() - at) < quiet:
                break
        return time.monotonic() - started

    def purge(self) -> None:
        with self._channel() as channel:
            channel.queue_purge(queue=AMQP_QUEUE)

    def messages(self) -> int:
        """The messages in the queue, as a passive declare counts them."""
        with self._channel() as channel:
            declared = channel.queue_declare(queue=AMQP_QUEUE, passive=True)
            return int(declared.method.message_count)

    def stop(self) -> None:
        self.server.stop()


# -- Scale -------------------------------------------------------------------

QUIET_DRIVER = "<node/>"


def quietDriver(daemon: PrivateLibvirtd) -> str:
    """
    A test-driver file in the daemon's directory: each connection to
    C{test:///FILE} gets a private driver of its own with no domain, so that
    the busy URI's events do not fan out to the quiet ones.
    """
    path = os.path.join(daemon.base, "quiet.xml")
    with open(path, "w") as f:
        f.write(QUIET_DRIVER)
    owner = os.stat(daemon.base)
    if os.geteuid() == 0:
        os.chown(path, owner.st_uid, owner.st_gid)
    return path


def quietURIs(daemon: PrivateLibvirtd, quiet: str, first: int, count: int) -> list[str]:
    """
    Distinct URIs of the same quiet driver: the remote driver passes an
    unknown query parameter on to the daemon, whose test driver ignores it.
    """
    socket = quote(daemon.socketPath)
    return [f"test+unix://{quiet}?socket={socket}&host={n}" for n in range(first, first + count)]


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string, for the ASCII written here


def writeConfig(path: str, uris: Sequence[str], output: str, resync: float | None) -> None:
    """The monitor's fleet config, replaced at once (a reload reads a whole file)."""
    lines = [
        'format = "json"',
        f"output = {_toml(output)}",
        'events = "all"',
        f"resync = {resync}" if resync is not None else 'resync = "off"',
        'metrics = "tcp:0:interface=127.0.0.1"',
    ]
    for uri in uris:
        lines += ["", "[[host]]", f"uri = {_toml(uri)}"]
    with open(path + ".new", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".new", path)


def _wallTime(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Follower:
    """The monitor's output, followed: lifecycle lines, connection records."""

    def __init__(self, path: str) -> None:
        self.counter = _external.LineCounter(
            path, MONITOR_EVENT, keep=(CONNECTION_RECORD, READY_PREFIX.encode())
        )
        self.connected: dict[str, float] = {}
        self.records: Counter[str] = Counter()
        self.ready = False

    def poll(self) -> None:
        for line in self.counter.update():
            if CONNECTION_RECORD not in line:
                self.ready = True
                continue
            record = json.loads(line)
            self.records[record["kind"]] += 1
            if record["kind"] == "connection.connected":
                self.connected.setdefault(record["uri"], _wallTime(record["time"]))

    def seen(self) -> bool:
        self.poll()
        return self.ready


def _metricsPort(logPath: str, process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"metrics and health on .*port=(\d+)", _tail(logPath, 1 << 20))
        if found:
            return int(found[1])
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode}: {_tail(logPath)}")
        time.sleep(0.05)
    raise RuntimeError("never said where /healthz is")


def _awaitConnected(
    follower: Follower, uris: Sequence[str], process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    wanted = set(uris)
    while not wanted <= follower.connected.keys():
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode}")
        if time.monotonic() > deadline:
            missing = len(wanted - follower.connected.keys())
            raise RuntimeError(
                f"{missing} of {len(wanted)} hosts not connected after {timeout:.0f}s"
                f" (records: {dict(follower.records)})"
            )
        time.sleep(0.1)
        follower.poll()


def _gapFigures(probe: _external.HealthProbe, start: float, end: float, origin: float) -> Any:
    gaps = sorted(probe.gaps(start, end), reverse=True)
    latencies = probe.latenciesIn(start, end)
    if not gaps:
        return {"answers": 0}
    return {
        "answers": len(gaps),
        "maxGapMs": gaps[0][0] * 1e3,
        "maxGapAtMs": (gaps[0][1] - origin) * 1e3,
        "secondGapMs": gaps[1][0] * 1e3 if len(gaps) > 1 else None,
        "gapsOver20ms": sum(1 for g, _ in gaps if g > 0.020),
        "p99GapMs": sorted(g for g, _ in gaps)[int(0.99 * (len(gaps) - 1))] * 1e3,
        "maxLatencyMs": max(latencies) * 1e3 if latencies else None,
    }


def scaleRun(
    settings: Settings,
    daemon: PrivateLibvirtd,
    quiet: str,
    hosts: int,
    work: str,
    tag: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """
    One monitor watching C{hosts} URIs (the busy one first): start-up,
    memory, background CPU, CPU per event; with more than one host, a
    SIGHUP that adds C{reloadHosts} and, if asked, the first drift checks.
    """
    busy = daemon.testURI
    uris = [busy, *quietURIs(daemon, quiet, 1, hosts - 1)]
    config = os.path.join(work, f"fleet-{tag}.toml")
    output = os.path.join(work, f"fleet-{tag}.out")
    logPath = output + ".log"
    writeConfig(config, uris, output, settings.scaleResync)
    result: dict[str, Any] = {"hosts": hosts, "tag": tag}
    startedWall, startedMono = time.time(), time.monotonic()
    with open(logPath, "wb") as logFile:
        process = _external.spawn(
            [monitorScript(), "--config", config], subprocess.DEVNULL, logFile
        )
    follower = Follower(output)
    probe: _external.HealthProbe | None = None
    try:
        port = _metricsPort(logPath, process, 60)
        _awaitConnected(follower, uris, process, 60 + hosts * 0.2)
        times = sorted(follower.connected[u] for u in uris)
        result["connectAllSeconds"] = times[-1] - startedWall
        result["startCpu"] = _external.cpuSeconds(process.pid)
        awaitReady(process, busy, follower.seen, 60)
        sleepUntil(time.monotonic() + 2.0, follower.poll)
        result["settled"] = _external.status(process.pid)
        log(f"  {hosts} hosts connected in {result['connectAllSeconds']:.1f} s; idle window")
        before = _sample(process.pid, follower.counter, follower.poll)
        sleepUntil(time.monotonic() + settings.scaleIdle, follower.poll)
        after = _sample(process.pid, follower.counter, follower.poll)
        idleRate = (after["cpu"] - before["cpu"]) / (after["mono"] - before["mono"])
        result["idleCpuShare"] = idleRate
        result["idleWakeupsPerSecond"] = (after["wakeups"] - before["wakeups"]) / (
            after["mono"] - before["mono"]
        )
        result["rss"], result["threads"] = after["rss"], after["threads"]
        log(f"  events at {rateKey(settings.scaleRate)} on one of {hosts}")
        events = measureEvents(
            settings, process, busy, follower.counter, follower.poll, settings.scaleRate, 0
        )
        events["netCpuPerEventUs"] = (
            (events["cpu"] - idleRate * events["seconds"]) * 1e6 / events["events"]
            if events["events"]
            else None
        )
        result["events"] = events
        if hosts > 1 and settings.reloadHosts:
            probe = _external.HealthProbe(port, settings.probePeriod)
            probe.start()
            result["reload"] = _reload(
                settings, process, follower, probe, config, uris, output, daemon, quiet
            )
            result["reload"]["rssPerAddedHost"] = (
                result["reload"]["rss"] - result["rss"]
            ) / settings.reloadHosts
            log(
                f"  reload: longest gap {result['reload']['maxGapMs']:.0f} ms,"
                f" {settings.reloadHosts} hosts connected in"
                f" {result['reload']['newConnectedSeconds']:.2f} s"
            )
            if settings.drift and settings.scaleResync:
                background = result["reload"]["idleWithProbeCpuShare"]
                result["drift"] = _drift(settings, process, follower, probe, times, background, log)
        result["stopSeconds"] = _external.stop(process, 60)
        result["records"] = dict(follower.records)
        result["wallSeconds"] = time.monotonic() - startedMono
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}; log: {_tail(logPath)}"
    finally:
        if probe is not None:
            probe.halt()
        _external.stop(process)
    for path in (config, output, logPath):
        if os.path.exists(path):
            os.unlink(path)
    return result


def _reload(
    settings: Settings,
    process: subprocess.Popen[bytes],
    follower: Follower,
    probe: _external.HealthProbe,
    config: str,
    uris: list[str],
    output: str,
    daemon: PrivateLibvirtd,
    quiet: str,
) -> dict[str, Any]:
    """Rewrite the config with more hosts, SIGHUP, probe /healthz until they are all up."""
    # Two seconds of the probe alone: the gaps of an idle reactor, and the probe's cost.
    quietStart, quietCpu = time.monotonic(), _external.cpuSeconds(process.pid)
    sleepUntil(quietStart + 2.0, follower.poll)
    probeRate = (_external.cpuSeconds(process.pid) - quietCpu) / (time.monotonic() - quietStart)
    added = quietURIs(daemon, quiet, len(uris), settings.reloadHosts)
    writeConfig(config, [*uris, *added], output, settings.scaleResync)
    cpuBefore = _external.cpuSeconds(process.pid)
    hupWall, hup = time.time(), time.monotonic()
    os.kill(process.pid, signal.SIGHUP)
    _awaitConnected(follower, added, process, 60 + settings.reloadHosts * 0.5)
    done = time.monotonic()
    cpuDone = _external.cpuSeconds(process.pid)
    sleepUntil(done + 1.0, follower.poll)
    after = _external.status(process.pid)
    figures = _gapFigures(probe, hup, done + 1.0, hup)
    baseline = _gapFigures(probe, hup - 2.0, hup, hup)
    answersAfter = [a for a in probe.answers if a > hup]
    return {
        **figures,
        "baselineMaxGapMs": baseline.get("maxGapMs"),
        "baselineP99GapMs": baseline.get("p99GapMs"),
        "firstAnswerAfterHupMs": (answersAfter[0] - hup) * 1e3 if answersAfter else None,
        "newConnectedSeconds": max(follower.connected[u] for u in added) - hupWall,
        "firstNewConnectedSeconds": min(follower.connected[u] for u in added) - hupWall,
        "cpu": cpuDone - cpuBefore,
        "probeErrors": probe.errors,
        "idleWithProbeCpuShare": probeRate,
        "rss": after["rss"],
        "threads": after["threads"],
    }


def _drift(
    settings: Settings,
    process: subprocess.Popen[bytes],
    follower: Follower,
    probe: _external.HealthProbe,
    connectTimes: list[float],
    background: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """
    The first drift check of every original host falls RESYNC seconds after
    it connected: CPU over that span beyond C{background} (the idle monitor's
    with the probe running), and /healthz gaps.
    """
    resync = settings.scaleResync
    offset = time.monotonic() - time.time()
    start = connectTimes[0] + resync - 1.0 + offset
    end = connectTimes[-1] + resync + 3.0 + offset
    log(f"  waiting {max(0.0, start - time.monotonic()):.0f} s for the first drift checks")
    sleepUntil(start, follower.poll)
    quietStart = time.monotonic()
    before = _external.cpuSeconds(process.pid)
    sleepUntil(end, follower.poll)
    after = _external.cpuSeconds(process.pid)
    span = time.monotonic() - quietStart
    figures = _gapFigures(probe, quietStart, time.monotonic(), quietStart)
    return {
        **figures,
        "seconds": span,
        "cpu": after - before,
        "cpuBeyondIdle": after - before - background * span,
        "resynced": follower.records.get("connection.resynced", 0),
        "lostEvents": follower.records.get("connection.lost_event", 0),
    }


# -- Profile -----------------------------------------------------------------

_LINE = re.compile(r" \(([^()]*):\d+\)$")
#: A frame of the main (reactor) thread: only its samples are summarized (see below).
_REACTOR_FRAME = "ReactorBase.mainLoop"
#: Frames worth listing with their callees: the project's, libvirt-python's, the encoders.
_LISTED = re.compile(r"\((libvirt_twisted/|libvirt\.py|libvirt-override\.c|json/|_json\.c)")


def summarizeProfile(path: str, top: int = 20) -> dict[str, Any]:
    """
    py-spy's raw stacks as the functions that take the samples, for the
    reactor thread's stacks only: py-spy counts a call-pool thread blocked
    in C{Condition.wait} as active, while /proc shows it takes no CPU
    (C{mainThreadShare}).  By own time (the leaf frame, line numbers
    merged), and with callees for the frames of L{_LISTED} that not every
    sample goes through.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = reactor = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_LINE.sub(r" (\1)", frame) for frame in stack.split(";")]
            if not any(_REACTOR_FRAME in frame for frame in frames):
                continue
            reactor += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    if not reactor:
        return {"samples": total, "reactorSamples": 0, "self": [], "inclusive": []}
    listed = [
        [name, n / reactor]
        for name, n in inclusive.most_common()
        if _LISTED.search(name) and n < 0.9 * reactor
    ]
    return {
        "samples": total,
        "reactorSamples": reactor,
        "self": [[name, n / reactor] for name, n in own.most_common(top)],
        "inclusive": listed[: top + 10],
    }


# -- The run -----------------------------------------------------------------


def eventPart(
    settings: Settings,
    log: Callable[[str], None],
    profileDir: str,
    broker: Broker | None = None,
) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    contenders = [n for n in settings.contenders if not CONTENDERS[n].amqp or broker is not None]
    with PrivateLibvirtd() as daemon, tempfile.TemporaryDirectory(prefix="bench-monitor-") as work:
        uri = daemon.testURI
        for rate in settings.rates:
            runs: dict[str, list[dict[str, Any]]] = {}
            for round in range(settings.rounds):
                for name in rotated(contenders, round):
                    log(f"event {rateKey(rate)} round {round + 1}: {name}")
                    contender = CONTENDERS[name]
                    result = eventRun(
                        settings, contender, uri, rate, work, f"r{round}", broker=broker
                    )
                    if "error" in result:
                        log(f"  failed: {result['error']}")
                    else:
                        log(
                            f"  {result['eventsPerSecond']:.0f} events/s,"
                            f" {result['cpuPerEventUs']:.1f} µs/event"
                            + (
                                f"; spool max {result.get('spoolRecordsMax')},"
                                f" queued {result['queued']} of {result['records']} records"
                                if contender.amqp
                                else ""
                            )
                        )
                    runs.setdefault(name, []).append(result)
            section: dict[str, Any] = {
                name: {"median": medians(rs), "runs": rs} for name, rs in runs.items()
            }
            section["ratios"] = ratios(section)
            if AMQP in section:
                section["amqp"] = amqpVerdict(section)
            if _wantProfile(settings, section):
                section["profile"] = profileRun(settings, uri, rate, work, profileDir, log)
            parts[rateKey(rate)] = section
    return parts


def amqpVerdict(section: dict[str, Any]) -> dict[str, Any]:
    """
    Whether it kept up, from every round, in two parts.  The AMQP output
    kept up with the monitor: every record in the queue, the spool never
    above twice the in-flight window and not growing over the window (its
    trend times the window under one window's worth).  The monitor kept up
    with the producers: every produced event in the file, its events/s
    within 2 % of what the producers made over the window.
    """
    runs = [r for r in section[AMQP]["runs"] if "error" not in r]
    median = section[AMQP]["median"]
    fileOnly = section.get(FILE_ONLY, {}).get("median", {}).get("cpuPerEventUs")
    mine = median.get("cpuPerEventUs")

    def every(check: Callable[[dict[str, Any]], bool]) -> bool:
        return bool(runs) and all(check(r) for r in runs)

    delivered = every(lambda r: (r.get("deliveredRatio") or 0) >= 1.0)
    queued = every(lambda r: r.get("queued") == r.get("records"))
    pace = every(lambda r: r["eventsPerSecond"] >= 0.98 * r["producedPerSecond"])
    bounded = every(lambda r: (r.get("spoolRecordsMax") or 0) <= 2 * AMQP_WINDOW)
    flat = every(
        lambda r: (
            r.get("spoolRecordsPerSecond") is not None
            and r["spoolRecordsPerSecond"] * r["seconds"] < AMQP_WINDOW
        )
    )
    return {
        "rounds": len(runs),
        "failed": len(section[AMQP]["runs"]) - len(runs),
        "allDelivered": delivered,
        "allQueued": queued,
        "paceHeld": pace,
        "spoolBounded": bounded,
        "spoolFlat": flat,
        "outputKeepsUp": queued and bounded and flat,
        "monitorKeepsUp": delivered and pace,
        "keepsUp": delivered and queued and pace and bounded and flat,
        "fileCpuPerEventUs": fileOnly,
        "cpuPerEventUs": mine,
        "ratioToFile": mine / fileOnly if mine is not None and fileOnly else None,
        "window": AMQP_WINDOW,
    }


def ratios(section: dict[str, Any]) -> dict[str, float | None]:
    """CPU per event of each monitor over each virsh."""
    out: dict[str, float | None] = {}
    for monitor in MONITORS:
        for virsh in VIRSHES:
            if monitor in section and virsh in section:
                a = section[monitor]["median"].get("cpuPerEventUs")
                b = section[virsh]["median"].get("cpuPerEventUs")
                out[f"{monitor} / {virsh}"] = a / b if a is not None and b else None
    return out


def _wantProfile(settings: Settings, section: dict[str, Any]) -> bool:
    if settings.profile == "no":
        return False
    if settings.profile == "yes":
        return True
    return any(r is not None and r > 2 for r in section["ratios"].values())


def profileRun(
    settings: Settings,
    uri: str,
    rate: float,
    work: str,
    profileDir: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One more run of the monitor (resync off) under py-spy; not among the rounds."""
    os.makedirs(profileDir, exist_ok=True)
    name = f"monitor-{'paced' if rate > 0 else 'flat'}.raw.txt"
    path = os.path.join(profileDir, name)
    log(f"profiling monitor-resync-off ({rateKey(rate)}) with py-spy")
    spied = dataclasses.replace(settings, duration=max(settings.duration, settings.profileSeconds))
    run = eventRun(spied, CONTENDERS["monitor-resync-off"], uri, rate, work, "profile", path)
    if "error" in run or not os.path.exists(path):
        return {"error": run.get("error", "py-spy wrote nothing")}
    found = summarizeProfile(path)
    found["file"] = os.path.join("profiles", name)
    found["cpuPerEventUsUnderProfiler"] = run["cpuPerEventUs"]
    return found


def scalePart(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    room = settings.uris + settings.reloadHosts + 200
    config: dict[str, str | int] = {
        "max_clients": max(room, 5000),
        "max_queued_clients": room,
        "max_anonymous_clients": room,
    }
    runs: dict[str, list[dict[str, Any]]] = {"1": [], str(settings.uris): []}
    with (
        PrivateLibvirtd(config=config) as daemon,
        tempfile.TemporaryDirectory(prefix="bench-monitor-") as work,
    ):
        quiet = quietDriver(daemon)
        for round in range(settings.scaleRounds):
            for hosts in rotated([1, settings.uris], round):
                log(f"scale round {round + 1}: {hosts} URIs")
                result = scaleRun(settings, daemon, quiet, hosts, work, f"r{round}-{hosts}", log)
                if "error" in result:
                    log(f"  failed: {result['error']}")
                runs[str(hosts)].append(result)
    return {"runs": runs, "median": scaleMedians(runs, settings)}


def _flat(run: dict[str, Any]) -> dict[str, Any]:
    """A scale run's numbers in one level (C{events.cpuPerEventUs}...)."""
    if "error" in run:
        return {"error": run["error"]}
    out: dict[str, Any] = {}
    for key, value in run.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"{key}.{inner}"] = v
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    return out


def scaleMedians(runs: dict[str, list[dict[str, Any]]], settings: Settings) -> dict[str, Any]:
    one = medians([_flat(r) for r in runs["1"]])
    many = medians([_flat(r) for r in runs[str(settings.uris)]])
    perURI = None
    if one.get("rss") is not None and many.get("rss") is not None:
        perURI = (many["rss"] - one["rss"]) / (settings.uris - 1)
    return {"1": one, str(settings.uris): many, "rssPerURI": perURI}


def parseArgs(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.monitor", description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test, about 3 minutes")
    parser.add_argument("--parts", default="event,scale", help="comma-separated: event, scale")
    parser.add_argument("--contenders", help="comma-separated: " + ", ".join(CONTENDERS))
    parser.add_argument("--rounds", type=int, help="event-path rounds (3)")
    parser.add_argument("--duration", type=float, help="measurement window, s (8)")
    parser.add_argument("--warmup", type=float, help="s of events before each window (2)")
    parser.add_argument("--producers", type=int, help="producer processes (2)")
    parser.add_argument(
        "--rate", help="events/s in all, comma-separated, 0 for flat out (default 2000,0)"
    )
    parser.add_argument("--uris", type=int, help="URIs of the scale part (1000)")
    parser.add_argument("--reload-hosts", type=int, help="hosts a SIGHUP adds (100)")
    parser.add_argument("--scale-rounds", type=int, help="rounds of the scale part (2)")
    parser.add_argument("--scale-rate", type=float, help="events/s on the busy URI (2000)")
    parser.add_argument("--scale-idle", type=float, help="idle window, s (10)")
    parser.add_argument("--no-drift", action="store_true", help="skip the first drift checks")
    parser.add_argument(
        "--profile", choices=("auto", "yes", "no"), default="auto", help="auto: above 2x virsh"
    )
    parser.add_argument("--results-dir", default=os.path.join("bench", "results"))
    parser.add_argument("--json", help="default RESULTS_DIR/monitor.json")
    parser.add_argument("--markdown", help="default RESULTS_DIR/monitor.md")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.quick:
        settings = Settings(
            rounds=1, duration=3, warmup=1, grace=2, uris=200, reloadHosts=20, scaleRounds=1,
            scaleIdle=3, drift=False, profileSeconds=3, rates=(2000.0,),
        )  # fmt: skip
    for option, attribute in [
        ("rounds", "rounds"),
        ("duration", "duration"),
        ("warmup", "warmup"),
        ("producers", "producers"),
        ("uris", "uris"),
        ("reload_hosts", "reloadHosts"),
        ("scale_rounds", "scaleRounds"),
        ("scale_rate", "scaleRate"),
        ("scale_idle", "scaleIdle"),
    ]:
        if getattr(args, option) is not None:
            setattr(settings, attribute, getattr(args, option))
    if args.rate:
        settings.rates = tuple(float(r) for r in args.rate.split(","))
    if args.no_drift:
        settings.drift = False
    if args.contenders:
        settings.contenders = tuple(args.contenders.split(","))
        unknown = set(settings.contenders) - set(CONTENDERS)
        if unknown:
            parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    settings.parts = tuple(p for p in ("event", "scale") if p in args.parts.split(","))
    settings.profile = args.profile
    if settings.uris < 2:
        parser.error("--uris must be at least 2")
    return args, settings


def scrub(text: str) -> str:
    """No path of this machine in the results: temporary paths (in errors' logs) and the root."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = re.sub(re.escape(tempfile.gettempdir()) + r"/[^\s'\",)]*", "TMPDIR/...", text)
    return text.replace(root + os.sep, "").replace(root, ".")


def codeVersion() -> dict[str, Any]:
    """The commit measured, and the package's files changed from it (paths in the repository)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        ).stdout.rstrip("\n")

    try:
        changed = git("status", "--porcelain", "--", "libvirt_twisted").splitlines()
        return {"commit": git("rev-parse", "--short", "HEAD"), "changed": [c[3:] for c in changed]}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "changed": []}


def main(argv: list[str] | None = None) -> int:
    args, settings = parseArgs(argv)
    reason = daemonUnavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    libvirt.registerErrorHandler(lambda *_: None, None)
    raiseFdLimit()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "machine": describe(),
        "code": codeVersion(),
        "settings": dataclasses.asdict(settings),
        "contenders": {name: c.shown for name, c in CONTENDERS.items()},
    }
    if "event" in settings.parts:
        broker: Broker | None = None
        if AMQP in settings.contenders:
            reason = Broker.unavailable()
            if reason is None:
                log("starting a private RabbitMQ for monitor-amqp")
                broker = Broker()
                try:
                    report["broker"] = broker.start()
                except Exception as e:
                    broker.stop()
                    broker, reason = None, f"{type(e).__name__}: {e}"
            if reason is not None:
                log(f"no {AMQP}: {reason}")
                report["broker"] = {"error": reason}
        try:
            report["event"] = eventPart(
                settings, log, os.path.join(args.results_dir, "profiles"), broker
            )
        finally:
            if broker is not None:
                broker.stop()
    if "scale" in settings.parts:
        report["scale"] = scalePart(settings, log)
    report["seconds"] = time.monotonic() - started
    os.makedirs(args.results_dir, exist_ok=True)
    jsonPath = args.json or os.path.join(args.results_dir, "monitor.json")
    markdownPath = args.markdown or os.path.join(args.results_dir, "monitor.md")
    with open(jsonPath, "w") as f:
        f.write(scrub(json.dumps(report, indent=1)) + "\n")
    text = scrub(markdown(report))
    with open(markdownPath, "w") as f:
        f.write(text)
    print(text)
    log(f"wrote {jsonPath}, {markdownPath}")
    return 0


# -- The report --------------------------------------------------------------


def _fmt(value: Any, digits: int = 1, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value * scale:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _spread(runs: list[dict[str, Any]], key: str, digits: int = 1) -> str:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return ", ".join(f"{v:.{digits}f}" for v in values) or "-"


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "## The event monitor against virsh",
        "",
        f"Machine: {summary(report['machine'])}.",
        "",
        f"Whole run {report['seconds']:.0f} s. Event path: {settings['rounds']} round(s),"
        f" medians quoted, {settings['duration']:.0f} s window after {settings['warmup']:.0f} s"
        f" of warm-up, {settings['producers']} producer process(es); contenders' order rotates.",
        "",
        f"Code: commit {report['code']['commit']}"
        + (
            f", with uncommitted changes to {', '.join(report['code']['changed'])}"
            if report["code"]["changed"]
            else ""
        )
        + ".",
    ]
    if "event" in report:
        lines += ["", "| contender | command |", "|---|---|"]
        lines += [f"| {name} | `{shown}` |" for name, shown in report["contenders"].items()]
    for key, section in report.get("event", {}).items():
        rows = []
        for name in CONTENDERS:
            if name not in section:
                continue
            m, runs = section[name]["median"], section[name]["runs"]
            rows.append(
                [
                    name,
                    _fmt(m.get("eventsPerSecond"), 0),
                    _fmt(m.get("cpuPerEventUs")),
                    _spread(runs, "cpuPerEventUs"),
                    _fmt(m.get("cpuShare"), 1, 100),
                    _fmt(m.get("wakeupsPerEvent"), 2),
                    _fmt(m.get("deliveredRatio"), 4),
                    _fmt(m.get("rss"), 0, 1 / 1024),
                    _spread(runs, "otherCores", 2),
                    f"{m['rounds']}" + (f" ({m['failed']} failed)" if m["failed"] else ""),
                ]
            )
        header = ["contender", "events/s", "CPU µs/event", "per round", "CPU %", "wake-ups/event"]
        header += ["delivered/produced", "RSS KiB", "others' cores, per round", "rounds"]
        lines += ["", f"### Event path, producers {key}", "", *_table(header, rows), ""]
        for pair, ratio in section["ratios"].items():
            verdict = "" if ratio is None else (" (within 2x)" if ratio <= 2 else " (above 2x)")
            lines.append(f"- CPU per event, {pair}: **{_fmt(ratio, 2)}**{verdict}")
        if "amqp" in section:
            lines += amqpMarkdown(key, section, report.get("broker", {}), settings)
        profile = section.get("profile")
        if profile and "error" not in profile:
            cost = profile["cpuPerEventUsUnderProfiler"]
            lines += [
                "",
                f"Profile of monitor-resync-off, one more run (`py-spy record --native`, on-CPU"
                f" samples of the reactor thread: {profile['reactorSamples']} of"
                f" {profile['samples']}; {_fmt(cost)} µs/event under the profiler, which"
                f" the µs column shares out; `{profile['file']}`):",
                "",
                *_table(
                    ["function (own time)", "share", "µs/event"],
                    [
                        [f"`{n}`", _fmt(s, 1, 100) + " %", _fmt(s * cost)]
                        for n, s in profile["self"]
                    ],
                ),
                "",
                *_table(
                    ["function (with callees)", "share"],
                    [[f"`{n}`", _fmt(s, 1, 100) + " %"] for n, s in profile["inclusive"]],
                ),
            ]
    if "scale" in report:
        lines += scaleMarkdown(report["scale"], settings)
    return "\n".join(lines) + "\n"


def _int(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def amqpMarkdown(
    key: str, section: dict[str, Any], broker: dict[str, Any], settings: dict[str, Any]
) -> list[str]:
    """The AMQP output's figures for one rate, beside the file output's, and the verdict."""
    verdict, m, runs = section["amqp"], section[AMQP]["median"], section[AMQP]["runs"]
    good = [r for r in runs if "error" not in r]
    fileOnly = section.get(FILE_ONLY, {}).get("median", {})
    rows = [
        [
            f"{FILE_ONLY} (file only)",
            _fmt(fileOnly.get("producedPerSecond"), 0),
            _fmt(fileOnly.get("eventsPerSecond"), 0),
            _fmt(fileOnly.get("cpuPerEventUs")),
            _spread(section.get(FILE_ONLY, {}).get("runs", []), "cpuPerEventUs"),
            _fmt(fileOnly.get("cpuShare"), 1, 100),
            _fmt(fileOnly.get("brokerCpuPerEventUs")),
            _fmt(fileOnly.get("brokerCpuShare"), 1, 100),
            *["-"] * 3,
            _spread(section.get(FILE_ONLY, {}).get("runs", []), "caughtUpSecondsAfterProducers", 1),
            "-",
        ],
        [
            f"{AMQP} (file and AMQP)",
            _fmt(m.get("producedPerSecond"), 0),
            _fmt(m.get("eventsPerSecond"), 0),
            _fmt(m.get("cpuPerEventUs")),
            _spread(runs, "cpuPerEventUs"),
            _fmt(m.get("cpuShare"), 1, 100),
            _fmt(m.get("brokerCpuPerEventUs")),
            _fmt(m.get("brokerCpuShare"), 1, 100),
            "; ".join(
                f"{_int(r.get('spoolRecordsStart'))} / {_int(r.get('spoolRecordsEnd'))}"
                f" / {_int(r.get('spoolRecordsMax'))}"
                for r in good
            )
            or "-",
            _spread(good, "spoolRecordsPerSecond", 0),
            _spread(good, "spoolEmptySecondsAfterProducers", 2),
            _spread(good, "caughtUpSecondsAfterProducers", 1),
            ", ".join(f"{_int(r.get('queued'))} / {_int(r.get('records'))}" for r in good) or "-",
        ],
    ]
    header = ["contender", "produced/s", "events/s", "monitor CPU µs/event", "per round"]
    header += ["monitor CPU %", "broker CPU µs/event", "broker CPU %"]
    header += ["spool records start / end / max, per round", "spool trend, records/s"]
    header += ["spool empty, s after producers", "last event in file, s after producers"]
    header += ["queued / records written, per round"]
    spoolBytes = _fmt(m.get("spoolBytesMax"), 0, 1 / 1024)
    disk = _fmt(m.get("spoolDiskMax"), 0, 1 / 1024)
    version = broker.get("version", "-")
    idle = _fmt(broker.get("idleCpuShare"), 1, 100)
    ratio = _fmt(verdict.get("ratioToFile"), 2)
    rate = f"{m.get('eventsPerSecond') or 0:,.0f}"
    where = "flat out" if key == "flat out" else f"at {key.removeprefix('paced ')}"
    spoolMax = _int(max((r.get("spoolRecordsMax") or 0 for r in good), default=None))
    if verdict["outputKeepsUp"]:
        output = (
            f"**The AMQP output keeps up {where}** with what the monitor receives: in every"
            f" round every record is in the queue, the spool holds at most {spoolMax} records"
            f" (the in-flight window is {AMQP_WINDOW:,}) and does not grow, and it is empty"
            f" {_fmt(m.get('spoolEmptySecondsAfterProducers'), 2)} s after the producers stop."
        )
    else:
        trends = [r["spoolRecordsPerSecond"] for r in good if r.get("spoolRecordsPerSecond")]
        queuedAll = (
            "every record still reached the queue"
            if verdict["allQueued"]
            else ("not every record reached the queue")
        )
        output = (
            f"**The AMQP output does not keep up {where}:** the spool"
            + (
                f" grows by {min(trends):,.0f} to {max(trends):,.0f} records/s over the window"
                if trends
                else " was not sampled"
            )
            + f" (rounds), to at most {spoolMax} records against an in-flight window of"
            f" {AMQP_WINDOW:,}, and is empty only"
            f" {_fmt(m.get('spoolEmptySecondsAfterProducers'), 1)} s after the producers stop"
            f" (median); {queuedAll}, records dropped:"
            f" {_spread(good, 'spoolDroppedTotal', 0)}."
        )
    if verdict["monitorKeepsUp"]:
        monitor = (
            f" The monitor with `--amqp` keeps up with the producers: {rate} events/s, every"
            f" produced event in the file; its CPU per event is {ratio}x the file output's."
        )
    else:
        behind = [
            f"{int(r['tag'].removeprefix('r')) + 1}: {r['eventsPerSecond']:,.0f} events/s against"
            f" {r['producedPerSecond']:,.0f} produced/s"
            for r in good
            if r["eventsPerSecond"] < 0.98 * r["producedPerSecond"]
        ]
        monitor = (
            " The monitor with `--amqp` falls behind the producers over the window in"
            f" round {'; round '.join(behind) or '-'}, where the file output alone got"
            f" {_fmt(fileOnly.get('eventsPerSecond'), 0)} of"
            f" {_fmt(fileOnly.get('producedPerSecond'), 0)} (medians)"
            + (
                "; every event reached the file in the end, the last"
                f" {_fmt(m.get('caughtUpSecondsAfterProducers'), 1)} s after the producers"
                " stopped (median)"
                if verdict["allDelivered"]
                else "; not every produced event reached the file"
            )
            + f". Its CPU per event is {ratio}x the file output's."
        )
    conclusion = output + monitor
    return [
        "",
        f"#### The AMQP output, producers {key}",
        "",
        f"`{AMQP}` is `{FILE_ONLY}` plus `--amqp URL --spool DIR --metrics ...`: every record"
        f" also goes, through the spool on disk, to a private RabbitMQ ({version}, started once"
        f" for the run; idle it uses {idle} % of a core), with publisher confirms, into a durable"
        f" queue bound `#` to the exchange `{AMQP_EXCHANGE}`, purged before and after each"
        " round. Spool records from the monitor's `/metrics` every"
        f" {_fmt(settings.get('spoolPeriod'), 2)} s over the window; broker"
        " CPU is beam.smp's (in the file-only row, the idle broker's during that contender's"
        " window); queued = messages in the queue once the spool is empty, records ="
        " lines in the output file (every record, probes and warm-up included).",
        "",
        *_table(header, rows),
        "",
        "Spool bytes (the monitor's count: a segment file, 16 MiB with the default"
        " `--spool-size`, stays until all its records are confirmed)"
        f" at most {spoolBytes} KiB, its directory {disk} KiB (medians of the rounds' maxima);"
        f" records dropped: {_spread(good, 'spoolDroppedTotal', 0)}.",
        "",
        conclusion,
    ]


def scaleMarkdown(scale: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    n = str(settings["uris"])
    one, many = scale["median"]["1"], scale["median"][n]
    rows = []
    for label, m in (("1", one), (n, many)):
        rows.append(
            [
                label,
                _fmt(m.get("connectAllSeconds"), 2),
                _fmt(m.get("startCpu"), 2),
                _fmt(m.get("rss"), 0, 1 / 1024),
                _fmt(m.get("threads"), 0),
                _fmt(m.get("idleCpuShare"), 2, 100),
                _fmt(m.get("events.producedPerSecond"), 0),
                _fmt(m.get("events.eventsPerSecond"), 0),
                _fmt(m.get("events.cpuPerEventUs")),
                _fmt(m.get("events.netCpuPerEventUs")),
                _fmt(m.get("events.deliveredRatio"), 4),
                _fmt(m.get("stopSeconds"), 2),
                _spread([_flat(r) for r in scale["runs"][label]], "events.otherCores", 2),
                f"{m['rounds']}" + (f" ({m['failed']} failed)" if m["failed"] else ""),
            ]
        )
    header = ["URIs", "connect all, s", "start CPU s", "RSS KiB", "threads", "idle CPU %"]
    header += ["produced/s", "events/s", "CPU µs/event", "net of idle", "delivered/produced"]
    header += ["stop, s", "others' cores, per round", "rounds"]
    lines = [
        "",
        f"### {n} URIs in one monitor (resync {settings['scaleResync']:.0f} s, keepalive 5:3)",
        "",
        f"One busy URI (the daemon's `test:///default`) and {int(n) - 1} quiet ones (a private"
        f" test driver each, no domain); events at {settings['scaleRate']:.0f}/s on the busy one;"
        f" {settings['scaleRounds']} round(s), medians quoted; idle window"
        f" {settings['scaleIdle']:.0f} s.",
        "",
        *_table(header, rows),
        "",
        f"- Memory per URI: **{_fmt(scale['median']['rssPerURI'], 1, 1 / 1024)} KiB**"
        f" (RSS with {n} URIs less RSS with 1, over {int(n) - 1});"
        f" {_fmt(many.get('reload.rssPerAddedHost'), 1, 1 / 1024)} KiB per host the reload added.",
    ]
    if many.get("reload.maxGapMs") is not None:
        lines += [
            "",
            f"#### SIGHUP adding {settings['reloadHosts']} hosts to {n}",
            "",
            *_table(
                [
                    "longest /healthz gap, ms",
                    "it ended, ms after SIGHUP",
                    "2nd longest",
                    "gaps > 20 ms",
                    "first answer after SIGHUP, ms",
                    "gap before SIGHUP (max, p99), ms",
                    "first / all new connected, s",
                    "CPU s",
                ],
                [
                    [
                        _fmt(many.get("reload.maxGapMs")),
                        _fmt(
                            many["reload.maxGapAtMs"] + many["reload.maxGapMs"]
                            if many.get("reload.maxGapAtMs") is not None
                            else None,
                            0,
                        ),
                        _fmt(many.get("reload.secondGapMs")),
                        _fmt(many.get("reload.gapsOver20ms"), 0),
                        _fmt(many.get("reload.firstAnswerAfterHupMs")),
                        f"{_fmt(many.get('reload.baselineMaxGapMs'))},"
                        f" {_fmt(many.get('reload.baselineP99GapMs'))}",
                        f"{_fmt(many.get('reload.firstNewConnectedSeconds'), 2)} /"
                        f" {_fmt(many.get('reload.newConnectedSeconds'), 2)}",
                        _fmt(many.get("reload.cpu"), 2),
                    ]
                ],
            ),
            "",
            "Per round, longest gap (ms): "
            + _spread([_flat(r) for r in scale["runs"][n]], "reload.maxGapMs"),
        ]
    if many.get("drift.seconds") is not None:
        lines += [
            "",
            f"#### The first drift checks of the {n} hosts",
            "",
            *_table(
                ["span, s", "CPU s beyond idle", "ms per host", "longest /healthz gap, ms"],
                [
                    [
                        _fmt(many.get("drift.seconds")),
                        _fmt(many.get("drift.cpuBeyondIdle"), 2),
                        _fmt(
                            many["drift.cpuBeyondIdle"] / int(n)
                            if many.get("drift.cpuBeyondIdle") is not None
                            else None,
                            2,
                            1e3,
                        ),
                        _fmt(many.get("drift.maxGapMs")),
                    ]
                ],
            ),
            "",
            "CPU beyond idle: over the span, less the idle monitor's rate with the /healthz"
            f" probe running (one request per {settings['probePeriod'] * 1e3:.0f} ms), measured"
            " just before the SIGHUP.",
        ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
