"""
Receive domain lifecycle events in a Twisted program: the reactor is
libvirt's event loop.  Runs on the embedded test driver; no hypervisor needed.
"""

import libvirt
from twisted.internet import reactor

import libvirt_twisted

libvirt_twisted.install()  # before opening any connection
conn = libvirt.open("test:///default")


def lifecycle(conn, domain, event, detail, opaque):
    print(f"{domain.name()}: event {event}, detail {detail}")


conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)

XML = "<domain type='test'><name>demo</name><memory>8192</memory><os><type>hvm</type></os></domain>"
reactor.callLater(0.1, lambda: conn.createXML(XML, 0).destroy())
reactor.callLater(0.5, reactor.stop)
reactor.run()
