"""Signed recordings: who recorded this, and is it what they recorded (FORMAT.md §10).

The public API for signatures, used by the CLI, the RCS, batch jobs and recorders:

* :class:`Signer` (``Signer.from_files(key, cert, password)``) is given as
  ``signer=`` to the encryptors (:class:`~recstream.envelope.EnvelopeEncryptor`,
  ``RandomAccessEncryptor``, the live writer): they then write signed envelopes.
* :func:`verify_file` checks a recording's signature with no decryption key and
  returns a :class:`SignatureReport` (it raises only when the file is not an
  envelope at all, or cannot be read).
* With ``keep_digests=True`` a valid report carries a :class:`VerifiedBody`: give
  it to :class:`~recstream.reader.SegmentReader` (``verified=``) and each read is
  checked against the signed segment digests.  Cache it keyed by
  :func:`file_identity` (device, inode, size, mtime in ns, ctime in ns): when the
  file changes, so does its identity, and a stale entry can at worst make reads
  fail (``SignedSegmentMismatchError``), never pass altered bytes.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from cryptography import x509

from recstream import _crypto
from recstream.errors import (
    BadSignatureError,
    BundleError,
    CertificateError,
    EnvelopeFormatError,
    RefusedSignerError,
    SignatureError,
    UnsignedRecordingError,
)
from recstream.format import (
    BODY_PREFIX_BYTES,
    SEGMENT_WIRE_SIZE,
    TRAILER_BYTES,
    BodyLayout,
    Header,
    Trailer,
    parse_trailer,
    signed_message,
)
from recstream.pki.certs import certificate_id, name_str
from recstream.reader import FileSource, Source, read_header_at
from recstream.signer import ALGORITHM_NAMES, Signer, VerifiedBody

__all__ = [
    "SignatureReport",
    "SignatureStatus",
    "Signer",
    "VerifiedBody",
    "file_identity",
    "require_valid",
    "verify_file",
    "verify_source",
]

_READ_BYTES: Final = 64 * SEGMENT_WIRE_SIZE  # ≈1 MiB of whole segments per read


class SignatureStatus(StrEnum):
    """What :func:`verify_file` concluded."""

    VALID = "valid"  # signature verifies, body and header unchanged, signer trusted
    INVALID = "invalid"  # altered, truncated, or signed by another key than the certificate's
    UNSIGNED = "unsigned"  # a version-1 recording: no signature at all
    REFUSED_SIGNER = "refused_signer"  # intact, but the signer is not trusted by the CA file


@dataclass(frozen=True, slots=True)
class SignatureReport:
    """One recording's signature, as :func:`verify_file` found it.

    Attributes:
        status: the verdict.
        reason: one sentence saying why (empty when valid).
        signer_subject: the signer certificate's subject (None when unsigned or unreadable).
        cert_id: its certificate ID.
        algorithm: ``"ecdsa-p256-sha256"`` or ``"ed25519"``.
        signed_ms: the signing time the trailer states (ms since the epoch, UTC).
        chain_valid_at_signing: the signer chained to the CA file, with
            digitalSignature, at the signing time (None when not checked).
        valid_now: the signer certificate is inside its validity period at the
            verification time (an expired signer's old signatures stay valid).
        note: about the present (e.g. "the signer certificate expired on ... after signing").
        recording_id, tenant: from the header (encoder-written; escape before display).
        verified: for a valid signature with ``keep_digests=True``: what Range
            reads are checked against.
    """

    status: SignatureStatus
    reason: str = ""
    signer_subject: str | None = None
    cert_id: str | None = None
    algorithm: str | None = None
    signed_ms: int | None = None
    chain_valid_at_signing: bool | None = None
    valid_now: bool | None = None
    note: str = ""
    recording_id: str | None = None
    tenant: str | None = None
    verified: VerifiedBody | None = field(default=None, repr=False)

    @property
    def signed_at(self) -> str | None:
        """The signing time as ISO 8601 UTC with milliseconds, or None."""
        if self.signed_ms is None:
            return None
        return _iso(self.signed_ms)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values (``verify --json``, ``inspect --json``)."""
        return {
            "status": self.status.value,
            "reason": self.reason or None,
            "signer": self.signer_subject,
            "cert_id": self.cert_id,
            "algorithm": self.algorithm,
            "signed_ms": self.signed_ms,
            "signed_at": self.signed_at,
            "chain_valid_at_signing": self.chain_valid_at_signing,
            "valid_now": self.valid_now,
            "note": self.note or None,
        }


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """The cache key for a verified file: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns).

    Any write to the file changes st_mtime_ns or st_ctime_ns (ctime cannot be set
    by a user), and a replaced file has a new inode.
    """
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def verify_file(
    path_or_source: str | os.PathLike[str] | Source,
    ca_bundle: bytes | str | os.PathLike[str],
    *,
    at: datetime | None = None,
    keep_digests: bool = False,
) -> SignatureReport:
    """Verify a recording's signature; no decryption key is needed (FORMAT.md §10.3).

    Args:
        path_or_source: a file path, or a source (``read_at``/``size``, e.g.
            :class:`~recstream.reader.FileSource`).
        ca_bundle: the CA file's contents (PEM bytes), or its path.
        at: the verification time (now by default), for ``valid_now``.
        keep_digests: keep the segment digests in the report's ``verified`` for
            checking Range reads later (32 bytes per 16 KiB segment).

    Returns:
        The report; every signature verdict is a report, never an exception.

    Raises:
        EnvelopeFormatError: not an envelope, or a malformed header.
        TruncatedStreamError, EmptyInputError: the file ends inside the header.
        BundleError: the CA file holds no readable certificate.
        OSError: the file or the CA file cannot be read.
    """
    cas = ca_bundle if isinstance(ca_bundle, bytes) else _read(ca_bundle)
    if isinstance(path_or_source, str | os.PathLike):
        fd = os.open(path_or_source, os.O_RDONLY)
        try:
            source = FileSource(fd)
            identity = file_identity(os.fstat(fd))
            report = verify_source(source, cas, at=at, keep_digests=keep_digests)
        finally:
            os.close(fd)
        if report.verified is not None:
            verified = VerifiedBody(
                report.verified.cert_id,
                report.verified.signer_subject,
                report.verified.signed_ms,
                report.verified.segments,
                report.verified.digests,
                identity,
            )
            report = _replace_verified(report, verified)
        return report
    return verify_source(path_or_source, cas, at=at, keep_digests=keep_digests)


def verify_source(
    source: Source, ca_bundle_pem: bytes, *, at: datetime | None = None, keep_digests: bool = False
) -> SignatureReport:
    """:func:`verify_file` over a source already open (the CA file's bytes given)."""
    header = read_header_at(source)
    meta: dict[str, Any] = {
        "recording_id": header.metadata.recording_id,
        "tenant": header.metadata.tenant,
    }
    if header.signer is None:
        reason = "format version 1: the recording carries no signature"
        return SignatureReport(SignatureStatus.UNSIGNED, reason, **meta)
    return _Verification(
        source, header, cas=ca_bundle_pem, at=at, keep=keep_digests, meta=meta
    ).run()


def require_valid(report: SignatureReport) -> None:
    """Raise unless ``report`` is valid (``decrypt --require-signature``, the RCS policy).

    Raises:
        UnsignedRecordingError, BadSignatureError, RefusedSignerError.
    """
    errors: dict[SignatureStatus, type[SignatureError]] = {
        SignatureStatus.UNSIGNED: UnsignedRecordingError,
        SignatureStatus.INVALID: BadSignatureError,
        SignatureStatus.REFUSED_SIGNER: RefusedSignerError,
    }
    if report.status is not SignatureStatus.VALID:
        msg = f"signature {report.status.value}: {report.reason}"
        raise errors[report.status](msg)


class _Verification:
    """One run of §10.3's checks, in order: the first that fails makes the report."""

    def __init__(
        self,
        source: Source,
        header: Header,
        *,
        cas: bytes,
        at: datetime | None,
        keep: bool,
        meta: dict[str, Any],
    ) -> None:
        self.source, self.header, self.cas, self.keep, self.meta = source, header, cas, keep, meta
        self.at = at or datetime.now(UTC)
        assert header.signer is not None
        self.block = header.signer
        self.facts: dict[str, Any] = {"algorithm": ALGORITHM_NAMES[self.block.algorithm]}

    def report(self, status: SignatureStatus, reason: str = "", **more: Any) -> SignatureReport:
        return SignatureReport(status, reason, **self.facts, **self.meta, **more)

    def run(self) -> SignatureReport:
        cert = _crypto.load_signer_certificate(self.block.certificate)
        if cert is None:
            reason = "the signer certificate is malformed (not readable DER, a field or the key)"
            return self.report(SignatureStatus.INVALID, reason)
        key = cert.public_key()
        self.facts["signer_subject"] = name_str(cert.subject)
        self.facts["cert_id"] = certificate_id(cert)
        size = self.source.size
        if size - self.header.length < BODY_PREFIX_BYTES + TRAILER_BYTES:
            return self.report(SignatureStatus.INVALID, "the file ends before its body and trailer")
        try:
            trailer = parse_trailer(self.source.read_at(size - TRAILER_BYTES, TRAILER_BYTES))
        except EnvelopeFormatError as exc:
            return self.report(SignatureStatus.INVALID, str(exc))
        self.facts["signed_ms"] = trailer.signed_ms
        layout = BodyLayout(self.header.body_length(size))
        if not layout.complete:
            reason = "the body does not have the shape of a complete recording (truncated)"
            return self.report(SignatureStatus.INVALID, reason)
        digester = self._digest_body(layout)
        if digester.segments != layout.segments:
            return self.report(SignatureStatus.INVALID, "the file changed while being verified")
        root = digester.root()
        message = signed_message(
            self.header.context, digester.prefix, digester.segments, root, trailer.signed_ms
        )
        if not _crypto.verify_message(key, self.block.algorithm, message, trailer.signature):
            return self.report(SignatureStatus.INVALID, self._why_invalid(cert, root, trailer))
        if not hmac.compare_digest(root, trailer.segments_root):
            # signed over the body as it is, but the stored root was changed: no malleability
            reason = "the trailer's segments_root does not match the body (the trailer was altered)"
            return self.report(SignatureStatus.INVALID, reason)
        return self._check_signer(cert, trailer.signed_ms, digester)

    def _why_invalid(self, cert: x509.Certificate, root: bytes, trailer: Trailer) -> str:
        if _crypto.signature_algorithm_of(cert.public_key()) is not self.block.algorithm:
            return "the signer certificate's key does not match the header's signature algorithm"
        if not hmac.compare_digest(root, trailer.segments_root):
            return "the body was altered after it was signed (its segment digests differ)"
        return (
            "the signature does not verify under the signer certificate's key: the header, "
            "body prefix or trailer was altered, or another key signed it"
        )

    def _digest_body(self, layout: BodyLayout) -> _crypto.SegmentDigester:
        from recstream.parallel import pool_for

        pool = pool_for(layout.body_length)  # BLAKE3 on every core when they are idle
        runs = None if pool is None else pool.digest
        digester = _crypto.SegmentDigester(keep=self.keep, runs=runs)
        pos, end = self.header.length, self.header.length + layout.body_length
        digester.update(self.source.read_at(pos, min(BODY_PREFIX_BYTES, end - pos)))
        pos += BODY_PREFIX_BYTES
        # One buffer, reused: fresh pages per read cost more than the reads (a VM).
        buf = bytearray(_READ_BYTES)
        with memoryview(buf) as view:
            while pos < end:
                n = self._read_into(pos, view[: min(_READ_BYTES, end - pos)])
                if not n:
                    break
                digester.update(view[:n])
                pos += n
        digester.finish()
        return digester

    def _read_into(self, offset: int, view: memoryview) -> int:
        if isinstance(self.source, FileSource):
            return os.preadv(self.source.fd, [view], offset)
        data = self.source.read_at(offset, len(view))
        view[: len(data)] = data
        return len(data)

    def _check_signer(
        self, cert: x509.Certificate, signed_ms: int, digester: _crypto.SegmentDigester
    ) -> SignatureReport:
        from recstream.pki.signers import validate_signing_certificate

        signed_at = _datetime(signed_ms)
        if signed_at is None:
            reason = f"the signing time {signed_ms} has no calendar date"
            return self.report(SignatureStatus.REFUSED_SIGNER, reason, chain_valid_at_signing=False)
        try:
            validate_signing_certificate(cert, self.cas, at=signed_at)
        except BundleError:
            raise
        except CertificateError as exc:
            reason = f"signer refused at the signing time {_iso(signed_ms)}: {exc}"
            return self.report(SignatureStatus.REFUSED_SIGNER, reason, chain_valid_at_signing=False)
        except (ValueError, TypeError) as exc:  # an extension value pyca cannot interpret
            reason = f"signer refused: its certificate has an unreadable extension ({exc})"
            return self.report(SignatureStatus.REFUSED_SIGNER, reason, chain_valid_at_signing=False)
        valid_now, note = _now_validity(cert, self.at)
        verified = None
        if self.keep:
            verified = VerifiedBody(
                self.facts["cert_id"],
                self.facts["signer_subject"],
                signed_ms,
                digester.segments,
                bytes(digester.digests),
            )
        return self.report(
            SignatureStatus.VALID,
            chain_valid_at_signing=True,
            valid_now=valid_now,
            note=note,
            verified=verified,
        )


def _now_validity(cert: x509.Certificate, at: datetime) -> tuple[bool, str]:
    if at > cert.not_valid_after_utc:
        return False, (
            f"the signer certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}, after "
            "signing; the signature stays valid"
        )
    if at < cert.not_valid_before_utc:
        return False, "the signer certificate is not valid yet at the verification time"
    return True, ""


def _datetime(ms: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _iso(ms: int) -> str:
    when = _datetime(ms)
    if when is None:
        return str(ms)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _read(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _replace_verified(report: SignatureReport, verified: VerifiedBody) -> SignatureReport:
    from dataclasses import replace

    return replace(report, verified=verified)
