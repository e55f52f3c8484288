"""
A private Prometheus server for tests: Debian's C{prometheus} as a child
process on a free loopback port, with its config and TSDB in a temporary
directory, scraping the targets it is given, so that a test can check what
a C{/metrics} page really tells Prometheus.

Starting and stopping block (start: until C{/-/ready}, a fraction of a
second; stop: until the process has exited): call them from test set-up,
tear-down or a pool thread.  The first scrape of a target lands only about
6 s after the start (Prometheus's target sync delay): wait for data with
L{PrivatePrometheus.waitFor}, which polls on the reactor.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from libvirt_twisted._processes import spawn

from ._http import freePort

__all__ = [
    "JOB",
    "PrivatePrometheus",
    "PrometheusError",
    "Result",
    "requirePrometheus",
    "unavailable",
    "values",
]

#: A query's result: samples, each C{{"metric": {labels}, "value": [ts, "value"]}}.
Result = list[dict[str, Any]]

#: The job name under which every target is scraped.
JOB = "libvirt-monitor"


_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: {job}
    metrics_path: /metrics
    static_configs:
      - targets: {targets}
"""

_running: set[PrivatePrometheus] = set()


class PrometheusError(RuntimeError):
    """The private Prometheus could not be started, or a query failed."""


def unavailable(path: str | None = None) -> str | None:
    """
    Why no private Prometheus can run here (no C{prometheus} on C{path},
    default C{$PATH}), or L{None} if one can.
    """
    if shutil.which("prometheus", path=path) is None:
        return "prometheus is not installed (Debian: apt-get install prometheus)"
    return None


def requirePrometheus() -> None:
    """
    Skip the calling test where no private Prometheus can run, except under
    CI (CI=true), where a skipped test would hide a broken set-up.
    """
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        raise AssertionError(f"CI=true but no private Prometheus can run: {reason}")
    raise SkipTest(reason)


def values(result: Result) -> list[float]:
    """The values of C{result}'s samples, in its order, as floats."""
    return [float(sample["value"][1]) for sample in result]


class PrivatePrometheus:
    """
    A Prometheus of our own that scrapes C{targets} (C{"host:port"}, each
    serving C{/metrics}) every second under the job L{JOB}.

    It dies with the process that started it (a parent-death signal), and
    L{stop} or the end of the process stops it and removes its directory.

    @ivar base: its temporary directory (config, TSDB, log) while it exists.
    @ivar port: the loopback port its web API listens on once started.
    """

    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = list(targets)
        self.base: str | None = None
        self.port: int | None = None
        self.logPath: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<PrivatePrometheus pid={self.pid} port={self.port} targets={self.targets!r}>"

    @property
    def url(self) -> str:
        """The base URL of its web API."""
        if self.port is None:
            raise PrometheusError(f"{self!r} was never started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Its pid while it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def config(self) -> str:
        """Its C{prometheus.yml}."""
        return _CONFIG.format(job=JOB, targets=json.dumps(self.targets))

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """
        Start it and return once C{/-/ready} answers.  If the port it was
        given was taken in the meantime, try another, C{attempts} in all.

        @raise PrometheusError: if it is missing, exits, or is not ready
            within C{timeout} seconds; the message ends with its log's tail.
        """
        if self._process is not None:
            raise PrometheusError(f"{self!r} was already started")
        reason = unavailable()
        if reason is not None:
            raise PrometheusError(reason)
        self.base = tempfile.mkdtemp(prefix="libvirt-twisted-prometheus-")
        _running.add(self)
        try:
            configPath = os.path.join(self.base, "prometheus.yml")
            with open(configPath, "w") as f:
                f.write(self.config())
            deadline = time.monotonic() + timeout
            attempts = max(1, attempts)
            for attempt in range(1, attempts + 1):
                self.port = freePort()
                self.logPath = os.path.join(self.base, f"prometheus-{attempt}.log")
                with open(self.logPath, "ab") as log:
                    process = self._process = spawn(
                        [
                            "prometheus",
                            f"--config.file={configPath}",
                            f"--storage.tsdb.path={os.path.join(self.base, f'data-{attempt}')}",
                            f"--web.listen-address=127.0.0.1:{self.port}",
                        ],
                        cwd=self.base,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        deathSignal=signal.SIGKILL,
                    )
                if self._awaitReady(deadline, timeout):
                    return
                if "address already in use" not in self.log():
                    break
            raise PrometheusError(
                f"prometheus exited with status {process.returncode}"
                f" (attempt {attempt} of {attempts}): {self.log()[-2000:]}"
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop it (SIGTERM, then SIGKILL after C{timeout} seconds), wait until
        it has exited, and remove its directory.  Safe to call more than once.
        """
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _running.discard(self)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def log(self) -> str:
        """What the current (or last) process has written so far."""
        if self.logPath is None:
            return ""
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def query(self, expr: str, timeout: float = 10.0) -> Result:
        """
        Evaluate C{expr} now (C{/api/v1/query}), blocking: call it from a
        pool thread (C{deferToThread}), not the reactor's.  A scalar or
        string result comes back as one sample without labels.

        @raise PrometheusError: if Prometheus rejects the query.
        """
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(address, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            with e:
                body = e.read()
        try:
            answer = json.loads(body)
        except ValueError:
            raise PrometheusError(f"query {expr!r}: not JSON: {body[:200]!r}") from None
        if answer.get("status") != "success":
            raise PrometheusError(
                f"query {expr!r} failed: {answer.get('errorType')}: {answer.get('error')}"
            )
        data = answer["data"]
        if data["resultType"] in ("vector", "matrix"):
            samples: Result = data["result"]
            return samples
        return [{"metric": {}, "value": data["result"]}]

    def waitFor(
        self,
        expr: str,
        predicate: Callable[[Result], object],
        timeout: float = 20.0,
        interval: float = 0.5,
    ) -> Deferred[Result]:
        """
        A Deferred that fires with C{expr}'s result once C{predicate} holds
        for it, queried (in a pool thread) every C{interval} seconds; it
        fails with an C{AssertionError} showing the last result after
        C{timeout} seconds, or with the query's error if one fails.
        """
        # Imported here: importing this module must not install a reactor.
        from twisted.internet import reactor

        async def poll() -> Result:
            deadline = reactor.seconds() + timeout
            while True:
                result = await deferToThread(self.query, expr)
                if predicate(result):
                    return result
                if reactor.seconds() >= deadline:
                    raise AssertionError(
                        f"{expr!r} still fails {predicate!r} after {timeout}s: {result!r}"
                    )
                await deferLater(reactor, interval, lambda: None)

        return ensureDeferred(poll())

    def _awaitReady(self, deadline: float, timeout: float) -> bool:
        """
        Whether the process became ready (C{/-/ready}) before it exited;
        raises if it did neither by C{deadline}.
        """
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                return False
            if _ready(f"{self.url}/-/ready"):
                return True
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"prometheus was not ready within {timeout}s: {self.log()[-2000:]}"
                )
            time.sleep(0.02)


def _ready(address: str) -> bool:
    """Whether C{address} answers 200 (Prometheus's readiness check)."""
    try:
        with urllib.request.urlopen(address, timeout=1.0) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as e:
        e.close()
        return False
    except OSError:
        return False


@atexit.register
def _stopAll() -> None:
    """Leave no Prometheus behind if a test run ends without stopping one."""
    for server in list(_running):
        server.stop()
