"""
The README's runnable examples (docs/examples/) run and print what they claim.
"""

from __future__ import annotations

import os
import signal
import sys

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from ._harness import spawnPython
from ._http import fetchOnceUp, freePort
from ._monitorprocess import TWISTD

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples"
)


class ExampleTests(TestCase):
    timeout = 60

    async def runExample(self, name: str) -> str:
        out, err, code = await getProcessOutputAndValue(
            sys.executable, [os.path.join(EXAMPLES, name)], env=dict(os.environ)
        )
        self.assertEqual(code, 0, err.decode())
        text: str = out.decode()
        return text

    async def test_lifecycle(self) -> None:
        out = await self.runExample("lifecycle.py")
        self.assertEqual(out, "demo: event 2, detail 0\ndemo: event 5, detail 1\n")

    async def test_connectionAsync(self) -> None:
        out = await self.runExample("connection_async.py")
        self.assertIn("name='demo'", out)
        self.assertIn("event='STARTED', detail='BOOTED'", out)
        self.assertIn("event='STOPPED', detail='DESTROYED'", out)

    async def test_serviceInlineCallbacks(self) -> None:
        out = await self.runExample("service_inlinecallbacks.py")
        lines = out.splitlines()
        self.assertEqual(lines[0], "connection: connected test:///default")
        self.assertEqual(lines[1], "in the queue: connected")
        self.assertIn("event='STARTED', detail='BOOTED'", lines[2])
        self.assertIn("event='STOPPED', detail='DESTROYED'", lines[3])
        self.assertEqual(lines[-1], "connection: stopped test:///default")

    async def test_inventory(self) -> None:
        out = await self.runExample("inventory.py")
        self.assertEqual(
            out.splitlines(),
            [
                "changed: test RUNNING by resync",
                "known: test RUNNING UNKNOWN",
                "changed: demo RUNNING by event",
                "event: demo STARTED",
                "reached: RUNNING",
                "changed: demo PAUSED by event",
                "event: demo SUSPENDED",
                "reached: PAUSED",
                "now: PAUSED lost events: 0",
            ],
        )

    async def test_privateDaemon(self) -> None:
        out = await self.runExample("private_daemon.py")
        self.assertEqual(out, "domains: ['test']\n")

    async def test_webTacUnderTwistd(self) -> None:
        port = freePort()
        os.environ["LIBVIRT_WEB_ENDPOINT"] = f"tcp:{port}:interface=127.0.0.1"
        self.addCleanup(os.environ.pop, "LIBVIRT_WEB_ENDPOINT")
        protocol = Ended()
        twistd = spawnPython(
            self,
            protocol,
            ["-c", TWISTD, "-ny", os.path.join(EXAMPLES, "web.tac"), "--pidfile=", "--logfile=-"],
            protocol.ended,
        )
        body = await fetchOnceUp(f"http://127.0.0.1:{port}/")
        self.assertIn(b"<h1>test:///default</h1>", body)
        self.assertIn(b"<li>test</li>", body)
        twistd.signalProcess("TERM")
        await protocol.ended
        # An application run by twistd dies of SIGTERM, as twistd makes it
        # (a shell sees 143); the monitor, which handles it, exits 0.
        assert protocol.reason is not None
        self.assertEqual(getattr(protocol.reason.value, "signal", None), signal.SIGTERM)


class Ended(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        self.ended.callback(None)
