"""
The monitor's output: where its records go, one line each, as text for
people or as JSON for log shippers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Literal

from .events import Event

Format = Literal["text", "json"]


class RecordWriter:
    """
    Writes records, one line each, flushed at once so that a consumer sees
    every event as it happens.

    A record is a flat mapping: C{time} (ISO 8601, UTC), C{uri} (password
    masked), C{kind} (C{domain.lifecycle}, C{connection.disconnected},
    C{inventory}...), then the kind's own fields.
    """

    def __init__(self, stream: IO[str], format: Format, clock: Callable[[], float]) -> None:
        if format not in ("text", "json"):
            raise ValueError(f"unknown record format {format!r}; use text or json")
        self._stream = stream
        self._format = format
        self._clock = clock
        self.written = 0

    def event(self, uri: str, event: Event) -> None:
        """Write a libvirt event."""
        fields = event.asDict()
        del fields["family"]
        self.write(uri, fields.pop("kind"), fields)

    def write(self, uri: str, kind: str, fields: Mapping[str, Any]) -> None:
        """Write one record."""
        record = {"time": _isoTime(self._clock()), "uri": uri, "kind": kind, **fields}
        if self._format == "json":
            line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        else:
            line = _text(record)
        self._stream.write(line + "\n")
        self._stream.flush()
        self.written += 1


def _isoTime(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(record: Mapping[str, Any]) -> str:
    """C{time uri kind [name] key=value...}: one line, for people."""
    parts = [record["time"], record["uri"], record["kind"]]
    rest = {k: v for k, v in record.items() if k not in ("time", "uri", "kind")}
    if rest.get("name") is not None:
        parts.append(str(rest.pop("name")))
    rest.pop("name", None)
    if record["kind"] == "inventory":
        domains = rest.pop("domains")
        parts.append(f"{len(domains)} domains:")
        parts.extend(f"{d['name']}={d['state']}" for d in domains)
    for key, value in rest.items():
        if value is None:
            continue
        shown = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}={shown}")
    return " ".join(parts)


class Output:
    """The records' destination, open while the monitor runs."""

    def __init__(self, path: str, format: Format, clock: Callable[[], float]) -> None:
        self._path = path
        self._format = format
        self._clock = clock
        self._stream: IO[str] | None = None
        self._writer: RecordWriter | None = None

    def open(self) -> None:
        if self._path == "-":
            # twistd points sys.stdout at its log; records go to the real one.
            self._stream = sys.__stdout__
        else:
            self._stream = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        assert self._stream is not None
        self._writer = RecordWriter(self._stream, self._format, self._clock)

    def close(self) -> None:
        if self._stream is not None and self._path != "-":
            self._stream.close()
        self._writer = None

    def event(self, uri: str, event: Event) -> None:
        self._open().event(uri, event)

    def write(self, uri: str, kind: str, fields: dict[str, Any]) -> None:
        self._open().write(uri, kind, fields)

    def _open(self) -> RecordWriter:
        if self._writer is None:
            raise RuntimeError("the monitor's output is not open")
        return self._writer
