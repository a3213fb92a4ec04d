"""The one exception tree of recstream.

Every failure recstream reports on purpose is a :class:`RecstreamError`.
Argument misuse by a programmer stays ``TypeError``/``ValueError`` and
``OSError`` from I/O propagates unchanged; anything else escaping is a bug.

Facts are attributes (``SegmentAuthError.index``, ``NoMatchingKeyError.cert_ids``),
not only text, so callers never parse messages.  Authentication failures never
say *why* a tag or an unwrap failed (no oracle); they say where and what it means.

This module imports nothing from recstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

__all__ = [
    "BundleError",
    "CertificateError",
    "CertificateExpiredError",
    "CertificateKeyMismatchError",
    "CertificateNotInKeystoreError",
    "CertificateNotYetValidError",
    "CertificatePurposeError",
    "CertificateRequestError",
    "ChainVerificationError",
    "CommitmentError",
    "ConfigError",
    "EmptyInputError",
    "EnvelopeFormatError",
    "FinalSegmentAuthError",
    "HeaderAuthError",
    "IntegrityError",
    "KeyAccessError",
    "KeyLoadError",
    "KeyPolicyError",
    "KeyUnwrapError",
    "KeystoreDamagedError",
    "KeystoreEntryError",
    "KeystoreError",
    "KeystoreExistsError",
    "KeystoreFormatError",
    "KeystoreLockedError",
    "KeystoreNotFoundError",
    "KeystoreTamperedError",
    "LimitExceededError",
    "MixedEncryptionError",
    "MuxError",
    "NoActiveCertificateError",
    "NoMatchingKeyError",
    "NotAnEnvelopeError",
    "PasswordError",
    "PipelineError",
    "PipelineOverflowError",
    "RecstreamError",
    "ScreenCertificateMissingError",
    "SegmentAuthError",
    "SpoolFullError",
    "StorageError",
    "StoreRefusedError",
    "StoreUnavailableError",
    "StreamProtocolError",
    "StreamStateError",
    "SubjectFieldsError",
    "TracksFormatError",
    "TrailingDataError",
    "TruncatedStreamError",
    "UnsupportedVersionError",
    "UploadConflictError",
    "UploadVerifyError",
]


class RecstreamError(Exception):
    """Root of every error recstream raises on purpose."""


# --- malformed input -------------------------------------------------------


class EnvelopeFormatError(RecstreamError):
    """The bytes are not a well-formed envelope header.

    Attributes:
        offset: byte offset in the envelope where the problem was found.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


class NotAnEnvelopeError(EnvelopeFormatError):
    """The magic bytes are wrong: this is not a recstream envelope."""


class EmptyInputError(NotAnEnvelopeError):
    """The input has no bytes at all: an empty file is not a (truncated) envelope."""

    def __init__(self) -> None:
        super().__init__("the input is empty (0 bytes): not a recstream envelope", 0)


class UnsupportedVersionError(EnvelopeFormatError):
    """The envelope has a format version this release cannot read."""

    def __init__(self, version: int, supported: Sequence[int], offset: int = 8) -> None:
        known = ", ".join(str(v) for v in supported)
        super().__init__(
            f"envelope format version {version} is not supported "
            f"(this release reads version {known}); upgrade recstream",
            offset,
        )
        self.version = version


class LimitExceededError(EnvelopeFormatError):
    """A length or count in the header is over a documented limit (docs/FORMAT.md §5)."""

    def __init__(self, field: str, value: int, limit: int, offset: int) -> None:
        super().__init__(f"{field} is {value}, over the limit of {limit}", offset)
        self.field = field
        self.value = value
        self.limit = limit


# --- keys ------------------------------------------------------------------


class KeyAccessError(RecstreamError):
    """No usable private key for this envelope, or a key could not be used."""


class NoMatchingKeyError(KeyAccessError):
    """None of the keys offered matches any recipient of the envelope.

    Attributes:
        cert_ids: the certificate IDs the envelope was made for.
    """

    def __init__(self, cert_ids: Sequence[str], tried: Sequence[str] = ()) -> None:
        made_for = ", ".join(cert_ids) or "(none)"
        msg = (
            "no key offered matches this recording; it was encrypted for "
            f"certificate ID(s) {made_for}"
        )
        if tried:
            msg += f"; keys offered have public key ID(s) {', '.join(tried)}"
        super().__init__(msg)
        self.cert_ids = tuple(cert_ids)
        self.tried = tuple(tried)


class KeyUnwrapError(KeyAccessError):
    """RSA-OAEP unwrap of the data key failed (deliberately without detail)."""

    def __init__(self, cert_id: str) -> None:
        super().__init__(
            f"the data key for certificate ID {cert_id} could not be unwrapped: "
            "the key does not belong to this recording or the header was altered"
        )
        self.cert_id = cert_id


class KeyLoadError(KeyAccessError):
    """A private key file could not be read (bad PEM, wrong or missing password)."""


class KeyPolicyError(KeyAccessError):
    """A key is of a type or size recstream refuses (non-RSA, under 2048 bits)."""


class PasswordError(KeyAccessError):
    """No password could be had: an empty password file, or none given where one is needed."""


# --- integrity -------------------------------------------------------------


class IntegrityError(RecstreamError):
    """The envelope was altered, truncated or extended: its content cannot be trusted."""


class HeaderAuthError(IntegrityError):
    """The header MAC does not verify under the unwrapped data key."""

    def __init__(self) -> None:
        super().__init__(
            "the envelope header failed authentication; the recording's metadata or "
            "recipients were altered, or the header belongs to another recording"
        )


class SegmentAuthError(IntegrityError):
    """A body segment failed authentication.

    Attributes:
        index: zero-based segment number.
    """

    def __init__(self, index: int) -> None:
        super().__init__(
            f"segment {index} failed authentication; the recording is corrupted or was "
            "tampered with, and nothing from this segment on was released"
        )
        self.index = index


class FinalSegmentAuthError(SegmentAuthError):
    """The last bytes do not form an authentic final segment.

    An interrupted recording (cut inside a segment) looks exactly like this, as
    does a tampered final segment; only ``recstream recover`` tells them apart.
    """

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.args = (
            f"segment {index}, the last, failed authentication: the recording is "
            "incomplete (interrupted while recording; try 'recstream recover') or was "
            "tampered with",
        )


class CommitmentError(IntegrityError):
    """The body's key commitment does not match its header (FORMAT.md §6.1)."""

    def __init__(self) -> None:
        super().__init__(
            "the body's key commitment does not match its header: the body belongs to "
            "another recording, or the header or body was altered"
        )


class TruncatedStreamError(IntegrityError):
    """The body ends without its final segment: the recording is incomplete.

    Attributes:
        segments: complete segments that authenticated before the end.
    """

    def __init__(self, segments: int, detail: str = "") -> None:
        msg = (
            f"the recording is incomplete: the body ends after {segments} complete "
            "segment(s) without a final segment (interrupted or truncated)"
        )
        if detail:
            msg += f"; {detail}"
        super().__init__(msg)
        self.segments = segments


class TrailingDataError(IntegrityError):
    """Bytes follow the final segment."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"unexpected data after the final segment at byte {offset} of the body")
        self.offset = offset


# --- certificates ----------------------------------------------------------


class CertificateError(RecstreamError):
    """A certificate, CSR or CA bundle is unusable for the purpose asked."""


class CertificateExpiredError(CertificateError):
    def __init__(self, message: str, not_after: datetime) -> None:
        super().__init__(message)
        self.not_after = not_after


class CertificateNotYetValidError(CertificateError):
    def __init__(self, message: str, not_before: datetime) -> None:
        super().__init__(message)
        self.not_before = not_before


class ChainVerificationError(CertificateError):
    """No valid chain from the certificate to a root in the CA file."""


class BundleError(CertificateError):
    """A CA bundle cannot be built or read (missing link, two roots, no certificates)."""


class CertificateRequestError(CertificateError):
    """A CSR field is missing or invalid."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SubjectFieldsError(CertificateRequestError):
    """Several DN fields are missing or invalid; each problem is in :attr:`problems`.

    Attributes:
        problems: one :class:`CertificateRequestError` per field, in DN order.
    """

    def __init__(self, problems: Sequence[CertificateRequestError]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} subject (DN) fields need fixing:\n{lines}")
        self.problems = tuple(problems)


class CertificatePurposeError(CertificateError):
    """The certificate may not be used for what was asked (wrong X.509 version, a CA
    certificate offered as a recording certificate or the reverse, key usage).

    Attributes:
        check: which requirement failed: ``"version"``, ``"ca"``, ``"not-ca"`` or
            ``"key-usage"``.
    """

    def __init__(self, message: str, check: str) -> None:
        super().__init__(message)
        self.check = check


class CertificateKeyMismatchError(CertificateError):
    """A private key does not belong to the certificate it was given with."""


# --- keystore --------------------------------------------------------------


class KeystoreError(RecstreamError):
    """The keystore is missing, damaged, or cannot do what was asked."""


class KeystoreLockedError(KeystoreError):
    """Wrong keystore password (or the keystore file was altered)."""


class KeystoreNotFoundError(KeystoreError):
    """There is no keystore (or backup) file at the path given.

    Attributes:
        path: the path looked at.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class KeystoreExistsError(KeystoreError):
    """A keystore already exists where one would be created or restored."""


class KeystoreFormatError(KeystoreError):
    """Not a keystore or backup file, an unsupported version, malformed content, or
    key-derivation parameters over the limits (refused before any derivation)."""


class KeystoreDamagedError(KeystoreError):
    """The file is truncated, extended or fails its checksum: damaged in storage or
    transfer (docs/KEYSTORE.md §5).  Restore from a backup."""


class KeystoreTamperedError(KeystoreError):
    """The password is right and the checksum intact, yet the content fails
    authentication: someone who could rewrite the checksum altered the file."""


class KeystoreEntryError(KeystoreError):
    """A keystore change was refused (duplicate certificate, expired certificate made
    active, ambiguous certificate ID, ...)."""


class CertificateNotInKeystoreError(KeystoreEntryError):
    """No certificate with this ID (or ID prefix) in the keystore.

    Attributes:
        cert_id: the ID or prefix asked for.
    """

    def __init__(self, message: str, cert_id: str) -> None:
        super().__init__(message)
        self.cert_id = cert_id


class NoActiveCertificateError(KeystoreError):
    """A tenant has no active certificate of the media kind asked for.

    Attributes:
        tenant: the tenant.
        kind: ``"voice"`` or ``"screen"``.
    """

    def __init__(self, message: str, tenant: str, kind: str) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.kind = kind


class ScreenCertificateMissingError(NoActiveCertificateError):
    """The tenant encrypts voice recordings but has no screen-recording certificate, so
    its screen recordings cannot be encrypted (and the muxer would refuse the pair)."""


# --- muxing ----------------------------------------------------------------


class MuxError(RecstreamError):
    """The pair cannot be muxed (mismatched recordings, unreadable media)."""


class MixedEncryptionError(MuxError):
    """One input is encrypted and the other is not: never muxed together."""


class TracksFormatError(RecstreamError):
    """The plaintext is not a well-formed multi-track container (docs/TRACKS.md).

    Attributes:
        offset: byte offset in the container where the problem was found.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset} of the track container)")
        self.offset = offset


# --- state and pipeline ----------------------------------------------------


class StreamStateError(RecstreamError):
    """An encryptor or decryptor was used after finalize() or after a failure."""


class PipelineError(RecstreamError):
    """A recording in the live pipeline failed."""


class PipelineOverflowError(PipelineError):
    """A recording's bounded queue is full: the producer outran the disk."""

    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(
            f"recording buffer full ({queued} of {limit} chunks queued); the disk is not keeping up"
        )
        self.queued = queued
        self.limit = limit


# --- servers (the RCS, the SIPREC server, media streams) -------------------


class ConfigError(RecstreamError):
    """A server's configuration file is wrong; the server refuses to start.

    The message lists every problem found, so one edit can fix them all.
    """


# --- front doors: media streams over WebSocket (recstream.streams) -----------


class StreamProtocolError(RecstreamError):
    """A media-stream peer sent what the protocol does not allow; only that stream is closed.

    Messages never quote the peer's payload or parameters (they may hold phone
    numbers); they name the message and the field.

    Attributes:
        close_code: the WebSocket close code to send (RFC 6455 §7.4.1): 1007 for
            data that is not what its type says (bad JSON, bad base64), 1008 for
            a policy violation (a limit, a message out of order), 1009 too big.
    """

    def __init__(self, message: str, close_code: int = 1008) -> None:
        super().__init__(message)
        self.close_code = close_code


# --- archive stores and the upload spool (issue 18, recstream.storage / recstream.upload) ---


class StorageError(RecstreamError):
    """An archive store (S3, WebDAV) could not be used for a recording.

    Messages name the store by its URL without credentials and never quote a
    password or a signed request.

    Attributes:
        url: the store URL (credentials removed).
    """

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class StoreUnavailableError(StorageError):
    """The store did not answer, or answered with a server error: retrying later may work."""


class StoreRefusedError(StorageError):
    """The store refused the request (401/403): credentials or permissions must be fixed.

    Retrying soon will not help; the uploader keeps the recording and retries slowly.
    """


class UploadConflictError(StorageError):
    """A different object already has the recording's final name; it is never overwritten."""


class UploadVerifyError(StorageError):
    """What the store holds after an upload is not what was sent (size or checksum)."""


class SpoolFullError(PipelineError):
    """The local spool is full: new recordings are refused so that none already kept is lost.

    Attributes:
        used: bytes waiting in the spool (or free bytes on its filesystem).
        limit: the configured ``max_spool_bytes`` (or ``min_free_bytes``).
    """

    def __init__(self, message: str, used: int, limit: int) -> None:
        super().__init__(message)
        self.used = used
        self.limit = limit
