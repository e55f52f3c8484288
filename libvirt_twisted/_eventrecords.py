"""
Records: the flat mappings the monitor writes and publishes, one per event
or connection change.  C{time} (ISO 8601, UTC), C{uri} (password masked),
C{kind}, then the kind's own fields, each code by its libvirt name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from typing import Any

from ._uri import maskURI
from .events import Event

#: A record's JSON: one encoder for the file's lines and the broker's bodies,
#: so that both carry the same text (json.dumps with options makes one a call).
encodeRecord = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


#: The keys a record starts with, in this order.
_HEAD = frozenset(("time", "uri", "kind"))


def makeRecord(uri: str, kind: str, fields: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """The record of C{kind} on C{uri} (already masked) at C{seconds}."""
    return {"time": isoTime(seconds), "uri": uri, "kind": kind, **fields}


def eventRecord(uri: str, event: Event, seconds: float | None = None) -> dict[str, Any]:
    """
    The record of a decoded libvirt event that C{uri} sent, at C{seconds}
    since the epoch (now by default); C{uri}'s password is masked.
    """
    kind, fields = eventFields(event)
    return makeRecord(maskURI(uri), kind, fields, time.time() if seconds is None else seconds)


def eventFields(event: Event) -> tuple[str, dict[str, Any]]:
    """A decoded event's record kind, and its fields after C{uri} and C{kind}."""
    fields = event.asDict()
    del fields["family"]
    return fields.pop("kind"), fields


def encodeEventRecord(uri: str, event: Event, seconds: float) -> str:
    """
    C{encodeRecord(makeRecord(uri, *eventFields(event), seconds))}, the same
    text, without building the record: every event the monitor writes goes
    through here.  Fields of strings, ints and nulls (a lifecycle event's,
    most events') are encoded one by one; any other event takes the general
    path.
    """
    name, uuid = event.name, event.uuid
    if (name is None or name.__class__ is str) and (uuid is None or uuid.__class__ is str):
        parts = [
            '{"time":"',
            isoTime(seconds),
            '","uri":',
            _quoted(uri),
            ',"kind":',
            _quoted(event.kind),
            ',"name":',
            "null" if name is None else encode_basestring_ascii(name),
            ',"uuid":',
            "null" if uuid is None else encode_basestring_ascii(uuid),
        ]
        for key, value in event.fields.items():
            if key in _HEAD:  # a field that takes the place of the record's own
                break
            cls = value.__class__
            if cls is str:
                parts += (_key(key), encode_basestring_ascii(value))
            elif cls is int:
                parts += (_key(key), int.__repr__(value))
            elif value is None:
                parts += (_key(key), "null")
            else:
                break
        else:
            parts.append(',"synthetic":true}' if event.synthetic else "}")
            return "".join(parts)
    return encodeRecord(makeRecord(uri, *eventFields(event), seconds))


@lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    """A URI or kind as JSON: few of them, each in every record."""
    return encode_basestring_ascii(text)


@lru_cache(maxsize=1024)
def _key(name: str) -> str:
    """A field's key as JSON, with the comma before and the colon after."""
    return f",{encode_basestring_ascii(name)}:"


def isoTime(seconds: float) -> str:
    """C{seconds} since the epoch as ISO 8601 in UTC, to the microsecond."""
    whole = int(seconds)
    micro = round((seconds - whole) * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    return f"{_secondOf(whole)}.{micro:06d}Z"


@lru_cache(maxsize=4)
def _secondOf(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
