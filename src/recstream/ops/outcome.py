"""What happened to one recording: the result every per-recording operation returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

from recstream import durable
from recstream.errors import RecstreamError

__all__ = ["BUSY", "DONE", "FAILED", "SKIPPED", "Outcome", "failure_reason"]

DONE: Final = "done"
SKIPPED: Final = "skipped"  # nothing to do: done by an earlier run, or already up to date
BUSY: Final = "busy"  # being recorded or written by another process: left alone
FAILED: Final = "failed"


@dataclass
class Outcome:
    """One recording's result.

    ``status`` is ``done``, ``skipped``, ``busy`` or ``failed`` (audit: ``ok``,
    ``orphan``, ``expired``, ``expiring``); ``detail`` says why; ``output`` is the
    relative path written, if any.
    """

    path: str
    status: str
    detail: str = ""
    bytes: int = 0
    envelope_bytes: int = 0
    seconds: float = 0.0
    unwrap_seconds: float = 0.0
    output: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status not in (FAILED, BUSY)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_reason(exc: BaseException) -> str:
    """A one-line reason for a failed recording (names the file for I/O errors)."""
    if isinstance(exc, durable.FileBusyError):
        return "another process is writing it; left as it is"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(exc, RecstreamError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # pragma: no cover
