"""
libvirt event callbacks as readable, immutable L{Event} objects.

A libvirt event callback receives the connection, the object, a few numbers
and strings, and the opaque.  L{decode} turns what lies between the
connection and the opaque into an L{Event}: the object's name and UUID, every
other argument by its name, and every numeric code by its libvirt name, so
that a monitor can log it or send it on as JSON (L{Event.asDict}).

Nothing here lists libvirt's events, arguments or codes by hand: they are read
from the installed libvirt-python, so this module follows its version.  Event
ids come from the C{VIR_<FAMILY>_EVENT_ID_*} constants; an event's argument
names from the C{virConnect._dispatch<Family>Event<Stem>Callback} method that
libvirt-python calls for it (matched to the id by name, letters and digits
only, case ignored); code names from the constants under a prefix
(C{_codenames.py}, which also says which prefix names which argument).  What
is written here is the few ids whose dispatch method is not named after
them.  An id that matches no dispatch method still decodes, its arguments
named C{arg1}, C{arg2}...

A code the installed libvirt has no name for (a daemon newer than the
library) becomes the string C{"UNKNOWN(<number>)"}: a coded field keeps its
type, and the number is not lost.  Decoding reads the object's name and UUID
with accessors that make no RPC, so it is safe inside a callback.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any

import libvirt

from . import _families
from ._codenames import (
    CLOSE_REASON,
    CODES,
    FLAGS,
    GRAPHICS_ADDRESS,
    codeName,
    domainState,
    eventIDsOf,
    flagNames,
    lifecycleEvents,
)

__all__ = [
    "FAMILIES",
    "Event",
    "allKinds",
    "checkEventID",
    "closeEvent",
    "closeReasonName",
    "codeName",
    "decode",
    "domainState",
    "eventIDs",
    "lifecycleNames",
]

#: The object families that have events, as L{Event.family} names them.
FAMILIES: tuple[str, ...] = _families.NAMES

#: Event ids that libvirt-python dispatches through a method not named after them.
_DISPATCHED_AS = {
    ("domain", "block_job_2"): "BlockJob",
    ("domain", "reboot"): "Generic",
    ("domain", "control_error"): "Generic",
    ("storage_pool", "refresh"): "Generic",
    ("node_device", "update"): "Generic",
    ("secret", "value_changed"): "Generic",
}

#: L{Event.asDict} keys that are not fields.
_CORE = ("family", "kind", "name", "uuid", "synthetic")
_CORE_NAMES = frozenset(_CORE)


@dataclass(frozen=True, repr=False)
class Event:
    """
    One libvirt event, decoded.

    @ivar family: one of L{FAMILIES}, or C{"connection"} for the close callback.
    @ivar kind: C{"<family>.<event id name>"}, e.g. C{"domain.lifecycle"}.
    @ivar name: the object's name (a secret's usage id), or C{None}.
    @ivar uuid: the object's UUID, or C{None} where it has none.
    @ivar fields: every other callback argument by name, codes by name; JSON
        data, frozen (mappings read-only, sequences as tuples).
    @ivar synthetic: true for an event that libvirt did not send: one that
        a service's resync made up to explain a change it found (see
        L{libvirt_twisted.Inventory}).
    """

    family: str
    kind: str
    name: str | None
    uuid: str | None
    fields: Mapping[str, Any]
    synthetic: bool = False

    def __post_init__(self) -> None:
        if not _CORE_NAMES.isdisjoint(self.fields):
            clashes = sorted(_CORE_NAMES.intersection(self.fields))
            raise ValueError(f"event fields may not be named {clashes}")
        object.__setattr__(self, "fields", _safe(self.fields))

    def __repr__(self) -> str:
        fields = "".join(f", {key}={value!r}" for key, value in _thaw(self.fields).items())
        synthetic = ", synthetic=True" if self.synthetic else ""
        return f"Event({self.kind!r}, name={self.name!r}, uuid={self.uuid!r}{fields}{synthetic})"

    def asDict(self) -> dict[str, Any]:
        """
        The event as a new, JSON-ready dict: the four attributes, then the
        fields, then C{"synthetic": True} for a synthetic event.
        """
        core = {"family": self.family, "kind": self.kind, "name": self.name, "uuid": self.uuid}
        if self.synthetic:
            return {**core, **_thaw(self.fields), "synthetic": True}
        return {**core, **_thaw(self.fields)}


def eventIDs(family: str) -> dict[str, int]:
    """
    Event id names (lower case, e.g. C{"lifecycle"}) to libvirt's ids, for
    one family, as the installed libvirt has them.

    @param family: one of L{FAMILIES}.
    @return: a new dict, e.g. C{{"lifecycle": 0, "reboot": 1, ...}}.
    @raise ValueError: C{family} is not one of L{FAMILIES}.
    """
    return dict(eventIDsOf(_checkFamily(family)))


def allKinds() -> dict[str, tuple[str, int]]:
    """Every event kind of the installed libvirt: C{"domain.lifecycle"} -> (family, id)."""
    return {
        f"{family}.{name}": (family, eventID)
        for family in FAMILIES
        for name, eventID in eventIDsOf(family).items()
    }


def lifecycleNames(family: str, event: int, detail: int) -> tuple[str, str]:
    """
    A lifecycle event's event and detail codes by name, as L{decode} names
    them: C{("domain", 2, 0)} -> C{("STARTED", "BOOTED")}.  Networks', pools',
    node devices' and secrets' details are numbers, given as strings.

    @param family: one of L{FAMILIES}.
    @param event: the lifecycle event's code (C{VIR_<FAMILY>_EVENT_*}).
    @param detail: its detail's code.
    @return: C{(event name, detail name)}.
    """
    kind = f"{_checkFamily(family)}.lifecycle"
    if family == "domain":
        fields = _lifecycle(kind, event, detail)
        return fields["event"], fields["detail"]
    prefix = CODES[(family, "Lifecycle", "event")]
    return codeName(prefix, _code(kind, "event", event)), str(_code(kind, "detail", detail))


def checkEventID(family: str, eventID: object) -> None:
    """
    Raise, naming the problem, unless C{eventID} is one of C{family}'s event
    ids in the installed libvirt.

    @param family: one of L{FAMILIES}.
    @param eventID: the id to check.
    @raise TypeError: C{eventID} is not an int.
    @raise ValueError: it is not one of C{family}'s ids, or C{family} is not
        a family.
    """
    if not isinstance(eventID, int) or isinstance(eventID, bool):
        raise TypeError(f"{family} event id must be an int, not {eventID!r}")
    known = eventIDs(family)
    if eventID not in known.values():
        raise ValueError(
            f"unknown {family} event id {eventID!r}; this libvirt has"
            f" {', '.join(f'{n}={i}' for n, i in sorted(known.items(), key=lambda x: x[1]))}"
        )


def closeReasonName(reason: int) -> str:
    """
    A close reason's name: C{EOF}, C{KEEPALIVE}...

    @param reason: a C{VIR_CONNECT_CLOSE_REASON_*} code, as a close
        callback receives it.
    @return: its name, or C{"UNKNOWN(<reason>)"}.
    """
    return str(closeEvent(reason).fields["reason"])


def closeEvent(reason: int) -> Event:
    """
    The close callback's C{reason} as a C{"connection.close"} event.

    @param reason: a C{VIR_CONNECT_CLOSE_REASON_*} code.
    @return: an event of the C{"connection"} family, with no name or UUID,
        its one field C{reason} named (C{"EOF"}...).
    """
    named = codeName(CLOSE_REASON, _code("connection.close", "reason", reason))
    return Event("connection", "connection.close", None, None, {"reason": named})


def decode(family: str, eventID: int, args: Sequence[Any]) -> Event:
    """
    Decode an event callback's arguments: C{args} are those after the
    connection and before the opaque, the object first, e.g. C{(dom, event,
    detail)} for a domain lifecycle event.  Unknown family or id: ValueError;
    wrong number or type of arguments: TypeError.

    @param family: one of L{FAMILIES}.
    @param eventID: the event id the callback was registered for
        (C{libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE}...).
    @param args: the callback's arguments after the connection and before
        the opaque, the object first.
    @return: the decoded event.
    @raise ValueError: unknown family or event id.
    @raise TypeError: wrong number or type of arguments.
    """
    if (
        type(eventID) is int
        and eventID == _DOMAIN_LIFECYCLE
        and family == "domain"
        and len(args) == 3
    ):
        # The event path's most common event, decoded without the general
        # machinery; anything unusual about it goes the general way.
        dom, event, detail = args
        if isinstance(dom, libvirt.virDomain) and type(event) is int and type(detail) is int:
            fields = _domainLifecycleFields(event, detail)
            return _decoded(
                family, "domain.lifecycle", dom.name() or None, dom.UUIDString(), fields
            )
    kind, stem, names = _shape(family, _code(f"{family} event", "eventID", eventID))
    values = tuple(args)
    if names is None:
        names = ("object", *(f"arg{index}" for index in range(1, len(values))))
    if len(values) != len(names):
        raise TypeError(
            f"{kind} takes {len(names)} arguments ({', '.join(names)}), got {len(values)}"
        )
    name, uuid = _identify(kind, family, values[0])
    if stem == "Lifecycle" and family == "domain":
        fields = _lifecycle(kind, *values[1:])
    else:
        fields = {
            (arg + "_" if arg in _CORE_NAMES else arg): _convert(kind, (family, stem, arg), value)
            for arg, value in zip(names[1:], values[1:], strict=True)
        }
    return _decoded(family, kind, name, uuid, fields)


_DOMAIN_LIFECYCLE: int = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE


@lru_cache(maxsize=256)
def _domainLifecycleFields(event: int, detail: int) -> Mapping[str, str]:
    """A domain lifecycle event's fields: few pairs, shared read-only by their events."""
    return MappingProxyType(_lifecycle("domain.lifecycle", event, detail))


def _decoded(
    family: str,
    kind: str,
    name: str | None,
    uuid: str | None,
    fields: dict[str, Any] | Mapping[str, Any],
) -> Event:
    """
    An L{Event} from L{decode}, whose fields are JSON-safe and well named
    already: set straight into the frozen instance, not checked again.
    """
    event: Event = object.__new__(Event)
    vars(event).update(
        family=family,
        kind=kind,
        name=name,
        uuid=uuid,
        fields=fields if isinstance(fields, MappingProxyType) else MappingProxyType(fields),
        synthetic=False,
    )
    return event


@cache
def _shape(family: str, eventID: int) -> tuple[str, str, tuple[str, ...] | None]:
    """An event id's kind, dispatch stem and argument names (C{None}: unknown)."""
    ids = {value: name for name, value in eventIDsOf(_checkFamily(family)).items()}
    if eventID not in ids:
        raise ValueError(f"the installed libvirt has no {family} event id {eventID!r}")
    signature = _signature(family, ids[eventID])
    if signature is None:
        return f"{family}.{ids[eventID]}", "", None
    return f"{family}.{ids[eventID]}", signature[0], signature[1]


def _checkFamily(family: str) -> str:
    return _families.family(family).name


def _lifecycle(kind: str, event: Any, detail: Any) -> dict[str, str]:
    """A domain lifecycle event and its detail, named."""
    name = lifecycleEvents().get(_code(kind, "event", event))
    if name is None:
        return {"event": f"UNKNOWN({event})", "detail": f"UNKNOWN({_code(kind, 'detail', detail)})"}
    return {
        "event": name,
        "detail": codeName(f"VIR_DOMAIN_EVENT_{name}_", _code(kind, "detail", detail)),
    }


def _camel(family: str) -> str:
    return "".join(part.capitalize() for part in family.split("_"))


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@cache
def _dispatchers(family: str) -> dict[str, str]:
    """libvirt-python's dispatch methods for C{family}: normalised stem -> stem."""
    pattern = re.compile(rf"_dispatch{_camel(family)}Event(\w+)Callback")
    stems = (match[1] for match in map(pattern.fullmatch, vars(libvirt.virConnect)) if match)
    return {_normal(stem): stem for stem in stems}


@cache
def _signature(family: str, idName: str) -> tuple[str, tuple[str, ...]] | None:
    """
    The dispatch stem and argument names (the object first) of an event id,
    or C{None} if no dispatch method matches it; L{decode} then names the
    arguments C{arg1}, C{arg2}...
    """
    dispatchers = _dispatchers(family)
    stem = dispatchers.get(_normal(idName)) or _DISPATCHED_AS.get((family, idName))
    if stem is None or _normal(stem) not in dispatchers:
        return None
    method = getattr(libvirt.virConnect, f"_dispatch{_camel(family)}Event{stem}Callback")
    parameters = inspect.signature(method).parameters
    return stem, tuple(name for name in parameters if name not in ("self", "cbData"))


def _identify(kind: str, family: str, obj: Any) -> tuple[str | None, str | None]:
    """The object's name and UUID, read by accessors that make no RPC."""
    spec = _families.family(family)
    if not isinstance(obj, spec.objectType):
        cls = spec.objectType.__name__
        raise TypeError(f"{kind}: the first argument must be a {cls}, not {obj!r}")
    return spec.identify(obj)


def _code(kind: str, arg: str, value: Any) -> int:
    if type(value) is bool or not isinstance(value, int):
        raise TypeError(f"{kind}: argument {arg!r} must be an int code, not {value!r}")
    return value


def _convert(kind: str, key: tuple[str, str, str], value: Any) -> Any:
    """One callback argument as JSON data, its code or flags named if it has them."""
    if key in CODES:
        return codeName(CODES[key], _code(kind, key[2], value))
    if key in FLAGS:
        return flagNames(FLAGS[key], _code(kind, key[2], value))
    if key[1:] == ("Lifecycle", "detail"):
        # Only domains name their details; the others' are numbers, given as
        # strings so that "detail" has one JSON type in every record.
        return str(_code(kind, key[2], value))
    if key[:2] == ("domain", "Graphics") and key[2] in ("localAddr", "remoteAddr"):
        return _address(value)
    if key == ("domain", "Graphics", "subject"):
        return _subject(value)
    return _safe(value)


def _address(value: Any) -> Any:
    """A graphics client or server address, its family by name."""
    safe = _safe(value)
    if isinstance(safe, Mapping) and type(safe.get("family")) is int:
        return MappingProxyType({**safe, "family": codeName(GRAPHICS_ADDRESS, safe["family"])})
    return safe


def _subject(value: Any) -> Any:
    """A graphics client's identity, its (type, name) pairs as mappings."""
    safe = _safe(value)
    if isinstance(safe, tuple) and all(isinstance(i, tuple) and len(i) == 2 for i in safe):
        return tuple(MappingProxyType({"type": pair[0], "name": pair[1]}) for pair in safe)
    return safe


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _safe(value: Any) -> Any:
    """
    C{value} as frozen JSON data: mappings read-only with string keys,
    sequences as tuples, bytes decoded, NaN and infinities and other objects
    as their repr.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping):
        return MappingProxyType({str(key): _safe(item) for key, item in value.items()})
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(_safe(item) for item in value)
    return repr(value)


def _thaw(value: Any) -> Any:
    """Frozen JSON data as new dicts and lists."""
    if isinstance(value, Mapping):
        return {
            key: item if item.__class__ in _SCALARS else _thaw(item) for key, item in value.items()
        }
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value
