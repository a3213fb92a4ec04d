"""Audit one recording: can a key we hold open it, and for how long?

Reads the header only (``unwrap=True`` also proves the key unwraps the file key
and authenticates the header: RSA work).  A recording still being recorded or
locked by another process is ``busy``.

Signatures (docs/FORMAT.md §10): ``info["signature"]`` is ``unsigned``, ``signed``
(the header names a signer and the trailer is there; not verified) or ``invalid``
(the trailer is missing), from the header and the last bytes only; with a CA file
(``ca_pem``) the whole file is verified and it is the verdict (``valid``,
``invalid``, ``refused_signer``), and a bad signature is a problem status
(``badly_signed``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Final

from recstream import durable
from recstream.envelope import open_file_key
from recstream.errors import RecstreamError
from recstream.format import TRAILER_BYTES, TRAILER_MAGIC, Header
from recstream.keysource import OpenedKeys
from recstream.ops.outcome import BUSY, FAILED, Outcome, failure_reason
from recstream.ops.tree import Tree, is_incomplete
from recstream.reader import FileSource, Source, StreamPrefix, read_header_at

__all__ = ["EXPIRY_WARNING", "audit_one"]

EXPIRY_WARNING: Final = dt.timedelta(days=30)


def audit_one(
    src: Tree,
    rel: str,
    keys: OpenedKeys,
    *,
    unwrap: bool,
    now: dt.datetime,
    ca_pem: bytes | None = None,
) -> Outcome:
    """``ok``, ``orphan`` (no key held opens it), ``expired``/``expiring`` (its only usable
    certificates are expired or expire within 30 days), ``badly_signed`` (with ``ca_pem``:
    an invalid signature or a refused signer), ``busy`` or ``failed``."""
    t0 = time.perf_counter()
    if is_incomplete(rel):
        return Outcome(rel, BUSY, "still being recorded (*.incomplete); left alone")
    try:
        with src.open(rel) as opened:
            source = FileSource(opened.fd) if opened.fd is not None else StreamPrefix(opened.file)
            header = read_header_at(source)
            signature, why = _signature(source, header, ca_pem, now)
    except durable.FileBusyError as exc:
        return Outcome(rel, BUSY, failure_reason(exc))
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, FAILED, failure_reason(exc))
    md = header.metadata
    info: dict[str, Any] = {
        "tenant": md.tenant,
        "recording_id": md.recording_id,
        "kind": md.media_kind.name.lower(),
        "cert_ids": list(header.cert_ids),
        "signature": signature,
    }
    if signature in ("invalid", "refused_signer") and ca_pem is not None:
        return Outcome(rel, "badly_signed", why, seconds=time.perf_counter() - t0, info=info)
    usable = [keys.certs[c] for c in header.cert_ids if c in keys.certs and keys.certs[c].has_key]
    if not usable and not any(keys.keyring.private_key_for(s) for s in header.recipients):
        return Outcome(rel, "orphan", "no key held for any of its certificates",
                       seconds=time.perf_counter() - t0, info=info)  # fmt: skip
    unwrap_s = 0.0
    if unwrap:
        t1 = time.perf_counter()
        try:
            open_file_key(header, keys.keyring)
        except RecstreamError as exc:
            return Outcome(rel, "orphan", f"the key held does not open it: {exc}",
                           seconds=time.perf_counter() - t0, info=info)  # fmt: skip
        unwrap_s = time.perf_counter() - t1
    status, detail = "ok", ""
    if usable:
        best = max(usable, key=lambda c: c.not_after)
        info["key_expires"] = best.not_after.isoformat()
        if best.not_after <= now:
            status = "expired"
            detail = f"its only usable certificate(s) expired {best.not_after:%Y-%m-%d}"
        elif best.not_after - now <= EXPIRY_WARNING:
            status = "expiring"
            detail = f"its usable certificate(s) expire {best.not_after:%Y-%m-%d}"
    return Outcome(rel, status, detail, seconds=time.perf_counter() - t0,
                   unwrap_seconds=unwrap_s, info=info)  # fmt: skip


def _signature(
    source: Source, header: Header, ca_pem: bytes | None, now: dt.datetime
) -> tuple[str, str]:
    """The recording's signature state and why (see the module docstring)."""
    if header.signer is None:
        return "unsigned", ""
    if ca_pem is not None and isinstance(source, FileSource):
        from recstream.signing import verify_source

        report = verify_source(source, ca_pem, at=now)
        return report.status.value, report.reason
    if isinstance(source, FileSource) and source.size - header.length >= TRAILER_BYTES:
        last = source.read_at(source.size - len(TRAILER_MAGIC), len(TRAILER_MAGIC))
        if last == TRAILER_MAGIC:
            return "signed", "not verified"
        return "invalid", "the header announces a signature but the file has no trailer"
    return "signed", "not verified (not a local file)"
