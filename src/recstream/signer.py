"""Signing recordings: the signer identity and the per-recording signature state.

docs/FORMAT.md §10 is the contract.  A :class:`Signer` holds an ECDSA P-256 or
Ed25519 private key and its X.509 certificate; the encryptors
(:class:`recstream.envelope.EnvelopeEncryptor`, ``RandomAccessEncryptor``, the live
writer) take one as ``signer=`` and write a version-2 envelope: the certificate in
the header's immutable part, a 112-byte trailer after the body.

:class:`BodySignature` is the per-recording state an encryptor keeps: a running
BLAKE3 over per-segment digests (O(1) memory for in-order writers), finished
into the trailer.  :class:`VerifiedBody` is what a successful verification leaves
behind for random access: the per-segment digests the signature covers, so a
Range read checks only the segments it reads (:meth:`VerifiedBody.check_segment`).

No I/O here except :meth:`Signer.from_files` reading the two files it is given.
Verification (reading a whole file, chains) is :mod:`recstream.signing`.
"""

from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from recstream import _crypto
from recstream.errors import (
    CertificateKeyMismatchError,
    SignedSegmentMismatchError,
    StreamStateError,
)
from recstream.format import (
    BODY_PREFIX_BYTES,
    SEGMENT_WIRE_SIZE,
    Buffer,
    SignatureAlgorithm,
    SignerBlock,
    Trailer,
    signed_message,
)
from recstream.pki.certs import certificate_id, load_certificate, name_str

if TYPE_CHECKING:  # not imported by every `encrypt`/`decrypt` that only names this module
    from cryptography import x509

__all__ = ["ALGORITHM_NAMES", "BodySignature", "Signer", "VerifiedBody"]

ALGORITHM_NAMES = {
    SignatureAlgorithm.ECDSA_P256_SHA256: "ecdsa-p256-sha256",
    SignatureAlgorithm.ED25519: "ed25519",
}
"""How reports and ``inspect --json`` name the §3.1 algorithms."""


class Signer:
    """A recording signer: a signing key and the certificate that names it.

    Build one with :meth:`from_files` (PEM/DER files, the key optionally
    password-protected) or :meth:`from_objects`.  Construction checks what can
    be checked without a CA file, so a misconfigured recorder fails at start-up
    instead of writing recordings every verifier refuses: the key matches the
    certificate, the key is ECDSA P-256 or Ed25519, and the certificate may sign
    (X.509 v3, not a CA, key usage with digitalSignature, valid now).

    Attributes:
        certificate: the signer certificate.
        cert_id: its ID (lowercase hex SHA-256 of the DER), as in ``pki show``.
        algorithm: the §3.1 signature algorithm its key implies.
    """

    __slots__ = ("_der", "_key", "algorithm", "cert_id", "certificate")

    def __init__(
        self,
        private_key: _crypto.SigningPrivateKey,
        certificate: x509.Certificate,
        *,
        at: datetime | None = None,
    ) -> None:
        """Prefer :meth:`from_objects` / :meth:`from_files`; same checks.

        ``at`` is when the certificate must be valid (now by default; tests and
        vectors that sign with a stated past time pass that time).

        Raises:
            KeyPolicyError: the key is not ECDSA P-256 or Ed25519.
            CertificateKeyMismatchError: the key is not the certificate's.
            CertificatePurposeError, CertificateExpiredError,
            CertificateNotYetValidError: the certificate may not sign now.
            ValueError: the certificate is over 4,096 bytes of DER (FORMAT.md §5).
        """
        from recstream.pki.signers import check_signing_certificate

        algorithm = _crypto.signature_algorithm_of(private_key)
        if algorithm is None:
            from recstream.errors import KeyPolicyError

            msg = "a signing key must be ECDSA P-256 or Ed25519"
            raise KeyPolicyError(msg)
        if not _crypto.public_key_matches(private_key, certificate.public_key()):
            msg = "the signing key does not belong to the signing certificate"
            raise CertificateKeyMismatchError(msg)
        check_signing_certificate(certificate, at=at or datetime.now(UTC))
        self._key = private_key
        self.certificate = certificate
        self._der = _crypto.certificate_der(certificate)
        SignerBlock(algorithm, self._der)  # size limit
        self.cert_id = certificate_id(certificate)
        self.algorithm = algorithm

    @classmethod
    def from_objects(
        cls,
        private_key: _crypto.SigningPrivateKey,
        certificate: x509.Certificate,
        *,
        at: datetime | None = None,
    ) -> Signer:
        """A signer from a pyca private key and certificate (checks as the class says)."""
        return cls(private_key, certificate, at=at)

    @classmethod
    def from_pem(cls, key_data: bytes, cert_data: bytes, password: bytes | None = None) -> Signer:
        """A signer from key and certificate bytes (PEM or DER).

        Raises:
            KeyLoadError: unreadable key, missing or wrong password.
            CertificateError: not exactly one readable certificate.
            And the errors of the class.
        """
        return cls(_crypto.load_signing_key(key_data, password), load_certificate(cert_data))

    @classmethod
    def from_files(
        cls,
        key_path: str | os.PathLike[str],
        cert_path: str | os.PathLike[str],
        password: bytes | None = None,
    ) -> Signer:
        """A signer from a private key file and a certificate file (PEM or DER).

        Args:
            password: the key file's password (read it with
                :func:`recstream.keysource.read_password_file`), or None.

        Raises:
            OSError: a file cannot be read.  And the errors of :meth:`from_pem`.
        """
        with open(key_path, "rb") as f:
            key_data = f.read()
        with open(cert_path, "rb") as f:
            cert_data = f.read()
        return cls.from_pem(key_data, cert_data, password)

    @property
    def subject(self) -> str:
        """The certificate's subject, RFC 4514."""
        return name_str(self.certificate.subject)

    def block(self) -> SignerBlock:
        """The §3.1 signer block for a version-2 header."""
        return SignerBlock(self.algorithm, self._der)

    def sign(self, message: bytes) -> bytes:
        """Sign §10.2's message: 64 bytes (raw r || s for ECDSA P-256, or Ed25519)."""
        return _crypto.sign_message(self._key, message)

    def __repr__(self) -> str:  # never the key
        return f"Signer({self.subject!r}, cert_id={self.cert_id[:16]}…, {self.algorithm.name})"


class BodySignature:
    """The signature state of one recording being written (FORMAT.md §10).

    In-order writers feed every body byte they emit to :meth:`update` (O(1)
    memory: one running hash and at most one partial segment).  Out-of-order
    writers (the muxer's :class:`~recstream.envelope.RandomAccessEncryptor`) give
    the prefix to :meth:`set_prefix` and each sealed segment to
    :meth:`add_segment`; digests that arrive before their predecessors wait in a
    table until the gap fills (32 bytes each).  :meth:`trailer` signs and returns
    the 112 trailer bytes, once.
    """

    __slots__ = ("_context", "_digester", "_done", "_final", "_next", "_parked", "_signer")

    def __init__(
        self, signer: Signer, context: bytes, *, runs: _crypto.DigestRuns | None = None
    ) -> None:
        """``runs`` digests whole segments elsewhere (``SegmentPool.digest``), or None."""
        self._signer = signer
        self._context = context
        self._digester = _crypto.SegmentDigester(runs=runs)
        self._parked: dict[int, bytes] = {}
        self._next = 0
        self._final: int | None = None
        self._done = False

    def update(self, body: Buffer) -> None:
        """Feed body bytes in order (prefix first), in any chunking."""
        self._digester.update(body)

    def add_digests(self, digests: Buffer) -> None:
        """In-order writers that hash on a pool: the next whole segments' digests."""
        self._digester.add_digests(digests)

    def set_prefix(self, prefix: bytes) -> None:
        """Out-of-order writers: the 56-byte body prefix (before any segment)."""
        if len(prefix) != BODY_PREFIX_BYTES or self._digester.prefix:
            msg = "the body prefix is 56 bytes and is given once, first"
            raise ValueError(msg)
        self._digester.update(prefix)

    def add_segment(self, index: int, wire: Buffer, *, final: bool) -> None:
        """Out-of-order writers: segment ``index`` as written (ciphertext and tag)."""
        if index < self._next or index in self._parked:
            msg = f"segment {index} was already added"
            raise StreamStateError(msg)
        if final:
            self._final = index
        elif len(wire) != SEGMENT_WIRE_SIZE:
            msg = f"segment {index} is not full-size and is not the final segment"
            raise ValueError(msg)
        self._parked[index] = _crypto.segment_digest(wire)
        while self._next in self._parked:
            self._digester.add_digest(self._parked.pop(self._next))
            self._next += 1

    def trailer(self, *, signed_ms: int | None = None) -> bytes:
        """Sign and return the §10 trailer (112 bytes).  Call once, after the final segment.

        Args:
            signed_ms: the signing time to state; now by default (tests and vectors
                inject it).

        Raises:
            StreamStateError: called twice, or segments are missing (out-of-order writers).
        """
        if self._done:
            msg = "the recording's signature trailer was already produced"
            raise StreamStateError(msg)
        if self._parked or (self._final is not None and self._next != self._final + 1):
            msg = "cannot sign: segments are missing before the final segment"
            raise StreamStateError(msg)
        digester = self._digester
        root = digester.root() if self._final is not None else digester.finish()
        self._done = True
        when = int(time.time() * 1000) if signed_ms is None else signed_ms
        count = self._digester.segments
        message = signed_message(self._context, self._digester.prefix, count, root, when)
        return Trailer(when, root, self._signer.sign(message)).encode()


@dataclass(frozen=True, slots=True)
class VerifiedBody:
    """What a valid signature vouches for, kept to check random reads against.

    A verifier (:func:`recstream.signing.verify_file` with ``keep_digests=True``)
    hashes the whole body once; afterwards a :class:`~recstream.reader.SegmentReader`
    given this object hashes each segment it reads and compares (one BLAKE3 of
    16,400 bytes per segment, no re-read of the file).  32 bytes per segment.

    Attributes:
        cert_id: the signer certificate's ID.
        signer_subject: its subject.
        signed_ms: the signing time.
        segments: the body's segment count, the final one included.
        digests: the §10.1 segment digests, 32 bytes each, in order.
        file_identity: what the file was when verified (:func:`recstream.signing.file_identity`),
            or None for a source that is not a file: the RCS caches on it.
    """

    cert_id: str
    signer_subject: str
    signed_ms: int
    segments: int
    digests: bytes = field(repr=False)
    file_identity: tuple[int, ...] | None = None

    def check_segment(self, index: int, wire: Buffer) -> None:
        """Check segment ``index``'s wire bytes against the signed digest.

        Raises:
            SignedSegmentMismatchError: it differs (the file changed since it was
                verified, or was tampered with); also for an index out of range.
        """
        if not 0 <= index < self.segments:
            raise SignedSegmentMismatchError(index)
        expected = self.digests[32 * index : 32 * index + 32]
        if not hmac.compare_digest(_crypto.segment_digest(wire), expected):
            raise SignedSegmentMismatchError(index)
