"""
What a consumer process measures about itself: CPU time and context switches
(getrusage covers every thread), and the resources that must not grow under
churn (fds, RSS, Python objects).
"""

from __future__ import annotations

import gc
import os
import resource
import threading
import time
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def usage() -> dict[str, float]:
    """This process's CPU seconds and context switches so far, and the time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.monotonic(),
        "user": r.ru_utime,
        "sys": r.ru_stime,
        "cpu": r.ru_utime + r.ru_stime,
        "nvcsw": r.ru_nvcsw,
        "nivcsw": r.ru_nivcsw,
    }


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """C{after - before}, key by key (keys missing from C{before} count from 0)."""
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, int | float)}


def rss() -> int:
    """Resident set size in bytes (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def openFds() -> int:
    """How many fds this process has open (/proc/self/fd, less the one listing it)."""
    return len(os.listdir("/proc/self/fd")) - 1


def resources() -> dict[str, int]:
    """fds, RSS, threads and (after a full collection) gc-tracked objects."""
    gc.collect()
    return {
        "fds": openFds(),
        "rss": rss(),
        "threads": threading.active_count(),
        "gcObjects": len(gc.get_objects()),
    }


def raiseFdLimit() -> None:
    """Allow as many fds as the hard limit does: 1,000 connections need more than 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
