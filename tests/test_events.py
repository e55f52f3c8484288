"""
libvirt_twisted.events: callback arguments decoded into Event objects, with
names introspected from the installed libvirt; checked on synthesized
arguments of every event kind, and on the events that libvirt's test driver
and a private libvirtd really deliver through the reactor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import libvirt
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase, TestCase

from libvirt_twisted import _codenames, _families, events
from libvirt_twisted.events import (
    FAMILIES,
    Event,
    allKinds,
    closeEvent,
    codeName,
    decode,
    eventIDs,
)

from ._harness import Recorder, openConnection, startDaemon, testDomainXML

DOMAIN_LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
LIFECYCLE_EVENTS = (
    "DEFINED",
    "UNDEFINED",
    "STARTED",
    "SUSPENDED",
    "RESUMED",
    "STOPPED",
    "SHUTDOWN",
    "PMSUSPENDED",
    "CRASHED",
)


def camel(family: str) -> str:
    """C{"storage_pool"} -> C{"StoragePool"}, as libvirt-python spells families."""
    return "".join(part.capitalize() for part in family.split("_"))


def dispatchParameters(kind: str) -> list[inspect.Parameter]:
    """The parameters, object first, of the dispatch method an event kind maps to."""
    family = kind.split(".")[0]
    method = getattr(libvirt.virConnect, f"_dispatch{camel(family)}Event{stem(kind)}Callback")
    parameters = inspect.signature(method).parameters.values()
    return [p for p in parameters if p.name not in ("self", "cbData")]


def stem(kind: str) -> str:
    """The stem of the dispatch method an event kind maps to."""
    family, idName = kind.split(".")
    signature = events._signature(family, idName)
    assert signature is not None, f"{kind} maps to no dispatch method"
    return signature[0]


def prefixesInUse() -> dict[tuple[str, str, str], str]:
    """Every coded or flag argument of an event the installed libvirt has, with its prefix."""
    present = {(kind.split(".")[0], stem(kind)) for kind in allKinds()}
    table = {**_codenames.CODES, **_codenames.FLAGS}
    return {key: prefix for key, prefix in table.items() if key[:2] in present}


class FakeSecret(libvirt.virSecret):
    """
    A secret without a connection, for pure decoding tests: libvirt's test
    driver has no secrets (the end-to-end secret test uses a daemon).
    """

    def __init__(self, uuid: str, usage: str | None) -> None:
        self._o = None
        self._uuid = uuid
        self._usage = usage

    def UUIDString(self) -> str:
        return self._uuid

    def usageID(self) -> str:
        return self._usage  # type: ignore[return-value]


class IntrospectionTests(SynchronousTestCase):
    """The tables follow the installed libvirt, and catch an upgrade that breaks them."""

    def test_everyEventIDConstantIsAKind(self) -> None:
        pattern = re.compile(r"VIR_([A-Z_]+?)_EVENT_ID_([A-Z0-9_]+)")
        constants = {
            f"{m[1].lower()}.{m[2].lower()}": getattr(libvirt, m[0])
            for m in map(pattern.fullmatch, dir(libvirt))
            if m and not m[0].endswith("_LAST")
        }
        self.assertEqual({kind: allKinds()[kind][1] for kind in allKinds()}, constants)
        self.assertLessEqual({kind.split(".")[0] for kind in constants}, set(FAMILIES))

    def test_everyKindMapsToADispatchMethod(self) -> None:
        unmapped = [kind for kind in allKinds() if events._signature(*kind.split(".")) is None]
        self.assertEqual(
            unmapped,
            [],
            f"no virConnect._dispatch*Callback method matches {unmapped}: add them to"
            " events._DISPATCHED_AS",
        )

    def test_dispatchMethodsTakeTheObjectFirst(self) -> None:
        firsts = {kind: dispatchParameters(kind)[0].annotation for kind in allKinds()}
        for kind, annotation in firsts.items():
            cls = _families.family(kind.split(".")[0]).objectType
            self.assertEqual(annotation, cls.__name__, kind)

    def test_codedArgumentsExist(self) -> None:
        """Every argument the prefix tables name is an argument of its event."""
        for kind in allKinds():
            names = [p.name for p in dispatchParameters(kind)]
            for (family, dispatch, arg), prefix in prefixesInUse().items():
                if (family, dispatch) == (kind.split(".")[0], stem(kind)):
                    self.assertIn(arg, names, f"{kind} has no argument {arg!r} for {prefix}")

    def test_codePrefixesHaveUnambiguousConstants(self) -> None:
        lifecycle = [f"VIR_DOMAIN_EVENT_{name}_" for name in _codenames.lifecycleEvents().values()]
        prefixes = [
            *prefixesInUse().values(),
            _codenames.GRAPHICS_ADDRESS,
            _codenames.CLOSE_REASON,
            *lifecycle,
        ]
        for prefix in prefixes:
            names = _codenames.under(prefix)
            values = [getattr(libvirt, name) for name in names]
            self.assertTrue(names, f"the installed libvirt has no constant {prefix}*")
            self.assertEqual(len(set(values)), len(values), f"{prefix}* share values: {names}")

    def test_lifecycleEvents(self) -> None:
        found = _codenames.lifecycleEvents()
        self.assertLessEqual(set(LIFECYCLE_EVENTS), set(found.values()))
        for value, name in found.items():
            self.assertEqual(getattr(libvirt, f"VIR_DOMAIN_EVENT_{name}"), value)

    def test_eventIDs(self) -> None:
        domain = eventIDs("domain")
        self.assertEqual(domain["lifecycle"], libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE)
        self.assertEqual(domain["block_job_2"], libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2)
        self.assertEqual(domain["rtc_change"], libvirt.VIR_DOMAIN_EVENT_ID_RTC_CHANGE)
        self.assertEqual(eventIDs("secret")["value_changed"], 1)
        for family in FAMILIES:
            prefix = f"VIR_{family.upper()}_EVENT_ID_"
            for name, value in eventIDs(family).items():
                self.assertEqual(getattr(libvirt, prefix + name.upper()), value)
        domain.clear()
        self.assertIn("lifecycle", eventIDs("domain"))

    def test_allKinds(self) -> None:
        kinds = allKinds()
        self.assertEqual(kinds["domain.lifecycle"], ("domain", DOMAIN_LIFECYCLE))
        self.assertEqual(kinds["domain.block_job_2"], ("domain", 16))
        self.assertEqual(kinds["storage_pool.refresh"], ("storage_pool", 1))
        self.assertEqual(kinds["node_device.update"], ("node_device", 1))
        self.assertEqual(len(kinds), sum(len(eventIDs(family)) for family in FAMILIES))

    def test_codeName(self) -> None:
        self.assertEqual(codeName("VIR_DOMAIN_EVENT_STOPPED_", 1), "DESTROYED")
        self.assertEqual(codeName("VIR_CONNECT_CLOSE_REASON_", 2), "KEEPALIVE")
        # Prefixes inside others, and flags sharing a prefix, are not codes.
        self.assertEqual(codeName("VIR_DOMAIN_EVENT_GRAPHICS_", 0), "CONNECT")
        self.assertEqual(codeName("VIR_DOMAIN_EVENT_GRAPHICS_ADDRESS_", 0), "IPV4")
        self.assertEqual(codeName("VIR_DOMAIN_BLOCK_JOB_", 1), "FAILED")
        self.assertEqual(codeName("VIR_NETWORK_EVENT_", 0), "DEFINED")

    def test_unknownCodeIsNamedByItsNumber(self) -> None:
        self.assertEqual(codeName("VIR_DOMAIN_EVENT_STOPPED_", 4242), "UNKNOWN(4242)")
        self.assertEqual(codeName("VIR_DOMAIN_EVENT_WATCHDOG_", -1), "UNKNOWN(-1)")
        self.assertEqual(codeName("VIR_NO_SUCH_PREFIX_", 0), "UNKNOWN(0)")

    def test_unknownFamily(self) -> None:
        for call in (lambda: eventIDs("interface"), lambda: decode("interface", 0, ())):
            with self.assertRaises(ValueError) as raised:
                call()
            self.assertIn("unknown event family 'interface'", str(raised.exception))


class CloseEventTests(SynchronousTestCase):
    def test_reasons(self) -> None:
        self.assertEqual(
            closeEvent(libvirt.VIR_CONNECT_CLOSE_REASON_EOF),
            Event("connection", "connection.close", None, None, {"reason": "EOF"}),
        )
        self.assertEqual(closeEvent(3).asDict()["reason"], "CLIENT")
        self.assertEqual(
            closeEvent(77).asDict(),
            {
                "family": "connection",
                "kind": "connection.close",
                "name": None,
                "uuid": None,
                "reason": "UNKNOWN(77)",
            },
        )

    def test_badReason(self) -> None:
        with self.assertRaises(TypeError) as raised:
            closeEvent("EOF")  # type: ignore[arg-type]
        self.assertIn("'reason' must be an int code", str(raised.exception))


class EventTests(SynchronousTestCase):
    def test_immutable(self) -> None:
        params = {"cputune.vcpupin0": "0-1", "list": [1, 2]}
        event = Event("domain", "domain.tunable", "d", "u", {"params": params})
        params["cputune.vcpupin0"] = "changed"
        self.assertEqual(event.fields["params"]["cputune.vcpupin0"], "0-1")
        with self.assertRaises(dataclasses.FrozenInstanceError):
            event.name = "other"  # type: ignore[misc]
        with self.assertRaises(TypeError):
            event.fields["params"]["new"] = 1
        copy = event.asDict()
        copy["params"]["list"].append(3)
        self.assertEqual(event.asDict()["params"], {"cputune.vcpupin0": "0-1", "list": [1, 2]})

    def test_jsonSafeFields(self) -> None:
        event = Event(
            "domain",
            "domain.x",
            None,
            None,
            {"raw": b"\xffab", "nan": float("nan"), "set": {1}, "object": object, 1: 2},  # type: ignore[dict-item]
        )
        data = event.asDict()
        self.assertEqual(json.loads(json.dumps(data, allow_nan=False)), data)
        self.assertEqual(data["raw"], "\\xffab")
        self.assertEqual(data["nan"], "nan")
        self.assertEqual(data["set"], [1])
        self.assertEqual(data["1"], 2)

    def test_fieldsMayNotShadowAttributes(self) -> None:
        with self.assertRaises(ValueError) as raised:
            Event("domain", "domain.x", None, None, {"kind": "y", "name": "z"})
        self.assertIn("['kind', 'name']", str(raised.exception))

    def test_repr(self) -> None:
        event = Event("network", "network.lifecycle", "n", "u", {"event": "STARTED"})
        self.assertEqual(
            repr(event), "Event('network.lifecycle', name='n', uuid='u', event='STARTED')"
        )


class DecodeTests(TestCase):
    """Decoding synthesized arguments, with real objects of the embedded test driver."""

    def setUp(self) -> None:
        conn = openConnection(self, "test:///default")
        self.objects: dict[str, Any] = {
            "domain": conn.lookupByName("test"),
            "network": conn.networkLookupByName("default"),
            "storage_pool": conn.storagePoolLookupByName("default-pool"),
            "node_device": conn.nodeDeviceLookupByName("computer"),
            "secret": FakeSecret("0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f", "/var/lib/x.img"),
        }
        self.domain = self.objects["domain"]

    def decodeDomain(self, idName: str, *args: Any) -> Event:
        return decode("domain", eventIDs("domain")[idName], (self.domain, *args))

    def test_domainLifecycle(self) -> None:
        event = self.decodeDomain(
            "lifecycle",
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
        )
        uuid = self.domain.UUIDString()
        self.assertEqual(
            event,
            Event(
                "domain",
                "domain.lifecycle",
                "test",
                uuid,
                {"event": "STOPPED", "detail": "DESTROYED"},
            ),
        )
        self.assertEqual(
            json.loads(json.dumps(event.asDict())),
            {
                "family": "domain",
                "kind": "domain.lifecycle",
                "name": "test",
                "uuid": uuid,
                "event": "STOPPED",
                "detail": "DESTROYED",
            },
        )

    def test_domainLifecycleShortCutDecodesAsTheGeneralPath(self) -> None:
        """The event path's short cut for domain lifecycle events changes nothing."""
        short = [
            decode("domain", DOMAIN_LIFECYCLE, (self.domain, e, d))
            for e in range(-1, 12)
            for d in range(-1, 12)
        ]
        self.patch(events, "_DOMAIN_LIFECYCLE", -1)
        general = [
            decode("domain", DOMAIN_LIFECYCLE, (self.domain, e, d))
            for e in range(-1, 12)
            for d in range(-1, 12)
        ]
        self.assertEqual(short, general)
        self.assertEqual([e.asDict() for e in short], [e.asDict() for e in general])
        for eventID in (False, 0.0):
            with self.assertRaises(TypeError):
                decode("domain", eventID, (self.domain, 2, 0))  # type: ignore[arg-type]

    def test_lifecycleDetailIsNamedUnderItsEvent(self) -> None:
        for event, detail, expected in [
            (libvirt.VIR_DOMAIN_EVENT_STARTED, 0, ("STARTED", "BOOTED")),
            (libvirt.VIR_DOMAIN_EVENT_STOPPED, 0, ("STOPPED", "SHUTDOWN")),
            (libvirt.VIR_DOMAIN_EVENT_DEFINED, 0, ("DEFINED", "ADDED")),
            (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 8, ("SUSPENDED", "POSTCOPY_FAILED")),
            (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, 1, ("PMSUSPENDED", "DISK")),
        ]:
            fields = self.decodeDomain("lifecycle", event, detail).fields
            self.assertEqual((fields["event"], fields["detail"]), expected)

    def test_otherFamiliesLifecycle(self) -> None:
        for family, event, name, uuid in [
            ("network", libvirt.VIR_NETWORK_EVENT_STARTED, "default", True),
            ("storage_pool", libvirt.VIR_STORAGE_POOL_EVENT_CREATED, "default-pool", True),
            ("node_device", libvirt.VIR_NODE_DEVICE_EVENT_DELETED, "computer", False),
            ("secret", libvirt.VIR_SECRET_EVENT_UNDEFINED, "/var/lib/x.img", True),
        ]:
            obj = self.objects[family]
            decoded = decode(family, 0, (obj, event, 3))
            self.assertEqual(decoded.kind, f"{family}.lifecycle")
            self.assertEqual(decoded.name, name)
            self.assertEqual(decoded.uuid, obj.UUIDString() if uuid else None)
            prefix = f"VIR_{family.upper()}_EVENT_"
            self.assertEqual(getattr(libvirt, prefix + decoded.fields["event"]), event)
            self.assertEqual(decoded.fields["detail"], "3")

    def test_secretWithoutUsage(self) -> None:
        secret = FakeSecret("d5a3d6c4-0c2c-4c56-9a43-16fbbc7a0d1e", None)
        event = decode("secret", libvirt.VIR_SECRET_EVENT_ID_VALUE_CHANGED, (secret,))
        self.assertEqual(
            event,
            Event(
                "secret", "secret.value_changed", None, "d5a3d6c4-0c2c-4c56-9a43-16fbbc7a0d1e", {}
            ),
        )

    def test_codedArguments(self) -> None:
        cases: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("reboot", (), {}),
            ("rtc_change", (-3600,), {"offset": -3600}),
            ("watchdog", (4,), {"action": "SHUTDOWN"}),
            ("io_error", ("/a", "vda", 1), {"srcPath": "/a", "devAlias": "vda", "action": "PAUSE"}),
            (
                "io_error_reason",
                ("/a", "vda", 2, "enospc"),
                {"action": "REPORT", "reason": "enospc"},
            ),
            ("block_job", ("vda", 2, 3), {"disk": "vda", "type": "COPY", "status": "READY"}),
            ("block_job_2", ("vda", 4, 0), {"type": "ACTIVE_COMMIT", "status": "COMPLETED"}),
            (
                "disk_change",
                ("/o", None, "cd", 1),
                {"newSrcPath": None, "reason": "DROP_MISSING_ON_START"},
            ),
            ("tray_change", ("cd", 0), {"devAlias": "cd", "reason": "OPEN"}),
            ("agent_lifecycle", (1, 2), {"state": "CONNECTED", "reason": "CHANNEL"}),
            ("metadata_change", (1, None), {"mtype": "TITLE", "nsuri": None}),
            (
                "memory_failure",
                (1, 3, 2),
                {"recipient": "GUEST", "action": "RESET", "flags": ("RECURSIVE",)},
            ),
            ("block_threshold", ("vda", "/a", 10, 2), {"dev": "vda", "threshold": 10, "excess": 2}),
            ("pmsuspend", (0,), {"reason": 0}),
        ]
        for idName, args, expected in cases:
            fields = self.decodeDomain(idName, *args).fields
            self.assertEqual({key: fields[key] for key in expected}, expected, idName)

    def test_graphics(self) -> None:
        local = {"family": 0, "node": "127.0.0.1", "service": "5900"}
        remote = {"family": 1, "node": "::1", "service": "41234"}
        subject = [("x509dname", "CN=client"), ("saslUsername", "fred")]
        event = self.decodeDomain("graphics", 0, local, remote, "vnc", subject)
        self.assertEqual(
            {key: value for key, value in event.asDict().items() if key not in events._CORE},
            {
                "phase": "CONNECT",
                "localAddr": {"family": "IPV4", "node": "127.0.0.1", "service": "5900"},
                "remoteAddr": {"family": "IPV6", "node": "::1", "service": "41234"},
                "authScheme": "vnc",
                "subject": [
                    {"type": "x509dname", "name": "CN=client"},
                    {"type": "saslUsername", "name": "fred"},
                ],
            },
        )

    def test_typedParameters(self) -> None:
        params = {"cputune.vcpupin0": "0-1", "blkdeviotune.total_bytes_sec": 10, "x": 0.5}
        for idName in ("tunable", "job_completed"):
            event = self.decodeDomain(idName, params)
            self.assertEqual(event.asDict()["params"], params)

    def test_unknownCodes(self) -> None:
        self.assertEqual(self.decodeDomain("watchdog", 99).fields["action"], "UNKNOWN(99)")
        self.assertEqual(
            dict(self.decodeDomain("lifecycle", 42, 7).fields),
            {"event": "UNKNOWN(42)", "detail": "UNKNOWN(7)"},
        )
        stopped = self.decodeDomain("lifecycle", libvirt.VIR_DOMAIN_EVENT_STOPPED, 99)
        self.assertEqual(stopped.fields["detail"], "UNKNOWN(99)")
        flags = self.decodeDomain("memory_failure", 0, 0, 1 | 8).fields["flags"]
        self.assertEqual(flags, ("ACTION_REQUIRED", "UNKNOWN(8)"))
        graphics = self.decodeDomain("graphics", 9, {"family": 9}, {}, "", [])
        self.assertEqual(graphics.asDict()["localAddr"], {"family": "UNKNOWN(9)"})
        network = decode("network", 0, (self.objects["network"], 17, 0))
        self.assertEqual(network.fields["event"], "UNKNOWN(17)")

    def test_unmappedEventIDsNamePositionally(self) -> None:
        """Should an upgrade break the mapping, events still decode, arguments by position."""
        self.patch(events, "_signature", lambda family, idName: None)
        events._shape.cache_clear()
        self.addCleanup(events._shape.cache_clear)
        event = self.decodeDomain("rtc_change", 7, "x")
        self.assertEqual(dict(event.fields), {"arg1": 7, "arg2": "x"})

    def test_unknownEventID(self) -> None:
        for family, eventID in [("domain", 9999), ("network", -1)]:
            with self.assertRaises(ValueError) as raised:
                decode(family, eventID, (self.objects[family],))
            self.assertIn(f"no {family} event id {eventID}", str(raised.exception))
        with self.assertRaises(TypeError) as typeError:
            decode("domain", "lifecycle", (self.domain, 0, 0))  # type: ignore[arg-type]
        self.assertIn("'eventID' must be an int", str(typeError.exception))

    def test_wrongNumberOfArguments(self) -> None:
        for args in [(self.domain, 0), (self.domain, 0, 0, 0), ()]:
            with self.assertRaises(TypeError) as raised:
                decode("domain", DOMAIN_LIFECYCLE, args)
            self.assertIn(
                f"domain.lifecycle takes 3 arguments (dom, event, detail), got {len(args)}",
                str(raised.exception),
            )

    def test_wrongArgumentTypes(self) -> None:
        with self.assertRaises(TypeError) as raised:
            decode("domain", DOMAIN_LIFECYCLE, (self.objects["network"], 0, 0))
        self.assertIn(
            "domain.lifecycle: the first argument must be a virDomain", str(raised.exception)
        )
        with self.assertRaises(TypeError) as raised:
            self.decodeDomain("watchdog", "PAUSE")
        self.assertIn(
            "domain.watchdog: argument 'action' must be an int code", str(raised.exception)
        )
        with self.assertRaises(TypeError):
            self.decodeDomain("lifecycle", True, 0)

    @settings(max_examples=40, deadline=None)
    @given(st.data())
    def test_everyKindDecodesSynthesizedArguments(self, data: st.DataObject) -> None:
        for kind, (family, eventID) in allKinds().items():
            parameters = dispatchParameters(kind)
            args = [self.objects[family]]
            args += [data.draw(strategyFor(p.annotation), label=p.name) for p in parameters[1:]]
            event = decode(family, eventID, args)
            self.assertEqual(event.kind, kind)
            asDict = event.asDict()
            self.assertEqual(json.loads(json.dumps(asDict, allow_nan=False)), asDict)
            self.assertCodesNamed(kind, [p.name for p in parameters], args, event)

    def assertCodesNamed(self, kind: str, names: list[str], args: list[Any], event: Event) -> None:
        """Each coded field is its constant's name, or UNKNOWN(value)."""
        family, _ = kind.split(".")
        raw = dict(zip(names, args, strict=True))
        codes = _codenames.CODES.items()
        prefixes = {arg: p for (f, s, arg), p in codes if (f, s) == (family, stem(kind))}
        if kind == "domain.lifecycle":
            prefixes = {"event": "VIR_DOMAIN_EVENT_"}
            if not event.fields["event"].startswith("UNKNOWN("):
                prefixes["detail"] = f"VIR_DOMAIN_EVENT_{event.fields['event']}_"
        for arg in set(prefixes) & set(names[1:]):
            named = event.fields[arg]
            if named != f"UNKNOWN({raw[arg]})":
                self.assertEqual(getattr(libvirt, prefixes[arg] + named), raw[arg], (kind, arg))
        for (f, s, arg), prefix in _codenames.FLAGS.items():
            if (f, s) == (family, stem(kind)):
                bits = [getattr(libvirt, prefix + n, 0) for n in event.fields[arg]]
                self.assertEqual(sum(bits) & raw[arg], sum(bits), (kind, arg))


JSON_LIKE: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=8,
)


GRAPHICS_ADDRESS = st.fixed_dictionaries(
    {"family": st.integers(-1, 4), "node": st.text(), "service": st.text()}
)


def strategyFor(annotation: Any) -> st.SearchStrategy[Any]:
    """Values a callback argument with this annotation may take: codes known or not."""
    if annotation is int:
        return st.integers(-1, 10) | st.integers(min_value=-(2**63), max_value=2**64)
    if annotation is str:
        return st.none() | st.text()
    return JSON_LIKE | GRAPHICS_ADDRESS | st.lists(st.tuples(st.text(), st.text()))


class EndToEndTests(TestCase):
    """What the callbacks really receive from libvirt's embedded test driver, decoded."""

    timeout = 60

    def setUp(self) -> None:
        self.conn = openConnection(self, "test:///default")

    async def test_domainLifecycle(self) -> None:
        recorder = listen(self, self.conn, "domain", DOMAIN_LIFECYCLE)
        domain = self.conn.createXML(testDomainXML("events-lifecycle"), 0)
        domain.suspend()
        domain.resume()
        domain.destroy()
        decoded = await received(recorder, "events-lifecycle", 4)
        self.assertEqual(
            [(e.kind, e.uuid, dict(e.fields)) for e in decoded],
            [
                ("domain.lifecycle", domain.UUIDString(), {"event": event, "detail": detail})
                for event, detail in [
                    ("STARTED", "BOOTED"),
                    ("SUSPENDED", "PAUSED"),
                    ("RESUMED", "UNPAUSED"),
                    ("STOPPED", "DESTROYED"),
                ]
            ],
        )

    async def test_domainMetadataChange(self) -> None:
        recorder = listen(self, self.conn, "domain", libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE)
        domain = self.conn.createXML(testDomainXML("events-metadata"), 0)
        self.addCleanup(domain.destroy)
        noNamespace: Any = None  # libvirt-python's annotations forget that it may be None
        domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_TITLE, "a title", noNamespace, noNamespace)
        [event] = await received(recorder, "events-metadata", 1)
        self.assertEqual(event.kind, "domain.metadata_change")
        self.assertEqual(dict(event.fields), {"mtype": "TITLE", "nsuri": None})

    async def test_networkLifecycle(self) -> None:
        recorder = listen(self, self.conn, "network", libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE)
        network = self.conn.networkDefineXML(
            "<network><name>events-net</name><bridge name='evnet0'/></network>"
        )
        network.create()
        network.destroy()
        network.undefine()
        decoded = await received(recorder, "events-net", 4)
        self.assertEqual(
            [e.asDict() for e in decoded],
            [
                {
                    "family": "network",
                    "kind": "network.lifecycle",
                    "name": "events-net",
                    "uuid": network.UUIDString(),
                    "event": event,
                    "detail": "0",
                }
                for event in ["DEFINED", "STARTED", "STOPPED", "UNDEFINED"]
            ],
        )

    async def test_storagePoolLifecycleAndRefresh(self) -> None:
        lifecycle = listen(self, self.conn, "storage_pool", 0)
        refresh = listen(self, self.conn, "storage_pool", libvirt.VIR_STORAGE_POOL_EVENT_ID_REFRESH)
        pool = self.conn.storagePoolDefineXML(
            "<pool type='dir'><name>events-pool</name>"
            f"<target><path>{self.mktemp()}</path></target></pool>"
        )
        pool.create()
        pool.refresh()
        pool.destroy()
        pool.undefine()
        decoded = await received(lifecycle, "events-pool", 4)
        self.assertEqual(
            [e.fields["event"] for e in decoded], ["DEFINED", "STARTED", "STOPPED", "UNDEFINED"]
        )
        [refreshed] = await received(refresh, "events-pool", 1)
        self.assertEqual(
            refreshed,
            Event("storage_pool", "storage_pool.refresh", "events-pool", pool.UUIDString(), {}),
        )

    async def test_nodeDeviceLifecycle(self) -> None:
        recorder = listen(self, self.conn, "node_device", 0)
        device = self.conn.nodeDeviceCreateXML(
            "<device><parent>scsi_host1</parent><capability type='scsi_host'>"
            "<capability type='fc_host'><wwnn>2000000012341234</wwnn>"
            "<wwpn>1000000012341234</wwpn></capability></capability></device>",
            0,
        )
        name = device.name()
        device.destroy()
        decoded = await received(recorder, name, 2)
        self.assertEqual(
            decoded,
            [
                Event(
                    "node_device", "node_device.lifecycle", name, None, {"event": e, "detail": "0"}
                )
                for e in ["CREATED", "DELETED"]
            ],
        )


class DaemonEndToEndTests(TestCase):
    """Secrets and close reasons, which need a real libvirtd."""

    timeout = 60

    def setUp(self) -> None:
        self.daemon = startDaemon(self)

    async def test_secretLifecycleAndValue(self) -> None:
        conn = openConnection(
            self, f"secret+unix:///session?socket={quote(self.daemon.socketPath)}"
        )
        lifecycle = listen(self, conn, "secret", libvirt.VIR_SECRET_EVENT_ID_LIFECYCLE)
        changed = listen(self, conn, "secret", libvirt.VIR_SECRET_EVENT_ID_VALUE_CHANGED)
        volume = conn.secretDefineXML(
            "<secret ephemeral='no' private='no'>"
            "<usage type='volume'><volume>/events/disk.img</volume></usage></secret>"
        )
        value: Any = b"s3cret"  # libvirt-python takes bytes, whatever its annotation says
        volume.setValue(value)
        volume.undefine()
        bare = conn.secretDefineXML("<secret ephemeral='no' private='no'/>")
        bare.undefine()
        await lifecycle.called(4)
        self.assertEqual(
            [(e.name, e.uuid, e.fields["event"]) for e in decodedEvents(lifecycle)],
            [
                ("/events/disk.img", volume.UUIDString(), "DEFINED"),
                ("/events/disk.img", volume.UUIDString(), "UNDEFINED"),
                (None, bare.UUIDString(), "DEFINED"),
                (None, bare.UUIDString(), "UNDEFINED"),
            ],
        )
        await changed.called(1)
        self.assertEqual(
            decodedEvents(changed),
            [Event("secret", "secret.value_changed", "/events/disk.img", volume.UUIDString(), {})],
        )

    async def test_closeReason(self) -> None:
        conn = openConnection(self, self.daemon.testURI)
        closed = Recorder()
        conn.registerCloseCallback(lambda c, reason, opaque: closed(closeEvent(reason)), None)
        self.daemon.kill()
        [(event,)] = await closed.called(1)
        self.assertEqual(event.asDict()["reason"], "EOF")
        with contextlib.suppress(libvirt.libvirtError):  # the connection is closed already
            conn.unregisterCloseCallback()


def listen(case: TestCase, conn: libvirt.virConnect, family: str, eventID: int) -> Recorder:
    """
    A Recorder of the decoded C{family} events C{eventID} that C{conn}
    delivers, decoded in the callback as a monitor would; the callback is
    deregistered at cleanup.  A decoding error is recorded too.
    """
    recorder = Recorder()
    base = family[0] + camel(family)[1:]

    def callback(conn: libvirt.virConnect, *args: Any) -> None:
        try:
            recorder(decode(family, eventID, args[:-1]))
        except Exception as e:
            recorder(e)

    callbackID = getattr(conn, f"{base}EventRegisterAny")(None, eventID, callback, None)
    deregister: Callable[[int], None] = getattr(conn, f"{base}EventDeregisterAny")
    case.addCleanup(deregister, callbackID)
    return recorder


def decodedEvents(recorder: Recorder) -> list[Event]:
    """The recorded events, or the first decoding error raised."""
    for (item,) in recorder.calls:
        if isinstance(item, Exception):
            raise item
    return [item for (item,) in recorder.calls]


async def received(recorder: Recorder, name: str, count: int) -> list[Event]:
    """Wait for C{count} events (or a decoding error) about C{name}; return those events."""

    def ready(calls: list[tuple[Any, ...]]) -> bool:
        ours = [c for (c,) in calls if isinstance(c, Exception) or c.name == name]
        return len(ours) >= count or any(isinstance(c, Exception) for c in ours)

    await recorder.when(ready)
    return [event for event in decodedEvents(recorder) if event.name == name]
