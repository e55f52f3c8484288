"""
Brings libvirt to stop delivering domain events (docs/faults.md,
tests/_anchor.py) while another process starts and destroys domains.

By default the daemon: one connection after another registers a domain
event callback and closes, so that the daemon's last registration keeps
going; after each round of 100 such cycles a fresh connection checks that a
domain defined and undefined now still reaches it.  With --anchor a
connection keeps a registration for the whole run, and events should never
stop.  With --raw, the client library: one bare virConnect registers and
deregisters a domain lifecycle callback 100 times a round, so that its last
registration keeps going (the daemon anchored), then checks that it still
receives events itself.  --client does the same through a
LibvirtConnection, with a lifecycle and a reboot callback in turn: it keeps
its last registration parked, so libvirt still registers and deregisters
(each key frees the other) but the count never reaches zero, and events
should never stop.  --kept is --raw while that
connection keeps one other registration (a network one).  Run from a
checkout:

    .venv/bin/python docs/libvirtd_event_race.py [--anchor | --raw | --client | --kept] [ROUNDS]

It prints one line per round and stops at the first round whose check got
nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import libvirt
from twisted.internet import reactor, task, threads
from twisted.internet.defer import ensureDeferred

import libvirt_twisted
from libvirt_twisted import LibvirtConnection
from libvirt_twisted.testing import PrivateLibvirtd

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
REBOOT = libvirt.VIR_DOMAIN_EVENT_ID_REBOOT
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


async def receives(conn: LibvirtConnection | libvirt.virConnect, uri: str, name: str) -> bool:
    """Whether C{conn} receives a domain's DEFINED and UNDEFINED."""
    seen: list[int] = []

    def record(connection: object, domain: libvirt.virDomain, event: int, *rest: object) -> None:
        if domain.name() == name:  # the noise floods any bounded queue
            seen.append(event)

    callbackID = await threads.deferToThread(
        conn.domainEventRegisterAny, None, LIFECYCLE, record, None
    )
    await threads.deferToThread(defineAndUndefine, uri, name)
    await task.deferLater(reactor, 2, lambda: None)
    await threads.deferToThread(conn.domainEventDeregisterAny, callbackID)
    return len(seen) >= 2


async def churnConnections(uri: str) -> None:
    """The daemon's last registration goes, 100 times."""
    for _ in range(100):
        conn = await LibvirtConnection.open(uri)
        await conn.inThread.domainEventRegisterAny(None, LIFECYCLE, lambda *args: None)
        await conn.close()


async def churnRegistrations(
    conn: LibvirtConnection | libvirt.virConnect, eventIDs: tuple[int, ...]
) -> None:
    """C{conn}'s last registration goes (unless parked), 100 times, C{eventIDs} in turn."""
    for cycle in range(100):
        eventID = eventIDs[cycle % len(eventIDs)]
        callbackID = await threads.deferToThread(
            conn.domainEventRegisterAny, None, eventID, lambda *a: None, None
        )
        await threads.deferToThread(conn.domainEventDeregisterAny, callbackID)


async def main(rounds: int, mode: str) -> None:
    with PrivateLibvirtd() as daemon:
        uri = daemon.testURI
        keep = await LibvirtConnection.open(uri)  # holds the test driver's state
        if mode != "daemon":
            await keep.inThread.domainEventRegisterAny(None, LIFECYCLE, lambda *args: None)
        churned: LibvirtConnection | libvirt.virConnect | None = None
        if mode == "client":
            churned = await LibvirtConnection.open(uri)
        elif mode in ("raw", "kept"):
            churned = await threads.deferToThread(libvirt.open, uri)
        if churned is not None and mode == "kept":
            await threads.deferToThread(
                churned.networkEventRegisterAny, None, 0, lambda *args: None, None
            )
        noise = subprocess.Popen([sys.executable, "-c", NOISE, uri])
        try:
            for n in range(rounds):
                if churned is not None:
                    # Through LibvirtConnection, one key would just be reused:
                    # two in turn make libvirt register and deregister.
                    keys = (LIFECYCLE, REBOOT) if mode == "client" else (LIFECYCLE,)
                    await churnRegistrations(churned, keys)
                    flowing = await receives(churned, uri, f"check-{n}")
                else:
                    await churnConnections(uri)
                    checked = await LibvirtConnection.open(uri)
                    flowing = await receives(checked, uri, f"check-{n}")
                    await checked.close()
                print(f"round {n}: events {'flow' if flowing else 'STOPPED'}", flush=True)
                if not flowing:
                    break
        finally:
            noise.kill()
            noise.wait()
            if isinstance(churned, LibvirtConnection):
                await churned.close()
            elif churned is not None:
                churned.close()
            await keep.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("rounds", type=int, nargs="?", default=40)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--anchor", action="store_const", dest="mode", const="anchor")
    modes.add_argument("--raw", action="store_const", dest="mode", const="raw")
    modes.add_argument("--client", action="store_const", dest="mode", const="client")
    modes.add_argument("--kept", action="store_const", dest="mode", const="kept")
    arguments = parser.parse_args()
    libvirt_twisted.install(reactor)
    task.react(lambda _: ensureDeferred(main(arguments.rounds, arguments.mode or "daemon")))
