"""
Freed means freed: once a program drops a closed LibvirtConnection, the
wrapper and its virConnect are gone, in a plain script that never began
Twisted's logging (whose start-up buffer would otherwise keep whatever
logged as an event's source).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from ._harness import requireDaemon, runPython

SCRIPT = """
import gc, sys, weakref, libvirt
from twisted.internet import defer, task
import libvirt_twisted
from libvirt_twisted import EventQueue, LibvirtConnection
from libvirt_twisted.testing import PrivateLibvirtd

async def cycle(reactor, uri, lose=None):
    conn = libvirt.open(uri)
    connection = LibvirtConnection(conn)
    queue = EventQueue()
    connection.domainEventRegisterAny(None, 0, queue)
    connection.domainEventRegisterAny(None, 1, lambda *args: None)
    if lose is None:
        await connection.close()
    else:
        lose()
        await connection.whenClosed()
    await task.deferLater(reactor, 0, lambda: None)  # out of close()'s callbacks
    refs = weakref.ref(connection), weakref.ref(conn)
    del connection, conn, queue
    gc.collect()
    return [ref() is None for ref in refs]

async def main(reactor):
    libvirt_twisted.install(reactor)
    print("embedded:", await cycle(reactor, "test:///default"))
    with PrivateLibvirtd() as daemon:
        print("remote:", await cycle(reactor, daemon.testURI))
        print("lost:", await cycle(reactor, daemon.testURI, daemon.kill))

task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
"""


class FreedTests(TestCase):
    timeout = 60

    async def test_aClosedConnectionIsFreedInAPlainScript(self) -> None:
        requireDaemon()
        out, err, code = await runPython(SCRIPT)
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out.splitlines(),
            ["embedded: [True, True]", "remote: [True, True]", "lost: [True, True]"],
        )
