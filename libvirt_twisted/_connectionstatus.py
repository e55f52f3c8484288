"""
ConnectionStatus: a change in a service's connection, as observers and queue
subscribers receive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["connected", "disconnected", "reconnected", "failed", "stopped"]


@dataclass(frozen=True)
class ConnectionStatus:
    """
    A change in a service's connection: what observers receive, and what
    queue subscribers find in their queue, in order with the events, so that
    they know when to resynchronise.

    @ivar state: C{connected} (first time), C{disconnected} (with the close
        reason), C{reconnected}, C{failed} (an attempt failed; it will retry)
        or C{stopped}.
    @ivar uri: the URI, its password masked.
    @ivar reason: the close reason's name (C{EOF}, C{KEEPALIVE}...) or the
        error of a failed attempt.
    @ivar failures: failed attempts in a row.
    """

    state: State
    uri: str
    reason: str | None = None
    failures: int = 0
