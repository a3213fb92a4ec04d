"""Run a command as a whole process: wall time and an honest peak RSS.

A child forked from this (large) Python process inherits its RSS high-water
mark: on Linux ``exec`` carries the old address space's peak into
``ru_maxrss``, and ``subprocess`` forks from us.  So ``ru_maxrss`` of our
direct children is useless here.  GNU ``time`` is a tiny launcher whose own
child starts from time's small footprint, so its ``%M`` is the command's own
peak.  Without GNU time we poll ``VmHWM`` in ``/proc/PID/status``, which an
exec resets (a lower bound that misses only growth in the last poll interval).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recstream.bench.fixtures import BenchError

__all__ = ["GNU_TIME", "ProcResult", "run_measured"]

GNU_TIME = Path("/usr/bin/time")
_POLL_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class ProcResult:
    wall: float  # seconds, fork to exit
    peak_rss_kib: int | None
    rss_method: str  # "GNU time", "VmHWM polling" or "none"
    cpu: float | None = None  # user + system seconds (GNU time only)


def _has_gnu_time() -> bool:
    return GNU_TIME.exists() and os.access(GNU_TIME, os.X_OK)


def run_measured(
    cmd: Sequence[str],
    *,
    stdin: Path | None = None,
    stdout: Path | None = None,
    env: dict[str, str] | None = None,
) -> ProcResult:
    """Run ``cmd`` to completion; return its wall time and peak RSS.

    ``stdin``/``stdout`` redirect from/to files (``cat IN > OUT``).

    Raises:
        BenchError: the command failed (its stderr's tail is in the message).
    """
    with (
        tempfile.NamedTemporaryFile(prefix="rss-", suffix=".txt") as rss_file,
        tempfile.TemporaryFile() as errors,
    ):
        gnu = _has_gnu_time()
        argv = [str(GNU_TIME), "-f", "%U %S %M", "-o", rss_file.name, *cmd] if gnu else list(cmd)
        fin = open(stdin, "rb") if stdin else None  # noqa: SIM115 - closed below
        fout = open(stdout, "wb") if stdout else None  # noqa: SIM115
        try:
            start = time.perf_counter()
            # The commands are the benchmark's subjects: tools on PATH, our own arguments.
            proc = subprocess.Popen(  # noqa: S603
                argv,
                stdin=fin or subprocess.DEVNULL,
                stdout=fout or subprocess.DEVNULL,
                stderr=errors,
                env=env,
            )
            peak = None if gnu else _poll_hwm(proc)
            proc.wait()
            wall = time.perf_counter() - start
        finally:
            for fh in (fin, fout):
                if fh is not None:
                    fh.close()
        if proc.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip()[-600:]
            msg = f"{' '.join(cmd[:4])} ... exited with {proc.returncode}: {tail}"
            raise BenchError(msg)
        if not gnu:
            return ProcResult(wall, peak, "VmHWM polling" if peak is not None else "none")
        lines = Path(rss_file.name).read_text().strip().splitlines()
        fields = lines[-1].split() if lines else []
        if len(fields) != 3 or not fields[2].isdigit():
            return ProcResult(wall, None, "GNU time")
        return ProcResult(wall, int(fields[2]), "GNU time", float(fields[0]) + float(fields[1]))


def _poll_hwm(proc: subprocess.Popen[bytes]) -> int | None:
    status = Path(f"/proc/{proc.pid}/status")
    peak: int | None = None
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak or 0, int(line.split()[1]))
        except (OSError, ValueError):
            break
        time.sleep(_POLL_SECONDS)
    return peak
