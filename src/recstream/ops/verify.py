"""Verify one recording's signature: no key, never raises for a bad recording.

The outcome's ``status`` is the signature verdict (``valid``, ``invalid``,
``unsigned``, ``refused_signer``), or ``failed`` (not an envelope, unreadable) and
``busy`` (still being recorded) as for every operation; ``info`` holds the report
(:meth:`recstream.signing.SignatureReport.to_json`).
"""

from __future__ import annotations

import time
from datetime import datetime

from recstream import durable
from recstream.errors import RecstreamError
from recstream.ops.outcome import BUSY, FAILED, Outcome, failure_reason
from recstream.ops.tree import Tree, is_incomplete
from recstream.signing import SignatureReport, verify_source

__all__ = ["verify_one"]


def verify_one(src: Tree, rel: str, ca_pem: bytes, *, at: datetime | None = None) -> Outcome:
    """Verify ``src/rel`` against the CA file ``ca_pem``; the verdict is the status."""
    t0 = time.perf_counter()
    if is_incomplete(rel):
        return Outcome(rel, BUSY, "still being recorded (*.incomplete); left alone")
    try:
        with src.open(rel) as opened:
            report = verify_source(opened.source(), ca_pem, at=at)
    except durable.FileBusyError as exc:
        return Outcome(rel, BUSY, failure_reason(exc))
    except OSError as exc:
        return Outcome(rel, FAILED, failure_reason(exc), info={"error": "io"})
    except RecstreamError as exc:  # not an envelope, a malformed header, a bad CA file
        return Outcome(rel, FAILED, failure_reason(exc), info={"error": type(exc).__name__})
    return outcome_of(rel, report, time.perf_counter() - t0, opened.size)


def outcome_of(rel: str, report: SignatureReport, seconds: float, size: int) -> Outcome:
    """The :class:`Outcome` for a report (``batch audit`` shares it)."""
    info = report.to_json()
    info.update(recording_id=report.recording_id, tenant=report.tenant)
    return Outcome(
        rel,
        report.status.value,
        report.reason or report.note,
        seconds=seconds,
        envelope_bytes=size,
        info=info,
    )
