"""
Chaos: a seeded random schedule of faults against the private daemon while
events flow, with every invariant of the fault tests checked after each
step.  LIBVIRT_TWISTED_CHAOS_SEED replays a schedule; the seed is printed
on failure.  LIBVIRT_TWISTED_CHAOS_SECONDS sets how long it runs (60 s by
default, under each reactor the suite runs).
"""

from __future__ import annotations

import os
import random
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from ._faults import KEEPALIVE_BOUND, FaultRig
from ._producers import spawnProducer

SECONDS = float(os.environ.get("LIBVIRT_TWISTED_CHAOS_SECONDS", "60"))


class ChaosTests(TestCase):
    timeout = int(SECONDS) + 300

    async def test_randomFaultsWhileEventsFlow(self) -> None:
        seed = int(os.environ.get("LIBVIRT_TWISTED_CHAOS_SEED", random.randrange(2**32)))
        rng = random.Random(seed)
        rig = await FaultRig.create(self)
        rig.events.bound = 1_000_000
        # Other clients keep the daemon busy with domains coming and going.
        spawnProducer(self, rig.daemon.testURI, "noise", -1, pause=0.002)
        rig.baseline()
        faults = [
            ("SIGKILL", rig.kill, "EOF", rig.startAgain),
            ("SIGTERM and restart", rig.terminate, "EOF", rig.startAgain),
            ("SIGSTOP", rig.freeze, "KEEPALIVE", rig.thaw),
            ("virt-admin client-disconnect", rig.adminDisconnect, "EOF", None),
        ]
        deadline = time.monotonic() + SECONDS
        steps: list[str] = []
        try:
            while time.monotonic() < deadline:
                name, inflict, reason, repair = rng.choice(faults)
                steps.append(name)
                noticed = await rig.survive(name, inflict, reason, repair)
                if reason == "KEEPALIVE":
                    self.assertLessEqual(noticed, KEEPALIVE_BOUND)
                await deferLater(reactor, rng.uniform(0, 0.5), lambda: None)
        except BaseException as e:
            raise AssertionError(
                f"chaos seed {seed} failed at step {len(steps)} ({steps[-1:]}) after"
                f" {steps[:-1]}: {e!r}; replay with LIBVIRT_TWISTED_CHAOS_SEED={seed}"
            ) from e
        self.assertGreater(len(steps), 3)
