"""
A host's state without polling: LibvirtService's inventory, read with no
round trip, kept by events, and a wait for a domain's state.  Runs on the
embedded test driver.
"""

from twisted.internet import defer, task

import libvirt_twisted
from libvirt_twisted import LibvirtService

XML = "<domain type='test'><name>demo</name><memory>8192</memory><os><type>hvm</type></os></domain>"


def changed(change):
    if change.family == "domain" and change.after is not None:
        print("changed:", change.after.name, change.after.state, "by", change.source)


def happened(event):
    print("event:", event.name, event.fields["event"])


async def main(reactor):
    libvirt_twisted.install(reactor)
    service = LibvirtService("test:///default", inventory=True, resync=60.0)
    service.inventory.addObserver(changed)
    service.watch("domain.lifecycle", happened)
    service.startService()

    conn = await service.whenConnected()
    for record in service.inventory.domains.values():  # no round trip
        print("known:", record.name, record.state, record.reason)

    domain = await conn.inThread.createXML(XML, 0)
    print("reached:", await service.whenDomainState("demo", "RUNNING"))
    await libvirt_twisted.inThread(domain).suspend()
    print("reached:", await service.whenDomainState(domain, ("PAUSED", "SHUTOFF"), timeout=5))
    print("now:", service.inventory.domain("demo").state, "lost events:", service.lostEvents)
    await libvirt_twisted.inThread(domain).destroy()
    await service.stopService()


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
