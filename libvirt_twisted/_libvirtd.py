"""
A private libvirtd for integration tests: L{PrivateLibvirtd}.

It starts libvirtd in session mode as an unprivileged user, with all of its
state in one temporary directory, and exposes URIs for its test driver
(events over a real unix socket) and its QEMU driver.  It can kill, pause,
resume and restart the daemon on the same socket for fault tests, and on
L{PrivateLibvirtd.stop} it stops the daemon and every QEMU process the
daemon started, and removes the directory.

It blocks while the daemon starts or stops (a fraction of a second): call it
from test set-up and tear-down, not from a busy reactor.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote

from ._processes import killAndWait, processesMentioning, processState, spawn

_running: set[PrivateLibvirtd] = set()


class DaemonError(RuntimeError):
    """The private libvirtd could not be started or stopped."""


def daemonUnavailable() -> str | None:
    """
    Why no private libvirtd can run here, or C{None} if one can.
    """
    if shutil.which("libvirtd", path=_PATH) is None:
        return (
            "libvirtd is not installed (Debian: apt-get install libvirt-daemon"
            " libvirt-daemon-driver-qemu)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_DEFAULT_ROOT_USER)
        except KeyError:
            return f"running as root needs the unprivileged user {_DEFAULT_ROOT_USER!r}"
    return None


_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEFAULT_ROOT_USER = "nobody"


class PrivateLibvirtd:
    """
    A libvirtd of our own, in session mode, for tests.

    As root the daemon runs as C{user} (default C{nobody}): a root libvirtd
    would run in system mode and touch the host.  As any other user it runs as
    that user.

    @param user: the user the daemon runs as when the tests run as root
        (C{nobody} by default); never root itself.
    @param cacheDir: where the daemon keeps its QEMU capabilities cache;
        sharing one between daemons saves the first QEMU start of each about
        two seconds.  Default: inside the daemon's own directory.
    @param config: settings for the daemon's C{libvirtd.conf}, e.g.
        C{{"keepalive_interval": 1}}; strings are quoted, ints are not.
    @ivar base: the daemon's own temporary directory, which L{stop} removes.
    @ivar socketPath: the daemon's unix socket, which L{testURI} and
        L{qemuURI} name.
    @ivar adminSocketPath: the daemon's admin socket (see L{virtAdmin}).
    @ivar logPath: the daemon's log file (see L{log}).
    @raise DaemonError: there is no such user, or it is root.
    """

    def __init__(
        self,
        user: str | None = None,
        cacheDir: str | None = None,
        config: dict[str, str | int] | None = None,
    ) -> None:
        self._uid, self._gid = _daemonIds(user)
        configText = _configText(config or {})
        self.base = tempfile.mkdtemp(prefix="libvirt-twisted-")
        os.chmod(self.base, 0o700)
        self._env = {"PATH": _PATH, "HOME": self.base, "LANG": "C"}
        for var, sub in _XDG.items():
            path = os.path.join(self.base, sub)
            os.mkdir(path, 0o700)
            self._env[var] = path
        if configText:
            configDir = os.path.join(self._env["XDG_CONFIG_HOME"], "libvirt")
            os.mkdir(configDir, 0o700)
            with open(os.path.join(configDir, "libvirtd.conf"), "w") as f:
                f.write(configText)
        _chownTree(self.base, self._uid, self._gid)
        if cacheDir is not None:
            self._env["XDG_CACHE_HOME"] = cacheDir
            _chownTree(cacheDir, self._uid, self._gid)
        runtime = os.path.join(self._env["XDG_RUNTIME_DIR"], "libvirt")
        self.socketPath = os.path.join(runtime, "libvirt-sock")
        self.adminSocketPath = os.path.join(runtime, "libvirt-admin-sock")
        self.logPath = os.path.join(self.base, "libvirtd.log")
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<PrivateLibvirtd pid={self.pid} socket={self.socketPath!r}>"

    @property
    def testURI(self) -> str:
        """The daemon's test driver, reached over its unix socket."""
        return f"test+unix:///default?socket={quote(self.socketPath)}"

    @property
    def qemuURI(self) -> str:
        """The daemon's QEMU driver (session mode, TCG without /dev/kvm)."""
        return f"qemu+unix:///session?socket={quote(self.socketPath)}"

    @property
    def pid(self) -> int | None:
        """The daemon's pid while it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        """
        Start the daemon and return once its socket accepts connections.

        @param timeout: seconds to wait for it to listen, after which it is
            killed.
        @raise DaemonError: it is already running, exited, or did not listen
            in time.
        """
        if self.pid is not None:
            raise DaemonError(f"{self!r} is already running")
        command = ["libvirtd"]
        setpriv = shutil.which("setpriv", path=_PATH)
        if setpriv is not None:
            # The daemon dies with the test process, whatever kills it.
            command = [setpriv, "--pdeathsig", "SIGKILL", *command]
        with open(self.logPath, "ab") as log:
            self._process = spawn(
                command,
                env=self._env,
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._uid if os.geteuid() != self._uid else None,
                group=self._gid if os.geteuid() != self._uid else None,
                extra_groups=[] if os.geteuid() != self._uid else None,
            )
        _running.add(self)
        deadline = time.monotonic() + timeout
        while not _accepts(self.socketPath):
            if self._process.poll() is not None:
                raise DaemonError(
                    f"libvirtd exited with status {self._process.returncode}: {self.log()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise DaemonError(f"libvirtd did not listen within {timeout}s")
            time.sleep(0.01)

    def kill(self, signum: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """
        Send C{signum} to the daemon and wait until it has exited.  QEMU
        processes survive it, as they would a real daemon's crash.  A daemon
        that is not running is left alone.

        @param signum: the signal; a paused daemon is resumed to act on any
            but C{SIGKILL}.
        @param timeout: seconds to wait for it to exit, after which it is
            sent C{SIGKILL}.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        if signum != signal.SIGKILL:
            # A paused daemon must run to act on any other signal.  SIGKILL
            # needs no SIGCONT, and sending one would let a paused daemon
            # answer a pending request in the instant before it dies.
            os.kill(process.pid, signal.SIGCONT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self, timeout: float = 10.0) -> None:
        """
        Freeze the daemon (SIGSTOP) and return once it is stopped: clients
        see a peer that never answers.

        @param timeout: seconds to wait for it to stop.
        @raise DaemonError: it is not running, or did not stop in time.
        """
        self._signal(signal.SIGSTOP)
        self._awaitState(lambda state: state == b"T", "stopped", timeout)

    def resume(self, timeout: float = 10.0) -> None:
        """
        Thaw a paused daemon (SIGCONT) and return once it runs again.

        @param timeout: seconds to wait for it to run.
        @raise DaemonError: it is not running, or did not run again in time.
        """
        self._signal(signal.SIGCONT)
        self._awaitState(lambda state: state != b"T", "running", timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """
        Kill the daemon and start a new one on the same socket.

        @param timeout: as L{start} takes it.
        """
        self.kill()
        self.start(timeout)

    def stop(self) -> None:
        """
        Stop the daemon (SIGTERM, then SIGKILL), kill every QEMU process it
        started, and remove its directory.  Safe to call more than once.
        """
        self.kill(signal.SIGTERM)
        for pid in self.qemuProcesses():
            killAndWait(pid)
        _running.discard(self)
        shutil.rmtree(self.base, ignore_errors=True)

    def qemuProcesses(self) -> list[int]:
        """Pids of live QEMU processes that this daemon started."""
        return processesMentioning(self.base.encode(), b"qemu")

    def virtAdmin(self, *args: str, timeout: float = 30.0) -> str:
        """
        Run C{virt-admin} against this daemon's admin socket, as the daemon's
        user (the admin socket accepts no other), and return its output.

        @param args: C{virt-admin}'s arguments, e.g. C{("srv-list",)}.
        @param timeout: seconds it may run.
        @return: what it wrote on its standard output.
        @raise DaemonError: it failed.
        """
        uri = f"libvirtd:///session?socket={quote(self.adminSocketPath)}"
        return self._runAsDaemonUser(["virt-admin", "-c", uri, *args], timeout)

    def log(self) -> str:
        """Everything the daemon has written so far."""
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self) -> PrivateLibvirtd:
        """L{start} the daemon, for a C{with} block."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """
        L{stop} the daemon, whatever ended the C{with} block.

        @param exc: the exception that ended it, if any.
        """
        self.stop()

    def _signal(self, signum: int) -> None:
        pid = self.pid
        if pid is None:
            raise DaemonError(f"{self!r} is not running")
        os.kill(pid, signum)

    def _awaitState(self, wanted: Callable[[bytes], bool], name: str, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not wanted(processState(self._process.pid)):
            if time.monotonic() > deadline:
                raise DaemonError(f"libvirtd was not {name} after {timeout}s")
            time.sleep(0.001)

    def _runAsDaemonUser(self, command: Sequence[str], timeout: float) -> str:
        switch = os.geteuid() != self._uid
        result = subprocess.run(
            command,
            env=self._env,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self._uid if switch else None,
            group=self._gid if switch else None,
            extra_groups=[] if switch else None,
        )
        if result.returncode != 0:
            raise DaemonError(
                f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout


_XDG = {
    "XDG_RUNTIME_DIR": "runtime",
    "XDG_CONFIG_HOME": "config",
    "XDG_CACHE_HOME": "cache",
    "XDG_DATA_HOME": "data",
}


def _daemonIds(user: str | None) -> tuple[int, int]:
    if user is None and os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam(user or _DEFAULT_ROOT_USER)
    except KeyError:
        raise DaemonError(
            f"no such user to run libvirtd as: {user or _DEFAULT_ROOT_USER!r}"
        ) from None
    if entry.pw_uid == 0:
        raise DaemonError("libvirtd must not run as root here: it would run in system mode")
    return entry.pw_uid, entry.pw_gid


def _configText(config: dict[str, str | int]) -> str:
    """libvirtd.conf lines for C{config}; raises on what is not a setting."""
    lines = []
    for key, value in config.items():
        if not (isinstance(key, str) and key.replace("_", "").isalnum()):
            raise ValueError(f"not a libvirtd.conf setting: {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"libvirtd.conf {key} must be an int or a str, not {value!r}")
        shown = str(value) if isinstance(value, int) else '"' + value.replace('"', "") + '"'
        lines.append(f"{key} = {shown}\n")
    return "".join(lines)


def _chownTree(top: str, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    for root, _dirs, files in os.walk(top):
        os.chown(root, uid, gid)
        for name in files:
            os.chown(os.path.join(root, name), uid, gid)


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


@atexit.register
def _stopAll() -> None:
    """Leave no daemon behind if a test run ends without stopping one."""
    for daemon in list(_running):
        daemon.stop()
