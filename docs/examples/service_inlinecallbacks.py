"""
LibvirtService with inlineCallbacks: a connection that comes back after a
failure, with its subscriptions.  Runs on the embedded test driver.
"""

import libvirt
from twisted.internet import defer, task

import libvirt_twisted
from libvirt_twisted import ConnectionStatus, EventQueue, LibvirtService, events

XML = "<domain type='test'><name>demo</name><memory>8192</memory><os><type>hvm</type></os></domain>"


@defer.inlineCallbacks
def main(reactor):
    libvirt_twisted.install(reactor)
    service = LibvirtService("test:///default", keepalive=(5, 3))
    service.addObserver(lambda status: print("connection:", status.state, status.uri))
    changes = EventQueue()  # events, and in order with them the connection's changes
    service.subscribe("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, changes)
    service.startService()

    conn = yield service.whenConnected()
    domain = yield conn.inThread.createXML(XML, 0)
    yield libvirt_twisted.inThread(domain).destroy()
    for _ in range(3):
        item = yield changes.get()
        if isinstance(item, ConnectionStatus):
            print("in the queue:", item.state)
            continue
        _, dom, event, detail, _ = item
        print(events.decode("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, (dom, event, detail)))
    yield service.stopService()  # fires once libvirt has freed everything


task.react(main)
