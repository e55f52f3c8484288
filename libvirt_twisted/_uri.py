"""
libvirt URIs: checking them early and never printing their passwords.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

_USERINFO = re.compile(r"^(?P<scheme>[^:/?#]+://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")


def maskURI(uri: str) -> str:
    """C{uri} with the password of its user part, if any, replaced by ***."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri, count=1)


def scrubber(uri: str) -> Callable[[str], str]:
    """
    A function that hides C{uri}'s password in any text, such as a libvirt
    error message that quotes the URI.
    """
    match = _USERINFO.match(uri)
    password = match["password"] if match else ""
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
