"""
The processes behind a private libvirtd: started from one thread that
lives as long as the test process, and followed through C{/proc}.

The daemon dies with the test process by its parent-death signal, which
Linux ties to the thread that started it, not to the process: a daemon
started from a short-lived thread would die with that thread.  So every
daemon is started from L{STARTER_THREAD}, a daemon thread of its own.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

#: The name of the one thread, the harness's own, that starts every daemon.
STARTER_THREAD = "libvirtd-starter"

_starts: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.Queue()
_starterLock = threading.Lock()
_starter: threading.Thread | None = None


def _startDaemons() -> None:
    while True:
        start, result = _starts.get()
        try:
            result.set_result(start())
        except BaseException as e:
            result.set_exception(e)


def spawn(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """
    C{subprocess.Popen(command, **kwargs)}, from the starter thread: the
    parent-death signal that stops a daemon whose test process died is tied
    to the thread that started it, so that thread is a daemon thread that
    lives as long as the process, whichever thread asked for the daemon.
    """
    global _starter
    with _starterLock:
        if _starter is None:
            _starter = threading.Thread(target=_startDaemons, name=STARTER_THREAD, daemon=True)
            _starter.start()

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, **kwargs)

    result: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
    _starts.put((popen, result))
    return result.result()


def processState(pid: int) -> bytes:
    """The one-letter state of C{pid} in /proc (b"" if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return b""


def alive(pid: int) -> bool:
    """Whether C{pid} runs (a zombie has already stopped)."""
    return processState(pid) not in (b"", b"Z", b"X")


def processesMentioning(marker: bytes, program: bytes) -> list[int]:
    """
    Pids of live processes whose program's name contains C{program} and
    whose command line contains C{marker}.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        name = cmdline.split(b"\0", 1)[0]
        if program in name and marker in cmdline and alive(int(entry)):
            pids.append(int(entry))
    return pids


def killAndWait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL C{pid} and wait, at most C{timeout} seconds, until it is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
