"""
The C{libvirt-monitor} plugin for C{twistd} and C{twist}.  It only names the
service maker: importing it must stay cheap and must not touch the reactor.
"""

from twisted.application.service import ServiceMaker

libvirtMonitor = ServiceMaker(  # type: ignore[no-untyped-call]
    "libvirt-monitor",
    "libvirt_twisted._monitor",
    "Watch libvirt hypervisors and write every event as a line of text or JSON.",
    "libvirt-monitor",
)
