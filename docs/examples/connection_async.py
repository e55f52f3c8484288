"""
async/await with LibvirtConnection: events through a queue, calls off the
reactor thread, readable event objects.  Runs on the embedded test driver.
"""

import libvirt
from twisted.internet import defer, task

import libvirt_twisted
from libvirt_twisted import EventQueue, LibvirtConnection, events

XML = "<domain type='test'><name>demo</name><memory>8192</memory><os><type>hvm</type></os></domain>"


async def main(reactor):
    libvirt_twisted.install(reactor)
    changes = EventQueue()
    conn = LibvirtConnection(libvirt.open("test:///default"), onDomainChange=changes)

    domain = await conn.inThread.createXML(XML, 0)  # a blocking call, in a thread
    await libvirt_twisted.inThread(domain).destroy()

    for _ in range(2):
        _, dom, event, detail, _ = await changes.get()
        print(events.decode("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, (dom, event, detail)))

    changes.finish()
    await conn.close()  # fires once libvirt has let go of everything


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
