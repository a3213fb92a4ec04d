"""A child process's open-file limit: set it at the child's start, read it from /proc."""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path


def with_nofile(limits: tuple[int, int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child ``RLIMIT_NOFILE`` (soft, hard); None: as it is."""
    if limits is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)

    return apply


def open_file_limits(pid: int) -> tuple[int, int]:
    """A running process's (soft, hard) open-file limit."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")
