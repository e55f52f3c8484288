"""
A private RabbitMQ for tests: Debian's C{rabbitmq-server} as a child
process on free loopback ports, with an epmd, an Erlang cookie, a config and
data of its own in a temporary directory, so that a test can publish to a
real broker, kill it, restart it on the same data, or hang it.

Starting, restarting and stopping block (a start takes 5-6 s, most of it the
broker's boot; a stop about a second), and so does L{PrivateRabbitMQ.ctl}
(C{rabbitmqctl}, about a second a call): call them from test set-up,
tear-down or a pool thread (C{deferToThread}), not from a running test on
the reactor's thread.

Nothing outlives the test process: every child gets a parent-death signal,
and a watchdog kills the broker's process group, whose Erlang VM is a
grandchild that no such signal can reach.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

from twisted.trial.unittest import SkipTest

from libvirt_twisted._processes import onStarterThread, spawn

from ._http import freePort

__all__ = [
    "RABBITMQ_BIN",
    "PrivateRabbitMQ",
    "RabbitMQError",
    "requireRabbitMQ",
    "unavailable",
]

T = TypeVar("T")

#: Where Debian's package keeps the real scripts.  The C{/usr/sbin} ones are
#: wrappers that, run as root, switch to the C{rabbitmq} user and reset
#: C{HOME}, and then fail on the wrong Erlang cookie.
RABBITMQ_BIN = "/usr/lib/rabbitmq/bin"


#: Environment variables not passed on: RabbitMQ's and Erlang's own
#: settings (a developer's would leak into our node), and those that make
#: the launcher C{exec} the VM rather than run it as a child (systemd,
#: detached), which would leave no launcher to signal.
_FOREIGN = ("RABBITMQ_", "ERL_")
_FOREIGN_NAMES = ("NOTIFY_SOCKET", "RUNNING_UNDER_SYSTEMD", "detached", "USE_RABBIT_BOOT_SCRIPT")

#: Only the loopback interface, for both the broker's and C{rabbitmqctl}'s
#: distribution port; and never an epmd of the VM's own (ours runs first).
_SERVER_ERL_ARGS = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
_CTL_ERL_ARGS = "-kernel inet_dist_use_interface {127,0,0,1}"

#: The watchdog: it waits for its parent-death signal (SIGTERM, blocked
#: before C{exec} so that it cannot be missed) and then kills the broker's
#: process group.  Arguments: that group, and the test process's pid.
_WATCHDOG = """\
import os, signal, sys
group, parent = int(sys.argv[1]), int(sys.argv[2])
if os.getppid() == parent:
    signal.sigwait({signal.SIGTERM})
try:
    os.killpg(group, signal.SIGKILL)
except OSError:
    pass
"""

_running: set[PrivateRabbitMQ] = set()


class RabbitMQError(RuntimeError):
    """The private RabbitMQ could not be started, or C{rabbitmqctl} failed."""


def unavailable(binDir: str = RABBITMQ_BIN, path: str | None = None) -> str | None:
    """
    Why no private RabbitMQ can run here (no C{rabbitmq-server} in
    C{binDir}, no C{epmd} on C{path}, default C{$PATH}, or no pika), or
    L{None} if one can.
    """
    for script in ("rabbitmq-server", "rabbitmqctl"):
        if shutil.which(script, path=binDir) is None:
            return (
                f"{script} is not in {binDir}"
                " (Debian: apt-get install --no-install-recommends rabbitmq-server)"
            )
    if shutil.which("epmd", path=path) is None:
        return "epmd is not on $PATH (Debian: apt-get install erlang-base)"
    if importlib.util.find_spec("pika") is None:
        return "pika is not installed (pip install -e '.[test]')"
    return None


def requireRabbitMQ() -> None:
    """
    Skip the calling test where no private RabbitMQ can run, except under
    CI (CI=true), where a skipped test would hide a broken set-up.
    """
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        raise AssertionError(f"CI=true but no private RabbitMQ can run: {reason}")
    raise SkipTest(reason)


class PrivateRabbitMQ:
    """
    A RabbitMQ of our own: node C{ltw<random>@localhost}, AMQP, Erlang
    distribution, epmd and C{rabbitmqctl} on free loopback ports chosen by
    L{start}, all state under L{base}.  User C{guest}, password C{guest}
    (allowed from the loopback only, which is where we connect from).

    L{kill}, L{terminate} and L{pause} break the broker the ways a real one
    breaks; L{restart} brings it back on the same ports and data; L{stop},
    or the end of the process, removes every trace of it.

    @ivar node: its Erlang node name.
    @ivar base: its temporary directory (config, data, logs) while it exists.
    @ivar binDir: where the RabbitMQ scripts are (see L{RABBITMQ_BIN}).
    @ivar logPath: the output of the broker's latest launch.
    """

    def __init__(self, binDir: str = RABBITMQ_BIN) -> None:
        self.node = f"ltw{secrets.token_hex(6)}@localhost"
        self.binDir = binDir
        self.base: str | None = None
        self.logPath: str | None = None
        self._ports: _Ports | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._launcher: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._launches = 0
        self._stopped = False
        self._ctlLock = threading.Lock()

    def __repr__(self) -> str:
        port = None if self._ports is None else self._ports.amqp
        return f"<PrivateRabbitMQ {self.node} pid={self.pid} beam={self.beamPid} port={port}>"

    @property
    def port(self) -> int:
        """The loopback port it takes AMQP connections on."""
        if self._ports is None:
            raise RabbitMQError(f"{self!r} was never started")
        return self._ports.amqp

    @property
    def url(self) -> str:
        """An AMQP URL of its default virtual host, as C{guest}."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def pid(self) -> int | None:
        """The pid of its launcher (C{rabbitmq-server}, a shell) while it runs."""
        return _pidOf(self._launcher)

    @property
    def beamPid(self) -> int | None:
        """The pid of its Erlang VM (C{beam.smp}, the launcher's child) while it runs."""
        if self._launcher is None:
            return None
        group = self._launcher.pid
        for info in _processTable().values():
            if info.pgid == group and info.comm == "beam.smp" and info.alive:
                return info.pid
        return None

    @property
    def epmdPid(self) -> int | None:
        """The pid of its epmd while it runs."""
        return _pidOf(self._epmd)

    def processes(self) -> list[int]:
        """
        The pids of every process it runs: its epmd, the watchdog, the
        launcher, the VM and the VM's helpers (which start sessions of
        their own, so are found as descendants, not as group members).
        """
        table = _processTable()
        roots = [pid for pid in map(_pidOf, (self._epmd, self._watchdog)) if pid is not None]
        return sorted({*roots, *self._brokerPids(table)})

    def environment(self) -> dict[str, str]:
        """
        The environment of the broker and of C{rabbitmqctl}: ours, without
        any RabbitMQ or Erlang settings, plus everything that keeps this
        node private (ports, addresses, C{HOME} for the cookie, files).
        """
        if self.base is None or self._ports is None:
            raise RabbitMQError(f"{self!r} was never started")
        base, ports = self.base, self._ports
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(_FOREIGN) and name not in _FOREIGN_NAMES
        }
        env.update(
            HOME=os.path.join(base, "home"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(ports.amqp),
            RABBITMQ_DIST_PORT=str(ports.dist),
            ERL_EPMD_PORT=str(ports.epmd),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_CTL_DIST_PORT_MIN=str(ports.ctl),
            RABBITMQ_CTL_DIST_PORT_MAX=str(ports.ctl),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=_SERVER_ERL_ARGS,
            RABBITMQ_CTL_ERL_ARGS=_CTL_ERL_ARGS,
            RABBITMQ_CONF_ENV_FILE=os.path.join(base, "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=os.path.join(base, "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(base, "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(base, "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(base, "log"),
            RABBITMQ_PID_FILE=os.path.join(base, "rabbit.pid"),
            RABBITMQ_SCHEMA_DIR=os.path.join(base, "schema"),
            RABBITMQ_GENERATED_CONFIG_DIR=os.path.join(base, "config"),
        )
        return env

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """
        Start its epmd, then the broker, and return once an AMQP connection
        succeeds.  If a port it was given was taken in the meantime, try
        other ports, C{attempts} in all.

        @raise RabbitMQError: if it is missing, exits, or takes no AMQP
            connection within C{timeout} seconds; the message ends with
            the tail of its output.  Nothing is left behind then.
        """
        if self.base is not None or self._stopped:
            raise RabbitMQError(f"{self!r} was already started")
        reason = unavailable(self.binDir)
        if reason is not None:
            raise RabbitMQError(reason)
        self.base = tempfile.mkdtemp(prefix="libvirt-twisted-rabbitmq-")
        _running.add(self)
        try:
            self._writeFiles(self.base)
            deadline = time.monotonic() + timeout
            attempts = max(1, attempts)
            message = ""
            for attempt in range(1, attempts + 1):
                self._ports = _Ports.free()
                if not self._startEpmd(deadline, timeout):
                    # epmd exits at once, silently, when its port is taken.
                    self._endEpmd()
                    message = (
                        f"epmd exited at once, its port {self._ports.epmd} taken?"
                        f" (attempt {attempt} of {attempts})"
                    )
                    continue
                self._launch()
                if self._awaitReady(deadline, timeout):
                    return
                taken = "eaddrinuse" in self.log()
                message = f"{self._exitMessage()} (attempt {attempt} of {attempts})"
                self._endBroker(graceful=False)
                self._endEpmd()
                if not taken:
                    break
            raise RabbitMQError(message)
        except BaseException:
            self.stop()
            raise

    def restart(self, timeout: float = 30.0) -> None:
        """
        Start the broker again on the same directory and ports, after
        L{kill}, L{terminate} or a crash (if it runs, terminate it first),
        and return once an AMQP connection succeeds.  What it had confirmed
        as persisted is still there.

        @raise RabbitMQError: if it was never started or was stopped, or
            does not come back within C{timeout} seconds (with the tail of
            its output); its directory is kept then, for L{stop}.
        """
        if self.base is None or self._ports is None:
            raise RabbitMQError(f"{self!r} is not started (or was stopped)")
        self._endBroker(graceful=True)
        deadline = time.monotonic() + timeout
        if self.epmdPid is None and not self._startEpmd(deadline, timeout):
            self._endEpmd()
            raise RabbitMQError(f"epmd exited at once (its port {self._ports.epmd} taken?)")
        self._launch()
        try:
            if not self._awaitReady(deadline, timeout):
                raise RabbitMQError(self._exitMessage())
        except BaseException:
            self._endBroker(graceful=False)
            raise

    def kill(self) -> None:
        """
        Kill the broker (SIGKILL to the VM, its launcher and helpers) and
        return once they are gone, as a crash or an OOM kill would: no
        clean shut-down, nothing flushed.  Its epmd and data stay, for
        L{restart}.
        """
        self._endBroker(graceful=False)

    def terminate(self, timeout: float = 10.0) -> None:
        """
        Stop the broker cleanly (SIGTERM; SIGKILL after C{timeout} seconds)
        and return once it is gone.  Its epmd and data stay, for L{restart}.
        """
        self._endBroker(graceful=True, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop the broker (SIGTERM, then SIGKILL after C{timeout} seconds),
        then its epmd, wait until every process is gone, and remove its
        directory.  Safe to call more than once; it cannot be started again.
        """
        try:
            self._endBroker(graceful=True, timeout=timeout)
        finally:
            self._endEpmd(timeout)
            self._stopped = True
            _running.discard(self)
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)
                self.base = None

    def pause(self) -> None:
        """
        Freeze the VM (SIGSTOP), as a hung broker: connections stay open,
        the kernel still accepts new ones, and nothing answers.  Returns
        once it is stopped.
        """
        beam = self._requireBeam()
        os.kill(beam, signal.SIGSTOP)
        deadline = time.monotonic() + 5.0
        while _processTable().get(beam, _NOINFO).state not in ("T", "t"):
            if time.monotonic() > deadline:
                raise RabbitMQError(f"{self!r} did not stop on SIGSTOP")
            time.sleep(0.005)

    def resume(self) -> None:
        """Let a paused VM run on (SIGCONT)."""
        os.kill(self._requireBeam(), signal.SIGCONT)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """
        Run C{rabbitmqctl args} against this node (e.g. C{add_vhost v},
        C{list_queues name messages}) and return what it printed.  Calls
        take turns: they share one distribution port.

        @raise RabbitMQError: if it fails or runs longer than C{timeout}
            seconds, with what it printed.
        """
        if self.base is None:
            raise RabbitMQError(f"{self!r} is not started (or was stopped)")
        if self.epmdPid is None:
            # rabbitmqctl would start an epmd of its own, which outlives it.
            raise RabbitMQError(f"{self!r}: its epmd does not run")
        command = [os.path.join(self.binDir, "rabbitmqctl"), "-n", self.node, *args]
        with self._ctlLock:
            try:
                result = subprocess.run(
                    command,
                    env=self.environment(),
                    cwd=self.base,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired as e:
                raise RabbitMQError(f"rabbitmqctl {' '.join(args)}: no answer in {timeout}s") from e
        if result.returncode != 0:
            said = (result.stderr.strip() or result.stdout.strip())[-2000:]
            raise RabbitMQError(
                f"rabbitmqctl {' '.join(args)} failed with status {result.returncode}: {said}"
            )
        return result.stdout

    def queueMessages(self, name: str, vhost: str = "/") -> int:
        """
        How many messages queue C{name} of C{vhost} holds (ready and
        unacknowledged), as the broker counts them (C{rabbitmqctl}).

        @raise RabbitMQError: if there is no such queue.
        """
        output = self.ctl(
            "list_queues", "-q", "-p", vhost, "--formatter", "json", "name", "messages"
        )
        for row in json.loads(output):
            if row["name"] == name:
                return int(row["messages"])
        raise RabbitMQError(f"no queue {name!r} in virtual host {vhost!r}")

    def log(self) -> str:
        """What the broker's latest launch has written so far (stdout and stderr)."""
        if self.logPath is None:
            return ""
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _writeFiles(self, base: str) -> None:
        """Its config files: empty or C{[].}, so that no system-wide one applies."""
        os.mkdir(os.path.join(base, "home"), 0o700)
        for name, content in [
            ("rabbitmq-env.conf", ""),
            ("rabbitmq.conf", ""),
            ("advanced.config", "[].\n"),
            ("enabled_plugins", "[].\n"),
        ]:
            with open(os.path.join(base, name), "w") as f:
                f.write(content)

    def _startEpmd(self, deadline: float, timeout: float) -> bool:
        """
        Start its epmd (in the foreground: we own its pid), and return
        once it answers; L{False} if it exited first.
        """
        assert self.base is not None
        assert self._ports is not None
        port = self._ports.epmd
        with open(os.path.join(self.base, "epmd.log"), "ab") as log:
            epmd = self._epmd = onStarterThread(
                lambda: spawn(
                    ["epmd", "-port", str(port), "-address", "127.0.0.1"],
                    signal.SIGKILL,
                    env=self.environment(),
                    cwd=self.base,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        while not _epmdAnswers(port):
            if epmd.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise RabbitMQError(f"epmd did not answer on port {port} within {timeout}s")
            time.sleep(0.01)
        return True

    def _launch(self) -> None:
        """
        Start the broker in a session of its own, which L{kill} can end
        whole, and its watchdog, from one job of the starter thread.
        """
        assert self.base is not None
        self._launches += 1
        self.logPath = os.path.join(self.base, f"rabbitmq-{self._launches}.log")
        env, base, logPath = self.environment(), self.base, self.logPath
        server = os.path.join(self.binDir, "rabbitmq-server")

        def launch() -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
            with open(logPath, "ab") as log:
                launcher = spawn(
                    [server],
                    signal.SIGKILL,
                    env=env,
                    cwd=base,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                watchdog = spawn(
                    [
                        sys.executable,
                        "-I",
                        "-S",
                        "-c",
                        _WATCHDOG,
                        str(launcher.pid),
                        str(os.getpid()),
                    ],
                    deathSignal=signal.SIGTERM,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except BaseException:
                launcher.kill()
                launcher.wait()
                raise
            return launcher, watchdog

        self._launcher, self._watchdog = onStarterThread(launch)

    def _awaitReady(self, deadline: float, timeout: float) -> bool:
        """
        Whether the broker took an AMQP connection before it exited;
        raises if it did neither by C{deadline}.
        """
        assert self._launcher is not None
        assert self._ports is not None
        while True:
            if self._launcher.poll() is not None:
                return False
            if _amqpReady(self._ports.amqp):
                return True
            if time.monotonic() > deadline:
                raise RabbitMQError(
                    f"rabbitmq-server took no AMQP connection within {timeout}s:"
                    f" {self.log()[-3000:]}"
                )
            time.sleep(0.1)

    def _exitMessage(self) -> str:
        """Why the broker's latest launch failed, with the tail of its output."""
        status = None if self._launcher is None else self._launcher.poll()
        return f"rabbitmq-server exited with status {status}: {self.log()[-3000:]}"

    def _brokerPids(self, table: dict[int, _ProcessInfo]) -> set[int]:
        """
        The live pids of the broker: its launcher's process group (the
        launcher and the VM, even once the launcher is gone) and their
        descendants.
        """
        if self._launcher is None:
            return set()
        group = self._launcher.pid
        roots = [info.pid for info in table.values() if info.pgid == group]
        if self._launcher.returncode is None:
            roots.append(group)
        return {pid for pid in _descendants(table, roots) if table[pid].alive}

    def _requireBeam(self) -> int:
        beam = self.beamPid
        if beam is None:
            raise RabbitMQError(f"{self!r} does not run")
        return beam

    def _endBroker(self, graceful: bool, timeout: float = 10.0) -> None:
        """
        End the broker's processes and its watchdog, and return once all
        are gone.  If C{graceful}, SIGTERM the VM first (and let it run, if
        paused, so that it can stop) and SIGKILL what is left after
        C{timeout} seconds; otherwise SIGKILL everything at once.
        """
        launcher = self._launcher
        if launcher is not None:
            doomed = self._brokerPids(_processTable())
            if graceful and launcher.poll() is None:
                beam = self.beamPid
                target = launcher.pid if beam is None else beam
                _signal(target, signal.SIGTERM)
                _signal(target, signal.SIGCONT)
                _awaitGone(doomed, time.monotonic() + timeout)
            if launcher.poll() is None:
                # Not reaped yet, so the group id is still the launcher's.
                _signal(-launcher.pid, signal.SIGKILL)
            for pid in doomed:
                _signal(pid, signal.SIGKILL)
            launcher.wait()
            survivors = _awaitGone(doomed, time.monotonic() + 10.0)
            if survivors:
                raise RabbitMQError(f"{self!r}: pids {survivors} survive SIGKILL")
            self._launcher = None
        _end(self._watchdog)
        self._watchdog = None

    def _endEpmd(self, timeout: float = 10.0) -> None:
        """Stop its epmd (SIGTERM, SIGKILL after C{timeout} seconds)."""
        epmd = self._epmd
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            try:
                epmd.wait(timeout)
            except subprocess.TimeoutExpired:
                epmd.kill()
                epmd.wait()
        self._epmd = None


class _Ports(NamedTuple):
    """The loopback ports of one node."""

    amqp: int
    dist: int
    epmd: int
    ctl: int

    @classmethod
    def free(cls) -> _Ports:
        """Four distinct ports that were free a moment ago."""
        ports: list[int] = []
        while len(ports) < 4:
            port = freePort()
            if port not in ports:
                ports.append(port)
        return cls(*ports)


class _ProcessInfo(NamedTuple):
    """What C{/proc/PID/stat} says of a process."""

    pid: int
    ppid: int
    pgid: int
    state: str
    comm: str

    @property
    def alive(self) -> bool:
        """Whether it still runs (not a zombie waiting for its reaper)."""
        return self.state not in ("Z", "X", "x", "")


_NOINFO = _ProcessInfo(0, 0, 0, "", "")


def _processTable() -> dict[int, _ProcessInfo]:
    """Every process of the system, by pid."""
    table: dict[int, _ProcessInfo] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry)] = _ProcessInfo(
            int(entry), int(fields[1]), int(fields[2]), fields[0], comm
        )
    return table


def _descendants(table: dict[int, _ProcessInfo], roots: Iterable[int]) -> set[int]:
    """C{roots} (those in C{table}) and all their descendants."""
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _awaitGone(pids: Iterable[int], deadline: float) -> list[int]:
    """Wait until C{pids} have exited, or C{deadline}; return those that still run."""
    pids = list(pids)
    while True:
        table = _processTable()
        alive = [pid for pid in pids if table.get(pid, _NOINFO).alive]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


def _signal(pid: int, signum: int) -> None:
    """C{os.kill(pid, signum)}, for a process that may have exited already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _pidOf(process: subprocess.Popen[bytes] | None) -> int | None:
    """C{process}'s pid while it runs."""
    if process is None or process.poll() is not None:
        return None
    return process.pid


def _end(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a child of ours, and reap it."""
    if process is not None:
        if process.poll() is None:
            process.kill()
        process.wait()


def _listening(port: int) -> bool:
    """Whether something accepts TCP connections on loopback C{port}."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _epmdAnswers(port: int) -> bool:
    """
    Whether an epmd listening on loopback C{port} answers a C{NAMES_REQ}
    (with its port, then the nodes it knows): something else that took
    the port would not.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.sendall(b"\x00\x01n")
            answer = b""
            while len(answer) < 4:
                chunk = connection.recv(4 - len(answer))
                if not chunk:
                    return False
                answer += chunk
    except OSError:
        return False
    return int.from_bytes(answer, "big") == port


def _amqpReady(port: int) -> bool:
    """
    Whether the broker on C{port} completes an AMQP handshake as C{guest}:
    a plain TCP connection first, so that pika logs nothing while the
    broker boots, then a blocking pika connection with short timeouts.
    """
    if not _listening(port):
        return False
    import pika
    import pika.exceptions
    from pika.adapters.utils.connection_workflow import AMQPConnectorException

    parameters = pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=2.0,
        stack_timeout=5.0,
    )
    try:
        connection = pika.BlockingConnection(parameters)
    except (pika.exceptions.AMQPError, AMQPConnectorException, OSError):
        return False
    connection.close()
    return True


@atexit.register
def _stopAll() -> None:
    """Leave no RabbitMQ behind if a test run ends without stopping one."""
    for server in list(_running):
        server.stop()
