"""
The processes behind a private daemon (libvirtd here; the test suite's
RabbitMQ and Prometheus too): started from one thread that lives as long as
the test process, and followed through C{/proc}.

A daemon dies with the test process by its parent-death signal, which Linux
ties to the thread that started it, not to the process: a daemon started
from a short-lived thread would die with that thread.  So every daemon is
started from L{STARTER_THREAD}, a daemon thread of its own.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: The name of the one thread, the harness's own, that starts every daemon.
STARTER_THREAD = "libvirtd-starter"

_starts: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.Queue()
_starterLock = threading.Lock()
_starter: threading.Thread | None = None
_PR_SET_PDEATHSIG = 1


def _startDaemons() -> None:
    while True:
        start, result = _starts.get()
        try:
            result.set_result(start())
        except BaseException as e:
            result.set_exception(e)


def onStarterThread(job: Callable[[], T]) -> T:
    """
    Run C{job} on the starter thread, a daemon thread that lives as long as
    the process, and return its result (at once when called there).  Forks
    that must happen together (a daemon and its watchdog) are one job.
    """
    global _starter
    if threading.current_thread().name == STARTER_THREAD:
        return job()
    with _starterLock:
        if _starter is None:
            _starter = threading.Thread(target=_startDaemons, name=STARTER_THREAD, daemon=True)
            _starter.start()
    result: concurrent.futures.Future[T] = concurrent.futures.Future()
    _starts.put((job, result))
    return result.result()


def spawn(
    command: list[str], deathSignal: int | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """
    C{subprocess.Popen(command, **kwargs)}, from the starter thread, so
    that a parent-death signal fires when the test process dies, whichever
    thread asked for the daemon.  With C{deathSignal}, the child is sent it
    then (a signal other than SIGKILL arrives blocked, for the child to
    wait for; such a child must see for itself whether its parent died
    before it could ask).
    """
    if deathSignal is not None:
        kwargs["preexec_fn"] = _dieWithParent(os.getpid(), int(deathSignal))
    return onStarterThread(lambda: subprocess.Popen(command, **kwargs))


def _dieWithParent(parent: int, deathSignal: int) -> Callable[[], None]:
    """The C{preexec_fn} that asks for C{deathSignal} when C{parent}'s starter thread ends."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        if deathSignal != signal.SIGKILL:
            signal.pthread_sigmask(signal.SIG_BLOCK, {deathSignal})
        if libc.prctl(_PR_SET_PDEATHSIG, deathSignal, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if deathSignal == signal.SIGKILL and os.getppid() != parent:
            # The parent died before prctl: no signal will come.
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


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
