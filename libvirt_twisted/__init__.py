"""
libvirt-twisted: the Twisted reactor as libvirt's event loop.

Call L{install} once, before opening any libvirt connection; libvirt then
delivers its events, keepalives and close notices through the reactor.
L{LibvirtConnection} wraps a connection so that its callbacks become
Deferreds and queues; L{LibvirtService} keeps one open across failures;
L{AMQPPublisher} publishes events to RabbitMQ, at least once (with the
C{amqp} extra).
"""

from . import events
from ._amqppublisher import AMQPPublisher
from ._amqpsettings import AMQPSettingsError
from ._connection import ConnectionState, LibvirtConnection
from ._connectionstatus import ConnectionStatus
from ._eventloop import EventLoop
from ._install import EventLoopInstallError, NoEventLoopError, install, installed
from ._inventory import Inventory
from ._queue import EventQueue, EventQueueFinished
from ._records import Change, DomainRecord, ObjectRecord
from ._registrations import ConnectionClosedError, UnknownCallbackError
from ._service import LibvirtService, ServiceState
from ._spool import SpoolError
from ._statewait import DomainStateTimeout, DomainUndefinedError
from ._threads import InThread, callInThread, deferToLibvirtPool, inThread, setThreadPoolSize
from ._uri import maskURI

__all__ = [
    "AMQPPublisher",
    "AMQPSettingsError",
    "Change",
    "ConnectionClosedError",
    "ConnectionState",
    "ConnectionStatus",
    "DomainRecord",
    "DomainStateTimeout",
    "DomainUndefinedError",
    "EventLoop",
    "EventLoopInstallError",
    "EventQueue",
    "EventQueueFinished",
    "InThread",
    "Inventory",
    "LibvirtConnection",
    "LibvirtService",
    "NoEventLoopError",
    "ObjectRecord",
    "ServiceState",
    "SpoolError",
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
