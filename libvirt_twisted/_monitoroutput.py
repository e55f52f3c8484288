"""
The monitor's output: where its records go, one line each, as text for
people or as JSON for log shippers.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any, Literal

from twisted.internet.interfaces import IDelayedCall

from ._eventrecords import encodeEventRecord, encodeRecord, eventFields, makeRecord
from ._reactor import Scheduler
from .events import Event

Format = Literal["text", "json"]
#: Takes a record, returns its JSON body as published (None: not published).
Publish = Callable[[Mapping[str, Any]], "bytes | None"]
#: How long a written record may wait to be handed to the operating system:
#: every record written meanwhile goes with it, in one write.
FLUSH_DELAY = 0.05


class RecordWriter:
    """
    Writes records, one line each.  With a C{scheduler}, a record is handed
    to the operating system at most C{FLUSH_DELAY} seconds after it was
    written, with every record written meanwhile (a busy host costs one
    write per interval, not one per event); without one, at once.

    A record is a flat mapping: C{time} (ISO 8601, UTC), C{uri} (password
    masked), C{kind} (C{domain.lifecycle}, C{connection.disconnected},
    C{inventory}...), then the kind's own fields.

    @param publish: also hands every record to a publisher, which returns
        its JSON body (stamped with C{seq} and C{monitor}): the JSON line is
        that body, so that a file and a broker carry the same record.
    """

    def __init__(
        self,
        stream: IO[str],
        format: Format,
        clock: Callable[[], float],
        publish: Publish | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        if format not in ("text", "json"):
            raise ValueError(f"unknown record format {format!r}; use text or json")
        self._stream = stream
        self._format = format
        self._clock = clock
        self._publish = publish
        self._scheduler = scheduler
        self._pending: IDelayedCall | None = None
        self.written = 0

    def event(self, uri: str, event: Event) -> None:
        """Write a libvirt event."""
        if self._format == "json" and self._publish is None:
            self._line(encodeEventRecord(uri, event, self._clock()))
        else:
            self.write(uri, *eventFields(event))

    def write(self, uri: str, kind: str, fields: Mapping[str, Any]) -> None:
        """Write one record."""
        record = makeRecord(uri, kind, fields, self._clock())
        body = self._publish(record) if self._publish is not None else None
        if self._format == "json":
            line = body.decode("utf-8") if body is not None else encodeRecord(record)
        else:
            line = _text(record)
        self._line(line)

    def _line(self, line: str) -> None:
        self._stream.write(line + "\n")
        self.written += 1
        if self._scheduler is None:
            self._stream.flush()
        elif self._pending is None:
            self._pending = self._scheduler.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Hand what is written to the operating system now."""
        pending, self._pending = self._pending, None
        if pending is not None and pending.active():
            pending.cancel()
        if not self._stream.closed:
            self._stream.flush()


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


class OutputError(Exception):
    """The output cannot be opened: the message says which file and why, in one line."""


class Output:
    """
    The records' destination, open while the monitor runs.  C{reopen()}
    starts a new file at the same path (after logrotate has moved the old
    one) or at a new one; records are written on the reactor thread only,
    so none falls between the two files.

    @param stdout: where C{-} writes; by default the process's standard
        output as it was at start (twistd points C{sys.stdout} at its log).
    """

    def __init__(
        self,
        path: str,
        format: Format,
        clock: Callable[[], float],
        stdout: IO[str] | None = None,
        publish: Publish | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.path = path
        self.publish = publish
        self._scheduler = scheduler
        self.format = format
        self._clock = clock
        self._stdout = stdout
        self._stream: IO[str] | None = None
        self._writer: RecordWriter | None = None

    def open(self) -> None:
        """Open the output; L{OutputError} if it cannot be opened or created."""
        self._stream = self._openStream(self.path)
        self._writer = RecordWriter(
            self._stream, self.format, self._clock, self.publish, self._scheduler
        )

    def _openStream(self, path: str) -> IO[str]:
        if path == "-":
            stream = self._stdout or sys.__stdout__
            assert stream is not None
            return stream
        try:
            return open(path, "a", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"--output {path}: {e.strerror or e}") from None

    def reopen(self, path: str | None = None, format: Format | None = None) -> None:
        """
        Write from now on to C{path} (by default the same path, opened
        afresh) in C{format}; if it cannot be opened, L{OutputError} and the
        current file stays.
        """
        path = self.path if path is None else path
        stream = self._openStream(path)
        old, oldPath = self._stream, self.path
        self.path, self._stream = path, stream
        if format is not None:
            self.format = format
        written = 0
        if self._writer is not None:
            written = self._writer.written
            self._writer.flush()
        self._writer = RecordWriter(stream, self.format, self._clock, self.publish, self._scheduler)
        self._writer.written = written
        if old is not None and old is not stream and oldPath != "-":
            old.close()

    def close(self) -> None:
        writer, stream = self._writer, self._stream
        self._stream = self._writer = None
        try:
            if writer is not None:
                writer.flush()  # cancels the pending flush
        finally:
            if stream is not None:
                if self.path != "-":
                    stream.close()
                else:
                    stream.flush()

    @property
    def written(self) -> int:
        """Records written so far, across reopens."""
        return self._writer.written if self._writer is not None else 0

    def event(self, uri: str, event: Event) -> None:
        self._open().event(uri, event)

    def write(self, uri: str, kind: str, fields: dict[str, Any]) -> None:
        self._open().write(uri, kind, fields)

    def _open(self) -> RecordWriter:
        if self._writer is None:
            raise RuntimeError("the monitor's output is not open")
        return self._writer


def claimStandardOutput() -> IO[str]:
    """
    Keep the process's standard output for records alone: records get a
    private copy of it, and file descriptor 1 then points at standard error,
    so that whatever logs to "stdout" (twistd C{-n} without C{--logfile},
    C{twist}'s default) lands on standard error.  Call it before logging
    begins: a service maker is run before twistd starts its log.
    """
    sys.stdout.flush()
    records = os.dup(1)
    os.dup2(2, 1)
    return open(records, "w", encoding="utf-8", closefd=True)
