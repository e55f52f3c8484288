"""
The README's runnable examples (docs/examples/) run and print what they claim.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

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
