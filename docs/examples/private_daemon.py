"""
A libvirtd of your own for a test: session mode, unprivileged, all its state
in one temporary directory, gone after the with block.  Needs libvirtd
installed (Debian: libvirt-daemon).
"""

import libvirt

from libvirt_twisted.testing import PrivateLibvirtd

with PrivateLibvirtd() as daemon:
    conn = libvirt.open(daemon.testURI)
    print("domains:", [domain.name() for domain in conn.listAllDomains()])
    conn.close()
