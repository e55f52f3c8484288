"""
What an inventory costs at 1,000 domains: the snapshot's round trips (in a
call-pool thread), the reactor thread's part of a resync (diffing the
snapshot against the inventory), and the memory each tracked domain takes.

    .venv/bin/python -m bench.inventory [--domains 1000] [--rounds 5]

It starts a private libvirtd, defines the domains on its test driver (half
of them running), and prints a Markdown table; ``--json FILE`` writes the
figures too.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from typing import Any

import libvirt
from twisted.internet import defer, task

import libvirt_twisted
from libvirt_twisted import Inventory, deferToLibvirtPool
from libvirt_twisted._snapshot import take
from libvirt_twisted.testing import PrivateLibvirtd

FAMILIES = ("domain", "network", "storage_pool")


def define(uri: str, count: int) -> libvirt.virConnect:
    conn = libvirt.open(uri)
    for n in range(count):
        domain = conn.defineXML(
            f"<domain type='test'><name>bench-{n}</name><memory>8192</memory>"
            f"<os><type>hvm</type></os></domain>"
        )
        if n % 2:
            domain.create()
    return conn


def measureMemory(conn: libvirt.virConnect, reactor: Any) -> tuple[float, int]:
    """
    Bytes an inventory keeps per domain (its records, their names and UUIDs,
    the mappings), from tracemalloc around a snapshot and a build, once the
    snapshot is dropped.
    """
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    inventory = Inventory(reactor)
    inventory.rebuild(take(conn, FAMILIES))
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / max(1, len(inventory.domains)), len(inventory.domains)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    libvirt_twisted.install(reactor)
    results: dict[str, Any] = {"domains": args.domains}
    with PrivateLibvirtd() as daemon:
        keep = define(daemon.testURI, args.domains)  # keeps the test driver's state
        conn = libvirt.open(daemon.testURI)
        snapshots: list[float] = []
        diffs: list[float] = []
        reconciles: list[float] = []
        inventory = Inventory(reactor)
        for _ in range(args.rounds):
            started = time.perf_counter()
            snapshot = await deferToLibvirtPool(reactor, take, conn, FAMILIES)
            snapshots.append(time.perf_counter() - started)
            if not inventory.domains:
                inventory.rebuild(snapshot)
            started = time.perf_counter()
            inventory.differences(snapshot)
            diffs.append(time.perf_counter() - started)
            started = time.perf_counter()
            inventory.reconcile(snapshot)
            reconciles.append(time.perf_counter() - started)
        results["snapshotSeconds"] = statistics.median(snapshots)
        results["reactorDiffSeconds"] = statistics.median(diffs)
        results["reactorReconcileSeconds"] = statistics.median(reconciles)
        results["bytesPerDomain"], tracked = measureMemory(conn, reactor)
        assert tracked >= args.domains
        conn.close()
        keep.close()
    print(
        f"| domains | snapshot (pool thread) | drift check on the reactor | reconcile on the"
        f" reactor | memory per domain |\n|---|---|---|---|---|\n| {args.domains} |"
        f" {results['snapshotSeconds'] * 1000:.1f} ms | {results['reactorDiffSeconds'] * 1000:.2f}"
        f" ms | {results['reactorReconcileSeconds'] * 1000:.2f} ms |"
        f" {results['bytesPerDomain']:.0f} B |"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    arguments = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
