"""
From raw consumer results to figures: per-round summaries, medians over the
rounds, and the issue's targets as ratios from the same run, all in the JSON
document that the markdown report is made from.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from ._harness import Settings

Summary = dict[str, Any]
RESOURCE_KEYS = ("fds", "rss", "gcObjects", "threads")

#: The contender the targets measure, and the ones it is measured against.
OURS = ("twisted-epoll", "twisted-asyncio")
FLOOR = "floor"
TODAY = ("libvirtaio", "thread-callFromThread")


def percentile(values: Sequence[int], q: float) -> float | None:
    """The nearest-rank C{q}-th percentile of C{values} (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def _per(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def eventSummary(run: dict[str, Any]) -> Summary:
    """One event-path (or scale) run in figures."""
    if "error" in run:
        return {"error": run["error"]}
    window, counters = run["window"], run["counters"]
    received = run["received"]
    latencies = run.get("latenciesNs", [])
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    expected = run["expected"]
    perConnection = run["perConnection"]
    return {
        "eventsPerSecond": _per(received, window["wall"]),
        "cpuPerEventUs": _per(window["cpu"] * 1e6, received),
        "userPerEventUs": _per(window["user"] * 1e6, received),
        "sysPerEventUs": _per(window["sys"] * 1e6, received),
        "wakeupsPerEvent": _per(window["nvcsw"], received),
        "involuntaryPerEvent": _per(window["nivcsw"], received),
        "timersFiredPerEvent": _per(counters.get("fired", 0), received) if counters else None,
        "watchCallsPerEvent": _per(counters.get("dispatched", 0), received) if counters else None,
        "p50Us": p50 / 1e3 if p50 is not None else None,
        "p99Us": p99 / 1e3 if p99 is not None else None,
        "latencySamples": len(latencies),
        "delivered": run["delivered"],
        "expected": expected,
        "deliveredRatio": _per(run["delivered"], expected),
        "everyConnectionRatio": _per(perConnection["min"], expected),
        "openSeconds": run["openSeconds"],
        "registerSeconds": run["registerSeconds"],
        "rssPerConnectionKiB": run["rssPerConnection"] / 1024,
        "producerErrors": sum(p["errors"] for p in run["producers"]),
        "loopCountersPerEvent": {k: _per(v, received) for k, v in counters.items()},
    }


def idleSummary(run: dict[str, Any]) -> Summary:
    """One idle run, per minute."""
    if "error" in run:
        return {"error": run["error"]}
    window, counters = run["window"], run["counters"]
    minutes = window["wall"] / 60
    out = {
        "cpuSecondsPerMinute": window["cpu"] / minutes,
        "wakeupsPerMinute": window["nvcsw"] / minutes,
        "involuntaryPerMinute": window["nivcsw"] / minutes,
    }
    if "fired" in counters:
        out["timersFiredPerMinute"] = counters["fired"] / minutes
        out["watchCallsPerMinute"] = counters["dispatched"] / minutes
    return out


def churnSummary(run: dict[str, Any]) -> Summary:
    """One churn run: growth after drain, and how long a cycle took."""
    if "error" in run:
        return {"error": run["error"]}
    growth = run["growth"]
    out: Summary = {"msPerCycle": run["secondsPerCycle"] * 1e3, "cycles": run["cycles"]}
    out.update({f"growth.{k}": v for k, v in growth.items()})
    out["secondHalf.rss"] = run["secondHalfGrowth"]["rss"]
    out["after"] = run["after"]
    return out


def medians(rounds: list[Summary]) -> Summary:
    """The median of every numeric figure over the rounds that did not fail."""
    good = [r for r in rounds if "error" not in r]
    keys = [k for k in (good[0] if good else {}) if isinstance(good[0][k], int | float)]
    out: Summary = {}
    for key in keys:
        values = [r[key] for r in good if isinstance(r.get(key), int | float)]
        out[key] = statistics.median(values) if values else None
    out["rounds"] = len(good)
    out["failed"] = len(rounds) - len(good)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _check(what: str, value: float | None, limit: float, atMost: bool = True) -> Summary:
    holds = value is not None and (value <= limit if atMost else value == limit)
    return {"target": what, "value": value, "limit": limit, "holds": holds}


def eventTargets(label: str, event: dict[str, Summary]) -> list[Summary]:
    """CPU per event and p99 latency of ours against the floor and today's ways."""
    checks = []
    floor = event.get(FLOOR, {})
    for ours in OURS:
        mine = event.get(ours)
        if mine is None:
            continue
        cpu = mine.get("cpuPerEventUs")
        checks.append(
            _check(
                f"{label}: {ours} CPU/event vs floor", _ratio(cpu, floor.get("cpuPerEventUs")), 1.2
            )
        )
        for other in TODAY:
            theirs = event.get(other, {}).get("cpuPerEventUs")
            checks.append(
                _check(f"{label}: {ours} CPU/event vs {other}", _ratio(cpu, theirs), 0.65)
            )
        p99 = _ratio(mine.get("p99Us"), floor.get("p99Us"))
        checks.append(_check(f"{label}: {ours} p99 latency vs floor", p99, 1.2))
    return checks


def targets(med: dict[str, dict[str, Summary]]) -> list[Summary]:
    """The issue's targets, each a ratio or figure from this run, and whether it holds."""
    checks: list[Summary] = []
    for part, label in (("event", "flat out"), ("paced", "paced")):
        checks += eventTargets(label, med.get(part, {}))
    idle, churn = med.get("idle", {}), med.get("churn", {})
    for ours in OURS:
        if ours in idle and FLOOR in idle:
            extra = idle[ours]["wakeupsPerMinute"] - idle[FLOOR]["wakeupsPerMinute"]
            checks.append(_check(f"idle: {ours} wake-ups/min beyond the floor's", extra, 1.0))
        if ours in churn:
            keys = ("fds", "gcObjects", "loop.watches", "loop.timers", "loop.unfreed")
            growth = sum(max(0, churn[ours].get(f"growth.{k}") or 0) for k in keys)
            what = f"churn: {ours} growth of fds, objects, watches, timers, unfreed"
            checks.append(_check(what, growth, 0, atMost=False))
    return checks


def build(
    raw: dict[str, dict[str, list[dict[str, Any]]]],
    settings: Settings,
    machine: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    """The JSON document: settings, machine, per-round summaries and medians, targets."""
    summarize: dict[str, Callable[[dict[str, Any]], Summary]] = {
        "event": eventSummary,
        "paced": eventSummary,
        "scale": eventSummary,
        "idle": idleSummary,
        "churn": churnSummary,
    }
    parts: dict[str, Any] = {}
    for part, byContender in raw.items():
        parts[part] = {}
        for name, runs in byContender.items():
            rounds = [summarize[part](run) for run in runs]
            parts[part][name] = {"median": medians(rounds), "rounds": rounds}
    med = {part: {n: v["median"] for n, v in p.items()} for part, p in parts.items()}
    return {
        "settings": dataclasses.asdict(settings),
        "machine": machine,
        "elapsedSeconds": elapsed,
        "parts": parts,
        "targets": targets(med),
    }
