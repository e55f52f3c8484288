"""
libvirt URIs: checking them early, opening them, and never printing their
passwords.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import libvirt
from twisted.python.failure import Failure


def _userinfo(uri: str) -> tuple[int, int] | None:
    """
    Where the password of C{uri}'s user part lies, as (start, end), if it
    has one.  The user part ends at the last @ before the query, so that a
    password holding @ or / (not allowed unescaped, but typed anyway) is
    still found whole.
    """
    start = uri.find("://")
    if start < 0:
        return None
    start += 3
    end = uri.find("?", start)
    at = uri.rfind("@", start, len(uri) if end < 0 else end)
    if at < 0:
        return None
    colon = uri.find(":", start, at)
    if colon < 0:
        return None
    return colon + 1, at


def maskURI(uri: str) -> str:
    """
    C{uri} with the password of its user part, if any, replaced by ***: a
    URI safe to log.

    @param uri: a libvirt URI (C{qemu+tcp://user:secret@host/system}...).
    @return: the URI, masked (C{qemu+tcp://user:***@host/system}).
    """
    where = _userinfo(uri)
    if where is None:
        return uri
    return uri[: where[0]] + "***" + uri[where[1] :]


#: Something that looks like a URI in a text: a scheme, ://, then no blank.
_URI_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def maskPasswords(text: str) -> str:
    """
    C{text} with the password of any URI in it replaced by ***, as
    L{maskURI} masks one: for messages (libvirt's own errors) that may quote
    a URI nobody told us of.
    """
    return _URI_IN_TEXT.sub(lambda match: maskURI(match[0]), text)


def scrubber(uri: str) -> Callable[[str], str]:
    """
    A function that hides C{uri}'s password in any text, such as a libvirt
    error message that quotes the URI.
    """
    where = _userinfo(uri)
    password = uri[where[0] : where[1]] if where else ""
    if not password:
        return lambda text: text
    return lambda text: text.replace(password, "***")


def checkURI(uri: object) -> str:
    """
    Return C{uri} if it looks like a libvirt URI (C{driver[+transport]:///...}
    or C{driver[+transport]://host/...}); raise ValueError naming the problem.
    """
    if not isinstance(uri, str):
        raise TypeError(f"a libvirt URI is a str, not {uri!r}")
    shown = maskURI(uri)
    if not uri or uri != uri.strip() or any(c.isspace() for c in uri):
        raise ValueError(f"malformed libvirt URI {shown!r}: empty or has spaces")
    try:
        parts = urlsplit(uri)
    except ValueError as e:
        raise ValueError(f"malformed libvirt URI {shown!r}: {e}") from None
    if not re.fullmatch(r"[a-z][a-z0-9]*(\+[a-z0-9]+)?", parts.scheme):
        raise ValueError(
            f"malformed libvirt URI {shown!r}: expected driver[+transport]://...,"
            f" like qemu:///system or test:///default"
        )
    if not uri[len(parts.scheme) + 1 :].startswith("//"):
        raise ValueError(f"malformed libvirt URI {shown!r}: expected {parts.scheme}://...")
    return uri


#: Drivers that always run inside the program, whatever host they name:
#: they talk to their hypervisor themselves, with no libvirt socket to watch.
_IN_PROCESS = {
    "esx",
    "gsx",
    "vpx",
    "hyperv",
    "openvz",
    "vmwareplayer",
    "vmwarews",
    "vmwarefusion",
}


def isEmbedded(uri: str) -> bool:
    """
    Whether C{uri}'s driver runs inside this process (C{test:///default},
    C{esx://host/}, C{qemu:///embed?root=...}): every other URI reaches a
    libvirt daemon through a socket.
    """
    parts = urlsplit(uri)
    if "+" in parts.scheme:
        return False
    if parts.scheme in _IN_PROCESS:
        return True
    if parts.netloc:
        return False  # test://host/... and the like go to that host's daemon
    return parts.scheme == "test" or parts.path == "/embed"


def openURI(uri: str, readOnly: bool, auth: list[Any] | None) -> libvirt.virConnect:
    """Open C{uri} as asked: read-only, with credentials, or plainly."""
    if auth is not None:
        return libvirt.openAuth(uri, auth, libvirt.VIR_CONNECT_RO if readOnly else 0)
    if readOnly:
        return libvirt.openReadOnly(uri)
    return libvirt.open(uri)


def scrubFailure(failure: Failure, scrub: Callable[[str], str]) -> None:
    """Hide the URI's password in an error that may quote it, keeping its type."""
    error = failure.value
    if error is None:
        return
    error.args = tuple(scrub(a) if isinstance(a, str) else a for a in error.args)
    err = getattr(error, "err", None)
    if isinstance(err, tuple):
        setattr(error, "err", tuple(scrub(a) if isinstance(a, str) else a for a in err))  # noqa: B010
