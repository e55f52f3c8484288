"""
A consumer process: one contender, one benchmark part, results as JSON.

Run by the harness as C{python -m bench._consumer CONTENDER PART URI OUT
[options]}.  libvirt accepts one event implementation per process, hence
one process per contender and run.  It exits with C{os._exit} once the
results are written: libvirt's own loop thread, if any, never returns.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

from . import _bodies
from ._contenders import CONTENDERS, Body, Contender
from ._probes import raiseFdLimit


def body(contender: Contender, args: argparse.Namespace, out: dict[str, Any]) -> Body:
    """The body for the part asked for."""
    if args.part in ("event", "paced"):
        return _bodies.events(contender, args.uri, out)
    if args.part == "scale":
        return _bodies.events(contender, args.uri, out, connections=args.connections)
    if args.part == "idle":
        return _bodies.idle(
            contender, args.uri, out, (args.keepalive_interval, args.keepalive_count)
        )
    if args.part == "churn":
        return _bodies.churn(contender, args.uri, out, args.cycles, args.warmup_cycles)
    raise ValueError(f"unknown part {args.part!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("part", choices=["event", "paced", "idle", "churn", "scale"])
    parser.add_argument("uri")
    parser.add_argument("out", help="where to write the results (JSON)")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--warmup-cycles", type=int, default=200)
    parser.add_argument("--keepalive-interval", type=int, default=5)
    parser.add_argument("--keepalive-count", type=int, default=3)
    args = parser.parse_args(argv)
    raiseFdLimit()
    contender = CONTENDERS[args.contender]()
    out: dict[str, Any] = {"contender": contender.name, "part": args.part, "pid": os.getpid()}
    try:
        contender.install()
        contender.run(body(contender, args, out))
    except BaseException:
        out["error"] = traceback.format_exc()
    with open(args.out, "w") as f:
        json.dump(out, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
