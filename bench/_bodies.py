"""
What each consumer process does, one body per benchmark part, written once
for every contender (see L{bench._contenders}).  A body fills C{out} with its
measurements; the consumer process writes it out as JSON.

Windows are absolute CLOCK_MONOTONIC times, the same in every process of the
machine: the harness hands them over once the consumer is ready, so that the
consumer's measurement window and the producers' count of what they created
cover the same span.
"""

from __future__ import annotations

import json
import sys
import time
from array import array
from collections.abc import Iterator
from typing import Any

import libvirt

from ._contenders import DRAIN, Body, Contender, Step
from ._probes import delta, resources, rss, usage
from ._producers import stampOf

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
STARTED = libvirt.VIR_DOMAIN_EVENT_STARTED

#: What a consumer prints once it is set up and waits for its window.
READY = "READY"


class Recorder:
    """
    The application's handler: counts every delivery, and for events stamped
    inside the window [start, end) counts them per connection (the opaque is
    the connection's index) and keeps the latency of STARTED events seen by
    connection 0, the event's creation stamp to now.
    """

    def __init__(self, connections: int = 1) -> None:
        self.start = self.end = 0
        self.received = 0
        self.perConnection = [0] * connections
        self.latencies = array("q")

    def handler(self, conn: Any, domain: Any, event: int, detail: int, opaque: Any) -> None:
        now = time.monotonic_ns()
        self.received += 1
        stamp = stampOf(domain.name())
        if self.start <= stamp < self.end:
            self.perConnection[opaque] += 1
            if event == STARTED and opaque == 0:
                self.latencies.append(now - stamp)


def until(deadline: int) -> Iterator[Step]:
    """Let the loop run until C{deadline} (ns on CLOCK_MONOTONIC)."""
    while (left := deadline - time.monotonic_ns()) > 0:
        yield left / 1e9


def handshake() -> dict[str, int]:
    """Tell the harness we are ready; read the window it hands over."""
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        raise RuntimeError("the harness went away before handing over a window")
    window: dict[str, int] = json.loads(line)
    return window


def events(contender: Contender, uri: str, out: dict[str, Any], connections: int = 1) -> Body:
    """
    Event path and scale: open C{connections} connections, register for
    lifecycle events on each, then measure CPU and deliveries over the window
    while the producers run.
    """
    recorder = Recorder(connections)
    rssBefore = rss()
    yield from contender.listen(uri, recorder.handler, connections, out)
    out["rssPerConnection"] = (rss() - rssBefore) / connections
    window = handshake()
    recorder.start, recorder.end = window["t0"], window["t1"]
    yield from until(window["t0"])
    before, countersBefore, receivedBefore = usage(), contender.counters(), recorder.received
    yield from until(window["t1"])
    after, countersAfter, receivedAfter = usage(), contender.counters(), recorder.received
    yield from until(window["end"])
    out["window"] = delta(before, after)
    out["counters"] = delta(countersBefore, countersAfter)
    out["received"] = receivedAfter - receivedBefore
    out["perConnection"] = {
        "min": min(recorder.perConnection),
        "max": max(recorder.perConnection),
        "sum": sum(recorder.perConnection),
    }
    out["delivered"] = recorder.perConnection[0]
    out["latenciesNs"] = recorder.latencies.tolist()
    yield from contender.unlisten()
    yield DRAIN


def idle(contender: Contender, uri: str, out: dict[str, Any], keepalive: tuple[int, int]) -> Body:
    """One idle remote connection with keepalive on: what does waiting cost?"""
    conn = libvirt.open(uri)
    conn.setKeepAlive(*keepalive)
    registration = conn.domainEventRegisterAny(None, LIFECYCLE, contender.deliver(_ignore), 0)
    window = handshake()
    yield from until(window["t0"])
    before, countersBefore = usage(), contender.counters()
    yield from until(window["t1"])
    out["window"] = delta(before, usage())
    out["counters"] = delta(countersBefore, contender.counters())
    conn.domainEventDeregisterAny(registration)
    conn.close()
    yield DRAIN


def churn(contender: Contender, uri: str, out: dict[str, Any], cycles: int, warmup: int) -> Body:
    """
    Open, register, close, C{cycles} times: what is left after a drain must
    be what was there before (measured after C{warmup} cycles, so that caches
    and lazily created objects are already there).
    """
    handler = contender.deliver(_ignore)

    def cycle() -> None:
        conn = libvirt.open(uri)
        callback = conn.domainEventRegisterAny(None, LIFECYCLE, handler, 0)
        conn.domainEventDeregisterAny(callback)
        conn.close()

    for _ in range(warmup):
        cycle()
        yield 0.0
    yield DRAIN
    before = {**resources(), **_loopCounts(contender)}
    started = time.monotonic()
    for done in range(1, cycles + 1):
        cycle()
        yield 0.0
        if done == cycles // 2:
            # Growth over the second half tells a plateau from a leak.
            yield DRAIN
            middle = {**resources(), **_loopCounts(contender)}
    elapsed = time.monotonic() - started
    yield DRAIN
    yield DRAIN
    after = {**resources(), **_loopCounts(contender)}
    out["cycles"] = cycles
    out["secondsPerCycle"] = elapsed / cycles
    out["before"] = before
    out["after"] = after
    out["growth"] = delta(before, after)
    out["secondHalfGrowth"] = delta(middle, after)


def _loopCounts(contender: Contender) -> dict[str, int]:
    """What the loop holds (live watches, timers...), apart from running totals."""
    running = {"fired", "dispatched"}
    return {f"loop.{k}": v for k, v in contender.counters().items() if k not in running}


def _ignore(conn: Any, domain: Any, event: int, detail: int, opaque: Any) -> None:
    """A handler for parts that do not count events."""
