"""
Where the AMQP output publishes: the broker's URL (its password from the URL,
a file or the environment, never shown), the exchange, and the routing key
of each record.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULT_EXCHANGE = "libvirt"


class AMQPSettingsError(ValueError):
    """The AMQP settings cannot work; the message is one line, without the password."""


def pikaOrExit() -> Any:
    """pika, or an L{AMQPSettingsError} saying what to install."""
    try:
        import pika
    except ImportError:
        raise AMQPSettingsError("--amqp needs pika: pip install 'libvirt-twisted[amqp]'") from None
    return pika


@dataclass(frozen=True)
class AMQPSettings:
    """
    A broker and an exchange.  C{url} is C{amqp://user:password@host:port/vhost}
    (C{amqps://} for TLS; pika's query options such as C{heartbeat} and
    C{blocked_connection_timeout} work), with its password replaced by
    C{password} when that is given.
    """

    url: str = field(repr=False)
    exchange: str = DEFAULT_EXCHANGE
    password: str | None = field(default=None, repr=False)

    @property
    def maskedURL(self) -> str:
        """The URL with its password hidden, for logs."""
        # On the raw text: a password holding an unescaped / ? or # would
        # end urlsplit's netloc early, and show.
        scheme, sep, rest = self.url.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if not sep or not at or (":" not in userinfo and self.password is None):
            return self.url
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"

    def parameters(self) -> Any:
        """pika's C{URLParameters} for the broker, the password in place."""
        pika = pikaOrExit()
        url = self.url
        parts = urlsplit(url)
        if parts.username is not None and parts.password is None and self.password is None:
            raise AMQPSettingsError(
                f"--amqp {self.maskedURL}: no password for {parts.username!r}: give it in the"
                " URL, or with --amqp-password-file or --amqp-password-env"
            )
        if self.password is not None:
            user = quote(parts.username or "guest", safe="")
            netloc = f"{user}:{quote(self.password, safe='')}@{parts.hostname}"
            if parts.port:
                netloc += f":{parts.port}"
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        try:
            return pika.URLParameters(url)
        except (ValueError, TypeError) as e:
            raise AMQPSettingsError(f"--amqp {self.maskedURL}: {e}") from None

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "amqps"


def amqpSettings(
    url: str,
    exchange: str = DEFAULT_EXCHANGE,
    passwordFile: str | None = None,
    passwordEnv: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> AMQPSettings:
    """
    Checked settings: the URL's scheme, host and port, the exchange's name,
    and the password from C{passwordFile} (its first line) or the environment
    variable C{passwordEnv}.  Errors are one line and never show a password.
    """
    settings = AMQPSettings(url, exchange)
    parts = urlsplit(url)
    shown = settings.maskedURL
    if parts.scheme not in ("amqp", "amqps"):
        raise AMQPSettingsError(f"--amqp must be an amqp:// or amqps:// URL, not {shown!r}")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port when it is read)
    except ValueError:
        raise AMQPSettingsError(f"--amqp {shown}: the port is not a number") from None
    if not parts.hostname:
        raise AMQPSettingsError(f"--amqp {shown}: no host")
    if parts.scheme == "amqps" and importlib.util.find_spec("OpenSSL") is None:
        raise AMQPSettingsError(
            "--amqp amqps:// needs TLS support: pip install 'libvirt-twisted[amqp]'"
        )
    if not re.fullmatch(r"[\w.:-]{1,255}", exchange):
        raise AMQPSettingsError(
            f"--amqp-exchange must be letters, digits, '-', '_', '.' or ':', not {exchange!r}"
        )
    if passwordFile is not None and passwordEnv is not None:
        raise AMQPSettingsError("give --amqp-password-file or --amqp-password-env, not both")
    password: str | None = None
    if passwordFile is not None:
        try:
            with open(passwordFile, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise AMQPSettingsError(
                f"--amqp-password-file {passwordFile}: {e.strerror or e}"
            ) from None
    elif passwordEnv is not None:
        password = environ.get(passwordEnv)
        if password is None:
            raise AMQPSettingsError(f"--amqp-password-env: {passwordEnv} is not set")
    return AMQPSettings(url, exchange, password)


def routingKey(record: Mapping[str, Any], localHost: str | None = None) -> str:
    """
    A record's routing key, four words: C{<host>.<family>.<kind>.<event>}.

    C{host} is the URI's host with its dots as underscores (the local
    machine's name for a local URI such as C{qemu:///system}); C{family} and
    C{kind} are the record's kind split at its dot (C{domain.lifecycle},
    C{connection.disconnected}; C{inventory} becomes C{inventory._}); C{event}
    is the lifecycle event (C{STARTED}) or C{_}.  So C{*.domain.lifecycle.#}
    binds every domain lifecycle event of every host.
    """
    event = record.get("event")
    return _routingKey(
        str(record.get("uri", "")),
        str(record.get("kind", "_")),
        event if isinstance(event, str) else "",
        localHost or socket.gethostname(),  # asked each time: the cache keys on it
    )


@lru_cache(maxsize=4096)
def _routingKey(uri: str, kind: str, event: str, localHost: str) -> str:
    """L{routingKey} of a record's fields: few combinations, one per record."""
    family, _, kind = kind.partition(".")
    return ".".join((_word(hostWord(uri, localHost)), _word(family), _word(kind), _word(event)))


def hostWord(uri: str, localHost: str | None = None) -> str:
    """The host part of a routing key for C{uri}."""
    host = urlsplit(uri).hostname if "://" in uri else None
    if not host or host in ("localhost", "127.0.0.1", "::1"):
        host = localHost or socket.gethostname()
    return host.replace(".", "_")


def _word(text: str) -> str:
    """One word of a topic routing key: no dots, never empty."""
    return re.sub(r"[.#*\s]", "_", text) or "_"
