"""
The tests' private RabbitMQ (tests/_rabbitmq.py), driven through pika's
Twisted adapter as the monitor will drive a broker: a confirmed persistent
message in a durable queue reads back and survives a kill -9 and a restart,
a hung broker answers once it resumes, C{rabbitmqctl} works, a failed start
shows the broker's words, and no process is left behind, even when the test
process dies.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, ClassVar

import pika
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from . import _rabbitmq
from ._rabbitmq import PrivateRabbitMQ, RabbitMQError, requireRabbitMQ, unavailable

#: The project's top directory, for a child Python that imports C{tests}.
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A message that a durable queue keeps on disk.
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


class _Connection(TwistedProtocolConnection):
    """
    A pika connection that tells when its TCP connection is gone (L{lost}),
    whether or not the AMQP handshake completed: pika's own C{closed}
    exists only after it did, and trial fails a test that leaves a
    connection in the reactor.
    """

    def __init__(self, parameters: pika.ConnectionParameters) -> None:
        super().__init__(parameters)
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.ready is not None:
            # A handshake cut short fails C{ready}: not an error of the test's.
            self.ready.addErrback(lambda _: None)
        super().connectionLost(reason)
        self.lost.callback(None)

    async def end(self, timeout: float = 5.0) -> None:
        """
        Close it (C{Connection.Close}; abort it if the broker does not
        answer within C{timeout} seconds, as a hung one would not), and
        return once it is gone.
        """
        if self.lost.called:
            return
        transport = ITCPTransport(self.transport)
        abort = reactor.callLater(timeout, transport.abortConnection)
        if self.is_open:
            self.close()
        else:
            transport.abortConnection()
        try:
            await self.lost
        finally:
            if abort.active():
                abort.cancel()


class _BrokerTest(TestCase):
    """Connections to a private RabbitMQ, each closed at the test's end."""

    rabbit: PrivateRabbitMQ

    def setUp(self) -> None:
        requireRabbitMQ()
        self.queue = f"harness-{self._testMethodName}-{secrets.token_hex(4)}"

    async def connect(self, vhost: str = "/", ready: bool = True) -> _Connection:
        """
        A pika connection to the broker's C{vhost} as C{guest}, once its
        handshake is done if C{ready}, closed at the test's end.
        """
        parameters = pika.ConnectionParameters(
            virtual_host=vhost, credentials=pika.PlainCredentials("guest", "guest")
        )
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.rabbit.port)
        connection: _Connection = await connectProtocol(endpoint, _Connection(parameters))
        self.addCleanup(connection.end)
        if ready:
            handshake = connection.ready
            assert handshake is not None
            await handshake
        return connection

    async def publisher(self, connection: _Connection) -> TwistedChannel:
        """
        A channel on C{connection} in confirm mode, with L{queue} declared
        durable: each C{basic_publish} then fires once the broker has the
        message (on disk, if persistent).
        """
        channel: TwistedChannel = await connection.channel()
        await channel.queue_declare(queue=self.queue, durable=True)
        await channel.confirm_delivery()
        return channel

    async def getOne(self, channel: TwistedChannel) -> Any:
        """The next message of L{queue}, acknowledged; L{None} if it is empty."""
        message = await channel.basic_get(queue=self.queue)
        if message is not None:
            channel.basic_ack(message.method.delivery_tag)
        return message


class BrokerTests(_BrokerTest):
    """
    One RabbitMQ for the class, started by the first test (trial never calls
    C{setUpClass}) and stopped at the end of the run; each test uses queues
    of its own, and one kills and restarts the broker.
    """

    shared: ClassVar[PrivateRabbitMQ | None] = None

    @classmethod
    def sharedBroker(cls) -> PrivateRabbitMQ:
        """The class's broker, started once."""
        if cls.shared is None:
            broker = PrivateRabbitMQ()
            broker.start()
            atexit.register(broker.stop)
            cls.shared = broker
        return cls.shared

    def setUp(self) -> None:
        super().setUp()
        self.rabbit = self.sharedBroker()

    async def test_publishAndGet(self) -> None:
        """
        A persistent message published with confirms to a durable queue is
        counted there by the broker, and reads back once, persistent.
        """
        channel = await self.publisher(await self.connect())
        await channel.basic_publish(
            exchange="", routing_key=self.queue, body=b"record 1", properties=PERSISTENT
        )
        self.assertEqual(await deferToThread(self.rabbit.queueMessages, self.queue), 1)
        message = await self.getOne(channel)
        self.assertEqual(message.body, b"record 1")
        self.assertEqual(message.properties.delivery_mode, pika.DeliveryMode.Persistent.value)
        self.assertIsNone(await self.getOne(channel))
        await channel.queue_delete(queue=self.queue)

    async def test_url(self) -> None:
        """Its URL takes pika, as C{guest}, to its default virtual host."""
        self.assertEqual(self.rabbit.url, f"amqp://guest:guest@127.0.0.1:{self.rabbit.port}/%2F")
        parameters = pika.URLParameters(self.rabbit.url)
        self.assertEqual(
            (parameters.host, parameters.port, parameters.virtual_host),
            ("127.0.0.1", self.rabbit.port, "/"),
        )

        def connect() -> bool:
            connection = pika.BlockingConnection(parameters)
            try:
                return bool(connection.is_open)
            finally:
                connection.close()

        self.assertTrue(await deferToThread(connect))

    async def test_killKeepsConfirmed(self) -> None:
        """
        kill() ends the VM and its launcher at once (the client sees it)
        and keeps epmd; restart() brings the broker back on the same port,
        with the confirmed persistent message still in its durable queue.
        """
        connection = await self.connect()
        channel = await self.publisher(connection)
        await channel.basic_publish(
            exchange="", routing_key=self.queue, body=b"kept", properties=PERSISTENT
        )
        launcher, beam, epmd = self.rabbit.pid, self.rabbit.beamPid, self.rabbit.epmdPid
        port = self.rabbit.port
        await deferToThread(self.rabbit.kill)
        self.assertEqual((self.rabbit.pid, self.rabbit.beamPid), (None, None))
        for pid in launcher, beam:
            assert pid is not None
            self.assertFalse(_alive(pid), pid)
        self.assertEqual(_nodeProcesses(self.rabbit.node), [epmd])
        await connection.lost

        await deferToThread(self.rabbit.restart)
        self.assertEqual(self.rabbit.port, port)
        self.assertEqual(self.rabbit.epmdPid, epmd)
        self.assertNotIn(self.rabbit.beamPid, (None, beam))
        channel = await (await self.connect()).channel()
        message = await self.getOne(channel)
        self.assertEqual(message.body, b"kept")
        await channel.queue_delete(queue=self.queue)

    async def test_restartWhileRunning(self) -> None:
        """
        restart() on a running broker stops it cleanly first (terminate()):
        its clients see their connections end, and a confirmed persistent
        message stays.
        """
        connection = await self.connect()
        channel = await self.publisher(connection)
        await channel.basic_publish(
            exchange="", routing_key=self.queue, body=b"kept", properties=PERSISTENT
        )
        beam = self.rabbit.beamPid
        closed = connection.closed
        assert closed is not None
        await deferToThread(self.rabbit.restart)
        self.assertNotIn(self.rabbit.beamPid, (None, beam))
        # The broker resets its connections as it stops (ConnectionLost).
        self.assertIsInstance(await closed, Exception)
        self.assertFalse(connection.is_open)
        channel = await (await self.connect()).channel()
        message = await self.getOne(channel)
        self.assertEqual(message.body, b"kept")
        await channel.queue_delete(queue=self.queue)

    async def test_pauseHangsTheBroker(self) -> None:
        """
        A paused broker takes a TCP connection (the kernel does) but never
        answers the AMQP handshake; once resumed, it completes it.
        """
        await deferToThread(self.rabbit.pause)
        try:
            connection = await self.connect(ready=False)
            await deferLater(reactor, 1.0, lambda: None)
            ready = connection.ready
            assert ready is not None
            self.assertFalse(ready.called)
        finally:
            self.rabbit.resume()
        self.assertIs(await ready, connection)
        channel = await self.publisher(connection)
        await channel.basic_publish(exchange="", routing_key=self.queue, body=b"after")
        await channel.queue_delete(queue=self.queue)

    async def test_ctlAddsAVirtualHost(self) -> None:
        """
        ctl() runs rabbitmqctl on this node: a virtual host it adds takes a
        connection and a queue, which queueMessages() counts there only;
        a failing command raises with rabbitmqctl's words.
        """
        vhost = f"harness-{secrets.token_hex(4)}"
        await deferToThread(self.rabbit.ctl, "add_vhost", vhost)
        self.addCleanup(deferToThread, self.rabbit.ctl, "delete_vhost", vhost)
        self.assertIn(vhost, (await deferToThread(self.rabbit.ctl, "list_vhosts", "-q")).split())
        await deferToThread(
            self.rabbit.ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"
        )
        channel = await self.publisher(await self.connect(vhost))
        await channel.basic_publish(exchange="", routing_key=self.queue, body=b"v")
        self.assertEqual(await deferToThread(self.rabbit.queueMessages, self.queue, vhost), 1)
        with self.assertRaises(RabbitMQError) as caught:
            await deferToThread(self.rabbit.queueMessages, self.queue)
        self.assertIn("no queue", str(caught.exception))
        with self.assertRaises(RabbitMQError) as caught:
            await deferToThread(self.rabbit.ctl, "delete_vhost", vhost + "-none")
        self.assertIn(f"'{vhost}-none' does not exist", str(caught.exception))


class LifeTests(_BrokerTest):
    """Each test starts and stops a RabbitMQ of its own."""

    async def test_stopLeavesNoProcess(self) -> None:
        """
        Started from a thread that then ends, it runs on (its parent-death
        signals belong to the starter thread); stopped, even while paused,
        its epmd, VM, launcher, watchdog and helpers are gone, its
        directory too, and stopping again is a no-op.
        """
        self.rabbit = PrivateRabbitMQ()
        self.addCleanup(self.rabbit.stop)
        errors: list[BaseException] = []

        def startThenEnd() -> None:
            try:
                self.rabbit.start()
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=startThenEnd)
        thread.start()
        await deferToThread(thread.join)
        self.assertEqual(errors, [])
        connection = await self.connect()
        await connection.end()
        pids, base = self.rabbit.processes(), self.rabbit.base
        assert base is not None
        self.assertLessEqual({self.rabbit.epmdPid, self.rabbit.pid, self.rabbit.beamPid}, {*pids})
        # epmd, watchdog, launcher, VM and at least erl_child_setup.
        self.assertGreaterEqual(len(pids), 5)
        self.assertEqual(sorted(pids), sorted({*pids, *_nodeProcesses(self.rabbit.node)}))
        await deferToThread(self.rabbit.pause)
        start = reactor.seconds()
        await deferToThread(self.rabbit.stop)
        # A clean stop, not the SIGKILL after 10 s.
        self.assertLess(reactor.seconds() - start, 8.0)
        self.assertEqual([pid for pid in pids if _alive(pid)], [])
        self.assertEqual(self.rabbit.processes(), [])
        self.assertEqual(_nodeProcesses(self.rabbit.node), [])
        self.assertFalse(os.path.exists(base))
        self.rabbit.stop()
        with self.assertRaises(RabbitMQError):
            self.rabbit.restart()

    async def test_diesWithTheTestProcess(self) -> None:
        """A test process killed before it could stop its broker takes it all along."""
        script = (
            "import json, os, signal\n"
            "from tests._rabbitmq import PrivateRabbitMQ\n"
            "server = PrivateRabbitMQ()\n"
            "server.start()\n"
            "print(json.dumps([server.node, server.base, server.beamPid, server.processes()]),"
            " flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        path = os.pathsep.join(filter(None, [TOP, os.environ.get("PYTHONPATH")]))
        child = await deferToThread(
            subprocess.run,
            [sys.executable, "-c", script],
            env=dict(os.environ, PYTHONPATH=path),
            capture_output=True,
            text=True,
            timeout=90,
        )
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr)
        node, base, beam, pids = json.loads(child.stdout)
        self.addCleanup(shutil.rmtree, base, True)
        self.assertIn(beam, pids)
        for pid in pids:
            await _gone(pid)
        self.assertEqual(_nodeProcesses(node), [])

    async def test_startFailureShowsTheLog(self) -> None:
        """
        A broker that cannot listen fails the start with its own words
        (C{eaddrinuse}) and leaves no process and no directory behind.
        """
        with socket.socket() as taken:
            # Bound, not listening: the broker cannot bind it, and the
            # readiness probe is refused at once.
            taken.bind(("127.0.0.1", 0))
            free = _rabbitmq._Ports.free()
            self.patch(_rabbitmq._Ports, "free", lambda: free._replace(amqp=taken.getsockname()[1]))
            server = PrivateRabbitMQ()
            with self.assertRaises(RabbitMQError) as caught:
                await deferToThread(server.start, attempts=1)
        message = str(caught.exception)
        self.assertIn("attempt 1 of 1", message)
        self.assertIn("eaddrinuse", message)
        self.assertIsNone(server.base)
        self.assertEqual(_nodeProcesses(server.node), [])

    async def test_startRetriesATakenPort(self) -> None:
        """
        An epmd port that stays taken fails the start after three attempts,
        quickly, leaving no process and no directory behind.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            free = _rabbitmq._Ports.free()
            self.patch(_rabbitmq._Ports, "free", lambda: free._replace(epmd=taken.getsockname()[1]))
            server = PrivateRabbitMQ()
            with self.assertRaises(RabbitMQError) as caught:
                await deferToThread(server.start)
        message = str(caught.exception)
        self.assertIn("epmd exited", message)
        self.assertIn("attempt 3 of 3", message)
        self.assertIsNone(server.base)
        self.assertEqual(_nodeProcesses(server.node), [])


class AvailabilityTests(SynchronousTestCase):
    """Where no RabbitMQ is installed, tests skip, except under CI."""

    def test_unavailableWithoutTheScripts(self) -> None:
        """No RabbitMQ scripts, or no epmd, is a reason, with what to install."""
        empty, scripts = self.mktemp(), self.mktemp()
        os.mkdir(empty)
        os.mkdir(scripts)
        for name in "rabbitmq-server", "rabbitmqctl":
            with open(os.path.join(scripts, name), "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(os.path.join(scripts, name), 0o755)
        self.assertIn("apt-get install", unavailable(binDir=empty) or "")
        self.assertIn("erlang-base", unavailable(binDir=scripts, path=empty) or "")

    def test_requireSkipsOrFails(self) -> None:
        """Without a RabbitMQ a test skips, but under CI=true it fails, saying why."""
        self.patch(_rabbitmq, "unavailable", lambda: "no rabbitmq here")
        self.patch(os, "environ", {**os.environ, "CI": "false"})
        with self.assertRaises(SkipTest):
            requireRabbitMQ()
        self.patch(os, "environ", {**os.environ, "CI": "true"})
        with self.assertRaises(AssertionError) as caught:
            requireRabbitMQ()
        self.assertIn("no rabbitmq here", str(caught.exception))


def _nodeProcesses(node: str) -> list[int]:
    """
    The live processes that run for C{node}, found by their environment
    (C{RABBITMQ_NODENAME}), whatever the harness knows of them.
    """
    marker = f"\0RABBITMQ_NODENAME={node}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = b"\0" + f.read()
            except OSError:
                continue
            if marker in environ and _alive(int(entry)):
                found.append(int(entry))
    return sorted(found)


async def _gone(pid: int, timeout: float = 20.0) -> None:
    """Return once C{pid} has exited (gone, or a zombie its new parent has yet to reap)."""
    deadline = reactor.seconds() + timeout
    while _alive(pid):
        if reactor.seconds() > deadline:
            raise AssertionError(f"pid {pid} still runs after {timeout}s")
        await deferLater(reactor, 0.05, lambda: None)


def _alive(pid: int) -> bool:
    """Whether C{pid} runs (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
