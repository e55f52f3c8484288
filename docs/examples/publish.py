"""
Publish a program's own libvirt events to RabbitMQ, at least once, without
the monitor: a LibvirtService's decoded events go to an AMQPPublisher, which
spools each until the broker confirms it.

    python docs/examples/publish.py amqp://guest:guest@127.0.0.1/%2F SPOOL_DIR

Starts and destroys a domain on the embedded test driver, prints each event
as it is published, waits for the broker to confirm them all, and stops.
Needs pika (pip install 'libvirt-twisted[amqp]').
"""

import sys

from twisted.internet import defer, task

import libvirt_twisted
from libvirt_twisted import AMQPPublisher, LibvirtService

XML = "<domain type='test'><name>demo</name><memory>8192</memory><os><type>hvm</type></os></domain>"


async def main(reactor, url, spool):
    libvirt_twisted.install(reactor)
    publisher = AMQPPublisher(url, spool, exchange="libvirt")
    service = LibvirtService("test:///default")

    stopped = defer.Deferred()

    def publish(event):
        publisher.publish(event, service.uri)
        print("published:", event.name, event.fields["event"])
        if event.fields["event"] == "STOPPED":
            stopped.callback(None)

    service.watch("domain.lifecycle", publish)
    publisher.startService()
    service.startService()

    conn = await service.whenConnected()
    domain = await conn.inThread.createXML(XML, 0)
    await libvirt_twisted.inThread(domain).destroy()
    await stopped
    await service.stopService()
    await publisher.whenConfirmed()  # the broker has every record
    await publisher.stopService()  # what is unconfirmed stays in the spool


task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:3])))
