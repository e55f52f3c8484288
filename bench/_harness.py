"""
The harness side of each part: start the consumer processes (one per
contender and run), the producers, and collect what they measured.

Every process is a fresh interpreter (C{sys.executable -m ...}), so no
contender inherits another's event implementation, imports or heap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ._bodies import READY
from ._producers import EVENTS_PER_CYCLE


@dataclass
class Settings:
    """Everything a run was asked for; recorded with the results."""

    rounds: int = 3
    duration: float = 8.0
    warmup: float = 2.0
    grace: float = 2.0
    producers: int = 2
    rate: float = 0.0
    idleSeconds: float = 60.0
    keepalive: tuple[int, int] = (5, 3)
    churnCycles: int = 2000
    churnWarmup: int = 200
    scaleSizes: tuple[int, ...] = (100, 1000)
    scaleDuration: float = 4.0
    scaleDeliveries: float = 10000.0
    pacedRate: float = 2000.0
    parts: tuple[str, ...] = ("event", "paced", "idle", "churn", "scale")
    contenders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    profile: str | None = None
    profileDir: str = "bench/results/profiles"
    profileNative: bool = False


class ConsumerProcess:
    """One consumer: a contender running one part, talking JSON lines."""

    def __init__(
        self, settings: Settings, contender: str, part: str, uri: str, tag: str, *extra: str
    ) -> None:
        self.contender = contender
        fd, self.outPath = tempfile.mkstemp(prefix=f"bench-{contender}-{part}-", suffix=".json")
        os.close(fd)
        command = [sys.executable, "-m", "bench._consumer", contender, part, uri, self.outPath]
        command += extra
        self.profile: str | None = None
        if settings.profile == contender:
            os.makedirs(settings.profileDir, exist_ok=True)
            name = f"{contender}-{part}-{tag}.speedscope.json"
            self.profile = os.path.join(settings.profileDir, name)
        self.native = settings.profileNative
        self.spy: subprocess.Popen[bytes] | None = None
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=_projectRoot(),
        )

    def awaitReady(self, timeout: float) -> None:
        """Wait until the consumer is set up (other output lines are skipped)."""
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        watchdog = threading.Timer(timeout, self.process.kill)
        watchdog.start()
        try:
            for line in stdout:
                if line.strip() == READY:
                    return
        finally:
            watchdog.cancel()
        raise RuntimeError(f"{self.contender} never got ready: {self.finish(10)}")

    def sendWindow(self, window: dict[str, int]) -> None:
        """Hand the window over; profile the consumer over it if asked to."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(window) + "\n")
        stdin.flush()
        if self.profile is not None:
            delay = (window["t0"] - time.monotonic_ns()) / 1e9
            seconds = (window["t1"] - window["t0"]) / 1e9
            threading.Timer(max(0.0, delay), self._attachProfiler, (seconds,)).start()

    def _attachProfiler(self, seconds: float) -> None:
        """py-spy over the measurement window only, idle samples included (see README)."""
        assert self.profile is not None
        command = [_pySpy(), "record", "--pid", str(self.process.pid), "--idle"]
        command += ["--duration", str(max(1, round(seconds))), "--rate", "500"]
        command += ["--format", "speedscope", "-o", self.profile]
        self.spy = subprocess.Popen(
            command + (["--native"] if self.native else []), stdout=subprocess.DEVNULL
        )

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for the consumer to exit; its results (or why there are none)."""
        if self.spy is not None:
            self.spy.wait()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        try:
            with open(self.outPath) as f:
                result: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            result = {"contender": self.contender, "error": f"exit {self.process.returncode}"}
        finally:
            os.unlink(self.outPath)
        return result


def window(settings: Settings, measure: float) -> dict[str, int]:
    """Absolute CLOCK_MONOTONIC times: warm-up ends, measurement ends, grace ends."""
    t0 = time.monotonic_ns() + int(settings.warmup * 1e9)
    t1 = t0 + int(measure * 1e9)
    return {"t0": t0, "t1": t1, "end": t1 + int(settings.grace * 1e9)}


def runProducers(uri: str, count: int, span: dict[str, int], rate: float) -> list[dict[str, int]]:
    """Run C{count} producer processes over C{span}; what each created."""
    times = [str(span["t0"]), str(span["t1"])]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._producers",
                uri,
                str(index),
                *times,
                "--rate",
                str(rate),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=_projectRoot(),
        )
        for index in range(count)
    ]
    results = []
    for process in processes:
        stdout, _ = process.communicate()
        try:
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            results.append({"created": 0, "createdTotal": 0, "errors": -1})
    return results


def eventRun(
    settings: Settings, part: str, contender: str, uri: str, tag: str, connections: int = 1
) -> dict[str, Any]:
    """
    One consumer receiving what the producers make over one window: flat out
    (part C{event}), or at a fixed total rate of events (C{paced}, and
    C{scale}, where the daemon must keep up with every connection).
    """
    consumer = ConsumerProcess(
        settings, contender, part, uri, tag, "--connections", str(connections)
    )
    consumer.awaitReady(timeout=60 + connections * 0.2)
    if part == "event":
        span = window(settings, settings.duration)
        count, rate = settings.producers, settings.rate
    elif part == "paced":
        span = window(settings, settings.duration)
        count = settings.producers
        rate = settings.pacedRate / (EVENTS_PER_CYCLE * settings.producers)
    else:
        # Scale runs at one load for every contender, paced so that the
        # daemon keeps up: deliveries/s = rate * events per cycle * connections.
        span = window(settings, settings.scaleDuration)
        count, rate = 1, settings.scaleDeliveries / (EVENTS_PER_CYCLE * connections)
    consumer.sendWindow(span)
    made = runProducers(uri, count, span, rate)
    result = consumer.finish(timeout=settings.grace + 60 + connections * 0.1)
    result["producers"] = made
    result["expected"] = EVENTS_PER_CYCLE * sum(p["created"] for p in made)
    return result


def idleRound(
    settings: Settings, contenders: Sequence[str], uri: str, tag: str
) -> list[dict[str, Any]]:
    """
    Every contender idles at once, each in its own process: idle processes
    do not compete for the CPU, and the round takes one idle period.
    """
    interval, count = settings.keepalive
    extra = ("--keepalive-interval", str(interval), "--keepalive-count", str(count))
    consumers = [ConsumerProcess(settings, c, "idle", uri, tag, *extra) for c in contenders]
    for consumer in consumers:
        consumer.awaitReady(timeout=60)
    span = window(settings, settings.idleSeconds)
    for consumer in consumers:
        consumer.sendWindow(span)
    wait = settings.warmup + settings.idleSeconds + settings.grace + 60
    return [consumer.finish(timeout=wait) for consumer in consumers]


def churnRun(settings: Settings, contender: str, uri: str, tag: str) -> dict[str, Any]:
    """One contender's open/register/close cycles."""
    extra = ("--cycles", str(settings.churnCycles), "--warmup-cycles", str(settings.churnWarmup))
    consumer = ConsumerProcess(settings, contender, "churn", uri, tag, *extra)
    return consumer.finish(timeout=60 + (settings.churnCycles + settings.churnWarmup) * 0.1)


def _pySpy() -> str:
    """py-spy from this interpreter's environment, else from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.access(beside, os.X_OK) else "py-spy"


def _projectRoot() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
