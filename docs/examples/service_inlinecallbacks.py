"""
LibvirtService with inlineCallbacks: a connection that comes back after a
failure, with its subscriptions.  Runs on the embedded test driver.
"""

import libvirt
from twisted.internet import defer, task

import libvirt_twisted
from libvirt_twisted import EventQueue, LibvirtService, events

XML = "<domain type='test'><name>demo</name><memory>8192</memory><os><type>hvm</type></os></domain>"


@defer.inlineCallbacks
def main(reactor):
    libvirt_twisted.install(reactor)
    service = LibvirtService("test:///default", keepalive=(5, 3))
    service.addObserver(lambda status: print("connection:", status.state, status.uri))
    changes = EventQueue()  # also told, in order, when the connection goes and comes back
    service.subscribe("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, changes)
    service.startService()

    conn = yield service.whenConnected()
    domain = yield conn.inThread.createXML(XML, 0)
    yield libvirt_twisted.inThread(domain).destroy()
    for _ in range(2):
        _, dom, event, detail, _ = yield changes.get()
        print(events.decode("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, (dom, event, detail)))
    yield service.stopService()  # fires once libvirt has freed everything


task.react(main)
