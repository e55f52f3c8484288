"""
C{--config FILE}: the monitor's fleet in a TOML file, merged with its
command line.

The file and the options go through the same parsers, so that they follow
the same rules and an error reads the same: one line naming the file, the
line or host, and the problem, and never a password.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import libvirt

from ._amqpsettings import (
    DEFAULT_EXCHANGE,
    AMQPSettings,
    AMQPSettingsError,
    amqpSettings,
    pikaOrExit,
)
from ._settingvalues import (
    ConfigError,
    describe,
    parseFormat,
    parseKeepalive,
    parseKinds,
    parseSeconds,
    parseSize,
)
from ._uri import checkURI, maskURI

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "HostConfig",
    "MonitorConfig",
    "loadConfig",
    "parseFormat",
    "parseKeepalive",
    "parseKinds",
    "parseSeconds",
]


#: The raw value of each setting when neither the command line nor the file
#: gives one, parsed as they are; with no host at all, the monitor watches
#: C{uris}.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "uris": ("test:///default",),
        "events": "all",
        "format": "text",
        "output": "-",
        "keepalive": "5:3",
        "retry-initial": 1.0,
        "retry-max": 60.0,
        "resync": 60.0,
        "read-only": False,
        "metrics": None,
        "stop-after": None,
        "amqp": None,
        "amqp-exchange": DEFAULT_EXCHANGE,
        "amqp-password-file": None,
        "amqp-password-env": None,
        "spool": None,
        "spool-size": "256M",
    }
)

#: The settings, named as the long options and the file's global keys.
_SETTINGS = tuple(key for key in DEFAULTS if key != "uris")
_SECONDS = ("retry-initial", "retry-max", "resync", "stop-after")
_HOST_SETTINGS = ("read-only", "keepalive", "events")
_HOST_KEYS = ("uri", *_HOST_SETTINGS, "username", "password-file", "password-env")
_AUTHNAME, _PASSPHRASE = libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE


@dataclass(frozen=True, repr=False)
class HostConfig:
    """
    One watched host: its URI, how to open it and which event kinds to
    write.  The password (from a file or the environment) takes part in
    equality, so that a reload notices a changed one, but never in repr().
    """

    uri: str
    readOnly: bool
    keepalive: tuple[int, int] | None
    kinds: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False, compare=True)

    @property
    def maskedURI(self) -> str:
        """The URI with the password of its user part, if any, as ***."""
        return maskURI(self.uri)

    def __repr__(self) -> str:
        password = None if self.password is None else "***"
        return (
            f"HostConfig(uri={self.maskedURI!r}, readOnly={self.readOnly!r},"
            f" keepalive={self.keepalive!r}, kinds={self.kinds!r},"
            f" username={self.username!r}, password={password!r})"
        )

    def auth(self) -> list[Any] | None:
        """
        The C{auth} argument of C{libvirt.openAuth}, C{[credtypes, callback,
        opaque]}, answering the user name and the password given; None when
        neither is, to open the URI as plainly as the command line does.
        """
        if self.username is None and self.password is None:
            return None
        answers = {_AUTHNAME: self.username, _PASSPHRASE: self.password}

        def answer(credentials: list[list[Any]], opaque: object) -> int:
            # Each is [type, prompt, challenge, default, result]: fill in the
            # result, or fail (-1) when asked what nobody is here to answer.
            for credential in credentials:
                value = answers.get(credential[0])
                value = credential[3] if value is None and credential[0] == _AUTHNAME else value
                if value is None:
                    return -1
                credential[4] = value
            return 0

        return [[_AUTHNAME, _PASSPHRASE], answer, None]


@dataclass(frozen=True)
class MonitorConfig:
    """Everything the monitor runs with: its hosts and their shared settings."""

    hosts: tuple[HostConfig, ...]
    format: str
    output: str
    metrics: str | None
    retryInitial: float
    retryMax: float
    resync: float | None
    stopAfter: float | None
    #: With C{amqp}: the broker, and the spool's directory and size limit.
    amqp: AMQPSettings | None = None
    spool: tuple[str, int] | None = None


def _parse(key: str, value: object, fromFile: bool) -> Any:
    """One setting's value, checked as the command line or the file gives it."""
    label = f"'{key}'" if fromFile else f"--{key}"
    if key == "events":
        return parseKinds(value, label=label)
    if key == "format":
        return parseFormat(value, label=label)
    if key == "keepalive":
        return parseKeepalive(value, label=label)
    if key in _SECONDS:
        allowOff = key == "resync"
        isNumber = isinstance(value, int | float) and not isinstance(value, bool)
        if fromFile and not (isNumber or (allowOff and value == "off")):
            off = ' or "off"' if allowOff else ""
            raise ConfigError(f"{label} must be a number of seconds{off}, not {describe(value)}")
        return parseSeconds(key, value, allowOff, label=label)
    if key == "spool-size":
        return parseSize(value, label=label)
    if key == "read-only":
        if fromFile and not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, not {describe(value)}")
        return bool(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{label} must be a non-empty string, not {describe(value)}")
    return value


@contextmanager
def _at(path: str | None, where: str | None) -> Iterator[None]:
    """Say where a L{ConfigError} (or L{checkURI}'s ValueError) raised inside lies."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(e.problem, path, where) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e), path, where) from None


def _checkKeys(
    table: Mapping[str, Any], known: tuple[str, ...], path: str, where: str | None
) -> None:
    """Refuse a key that is not C{known}, suggesting the closest one that is."""
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {key!r}{hint}", path, where)


def _read(path: str) -> dict[str, Any]:
    """The file's TOML document; errors name the line where tomllib says one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", path, f"line {line}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
        if found:
            raise ConfigError(f"{found[1]} (column {found[3]})", path, f"line {found[2]}") from None
        problem = message.replace(" (at end of document)", " (at the end of the file)")
        raise ConfigError(problem, path, f"line {text.count(chr(10)) + 1}") from None


def _password(table: Mapping[str, Any], path: str, where: str) -> str | None:
    """
    A host's password from C{password-file} (relative to the file naming
    it, whatever the monitor's directory) or C{password-env}; an error names
    where it was looked for, never what was found.
    """
    sources = [key for key in ("password-file", "password-env") if key in table]
    if len(sources) > 1:
        raise ConfigError("give 'password-file' or 'password-env', not both", path, where)
    with _at(path, where):
        name = _parse(sources[0], table[sources[0]], True) if sources else None
    if name is None:
        return None
    if sources == ["password-env"]:
        password = os.environ.get(name)
        if not password:
            state = "is not set" if password is None else "is empty"
            raise ConfigError(f"environment variable {name!r} (password-env) {state}", path, where)
        return password
    try:
        with open(os.path.join(os.path.dirname(path), os.path.expanduser(name)), "rb") as f:
            password = f.readline(65536).decode("utf-8").removesuffix("\n").removesuffix("\r")
    except OSError as e:
        problem = f"cannot read password file {name!r}: {e.strerror}"
        raise ConfigError(problem, path, where) from None
    except UnicodeDecodeError:
        raise ConfigError(f"password file {name!r} is not UTF-8 text", path, where) from None
    if not password:
        raise ConfigError(f"password file {name!r} has an empty first line", path, where)
    return password


def _settings(
    raw: Mapping[str, Any], fromFile: bool, path: str | None, where: str | None
) -> dict[str, Any]:
    """The settings of one layer (command line, file, host), each parsed."""
    with _at(path, where):
        return {key: _parse(key, value, fromFile) for key, value in raw.items()}


def _host(table: Mapping[str, Any], index: int, path: str, pick: Callable[..., Any]) -> HostConfig:
    """The C{index}th C{[[host]]} table, its settings picked over the others."""
    uri = table.get("uri")
    where = f"host {index} ({maskURI(uri)})" if uri and isinstance(uri, str) else f"host {index}"
    _checkKeys(table, _HOST_KEYS, path, where)
    if uri is None:
        raise ConfigError("missing 'uri'", path, where)
    with _at(path, f"host {index}"):
        checkURI(_parse("uri", uri, True))
    own = _settings({k: v for k, v in table.items() if k in _HOST_SETTINGS}, True, path, where)
    with _at(path, where):
        username = _parse("username", table["username"], True) if "username" in table else None
    readOnly, keepalive, kinds = (pick(key, own) for key in _HOST_SETTINGS)
    password = _password(table, path, where)
    return HostConfig(uri, readOnly, keepalive, kinds, username, password)


def loadConfig(path: str | None, commandLine: Mapping[str, Any]) -> MonitorConfig:
    """
    The monitor's configuration: the command line (the keys the user gave,
    named as the long options, C{"uris"} for the C{--uri} list; None or a
    false C{"read-only"} is not given; other keys are ignored) over a host's
    own settings over the file's global ones over L{DEFAULTS}.  C{--uri}
    hosts are added to the file's, with the global settings.  Reads the
    file, and the password files, once: call again to reload.
    """
    given = {
        k: v
        for k, v in commandLine.items()
        if k in _SETTINGS and (v if k == "read-only" else v is not None)
    }
    given = _settings(given, False, None, None)
    document = _read(path) if path is not None else {}
    shown = path or ""
    _checkKeys(document, (*_SETTINGS, "host"), shown, None)
    overall = _settings({k: v for k, v in document.items() if k != "host"}, True, path, None)
    defaults = {k: v for k, v in DEFAULTS.items() if k in _SETTINGS and v is not None}
    defaults = _settings(defaults, False, None, None)

    def pick(key: str, own: Mapping[str, Any] = MappingProxyType({})) -> Any:
        for layer in (given, own, overall, defaults):
            if key in layer:
                return layer[key]
        return None

    tables = document.get("host", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("'host' must be [[host]] tables, one per host", path)
    hosts = [_host(table, index, shown, pick) for index, table in enumerate(tables, 1)]
    uris = commandLine.get("uris") or []
    with _at(None, None):
        if not isinstance(uris, list | tuple):
            raise ConfigError(f"--uri must be given as a list of URIs, not {uris!r}")
        for uri in uris:
            checkURI(uri)
    kept = [pick(key) for key in _HOST_SETTINGS]
    hosts += [HostConfig(uri, *kept) for uri in uris or ([] if hosts else DEFAULTS["uris"])]
    seen: dict[str, str] = {}
    for index, host in enumerate(hosts, 1):
        inFile = index <= len(tables)
        if host.uri in seen:
            where = f"host {index} ({host.maskedURI})" if inFile else f"--uri {host.maskedURI}"
            first = seen[host.uri]
            raise ConfigError(f"same URI as {first}", path if first[0] == "h" else None, where)
        seen[host.uri] = f"host {index}" if inFile else "another --uri"
    return MonitorConfig(
        hosts=tuple(hosts),
        format=pick("format"),
        output=pick("output"),
        metrics=pick("metrics"),
        retryInitial=pick("retry-initial"),
        retryMax=pick("retry-max"),
        resync=pick("resync"),
        stopAfter=pick("stop-after"),
        **_amqp(pick, given, path),
    )


def _amqp(pick: Callable[[str], Any], given: Mapping[str, Any], path: str | None) -> dict[str, Any]:
    """
    The C{amqp} and C{spool} of L{MonitorConfig}, when C{amqp} is set.  A
    password source on the command line replaces the file's; a password
    file the config file names lies relative to it.  An error names the
    file when the setting at fault came from it.
    """
    url = pick("amqp")
    if url is None:
        return {}

    def fromFile(*keys: str) -> str | None:
        """The file, for an error in a setting that the file gave."""
        return None if path is None or any(key in given for key in keys) else path

    sources = ("amqp-password-file", "amqp-password-env")
    if any(key in given for key in sources):  # the command line's source replaces the file's
        passwordFile, passwordEnv = (given.get(key) for key in sources)
    else:
        passwordFile, passwordEnv = (pick(key) for key in sources)
        if passwordFile is not None and path is not None:
            passwordFile = os.path.join(os.path.dirname(path), os.path.expanduser(passwordFile))
    # Checked one part at a time, so that an error names where its part came from.
    steps: list[tuple[tuple[str, ...], Callable[[], AMQPSettings]]] = [
        (("amqp",), lambda: amqpSettings(url)),
        (("amqp-exchange",), lambda: amqpSettings(url, pick("amqp-exchange"))),
        (sources, lambda: amqpSettings(url, pick("amqp-exchange"), passwordFile, passwordEnv)),
    ]
    try:
        pikaOrExit()
    except AMQPSettingsError as e:
        raise ConfigError(str(e), fromFile("amqp")) from None
    for keys, step in steps:
        try:
            settings = step()
        except AMQPSettingsError as e:
            raise ConfigError(str(e), fromFile(*keys)) from None
    try:
        settings.parameters()  # pika's own check of the URL's options
    except AMQPSettingsError as e:
        raise ConfigError(str(e), fromFile("amqp")) from None
    directory = pick("spool")
    if directory is None:
        state = os.environ.get("STATE_DIRECTORY")
        if not state:
            problem = "--amqp needs --spool DIR: where records wait for the broker"
            raise ConfigError(problem, fromFile("amqp"))
        directory = os.path.join(state.split(":")[0], "spool")
    return {"amqp": settings, "spool": (directory, pick("spool-size"))}
