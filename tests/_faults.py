"""
Faults against the private daemon, and the checks that follow each: the
right close reason, every tracked registration gone, nothing leaked, the
service and the monitor reconnected and resubscribed, events flowing again.
Shared by the fault tests and the chaos test.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from libvirt_twisted import ConnectionStatus, EventQueue, LibvirtConnection, LibvirtService
from libvirt_twisted.testing import STARTER_THREAD, DaemonError, PrivateLibvirtd

from ._anchor import Anchor, spawnAnchor
from ._harness import LOOP, Recorder, openFds, qemuDomainXML, startDaemon, testDomainXML
from ._monitorprocess import Monitor, has, spawnMonitor

#: Threads of the test harness that live as long as the process, by name.
HARNESS_THREADS = (STARTER_THREAD,)

#: Keepalive for the fault tests: a frozen daemon is noticed within
#: INTERVAL * (COUNT + 1) seconds, and must be within one second more.
INTERVAL, COUNT = 1, 2
KEEPALIVE_BOUND = INTERVAL * (COUNT + 1) + 1

_names = itertools.count()


def record(fault: str, seconds: float, outcome: str) -> None:
    """
    Note a measured detection time: appended, as a JSON line, to the file
    named by LIBVIRT_TWISTED_MEASUREMENTS if set (docs/faults.md quotes them).
    """
    path = os.environ.get("LIBVIRT_TWISTED_MEASUREMENTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"fault": fault, "seconds": seconds, "outcome": outcome}) + "\n")


def defineAndUndefine(uri: str, xml: str) -> None:
    """Define and undefine a domain from a connection of its own: two events."""
    conn = libvirt.open(uri)
    try:
        conn.defineXML(xml).undefine()
    finally:
        conn.close()


class FaultRig:
    """
    A daemon, a LibvirtService subscribed to lifecycle events through a queue,
    and a monitor process on the same URI, with what they held once connected;
    and an anchor (tests/_anchor.py) that keeps one event registration on
    the daemon through every fault that leaves it running.
    """

    def __init__(self, case: TestCase, daemon: PrivateLibvirtd, uri: str) -> None:
        self.case = case
        self.daemon = daemon
        self.uri = uri
        self.anchor: Anchor = spawnAnchor(case, uri)
        self.service = LibvirtService(
            uri, keepalive=(INTERVAL, COUNT), retryPolicy=lambda failures: 0.05
        )
        self.statuses = Recorder()
        self.service.addObserver(self.statuses)
        self.events: EventQueue[Any] = EventQueue()
        self.service.subscribe("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self.events)
        self.monitor: Monitor | None = None
        self.connections: list[LibvirtConnection] = []
        self.fds = 0
        self.counts: dict[str, int] = {}
        # When a fault that takes preparing was inflicted, if not when asked.
        self.inflicted: float | None = None

    @classmethod
    async def create(cls, case: TestCase, qemu: bool = False, monitor: bool = True) -> FaultRig:
        daemon = startDaemon(case)
        rig = cls(case, daemon, daemon.qemuURI if qemu else daemon.testURI)
        await rig.anchor.whenConnected()
        rig.service.startService()
        case.addCleanup(rig.stop)
        rig.connections.append(await rig.service.whenConnected())
        if monitor:
            rig.monitor = spawnMonitor(
                case,
                "--uri",
                rig.uri,
                "--format",
                "json",
                "--events",
                "domain.lifecycle",
                "--keepalive",
                f"{INTERVAL}:{COUNT}",
                "--retry-initial",
                "0.05",
            )
            await rig.monitor.when(has("inventory"))
        await rig.eventsFlow()
        rig.baseline()
        return rig

    def baseline(self) -> None:
        """What nothingLeaked compares with: what the rig holds now."""
        self.fds = len(openFds())
        self.counts = LOOP.counts()

    async def stop(self) -> None:
        if self.service.running:
            await self.service.stopService()

    def statesSoFar(self, state: str) -> int:
        return sum(1 for call in self.statuses.calls if call[0].state == state)

    async def eventsFlow(self) -> None:
        """Events made now reach the service's queue (and the monitor)."""
        name = f"marker-{next(_names)}"
        xml = qemuDomainXML(name) if self.uri.startswith("qemu") else testDomainXML(name)
        await deferToThread(defineAndUndefine, self.uri, xml)
        while True:
            item = await self.events.get()
            if isinstance(item, ConnectionStatus):
                continue
            if item[1].name() == name and item[2] == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
                break
        if self.monitor is not None:
            await self.monitor.when(has("domain.lifecycle", name=name, event="UNDEFINED"))

    def monitorCount(self, kind: str) -> int:
        if self.monitor is None:
            return 0
        return sum(1 for r in self.monitor.records if r["kind"] == kind)

    async def survive(
        self,
        fault: str,
        inflict: Callable[[], object],
        reason: str,
        repair: Callable[[], object] | None = None,
    ) -> float:
        """
        Inflict a fault on the connection and check that everything recovers;
        return how long the service took to notice.
        """
        disconnects = self.statesSoFar("disconnected")
        reconnects = self.statesSoFar("reconnected")
        monitorDisconnects = self.monitorCount("connection.disconnected")
        monitorReconnects = self.monitorCount("connection.reconnected")
        daemonPid, anchorConnections = self.daemon.pid, self.anchor.connections()
        anchorStates = len(self.anchor.states)
        self.inflicted = None
        started = time.monotonic()
        inflict()
        await self.statuses.when(lambda calls: self.statesSoFar("disconnected") > disconnects)
        noticed = time.monotonic() - (self.inflicted or started)
        status = [c[0] for c in self.statuses.calls if c[0].state == "disconnected"][-1]
        self.case.assertEqual(status.reason, reason, fault)
        if self.monitor is not None:
            # Both notice before the daemon is repaired.
            await self.monitor.when(has("connection.disconnected", count=monitorDisconnects + 1))
            last = [r for r in self.monitor.records if r["kind"] == "connection.disconnected"][-1]
            self.case.assertEqual(last["reason"], reason, fault)
        if repair is not None:
            repair()
        await self.statuses.when(lambda calls: self.statesSoFar("reconnected") > reconnects)
        old = self.connections.pop()
        self.connections.append(await self.service.whenConnected())
        self.case.assertEqual(old.tracked(), [], f"{fault}: registrations left behind")
        expected = getattr(libvirt, f"VIR_CONNECT_CLOSE_REASON_{reason}")
        self.case.assertEqual(old.closeReason, expected, fault)
        if self.monitor is not None:
            await self.monitor.when(has("connection.reconnected", count=monitorReconnects + 1))
        if self.daemon.pid != daemonPid:
            # A restarted daemon holds none of the anchor's registration until it is back.
            await self.anchor.whenConnected(anchorConnections + 1)
        else:
            left = self.anchor.states[anchorStates:]
            self.case.assertNotIn("disconnected", left, f"{fault}: the anchor was disconnected")
        await self.eventsFlow()
        await self.nothingLeaked(fault)
        record(fault, noticed, f"disconnected ({reason}), reconnected, events flow")
        return noticed

    async def nothingLeaked(self, fault: str) -> None:
        """Back to what it held when first connected: fds, loop, threads."""
        await LOOP.drain()
        self.case.assertEqual(len(openFds()), self.fds, f"{fault}: fds leaked")
        self.case.assertEqual(LOOP.counts(), self.counts, f"{fault}: watches or timers leaked")
        strays = [
            t.name
            for t in threading.enumerate()
            if t is not threading.main_thread()
            and not t.name.startswith(("PoolThread-", "libvirt-call-", *HARNESS_THREADS))
        ]
        self.case.assertEqual(strays, [], f"{fault}: threads outside the bounded pools")

    # The faults.

    def kill(self) -> None:
        self.daemon.kill(signal.SIGKILL)

    def terminate(self) -> None:
        self.daemon.kill(signal.SIGTERM)

    def startAgain(self) -> None:
        self.daemon.start()

    def freeze(self) -> None:
        self.daemon.pause()

    def thaw(self) -> None:
        self.daemon.resume()

    def adminDisconnect(self) -> None:
        """Have the daemon disconnect every client but the anchor."""
        clients = [c for c in self._clients() if self._clientPid(c) != str(self.anchor.pid)]
        self.inflicted = time.monotonic()
        for client in clients:
            try:
                self.daemon.virtAdmin("client-disconnect", "libvirtd", client)
            except DaemonError:
                if client in self._clients():
                    raise  # not a client that left by itself meanwhile

    def _clients(self) -> list[str]:
        listing = self.daemon.virtAdmin("client-list", "libvirtd")
        return [line.split()[0] for line in listing.splitlines()[2:] if line.strip()]

    def _clientPid(self, client: str) -> str | None:
        """The pid of a client (as virt-admin prints it); L{None} once it left."""
        try:
            info = self.daemon.virtAdmin("client-info", "libvirtd", client)
        except DaemonError:
            return None
        rows = (row.partition(":") for row in info.splitlines())
        return {name.strip(): value.strip() for name, _, value in rows}.get("unix_process_id")
