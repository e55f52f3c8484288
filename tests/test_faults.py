"""
Faults against the real daemon, each repeated: the right close reason or
domain event, every tracked registration gone, nothing leaked, the service
and the monitor reconnected and resubscribed, events delivered afterwards.
"""

from __future__ import annotations

import os
import signal

import libvirt
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from ._faults import KEEPALIVE_BOUND, FaultRig, record
from ._harness import qemuDomainXML
from ._monitorprocess import has

REPEAT = 3


class DaemonFaultTests(TestCase):
    timeout = 240

    async def test_killed(self) -> None:
        rig = await FaultRig.create(self)
        for _ in range(REPEAT):
            await rig.survive("SIGKILL", rig.kill, "EOF", repair=rig.startAgain)

    async def test_frozenIsNoticedByKeepalive(self) -> None:
        rig = await FaultRig.create(self)
        for _ in range(REPEAT):
            noticed = await rig.survive("SIGSTOP", rig.freeze, "KEEPALIVE", repair=rig.thaw)
            self.assertLessEqual(noticed, KEEPALIVE_BOUND)

    async def test_restartedOnTheSameSocket(self) -> None:
        rig = await FaultRig.create(self)
        for _ in range(REPEAT):
            await rig.survive("SIGTERM and restart", rig.terminate, "EOF", repair=rig.startAgain)

    async def test_clientDisconnectedByTheAdmin(self) -> None:
        rig = await FaultRig.create(self)
        for _ in range(REPEAT):
            await rig.survive("virt-admin client-disconnect", rig.adminDisconnect, "EOF")


class QemuFaultTests(TestCase):
    timeout = 240

    async def test_qemuKilledUnderARunningDomain(self) -> None:
        rig = await FaultRig.create(self, qemu=True)
        conn = rig.service.connection
        assert conn is not None
        for attempt in range(2):
            name = f"doomed-{attempt}"
            await conn.inThread.createXML(qemuDomainXML(name), 0)
            (pid,) = rig.daemon.qemuProcesses()
            started = reactor.seconds()
            os.kill(pid, signal.SIGKILL)
            while True:
                item = await rig.events.get()
                if item[1].name() == name and item[2] == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                    break
            noticed = reactor.seconds() - started
            self.assertEqual(item[3], libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED)
            assert rig.monitor is not None

            await rig.monitor.when(
                has("domain.lifecycle", name=name, event="STOPPED", detail="FAILED")
            )
            self.assertEqual(rig.daemon.qemuProcesses(), [])
            await rig.eventsFlow()
            await rig.nothingLeaked("QEMU killed")
            record("QEMU killed under a running domain", noticed, "STOPPED/FAILED event")
        self.assertEqual(rig.statesSoFar("disconnected"), 0)
