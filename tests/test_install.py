"""
install(): one event loop per process, clear errors otherwise, and watches
registered before the reactor runs.
"""

from __future__ import annotations

import contextlib

import libvirt
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

import libvirt_twisted
from libvirt_twisted import EventLoopInstallError, install
from libvirt_twisted._install import errorCode

from ._harness import LOOP, requireDaemon, runPython


class InstallTests(TestCase):
    timeout = 60

    def test_sameReactorSameLoop(self) -> None:
        self.assertIs(install(), LOOP)
        self.assertIs(libvirt_twisted.installed(), LOOP)

    def test_anotherReactorIsRefused(self) -> None:
        with self.assertRaises(EventLoopInstallError) as raised:
            install(MemoryReactorClock())
        message = str(raised.exception)
        self.assertIn("already this package's", message)
        self.assertIn("call install() once", message)
        self.assertIs(libvirt_twisted.installed(), LOOP)

    async def test_defaultImplementationAlreadyRegistered(self) -> None:
        out, err, code = await runPython(
            """
            import libvirt, libvirt_twisted
            libvirt.virEventRegisterDefaultImpl()
            try:
                libvirt_twisted.install()
            except libvirt_twisted.EventLoopInstallError as e:
                print("refused:", e)
            print("installed:", libvirt_twisted.installed())
            """
        )
        self.assertEqual(code, 0, err)
        self.assertIn("refused: cannot make the reactor libvirt's event loop", out)
        self.assertIn("another event loop implementation is registered", out)
        self.assertIn("installed: None", out)

    async def test_libvirtaioAlreadyRegistered(self) -> None:
        out, err, code = await runPython(
            """
            import asyncio, libvirtaio, libvirt_twisted
            libvirtaio.virEventRegisterAsyncIOImpl(loop=asyncio.new_event_loop())
            try:
                libvirt_twisted.install()
            except libvirt_twisted.EventLoopInstallError as e:
                print("refused:", e)
            """
        )
        self.assertEqual(code, 0, err)
        self.assertIn("refused: cannot make the reactor libvirt's event loop", out)

    async def test_shutdownTellsLibvirtNothingAndFreesWhatIsDue(self) -> None:
        out, err, code = await runPython(
            """
            import os, libvirt, libvirt_twisted
            from twisted.internet import reactor
            loop = libvirt_twisted.install()
            conn = libvirt.open("test:///default")
            r, w = os.pipe()
            heard = []
            libvirt.virEventAddHandle(r, libvirt.VIR_EVENT_HANDLE_READABLE,
                                      lambda *a: heard.append(a[2]), None)

            def closeBeforeShutdown():
                # What a service's stopService does; and a peer that goes.
                conn.close()
                os.close(w)

            reactor.addSystemEventTrigger("before", "shutdown", closeBeforeShutdown)
            reactor.callWhenRunning(reactor.stop)
            reactor.run()
            print("heard:", heard, "unfreed:", loop.counts()["unfreed"])
            """
        )
        self.assertEqual(code, 0, err)
        self.assertIn("heard: [] unfreed: 0\n", out)

    async def test_registrationsBeforeTheReactorRuns(self) -> None:
        out, err, code = await runPython(
            """
            import os, libvirt, libvirt_twisted
            from twisted.internet import reactor
            loop = libvirt_twisted.install()
            conn = libvirt.open("test:///default")
            events = []
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                lambda c, d, e, detail, o: events.append((d.name(), e)), None)
            r, w = os.pipe()
            os.set_blocking(r, False)
            watched = []
            libvirt.virEventAddHandle(r, libvirt.VIR_EVENT_HANDLE_READABLE,
                lambda *a: (watched.append(a[2]), os.read(r, 1)), None)
            os.write(w, b"x")
            conn.createXML("<domain type='test'><name>early</name><memory>8192</memory>"
                           "<os><type>hvm</type></os></domain>", 0).destroy()

            def check():
                if len(events) >= 2 and watched:
                    print("events:", events, "watched:", watched)
                    reactor.stop()
                else:
                    reactor.callLater(0.01, check)

            reactor.callLater(0, check)
            reactor.callLater(10, reactor.stop)
            reactor.run()
            # Shutting down drops every descriptor; libvirt must not hear of it.
            print("after shutdown:", watched)
            """
        )
        self.assertEqual(code, 0, err)
        self.assertIn("events: [('early', 2), ('early', 5)] watched: [1]", out)
        self.assertIn("after shutdown: [1]\n", out)


class OpenedBeforeInstallTests(TestCase):
    """
    A connection opened before install() cannot receive events through the
    reactor: wrapping it says so, in a process where install() comes late.
    """

    timeout = 60

    async def test_eachCase(self) -> None:
        requireDaemon()
        out, err, code = await runPython(
            """
            import libvirt
            from libvirt_twisted.testing import PrivateLibvirtd
            import libvirt_twisted
            from libvirt_twisted import LibvirtConnection, NoEventLoopError

            with PrivateLibvirtd() as daemon:
                early = libvirt.open(daemon.testURI)
                embedded = libvirt.open("test:///default")
                try:
                    LibvirtConnection(early)
                except NoEventLoopError as e:
                    print("not installed:", e)
                libvirt_twisted.install()
                try:
                    LibvirtConnection(early)
                except NoEventLoopError as e:
                    print("remote, before:", e)
                # Nothing was left registered: a bare close callback still fits.
                early.registerCloseCallback(lambda *args: None, None)
                print("late:", LibvirtConnection(libvirt.open(daemon.testURI)).state.value)
                # The embedded driver has no socket: its events come by a timer
                # that its first registration, after install(), creates.
                wrapped = LibvirtConnection(embedded)
                from twisted.internet import reactor
                seen = []

                def lifecycle(connection, domain, event, detail, opaque):
                    seen.append(event)
                    if len(seen) == 2:
                        reactor.stop()

                wrapped.domainEventRegisterAny(None, 0, lifecycle)
                xml = ("<domain type='test'><name>early</name><memory>8192</memory>"
                       "<os><type>hvm</type></os></domain>")
                reactor.callWhenRunning(lambda: embedded.createXML(xml, 0).destroy())
                reactor.callLater(20, reactor.stop)
                reactor.run()
                print("embedded:", seen)
            """
        )
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertIn(
            "not installed: call libvirt_twisted.install() before opening the connection to wrap",
            lines,
        )
        (before,) = [line for line in lines if line.startswith("remote, before:")]
        self.assertIn("was opened before libvirt_twisted.install()", before)
        self.assertIn("call install() first, then open it", before)
        self.assertIn("late: open", lines)
        self.assertIn("embedded: [2, 5]", lines)  # STARTED, STOPPED


class ErrorCodeTests(TestCase):
    def test_aCodeResetBeforeTheExceptionWasMadeIsNotLost(self) -> None:
        """
        libvirt-python reads an error's code from the thread's last error when
        it makes the exception; a libvirt call in between (a virDomainFree run
        by the garbage collector) resets that.  The code reported stands in.
        """
        conn = libvirt.open("test:///default")
        self.addCleanup(conn.close)
        with self.assertRaises(libvirt.libvirtError) as raised:
            conn.lookupByName("no-such-domain")
        self.assertEqual(errorCode(raised.exception), libvirt.VIR_ERR_NO_DOMAIN)
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName("no-such-domain")
        libvirt.getVersion()  # any libvirt call resets the thread's last error
        late = libvirt.libvirtError("made after the reset")
        self.assertIsNone(late.get_error_code())
        self.assertEqual(errorCode(late), libvirt.VIR_ERR_NO_DOMAIN)
