"""What machine a benchmark ran on: every report states it."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
from pathlib import Path
from typing import Any

__all__ = ["cpu_features", "cpu_model", "describe_machine", "load_average", "loop_description"]

# The CPU flags that change AES-GCM's (and RSA's) speed several-fold: AES-NI and
# carry-less multiply, their 256/512-bit vector forms, AVX2/AVX-512, SHA.
CRYPTO_FLAGS = (
    "aes",
    "pclmulqdq",
    "vaes",
    "vpclmulqdq",
    "avx",
    "avx2",
    "avx512f",
    "avx512vl",
    "avx512bw",
    "sha_ni",
    "adx",
    "bmi2",
)


def cpu_model(cpuinfo: str) -> str | None:
    """The ``model name`` line of /proc/cpuinfo text (x86), or ``Hardware``/``cpu model``."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("model name", "hardware", "cpu model"):
            return value.strip()
    return None


def cpu_features(cpuinfo: str) -> list[str]:
    """Which of :data:`CRYPTO_FLAGS` the first CPU's ``flags`` line lists, in that order."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            return [f for f in CRYPTO_FLAGS if f in have]
    return []


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


def cpu_times() -> tuple[int, ...] | None:
    """The whole machine's CPU time so far (``/proc/stat``'s first line, in clock ticks):
    user, nice, system, idle, iowait, irq, softirq, steal; None where there is none."""
    line = _read("/proc/stat").partition("\n")[0].split()
    if len(line) < 9 or line[0] != "cpu":
        return None
    return tuple(int(v) for v in line[1:9])


def machine_busy(
    before: tuple[int, ...] | None, after: tuple[int, ...] | None
) -> tuple[float, float] | None:
    """Between two :func:`cpu_times`: how busy the whole machine was and how much of it
    was softirq (the kernel's network receive work, which on loopback no process's own
    CPU time necessarily shows), each in percent of one core (200 = two cores busy)."""
    if before is None or after is None:
        return None
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d)
    if total <= 0:
        return None
    cores = os.cpu_count() or 1
    idle = d[3] + d[4]
    return 100 * cores * (total - idle) / total, 100 * cores * d[6] / total


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
    cpuinfo = _read("/proc/cpuinfo")
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = cores
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(cpuinfo) or platform.processor() or platform.machine(),
        "cpu_features": cpu_features(cpuinfo),
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
    features = machine.get("cpu_features")
    seen = f" [{' '.join(features) or 'no AES-NI/AVX flags'}]" if features is not None else ""
    return (
        f"{machine['cpu']}{seen}, {machine['usable_cores']} of {machine['cores']} cores, "
        f"{machine['python']}, cryptography {machine['cryptography']} "
        f"({machine['openssl']}), {machine['kernel']}"
    )
