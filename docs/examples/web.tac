"""
A web page of a host's domains, next to a LibvirtService, in a .tac file:

    LIBVIRT_URI=qemu:///system twistd -ny docs/examples/web.tac

then http://127.0.0.1:8080/ lists the domains.  LIBVIRT_URI defaults to the
embedded test driver, LIBVIRT_WEB_ENDPOINT to tcp:8080:interface=127.0.0.1.
Every libvirt round trip runs through inThread, off the reactor thread (a
domain's name is local).
"""

import html
import os

from twisted.application import service, strports
from twisted.internet import defer, reactor
from twisted.web import resource, server

import libvirt_twisted
from libvirt_twisted import LibvirtService

libvirt_twisted.install(reactor)

URI = os.environ.get("LIBVIRT_URI", "test:///default")
ENDPOINT = os.environ.get("LIBVIRT_WEB_ENDPOINT", "tcp:8080:interface=127.0.0.1")

application = service.Application("libvirt-web")
libvirtService = LibvirtService(URI)
libvirtService.setServiceParent(application)


class Domains(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        defer.ensureDeferred(self.page(request))
        return server.NOT_DONE_YET

    async def page(self, request):
        try:
            conn = await libvirtService.whenConnected(failAfterFailures=1)
            domains = await conn.inThread.listAllDomains()
            names = sorted(domain.name() for domain in domains)
            items = "".join(f"<li>{html.escape(name)}</li>" for name in names)
            uri = html.escape(libvirtService.maskedURI)
            body = f"<html><body><h1>{uri}</h1><ul>{items}</ul></body></html>"
        except Exception as e:
            request.setResponseCode(503)
            body = f"<html><body>{html.escape(str(e))}</body></html>"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.write(body.encode())
        request.finish()


strports.service(ENDPOINT, server.Site(Domains())).setServiceParent(application)
