"""
HTTP from tests: a free loopback port, and GETs that wait for a server to
listen or for an answer to change.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody

from ._harness import PATIENCE


def freePort() -> int:
    """A loopback TCP port that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def get(url: str) -> tuple[int, bytes]:
    """GET C{url}: its status code and body."""
    response = await Agent(reactor).request(b"GET", url.encode())
    body: bytes = await readBody(response)
    return response.code, body


async def fetchOnceUp(url: str) -> bytes:
    """GET C{url}, again until the server listens; its body."""
    return (await getUntil(url, lambda code, body: True))[1]


async def getUntil(
    url: str, condition: Callable[[int, bytes], bool], timeout: float = PATIENCE
) -> tuple[int, bytes]:
    """
    GET C{url} every 50 ms until the server listens and its answer meets
    C{condition}; fail after C{timeout} seconds with the last answer.
    """
    deadline = reactor.seconds() + timeout
    last: tuple[int, bytes] | None = None
    while True:
        try:
            last = await get(url)
        except ConnectionRefusedError:
            pass
        else:
            if condition(*last):
                return last
        if reactor.seconds() > deadline:
            raise AssertionError(f"GET {url}: still {last!r} after {timeout}s")
        await deferLater(reactor, 0.05, lambda: None)
