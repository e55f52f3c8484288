"""
The tests' private Prometheus (tests/_prometheus.py): it scrapes a real
twisted.web C{/metrics} page, answers queries, reports a failed start with
its log, and leaves no process behind, even when the test process dies.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import threading
from typing import ClassVar, cast

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.twisted import MetricsResource
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IProtocolFactory, IReactorSocket, IReactorThreads
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from . import _prometheus
from ._prometheus import (
    JOB,
    PrivatePrometheus,
    PrometheusError,
    requirePrometheus,
    unavailable,
    values,
)

#: The project's top directory, for a child Python that imports C{tests}.
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Tracked(ProtocolWrapper):
    """A connection that tells its L{_Connections} when it is gone."""

    factory: _Connections

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.factory.gone()


class _Connections(WrappingFactory[_Tracked]):
    """
    The wrapped factory's connections, for closing at a test's end:
    Prometheus keeps its scrape connection open, and trial fails a test
    that leaves one in the reactor.
    """

    protocol = _Tracked

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:
        super().__init__(wrappedFactory)
        self._closed: list[Deferred[None]] = []

    def gone(self) -> None:
        if not self.protocols:
            waiting, self._closed = self._closed, []
            for d in waiting:
                d.callback(None)

    def closeAll(self) -> Deferred[None]:
        """Abort every connection; fires once all are gone."""
        d: Deferred[None] = Deferred()
        if not self.protocols:
            d.callback(None)
            return d
        self._closed.append(d)
        for connection in list(self.protocols):
            connection.transport.abortConnection()
        return d

    async def end(self, timeout: float = 10.0) -> None:
        """
        Abort every connection, and return once all are gone and the
        reactor's thread pool is idle: C{MetricsResource} answers from that
        pool, and trial stops the pool after each class without running the
        reactor, so a request thread still waiting to write would hang it.
        """
        await self.closeAll()
        pool = IReactorThreads(reactor).getThreadPool()
        deadline = reactor.seconds() + timeout
        while pool.working or pool.q.qsize():
            if reactor.seconds() > deadline:
                raise AssertionError(f"the reactor's thread pool still works after {timeout}s")
            await deferLater(reactor, 0.01, lambda: None)


class ScrapeTests(TestCase):
    """
    One Prometheus for the class scrapes a gauge that each test serves.

    Trial never calls C{setUpClass}, so the first test starts the server
    (L{sharedServer}) and the end of the run stops it.  Its target is a
    listening socket held for the whole run; each test serves it with a
    site of its own, and at its end closes that site's connections and
    waits for its request threads, which leaves the reactor clean.
    """

    listener: ClassVar[socket.socket | None] = None
    server: ClassVar[PrivatePrometheus | None] = None

    @classmethod
    def sharedServer(cls) -> tuple[PrivatePrometheus, socket.socket]:
        """The class's Prometheus and the socket it scrapes, started once."""
        if cls.server is None or cls.listener is None:
            listener = socket.socket()
            try:
                listener.bind(("127.0.0.1", 0))
                listener.listen(16)
                # Twisted accepts until EAGAIN: an adopted socket must not block.
                listener.setblocking(False)
                server = PrivatePrometheus([f"127.0.0.1:{listener.getsockname()[1]}"])
                server.start()
            except BaseException:
                listener.close()
                raise
            atexit.register(server.stop)
            atexit.register(listener.close)
            cls.server, cls.listener = server, listener
        return cls.server, cls.listener

    def setUp(self) -> None:
        requirePrometheus()
        self.prometheus, listener = self.sharedServer()
        self.registry = CollectorRegistry()
        self.gauge = Gauge(
            "harness_gauge", "A value that the test sets.", ["label"], registry=self.registry
        )
        root = Resource()
        root.putChild(b"metrics", MetricsResource(self.registry))
        connections = _Connections(Site(root))
        # A WrappingFactory is a ClientFactory to the type checker, though
        # Twisted wraps server factories with it too.
        port = IReactorSocket(reactor).adoptStreamPort(
            listener.fileno(), socket.AF_INET, cast(ServerFactory, connections)
        )
        # Clean-ups run last first: stop accepting, then close what is open.
        self.addCleanup(lambda: ensureDeferred(connections.end()))
        self.addCleanup(port.stopListening)

    async def test_scrapesTheGauge(self) -> None:
        """
        The gauge's value reaches Prometheus, with the job and instance
        labels of its target, and so does its next value.
        """
        expr = 'harness_gauge{label="x"}'
        self.gauge.labels(label="x").set(3)
        # The first scrape of a new target lands some 6 s after the start.
        result = await self.prometheus.waitFor(expr, lambda r: values(r) == [3.0], timeout=30.0)
        self.assertEqual(result[0]["metric"]["job"], JOB)
        self.assertEqual(result[0]["metric"]["instance"], self.prometheus.targets[0])
        self.gauge.labels(label="x").set(7.5)
        await self.prometheus.waitFor(expr, lambda r: values(r) == [7.5])

    async def test_queryResults(self) -> None:
        """
        A vector comes back as samples with labels, a scalar as one sample
        without; a bad expression raises L{PrometheusError} with the reason.
        """
        vector = await deferToThread(
            self.prometheus.query, 'label_replace(vector(2), "a", "b", "", "")'
        )
        self.assertEqual(vector, [{"metric": {"a": "b"}, "value": [vector[0]["value"][0], "2"]}])
        scalar = await deferToThread(self.prometheus.query, "scalar(vector(4))")
        self.assertEqual((scalar[0]["metric"], values(scalar)), ({}, [4.0]))
        with self.assertRaises(PrometheusError) as caught:
            await deferToThread(self.prometheus.query, "harness_gauge{")
        self.assertIn("bad_data", str(caught.exception))

    async def test_waitForTimesOut(self) -> None:
        """A condition that never holds fails the wait with the last result."""
        with self.assertRaises(AssertionError) as caught:
            await self.prometheus.waitFor("vector(5)", lambda r: False, timeout=1.0)
        self.assertIn("'5'", str(caught.exception))


class LifeTests(TestCase):
    """Each test starts and stops a Prometheus of its own (no targets)."""

    def setUp(self) -> None:
        requirePrometheus()

    async def test_stopLeavesNoProcess(self) -> None:
        """
        Started from a thread that then ends, it runs on (its parent-death
        signal belongs to the starter thread); once stopped its process is
        gone and reaped, its directory removed, and stopping again is a no-op.
        """
        server = PrivatePrometheus([])
        self.addCleanup(server.stop)
        errors: list[BaseException] = []

        def startThenEnd() -> None:
            try:
                server.start()
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=startThenEnd)
        thread.start()
        await deferToThread(thread.join)
        self.assertEqual(errors, [])
        self.assertEqual(values(await deferToThread(server.query, "vector(1)")), [1.0])
        pid, base = server.pid, server.base
        assert pid is not None
        assert base is not None
        await deferToThread(server.stop)
        self.assertIsNone(server.pid)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        self.assertFalse(os.path.exists(base))
        server.stop()

    async def test_diesWithTheTestProcess(self) -> None:
        """A test process killed before it could stop its Prometheus takes it along."""
        script = (
            "import os, signal\n"
            "from tests._prometheus import PrivatePrometheus\n"
            "server = PrivatePrometheus([])\n"
            "server.start()\n"
            "print(server.pid, server.base, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        path = os.pathsep.join(filter(None, [TOP, os.environ.get("PYTHONPATH")]))
        child = await deferToThread(
            subprocess.run,
            [sys.executable, "-c", script],
            env=dict(os.environ, PYTHONPATH=path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(child.returncode, -9, child.stderr)
        pid, base = child.stdout.split()
        self.addCleanup(shutil.rmtree, base, True)
        await _gone(int(pid))

    async def test_startFailureShowsTheLog(self) -> None:
        """
        A port that stays taken fails the start after three attempts, with
        Prometheus's own words, and leaves no directory behind.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            self.patch(_prometheus, "freePort", lambda: taken.getsockname()[1])
            server = PrivatePrometheus([])
            with self.assertRaises(PrometheusError) as caught:
                await deferToThread(server.start)
        message = str(caught.exception)
        self.assertIn("attempt 3 of 3", message)
        self.assertIn("address already in use", message)
        self.assertIsNone(server.pid)
        self.assertIsNone(server.base)


class AvailabilityTests(SynchronousTestCase):
    """Where no prometheus is installed, tests skip, except under CI."""

    def test_unavailableWithoutTheBinary(self) -> None:
        empty = self.mktemp()
        os.mkdir(empty)
        self.assertIn("apt-get install prometheus", unavailable(path=empty) or "")

    def test_requireSkipsOrFails(self) -> None:
        self.patch(_prometheus, "unavailable", lambda: "no prometheus here")
        self.patch(os, "environ", {**os.environ, "CI": "false"})
        with self.assertRaises(SkipTest):
            requirePrometheus()
        self.patch(os, "environ", {**os.environ, "CI": "true"})
        with self.assertRaises(AssertionError) as caught:
            requirePrometheus()
        self.assertIn("no prometheus here", str(caught.exception))


async def _gone(pid: int, timeout: float = 20.0) -> None:
    """Return once C{pid} has exited (gone, or a zombie its new parent has yet to reap)."""
    deadline = reactor.seconds() + timeout
    while _state(pid) not in ("", "Z", "X"):
        if reactor.seconds() > deadline:
            raise AssertionError(f"pid {pid} still runs after {timeout}s")
        await deferLater(reactor, 0.05, lambda: None)


def _state(pid: int) -> str:
    """The one-letter state of C{pid} in /proc ("" if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
