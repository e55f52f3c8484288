"""
The benchmark's command line: which parts, how many rounds, how long, where
the results go.  Each part gets one private libvirtd (the test harness's
L{PrivateLibvirtd}), shared by every contender and round of that part; the
order of the contenders rotates from round to round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from libvirt_twisted.testing import PrivateLibvirtd, daemonUnavailable

from . import _analysis, _harness, _plot, _report
from ._contenders import CONTENDERS
from ._harness import Settings
from ._machine import describe

PARTS = ("event", "paced", "idle", "churn", "scale")


def rotated(names: tuple[str, ...], round: int) -> list[str]:
    """The contenders in the order of round C{round}: no one always goes first."""
    shift = round % len(names)
    return list(names[shift:] + names[:shift])


def daemonConfig(part: str, settings: Settings) -> dict[str, str | int]:
    """libvirtd.conf for a part: scale needs room for every connection at once."""
    if part != "scale":
        return {}
    room = max(settings.scaleSizes) + 100
    return {
        "max_clients": max(room, 5000),
        "max_queued_clients": room,
        "max_anonymous_clients": room,
    }


def runPart(part: str, settings: Settings, log: Any) -> dict[str, Any]:
    """Every round of one part against one fresh daemon; the raw results."""
    names = settings.contenders[part]
    results: dict[str, Any] = {}
    with PrivateLibvirtd(config=daemonConfig(part, settings)) as daemon:
        uri = daemon.testURI
        for round in range(settings.rounds):
            tag = f"r{round}"
            if part == "idle":
                log(f"idle round {round + 1}: {', '.join(names)} at once")
                for result in _harness.idleRound(settings, names, uri, tag):
                    results.setdefault(result["contender"], []).append(result)
                continue
            for name in rotated(names, round):
                if part in ("event", "paced"):
                    log(f"{part} round {round + 1}: {name}")
                    result = _harness.eventRun(settings, part, name, uri, tag)
                    results.setdefault(name, []).append(result)
                elif part == "churn":
                    log(f"churn round {round + 1}: {name}")
                    results.setdefault(name, []).append(_harness.churnRun(settings, name, uri, tag))
                else:
                    for size in settings.scaleSizes:
                        log(f"scale round {round + 1}: {name}, {size} connections")
                        result = _harness.eventRun(settings, part, name, uri, f"{tag}-{size}", size)
                        results.setdefault(f"{name}@{size}", []).append(result)
    for runs in results.values():
        for result in runs:
            if "error" in result:
                log(f"  {result['contender']} failed: {result['error']}")
    return results


def parseArgs(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="libvirt_twisted against libvirt's own loop and libvirtaio.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test, under ~2 minutes")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument(
        "--contenders", help="comma-separated, default all: " + ", ".join(CONTENDERS)
    )
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float, help="event/scale measurement window, s")
    parser.add_argument("--warmup", type=float, help="s before each window")
    parser.add_argument("--producers", type=int, help="producer processes for the event part")
    parser.add_argument("--rate", type=float, help="cycles/s per producer; 0 (default): flat out")
    parser.add_argument("--paced-rate", type=float, help="paced part: events/s in all")
    parser.add_argument("--idle-seconds", type=float)
    parser.add_argument("--churn-cycles", type=int)
    parser.add_argument("--scale-sizes", help="comma-separated connection counts")
    parser.add_argument("--scale-duration", type=float, help="scale measurement window, s")
    parser.add_argument("--scale-deliveries", type=float, help="scale load: deliveries/s in all")
    parser.add_argument("--results-dir", default=os.path.join("bench", "results"))
    parser.add_argument("--json", help="default RESULTS_DIR/latest.json")
    parser.add_argument("--markdown", help="default RESULTS_DIR/latest.md")
    parser.add_argument("--plot", help="default RESULTS_DIR/latency.png")
    parser.add_argument("--profile", choices=sorted(CONTENDERS), help="run it under py-spy record")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.quick:
        settings = Settings(
            rounds=1,
            duration=3,
            warmup=1,
            grace=1.5,
            idleSeconds=10,
            churnCycles=300,
            churnWarmup=50,
            scaleSizes=(100,),
            scaleDuration=3,
        )
    for option, attribute in [
        ("rounds", "rounds"),
        ("duration", "duration"),
        ("warmup", "warmup"),
        ("producers", "producers"),
        ("rate", "rate"),
        ("paced_rate", "pacedRate"),
        ("idle_seconds", "idleSeconds"),
        ("churn_cycles", "churnCycles"),
        ("scale_duration", "scaleDuration"),
        ("scale_deliveries", "scaleDeliveries"),
    ]:
        if getattr(args, option) is not None:
            setattr(settings, attribute, getattr(args, option))
    if args.scale_sizes:
        settings.scaleSizes = tuple(int(n) for n in args.scale_sizes.split(","))
    settings.parts = tuple(p for p in PARTS if p in args.parts.split(","))
    chosen = tuple(args.contenders.split(",")) if args.contenders else tuple(CONTENDERS)
    unknown = set(chosen) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    settings.contenders = {
        part: tuple(c for c in chosen if part in CONTENDERS[c].parts) for part in settings.parts
    }
    settings.profile = args.profile
    settings.profileNative = args.native
    settings.profileDir = os.path.join(args.results_dir, "profiles")
    return args, settings


def main(argv: list[str] | None = None) -> int:
    args, settings = parseArgs(argv)
    reason = daemonUnavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    raw = {part: runPart(part, settings, log) for part in settings.parts}
    report = _analysis.build(raw, settings, describe(), time.monotonic() - started)
    os.makedirs(args.results_dir, exist_ok=True)
    jsonPath = args.json or os.path.join(args.results_dir, "latest.json")
    markdownPath = args.markdown or os.path.join(args.results_dir, "latest.md")
    plotPath = args.plot or os.path.join(args.results_dir, "latency.png")
    with open(jsonPath, "w") as f:
        json.dump(report, f, indent=1)
    markdown = _report.markdown(report)
    with open(markdownPath, "w") as f:
        f.write(markdown)
    plotted: dict[str, Any] = {part: raw[part] for part in ("event", "paced") if part in raw}
    if plotted:
        _plot.plot(plotted, plotPath)
    print(markdown)
    log(f"wrote {jsonPath}, {markdownPath}" + (f", {plotPath}" if plotted else ""))
    return 0
