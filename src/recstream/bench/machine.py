"""What machine a benchmark ran on: every report states it."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "describe_machine", "load_average", "loop_description"]


def cpu_model(cpuinfo: str) -> str | None:
    """The ``model name`` line of /proc/cpuinfo text (x86), or ``Hardware``/``cpu model``."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("model name", "hardware", "cpu model"):
            return value.strip()
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def load_average() -> float | None:
    """The 1-minute load average, if the platform has one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return None


def _memory_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / (1 << 20), 1)
    return None


def loop_description() -> dict[str, Any]:
    """Whether uvloop is installed and its version (the live bench records what ran)."""
    import importlib.metadata  # not at import: keep `recstream` start-up lean

    try:
        return {"uvloop": importlib.metadata.version("uvloop")}
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dependency on Linux
        return {"uvloop": None}


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, memory, kernel, Python, cryptography and its OpenSSL, load."""
    import cryptography
    from cryptography.hazmat.backends.openssl import backend

    from recstream import __version__

    cores = os.cpu_count()
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = cores
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(_read("/proc/cpuinfo")) or platform.processor() or platform.machine(),
        "cores": cores,
        "usable_cores": usable,
        "memory_gib": _memory_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
        "recstream": __version__,
        "load_average_at_start": load_average(),
        "gnu_time": shutil.which("time") is not None and Path("/usr/bin/time").exists(),
        **loop_description(),
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line for the top of a table."""
    return (
        f"{machine['cpu']}, {machine['usable_cores']} of {machine['cores']} cores, "
        f"{machine['python']}, cryptography {machine['cryptography']} "
        f"({machine['openssl']}), {machine['kernel']}"
    )
