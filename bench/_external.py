"""
Watching another process from outside, for L{bench.monitor}, whose
contenders (virsh, the libvirt-monitor console script) measure nothing about
themselves: their CPU time (every thread, to the nanosecond), memory and
threads, the lines they write to a file, and the answers of an HTTP health
probe.  Linux only, like the rest of the benchmark.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

TICK = os.sysconf("SC_CLK_TCK")


def cpuClock(pid: int) -> int:
    """
    The clock id of C{pid}'s process-wide CPU clock, as glibc's
    C{clock_getcpuclockid} makes it (CPUCLOCK_SCHED): its time counts every
    thread, those that have exited too.
    """
    return ((~pid) << 3) | 2


def cpuSeconds(pid: int) -> float:
    """CPU seconds C{pid} has used so far (user and system, every thread)."""
    try:
        return time.clock_gettime(cpuClock(pid))
    except OSError:
        # Tick resolution (10 ms), but always there.
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def ticks(pid: int, thread: int | None = None) -> int:
    """
    User and system clock ticks of C{pid}, or of its thread C{thread}
    (/proc/PID/task/TID/stat): coarse, but per thread.
    """
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine() -> dict[str, Any]:
    """
    What the whole machine has done so far, to tell a noisy window: busy and
    stolen ticks of every core (/proc/stat), and each process's ticks with
    its parent (to tell the benchmark's processes from the others').
    """
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal...
    busy = sum(cpu[:3]) + sum(cpu[5:8])
    processes: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        processes[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return {"busy": busy, "steal": cpu[7], "processes": processes}


def otherLoad(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """
    Cores busy over a window, cores stolen from the VM, and cores used by
    processes that are not this one's descendants (those alive at both
    ends: a short-lived one is missed).
    """
    processes = after["processes"]
    ours = {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in processes.items() if parent in ours} - ours
        grew = bool(more)
        ours |= more
    foreign = sum(
        ticks - before["processes"][pid][1]
        for pid, (_, ticks) in processes.items()
        if pid not in ours and pid in before["processes"]
    )
    return {
        "machineCores": (after["busy"] - before["busy"]) / TICK / seconds,
        "stealCores": (after["steal"] - before["steal"]) / TICK / seconds,
        "otherCores": foreign / TICK / seconds,
    }


def status(pid: int) -> dict[str, int]:
    """RSS and its high-water mark (bytes) and threads, from /proc/PID/status."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                found[key] = int(value)
    return {"rss": found.get("VmRSS", 0), "hwm": found.get("VmHWM", 0), "threads": found["Threads"]}


def wakeups(pid: int) -> int:
    """Voluntary context switches of C{pid}'s live threads (exited ones are lost)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


class LineCounter:
    """
    Follows a file that another process appends lines to: counts the
    complete lines holding C{marker} (which a line holds at most once), and
    hands back the new lines holding any of C{keep}.
    """

    def __init__(self, path: str, marker: bytes, keep: Sequence[bytes] = ()) -> None:
        self.path = path
        self.marker = marker
        self.keep = tuple(keep)
        self.count = 0
        self._offset = 0
        self._partial = b""

    def update(self) -> list[bytes]:
        """Read what was appended since the last call; the new lines kept."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        complete, newline, partial = (self._partial + data).rpartition(b"\n")
        if not newline:
            self._partial = partial
            return []
        self._partial = partial
        self.count += complete.count(self.marker)
        if not self.keep:
            return []
        return [line for line in complete.split(b"\n") if any(word in line for word in self.keep)]


def _dieWithParent() -> None:
    """In the child before exec: SIGKILL when the parent thread goes (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def spawn(
    command: Sequence[str], stdout: IO[Any] | int, stderr: IO[Any] | int
) -> subprocess.Popen[bytes]:
    """
    Start a contender: no standard input, killed if the benchmark dies
    (call from the thread that also stops it: the main one).
    """
    return subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_dieWithParent,
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> float | None:
    """SIGTERM, then SIGKILL after C{timeout}; the seconds the process took to exit."""
    if process.poll() is not None:
        return None
    started = time.monotonic()
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None
    return time.monotonic() - started


class HealthProbe(threading.Thread):
    """
    GET /healthz every C{period} seconds on one kept-alive HTTP connection,
    recording when each answer came (CLOCK_MONOTONIC): while the reactor is
    held, no answer comes, so the longest gap between answers bounds how long
    it was held (less one period).
    """

    def __init__(self, port: int, period: float = 0.005) -> None:
        super().__init__(name="healthz-probe", daemon=True)
        self.port = port
        self.period = period
        self.answers: list[float] = []
        self.latencies: list[float] = []
        self.errors = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        nextAt = time.monotonic()
        while not self._stopping.is_set():
            sent = time.monotonic()
            try:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
            answered = time.monotonic()
            if ok:
                self.answers.append(answered)
                self.latencies.append(answered - sent)
            else:
                self.errors += 1
            nextAt = max(nextAt + self.period, answered)
            self._stopping.wait(max(0.0, nextAt - time.monotonic()))
        connection.close()

    def halt(self) -> None:
        self._stopping.set()
        self.join(130)

    def gaps(self, start: float, end: float) -> list[tuple[float, float]]:
        """C{(gap, began)} for each pair of answers whose second falls in [start, end]."""
        answers = self.answers
        return [
            (answers[i] - answers[i - 1], answers[i - 1])
            for i in range(1, len(answers))
            if start <= answers[i] <= end
        ]

    def latenciesIn(self, start: float, end: float) -> list[float]:
        return [
            latency
            for answer, latency in zip(self.answers, self.latencies, strict=True)
            if start <= answer <= end
        ]


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """
    C{GET /metrics} on loopback C{port}: the value of every sample without
    labels, by name (Prometheus' text format).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
        if response.status != 200:
            raise OSError(f"/metrics answered {response.status}")
    finally:
        connection.close()
    values: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        if "{" in name or not rest:
            continue
        try:
            values[name] = float(rest.split()[0])
        except ValueError:
            continue
    return values


def directoryBytes(path: str) -> int:
    """The bytes of the files in directory C{path} (not below it), 0 if it is gone."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


class MetricsSampler(threading.Thread):
    """
    Scrape a process's C{/metrics} every C{period} seconds and keep the
    samples C{names} asks for (short name: metric name), each with when it
    was taken (CLOCK_MONOTONIC) and, if C{directory} is given, the bytes of
    its files, read from outside.  Each scrape costs the scraped process a
    little CPU (the exposition is built in a thread of its reactor's pool).
    """

    def __init__(
        self, port: int, names: dict[str, str], period: float, directory: str | None = None
    ) -> None:
        super().__init__(name="metrics-sampler", daemon=True)
        self.port = port
        self.names = dict(names)
        self.period = period
        self.directory = directory
        self.samples: list[dict[str, float]] = []
        self.errors = 0
        self._stopping = threading.Event()

    def sample(self) -> dict[str, float] | None:
        """One scrape now (also from another thread); None if it failed."""
        try:
            values = scrape(self.port)
        except (OSError, http.client.HTTPException):
            self.errors += 1
            return None
        taken = time.monotonic()
        found = {short: values[name] for short, name in self.names.items() if name in values}
        if len(found) < len(self.names):
            self.errors += 1
            return None
        sample = {"mono": taken, **found}
        if self.directory is not None:
            sample["disk"] = float(directoryBytes(self.directory))
        return sample

    def run(self) -> None:
        nextAt = time.monotonic()
        while not self._stopping.is_set():
            sample = self.sample()
            if sample is not None:
                self.samples.append(sample)
            nextAt = max(nextAt + self.period, time.monotonic())
            self._stopping.wait(max(0.0, nextAt - time.monotonic()))

    def halt(self) -> None:
        self._stopping.set()
        self.join(30)
