"""
The machine a run measured, and the versions that matter: figures mean
little without them.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Any

import libvirt


def _cpuModel() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memTotal() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _libvirtd() -> str:
    try:
        return subprocess.run(
            ["libvirtd", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(code: int) -> str:
    return f"{code // 1000000}.{code // 1000 % 1000}.{code % 1000}"


def _distribution() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    except OSError:
        return "unknown"


def describe() -> dict[str, Any]:
    """CPU, cores, memory, kernel, OS and the versions of everything measured."""
    return {
        "cpu": _cpuModel(),
        "cores": os.cpu_count(),
        "memoryGiB": round(_memTotal() / 2**30, 1),
        "kernel": platform.release(),
        "os": _distribution(),
        "python": platform.python_version(),
        "libvirt": _version(libvirt.getVersion()),
        "libvirtd": _libvirtd(),
        "libvirtPython": importlib.metadata.version("libvirt-python"),
        "twisted": importlib.metadata.version("twisted"),
    }


def summary(machine: dict[str, Any]) -> str:
    """The machine in one line, for the markdown table's heading."""
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memoryGiB']} GiB RAM;"
        f" Linux {machine['kernel']} ({machine['os']}); Python {machine['python']};"
        f" libvirt {machine['libvirt']} ({machine['libvirtd']}), libvirt-python"
        f" {machine['libvirtPython']}; Twisted {machine['twisted']}"
    )
