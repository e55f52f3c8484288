"""
A real QEMU domain (TCG, no disk) under the private daemon: every lifecycle
change arrives through the reactor.
"""

from __future__ import annotations

import libvirt
from twisted.trial.unittest import TestCase

from ._harness import Recorder, openConnection, qemuDomainXML, startDaemon


class QemuDomainTests(TestCase):
    timeout = 120

    async def test_lifecycleThroughTheReactor(self) -> None:
        daemon = startDaemon(self)
        conn = openConnection(self, daemon.qemuURI)
        events = Recorder()
        callbackId = conn.domainEventRegisterAny(
            None,
            libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            lambda c, dom, event, detail, o: events(dom.name(), event, detail),
            None,
        )
        self.addCleanup(conn.domainEventDeregisterAny, callbackId)

        started = (
            "tiny",
            libvirt.VIR_DOMAIN_EVENT_STARTED,
            libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED,
        )
        suspended = (
            "tiny",
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED,
        )
        resumed = (
            "tiny",
            libvirt.VIR_DOMAIN_EVENT_RESUMED,
            libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED,
        )
        destroyed = (
            "tiny",
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
        )

        domain = conn.createXML(qemuDomainXML("tiny"), 0)
        await events.calledWith(*started)
        self.assertEqual(len(daemon.qemuProcesses()), 1)
        domain.suspend()
        await events.calledWith(*suspended)
        # QEMU itself reports a resume while it boots: count from here on.
        resumedBefore = events.calls.count(resumed)
        domain.resume()
        await events.when(lambda calls: calls.count(resumed) > resumedBefore)
        domain.destroy()
        await events.calledWith(*destroyed)
        order = [events.calls.index(e) for e in (started, suspended, destroyed)]
        self.assertEqual(order, sorted(order))
        self.assertEqual(events.calls[-1], destroyed)
        self.assertEqual(daemon.qemuProcesses(), [])
