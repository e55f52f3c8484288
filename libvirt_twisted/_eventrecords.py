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
from typing import Any

from ._uri import maskURI
from .events import Event

#: A record's JSON: one encoder for the file's lines and the broker's bodies,
#: so that both carry the same text (json.dumps with options makes one a call).
encodeRecord = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


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
