"""
The opt-in debug mode: warnings a developer wants and a production program
need not pay for.  A libvirt call made through a LibvirtConnection that
blocks the reactor thread longer than a threshold is logged with its name;
at reactor shutdown, each connection never closed is named.

Turned on by C{install(debug=...)} or by the environment variable
C{LIBVIRT_TWISTED_DEBUG} (C{1} for the default threshold, or a threshold in
milliseconds).
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.logger import Logger

if TYPE_CHECKING:
    from ._connection import LibvirtConnection

log = Logger()

#: What C{LIBVIRT_TWISTED_DEBUG=1} means: a call longer than this warns.
DEFAULT_THRESHOLD = 0.05

F = TypeVar("F", bound=Callable[..., Any])

#: The LibvirtConnections of this process not closed yet (held weakly); pool
#: threads add to it while the reactor thread reads it.
_open: weakref.WeakSet[LibvirtConnection] = weakref.WeakSet()
_lock = threading.Lock()


def threshold(debug: bool | float | None) -> float | None:
    """
    The slow-call threshold in seconds that C{debug} asks for: C{None}
    (off) for False; the default for True; C{debug} milliseconds for a
    number.  C{None} asks the environment (C{LIBVIRT_TWISTED_DEBUG}).
    """
    if debug is None:
        setting = os.environ.get("LIBVIRT_TWISTED_DEBUG", "").strip().lower()
        if setting in ("", "0", "false", "no", "off"):
            return None
        if setting in ("1", "true", "yes", "on"):
            return DEFAULT_THRESHOLD
        try:
            debug = float(setting)
        except ValueError:
            raise ValueError(
                f"LIBVIRT_TWISTED_DEBUG is 1, 0, or a threshold in milliseconds, not {setting!r}"
            ) from None
    if debug is True:
        return DEFAULT_THRESHOLD
    if debug is False:
        return None
    if not debug > 0:
        raise ValueError(f"a debug threshold is a positive number of ms, not {debug!r}")
    return float(debug) / 1000


def timed(function: F, name: str, limit: float, onReactorThread: Callable[[], bool], uri: str) -> F:
    """C{function}, warning when a call on the reactor thread lasts longer than C{limit}."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not onReactorThread():
            return function(*args, **kwargs)
        started = time.monotonic()
        try:
            return function(*args, **kwargs)
        finally:
            took = time.monotonic() - started
            if took > limit:
                log.warn(
                    "{uri}: {method}() blocked the reactor thread for {ms:.0f} ms;"
                    " call it through inThread",
                    uri=uri,
                    method=name,
                    ms=took * 1000,
                )

    return call  # type: ignore[return-value]


def opened(connection: LibvirtConnection) -> weakref.finalize:  # type: ignore[type-arg]
    """
    Remember C{connection}, weakly, until L{closing}: for L{warnUnclosed}.
    The finalizer returned warns if the program drops it while still open
    (libvirt then keeps the connection, and its socket, until the process
    ends); L{closing} disarms it.
    """
    with _lock:
        _open.add(connection)
    dropped = weakref.finalize(connection, _dropped, connection.maskedURI)
    dropped.atexit = False
    return dropped


def closing(connection: LibvirtConnection, dropped: weakref.finalize) -> None:  # type: ignore[type-arg]
    dropped.detach()
    with _lock:
        _open.discard(connection)


def unclosed() -> list[LibvirtConnection]:
    """The connections of this process that are still open (and still held)."""
    with _lock:
        return list(_open)


def _dropped(uri: str) -> None:
    log.warn(
        "a LibvirtConnection to {uri} was dropped while open: libvirt keeps the"
        " connection (and its socket) until the process ends; close() it",
        uri=uri,
    )


def warnUnclosed() -> None:
    """The reactor is shutting down: name each connection never closed."""
    for connection in unclosed():
        log.warn(
            "{connection} on {uri} was never closed; close() it (or stop its service)"
            " before the reactor stops",
            connection=repr(connection),
            uri=connection.maskedURI,
        )
