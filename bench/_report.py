"""
The markdown report: the machine, the settings, one table per part and the
targets, all from the JSON document (L{bench._analysis.build}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._analysis import FLOOR
from ._machine import summary

Row = list[str]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _times(a: float | None, b: float | None) -> str:
    return _fmt(a / b, 2) if a is not None and b else "-"


def _table(header: Sequence[str], rows: list[Row]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _rounds(m: dict[str, Any]) -> str:
    return f"{m['rounds']}" + (f" ({m['failed']} failed)" if m["failed"] else "")


def eventSection(part: dict[str, Any], title: str) -> list[str]:
    floor = part.get(FLOOR, {}).get("median", {})
    rows = []
    for name, data in part.items():
        m = data["median"]
        rows.append(
            [
                name,
                _fmt(m.get("eventsPerSecond"), 0),
                _fmt(m.get("cpuPerEventUs")),
                _times(m.get("cpuPerEventUs"), floor.get("cpuPerEventUs")),
                _fmt(m.get("p50Us"), 0),
                _fmt(m.get("p99Us"), 0),
                _times(m.get("p99Us"), floor.get("p99Us")),
                _fmt(m.get("deliveredRatio"), 4),
                _fmt(m.get("wakeupsPerEvent"), 2),
                _rounds(m),
            ]
        )
    header = ["contender", "events/s", "CPU µs/event", "x floor", "p50 µs", "p99 µs"]
    header += ["p99 x floor", "delivered/expected", "wake-ups/event", "rounds"]
    return ["", f"### Event path, {title}", "", *_table(header, rows)]


def idleSection(part: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    keys = ["cpuSecondsPerMinute", "wakeupsPerMinute", "involuntaryPerMinute"]
    keys += ["timersFiredPerMinute", "watchCallsPerMinute"]
    rows = [
        [name, *(_fmt(d["median"].get(k), 4 if k.startswith("cpu") else 1) for k in keys)]
        for name, d in part.items()
    ]
    header = ["contender", "CPU s/min", "wake-ups/min", "involuntary/min"]
    header += ["libvirt timer calls/min", "libvirt watch calls/min"]
    interval, count = settings["keepalive"]
    title = f"### Idle: one connection, keepalive interval {interval} s, count {count}"
    return ["", f"{title}, {settings['idleSeconds']:g} s window", "", *_table(header, rows)]


def churnSection(part: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    keys = ["fds", "gcObjects", "threads", "loop.watches", "loop.timers", "loop.unfreed"]
    keys += ["loop.callbacks", "rss"]
    rows = [
        [name, _fmt(d["median"].get("msPerCycle"), 2)]
        + [_fmt(d["median"].get(f"growth.{k}"), 0) for k in keys]
        + [_fmt(d["median"].get("secondHalf.rss"), 0)]
        for name, d in part.items()
    ]
    header = ["contender", "ms/cycle", *keys[:-1], "RSS bytes", "RSS, 2nd half"]
    title = f"### Churn: {settings['churnCycles']} cycles of open, register, close"
    return ["", f"{title} (growth after drain)", "", *_table(header, rows)]


def scaleSection(part: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    rows = []
    for key, d in part.items():
        name, _, size = key.partition("@")
        m = d["median"]
        rows.append(
            [
                name,
                size,
                _fmt(m.get("openSeconds"), 2),
                _fmt(m.get("registerSeconds"), 2),
                _fmt(m.get("rssPerConnectionKiB")),
                _fmt(m.get("eventsPerSecond"), 0),
                _fmt(m.get("cpuPerEventUs"), 2),
                _fmt(m.get("everyConnectionRatio"), 4),
                _fmt(m.get("p50Us"), 0),
                _fmt(m.get("p99Us"), 0),
            ]
        )
    header = ["contender", "N", "open all, s", "register all, s", "RSS KiB/conn"]
    header += ["deliveries/s", "CPU µs/delivery", "min delivered/expected per conn"]
    header += ["p50 µs (conn 0)", "p99 µs (conn 0)"]
    load = f"{settings['scaleDeliveries']:g} deliveries/s in all"
    title = f"### Scale: N connections in one process, each receiving every event ({load})"
    return ["", title, "", *_table(header, rows)]


def targetSection(targets: list[dict[str, Any]]) -> list[str]:
    rows = [
        [t["target"], _fmt(t["value"], 2), _fmt(t["limit"], 2), "yes" if t["holds"] else "**no**"]
        for t in targets
    ]
    title = "### Targets (from this run's medians)"
    return ["", title, "", *_table(["target", "value", "limit", "holds"], rows)]


def markdown(report: dict[str, Any]) -> str:
    """The whole report as markdown."""
    s, parts = report["settings"], report["parts"]
    pace = f"at {s['rate']:g} cycles/s each" if s["rate"] else "flat out"
    out = [
        "## Benchmark results",
        "",
        f"Machine: {summary(report['machine'])}.",
        "",
        f"{s['rounds']} round(s), medians quoted. Event path: {s['duration']:g} s window after"
        f" {s['warmup']:g} s warm-up, {s['producers']} producer process(es)."
        f" Whole run {report['elapsedSeconds']:.0f} s.",
    ]
    if "event" in parts:
        out += eventSection(parts["event"], f"producers {pace}")
    if "paced" in parts:
        rate = f"paced at {s['pacedRate']:g} events/s in all"
        out += eventSection(parts["paced"], f"producers {rate}")
    if "idle" in parts:
        out += idleSection(parts["idle"], s)
    if "churn" in parts:
        out += churnSection(parts["churn"], s)
    if "scale" in parts:
        out += scaleSection(parts["scale"], s)
    if report["targets"]:
        out += targetSection(report["targets"])
    return "\n".join(out) + "\n"
