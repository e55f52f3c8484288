"""
Producer processes for load and chaos tests: they start and destroy
transient test-driver domains through the private daemon, from processes of
their own, as other clients of a hypervisor would.
"""

from __future__ import annotations

import textwrap

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from ._harness import spawnPython

_PRODUCER = textwrap.dedent(
    """
    import sys, time, libvirt
    libvirt.registerErrorHandler(lambda *a: None, None)
    uri, prefix, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    made, conn, i = 0, None, 0
    while count < 0 or made < count:
        # A name is never tried twice: a domain whose destroy was cut off by
        # a fault lives on, and would refuse its name again for ever.
        xml = ("<domain type='test'><name>%s-%d</name><memory>8192</memory>"
               "<os><type>hvm</type></os></domain>" % (prefix, i))
        i += 1
        try:
            if conn is None:
                conn = libvirt.open(uri)
            conn.createXML(xml, 0).destroy()
            made += 1
        except libvirt.libvirtError:
            conn = None
            time.sleep(0.05)
        if pause:
            time.sleep(pause)
    print(made)
    """
)


_CHURNER = textwrap.dedent(
    """
    import random, sys, libvirt
    libvirt.registerErrorHandler(lambda *a: None, None)
    uri, prefix, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    conn = libvirt.open(uri)
    names, made, done = [], 0, 0
    def xml(name):
        return ("<domain type='test'><name>%s</name><memory>8192</memory>"
                "<os><type>hvm</type></os></domain>" % name)
    while done < count:
        if not names or rng.random() < 0.15:
            name = "%s-%d" % (prefix, made)
            made += 1
            if rng.random() < 0.5:
                conn.defineXML(xml(name))
            else:
                conn.createXML(xml(name), 0)
            names.append(name)
            done += 1
            continue
        name = rng.choice(names)
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            names.remove(name)  # a transient domain that stopped
            continue
        state = dom.state()[0]
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            if rng.random() < 0.3:
                dom.undefine()
                names.remove(name)
            else:
                dom.create()
        elif state == libvirt.VIR_DOMAIN_RUNNING:
            dom.suspend() if rng.random() < 0.4 else dom.destroy()
        elif state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume() if rng.random() < 0.6 else dom.destroy()
        done += 1
    print(done)
    """
)


class Producer(ProcessProtocol):
    """One producer process; C{ended} fires with how many domains it made."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        if code == 0:
            self.ended.callback(int(self.out.strip() or b"0"))
        else:
            self.ended.errback(RuntimeError(f"producer exited {code}: {self.err.decode()}"))


def spawnProducer(
    case: TestCase, uri: str, prefix: str, count: int, pause: float = 0.0
) -> Producer:
    """
    Start a producer making C{count} domains named C{prefix-N} (for ever if
    C{count} < 0, then killed at cleanup), riding out daemon restarts.
    """
    producer = Producer()
    args = ["-c", _PRODUCER, uri, prefix, str(count), str(pause)]
    spawnPython(case, producer, args, producer.ended)
    return producer


def spawnChurner(case: TestCase, uri: str, prefix: str, count: int, seed: int) -> Producer:
    """
    Start a process making C{count} random lifecycle operations on domains
    of its own (C{prefix-N}): define, create, start, suspend, resume,
    destroy, undefine; C{ended} fires with the count.
    """
    producer = Producer()
    spawnPython(
        case, producer, ["-c", _CHURNER, uri, prefix, str(count), str(seed)], producer.ended
    )
    return producer
