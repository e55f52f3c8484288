"""
libvirt-twisted: the Twisted reactor as libvirt's event loop.

Call L{install} once, before opening any libvirt connection; libvirt then
delivers its events, keepalives and close notices through the reactor.
"""

from ._eventloop import EventLoop
from ._install import EventLoopInstallError, install, installed

__all__ = [
    "EventLoop",
    "EventLoopInstallError",
    "install",
    "installed",
]
