"""
Test helpers: a private libvirtd for integration tests, and a check that a
test leaves no connection open and nothing registered with the event loop.

L{PrivateLibvirtd} starts libvirtd in session mode as an unprivileged user,
with all of its state in one temporary directory, and exposes URIs for its
test driver (events over a real unix socket) and its QEMU driver.  It can
kill, pause, resume and restart the daemon on the same socket for fault
tests, and on L{PrivateLibvirtd.stop} it stops the daemon and every QEMU
process the daemon started, and removes the directory.

It blocks while the daemon starts or stops (a fraction of a second): call it
from test set-up and tear-down, not from a busy reactor.

L{checkForLeaks} and the L{LeakChecks} mixin fail a test that leaves a
connection open or libvirt registrations behind.
"""

from ._leakcheck import LeakChecks, checkForLeaks
from ._libvirtd import DaemonError, PrivateLibvirtd, daemonUnavailable
from ._processes import STARTER_THREAD as STARTER_THREAD

__all__ = ["DaemonError", "LeakChecks", "PrivateLibvirtd", "checkForLeaks", "daemonUnavailable"]
