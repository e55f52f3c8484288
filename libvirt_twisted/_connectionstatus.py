"""
ConnectionStatus: a change in a service's connection, as observers and queue
subscribers receive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .events import Event

State = Literal["connected", "disconnected", "reconnected", "resynced", "failed", "stopped"]


@dataclass(frozen=True)
class ConnectionStatus:
    """
    A change in a service's connection: what observers receive, and what
    queue subscribers find in their queue, in order with the events, so that
    they know when to resynchronise.

    @ivar state: C{connected} (first time), C{disconnected} (with the close
        reason), C{reconnected}, C{resynced} (a periodic resync found what
        libvirt had not told), C{failed} (an attempt failed; it will retry)
        or C{stopped}.
    @ivar uri: the URI, its password masked.
    @ivar reason: the close reason's name (C{EOF}, C{KEEPALIVE}...) or the
        error of a failed attempt.
    @ivar failures: failed attempts in a row.
    @ivar changes: with a service's inventory, on C{reconnected} and
        C{resynced}: the synthesized events that explain what changed
        unseen (C{Event.synthetic}), in order.  Raw callback subscribers
        never receive those as callbacks: this is how they learn of them.
    @ivar lost: on C{resynced}, how many of the events in C{changes} libvirt
        should have sent while the connection was up: events it lost.
    """

    state: State
    uri: str
    reason: str | None = None
    failures: int = 0
    changes: tuple[Event, ...] = ()
    lost: int = 0
