"""
libvirt-twisted: the Twisted reactor as libvirt's event loop.

Call L{install} once, before opening any libvirt connection; libvirt then
delivers its events, keepalives and close notices through the reactor.
L{LibvirtConnection} wraps a connection so that its callbacks become
Deferreds and queues; L{LibvirtService} keeps one open across failures.
"""

from . import events
from ._connection import ConnectionState, LibvirtConnection
from ._connectionstatus import ConnectionStatus
from ._eventloop import EventLoop
from ._install import EventLoopInstallError, install, installed
from ._queue import EventQueue, EventQueueFinished
from ._registrations import ConnectionClosedError, UnknownCallbackError
from ._service import LibvirtService, ServiceState
from ._threads import InThread, callInThread, deferToLibvirtPool, inThread, setThreadPoolSize
from ._uri import maskURI

__all__ = [
    "ConnectionClosedError",
    "ConnectionState",
    "ConnectionStatus",
    "EventLoop",
    "EventLoopInstallError",
    "EventQueue",
    "EventQueueFinished",
    "InThread",
    "LibvirtConnection",
    "LibvirtService",
    "ServiceState",
    "UnknownCallbackError",
    "callInThread",
    "deferToLibvirtPool",
    "events",
    "inThread",
    "install",
    "installed",
    "maskURI",
    "setThreadPoolSize",
]
