"""
Brings a private libvirtd to stop delivering domain events (docs/faults.md,
tests/_anchor.py): one connection after another registers a domain event
callback and closes, so that the daemon's last registration keeps going,
while another process starts and destroys domains.  After each round of 100
such cycles a fresh connection checks that a domain defined and undefined
now still reaches it.  Run from a checkout:

    .venv/bin/python docs/libvirtd_event_race.py [ROUNDS]

It prints one line per round and stops at the first round whose check got
nothing; with an anchor, a connection that keeps its registration for the
whole run (--anchor), it should never stop.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import libvirt
from twisted.internet import reactor, task, threads
from twisted.internet.defer import ensureDeferred

import libvirt_twisted
from libvirt_twisted import EventQueue, LibvirtConnection
from libvirt_twisted.testing import PrivateLibvirtd

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
NOISE = textwrap.dedent(
    """
    import sys, libvirt
    conn = libvirt.open(sys.argv[1])
    for i in range(10**9):
        conn.createXML("<domain type='test'><name>noise-%d</name><memory>8192</memory>"
                       "<os><type>hvm</type></os></domain>" % i, 0).destroy()
    """
)


def defineAndUndefine(uri: str, name: str) -> None:
    conn = libvirt.open(uri)
    xml = (
        f"<domain type='test'><name>{name}</name><memory>8192</memory>"
        f"<os><type>hvm</type></os></domain>"
    )
    conn.defineXML(xml).undefine()
    conn.close()


async def eventsFlow(uri: str, name: str) -> bool:
    """Whether a fresh connection receives a domain's DEFINED and UNDEFINED."""
    conn = await LibvirtConnection.open(uri)
    queue: EventQueue[Any] = EventQueue()
    await conn.inThread.domainEventRegisterAny(None, LIFECYCLE, queue)
    await threads.deferToThread(defineAndUndefine, uri, name)
    await task.deferLater(reactor, 2, lambda: None)
    await conn.close()
    return sum(1 for item in queue.pending if item[1].name() == name) >= 2


async def main(rounds: int, anchored: bool) -> None:
    with PrivateLibvirtd() as daemon:
        uri = daemon.testURI
        keep = await LibvirtConnection.open(uri)  # holds the test driver's state
        if anchored:
            await keep.inThread.domainEventRegisterAny(None, LIFECYCLE, lambda *args: None)
        noise = subprocess.Popen([sys.executable, "-c", NOISE, uri])
        try:
            for n in range(rounds):
                for _ in range(100):
                    conn = await LibvirtConnection.open(uri)
                    await conn.inThread.domainEventRegisterAny(None, LIFECYCLE, lambda *args: None)
                    await conn.close()
                flowing = await eventsFlow(uri, f"check-{n}")
                print(f"round {n}: events {'flow' if flowing else 'STOPPED'}", flush=True)
                if not flowing:
                    break
        finally:
            noise.kill()
            noise.wait()
            await keep.close()


if __name__ == "__main__":
    libvirt_twisted.install(reactor)
    arguments = [a for a in sys.argv[1:] if a != "--anchor"]
    count = int(arguments[0]) if arguments else 40
    task.react(lambda _: ensureDeferred(main(count, "--anchor" in sys.argv)))
