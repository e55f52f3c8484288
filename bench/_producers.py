"""
A producer process: create and destroy transient test-driver domains as fast
as it can (or at a given rate) until a deadline, naming each domain after the
CLOCK_MONOTONIC time just before its creation, so that a consumer in another
process can tell each event's delivery latency.

Run by the harness as C{python -m bench._producers URI INDEX START END}; it
prints one JSON line: how many domains it created inside the window
[START, END) (each one yields two lifecycle events), and in all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import libvirt

#: The smallest domain the test driver accepts.
DOMAIN_XML = (
    "<domain type='test'><name>{name}</name><memory unit='MiB'>8</memory>"
    "<os><type>hvm</type></os></domain>"
)

#: Lifecycle events one create/destroy cycle yields: STARTED and STOPPED.
EVENTS_PER_CYCLE = 2


def domainName(index: int, seq: int, stamp: int) -> str:
    """A domain name that carries its creation time (ns, CLOCK_MONOTONIC) last."""
    return f"bench-{index}-{seq}-{stamp}"


def stampOf(name: str) -> int:
    """The creation time carried by a L{domainName} (-1 for a foreign domain)."""
    tail = name.rpartition("-")[2]
    return int(tail) if name.startswith("bench-") and tail.isdigit() else -1


def produce(uri: str, index: int, start: int, end: int, rate: float) -> dict[str, int]:
    """
    Create and destroy domains until C{end} (ns); count those stamped inside
    [C{start}, C{end}).  C{rate} > 0 paces the cycles (per second).
    """
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(uri)
    period = int(1e9 / rate) if rate > 0 else 0
    inWindow = total = errors = seq = 0
    nextAt = time.monotonic_ns()
    try:
        while True:
            stamp = time.monotonic_ns()
            if stamp >= end:
                break
            if period:
                if stamp < nextAt:
                    time.sleep((nextAt - stamp) / 1e9)
                    continue
                nextAt += period
            seq += 1
            try:
                domain = conn.createXML(DOMAIN_XML.format(name=domainName(index, seq, stamp)), 0)
                domain.destroy()
            except libvirt.libvirtError:
                errors += 1
                continue
            total += 1
            if stamp >= start:
                inWindow += 1
    finally:
        conn.close()
    return {"created": inWindow, "createdTotal": total, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("uri")
    parser.add_argument("index", type=int)
    parser.add_argument("start", type=int, help="window start, ns on CLOCK_MONOTONIC")
    parser.add_argument("end", type=int, help="window end (and stop), ns")
    parser.add_argument("--rate", type=float, default=0.0, help="cycles/s, 0: flat out")
    args = parser.parse_args(argv)
    result = produce(args.uri, args.index, args.start, args.end, args.rate)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
