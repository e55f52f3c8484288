"""
The values of the monitor's settings, each checked by one parser that the
command line and the config file share, so that an error reads the same
from either: one line naming the setting and what is wrong.
"""

from __future__ import annotations

import json
import re

from . import events


class ConfigError(ValueError):
    """
    A configuration the monitor cannot run.  Its str() is one line,
    C{FILE: WHERE: problem}, each part there when known: a command-line
    value has no file, a global setting no host.
    """

    def __init__(self, problem: str, path: str | None = None, where: str | None = None) -> None:
        self.problem, self.path, self.where = problem, path, where
        text = ": ".join(part for part in (path, where, problem) if part)
        super().__init__(text.replace("\r", "\\r").replace("\n", "\\n"))


def describe(value: object, asTOML: bool = True) -> str:
    """
    C{value} in an error: as TOML writes it, for an error about its type;
    a string as the command line shows it (quoted by repr()) otherwise.
    """
    if isinstance(value, str):
        return json.dumps(value) if asTOML else repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return "an array" if isinstance(value, list) else "a table"
    return repr(value) if isinstance(value, int | float) else f"a {type(value).__name__}"


def parseFormat(value: object, *, label: str = "--format") -> str:
    """The output format, C{"text"} or C{"json"}; C{label} names the setting in errors."""
    if value not in ("text", "json"):
        raise ConfigError(f"{label} must be text or json, not {describe(value, False)}")
    return "text" if value == "text" else "json"


def parseKinds(spec: object, *, label: str = "--events") -> tuple[str, ...]:
    """
    The event kinds C{spec} chooses, in its order: C{"all"}, families such
    as C{"domain"}, or exact kinds such as C{"domain.lifecycle"}, as one
    comma-separated string or (in the file) a list of strings.
    """
    if isinstance(spec, list | tuple) and spec and all(isinstance(w, str) for w in spec):
        words = [word.strip() for item in spec for word in item.split(",")]
    elif isinstance(spec, str):
        words = [word.strip() for word in spec.split(",")]
    else:
        raise ConfigError(
            f"{label} must be event kinds, comma-separated or a list of strings,"
            f" not {describe(spec)}"
        )
    known = events.allKinds()
    if "all" in words:
        return tuple(sorted(known))
    chosen: list[str] = []
    for word in words:
        matching = [k for k in known if k == word or k.startswith(word + ".")]
        if not matching:
            raise ConfigError(
                f"unknown event kind {word!r}; --list-events shows those of this libvirt"
            )
        chosen.extend(k for k in sorted(matching) if k not in chosen)
    return tuple(chosen)


def parseKeepalive(spec: object, *, label: str = "--keepalive") -> tuple[int, int] | None:
    """C{"INTERVAL:COUNT"} as C{(interval, count)}, or None for C{"off"}."""
    if spec == "off":
        return None
    match = re.fullmatch(r"([0-9]+):([0-9]+)", spec) if isinstance(spec, str) else None
    if match is None or int(match[1]) < 1:
        raise ConfigError(
            f"{label} must be INTERVAL:COUNT (seconds >= 1, count >= 0) or off,"
            f" not {describe(spec, False)}"
        )
    return int(match[1]), int(match[2])


def parseSeconds(
    name: str, value: object, allowOff: bool, *, label: str | None = None
) -> float | None:
    """
    A positive, finite number of seconds, from a number or a string; None
    for C{"off"} if C{allowOff}.  Errors name the option C{--name} unless
    given C{label}.
    """
    label = label or f"--{name}"
    off = " or off" if allowOff else ""
    if allowOff and value == "off":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{label} must be a number of seconds{off}, not {describe(value, False)}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{label} must be a number of seconds{off}, not {value!r}") from None
    if not 0 < number < float("inf"):
        raise ConfigError(f"{label} must be a positive number of seconds{off}, not {value!r}")
    return number


def parseSize(spec: object, *, label: str = "--spool-size") -> int:
    """A size in bytes, from a number or a string with C{K}, C{M} or C{G} (powers of 1024)."""
    if isinstance(spec, int) and not isinstance(spec, bool) and spec > 0:
        return spec
    match = (
        re.fullmatch(r"([0-9]+)([KMG]?)", spec.strip().upper()) if isinstance(spec, str) else None
    )
    if match is None or int(match[1]) == 0:
        raise ConfigError(
            f"{label} must be a number of bytes (K, M or G allowed), not {describe(spec, False)}"
        )
    size: int = int(match[1]) * 1024 ** " KMG".index(match[2] or " ")
    return size
