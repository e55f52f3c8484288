"""
Benchmarks of libvirt_twisted against the ways Python programs receive
libvirt's events today: libvirt's own C loop (in a thread, with
C{reactor.callFromThread}, or calling the callback directly: the floor) and
libvirt-python's libvirtaio.  Run with C{python -m bench}.
"""
