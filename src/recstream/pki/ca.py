"""A private CA: root and intermediate CA certificates, and recording certificates.

The vendor document lets a recording certificate be signed by a third-party CA, a
private CA or itself.  This module is the private CA.  Certificates are X.509 v3,
SHA-256 signed, with a random 159-bit serial number (RFC 5280 §4.1.2.2 allows 20
octets) and subject/authority key identifiers (§4.2.1.1-2) so chain builders can
tell apart CAs that share a name.  ``now`` is always an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from recstream.errors import (
    CertificateError,
    CertificateExpiredError,
    CertificateKeyMismatchError,
    CertificateNotYetValidError,
    CertificatePurposeError,
    KeyPolicyError,
)
from recstream.pki._util import basic_constraints, fmt_time, is_ca, key_usage, quoted, utcnow
from recstream.pki.certs import check_recording_key, load_certificate, load_private_key
from recstream.pki.csr import RECORDING_KEY_USAGE, load_csr
from recstream.pki.dn import SubjectFields

__all__ = [
    "MAX_DAYS",
    "CertificateAuthority",
    "create_intermediate_ca",
    "create_root_ca",
    "self_signed_recording_certificate",
    "sign_recording_certificate",
]

MAX_DAYS = 100 * 366  # beyond this a validity period is a typo, not a plan

CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA certificate with its private key, checked to belong together."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    @classmethod
    def from_pem(
        cls, cert_data: bytes, key_data: bytes, password: bytes | None = None
    ) -> CertificateAuthority:
        """Load a CA from its certificate and (possibly encrypted) key files' bytes.

        Raises:
            CertificateError: the certificate cannot be read.
            CertificatePurposeError: it is not a CA certificate (``check="not-ca"``).
            KeyLoadError: the key cannot be read, or the password is missing or wrong.
            KeyPolicyError: the key is not RSA of 2048 to 8192 bits.
            CertificateKeyMismatchError: the key is not the certificate's key.
        """
        cert = load_certificate(cert_data)
        _check_is_ca(cert)
        try:
            key = load_private_key(key_data, password)
        except KeyPolicyError as exc:
            msg = f"the CA key cannot be used: {exc} (recstream CAs use RSA keys)"
            raise KeyPolicyError(msg) from exc
        return cls.from_objects(cert, key)

    @classmethod
    def from_objects(
        cls, certificate: x509.Certificate, key: rsa.RSAPrivateKey
    ) -> CertificateAuthority:
        """Pair an already loaded CA certificate and key.

        Raises:
            CertificatePurposeError: the certificate is not a CA certificate.
            CertificateKeyMismatchError: the key is not the certificate's key.
        """
        _check_is_ca(certificate)
        if _spki(key.public_key()) != _spki(certificate.public_key()):
            msg = (
                f"the CA key does not belong to the CA certificate "
                f"{quoted(certificate.subject)}: their public keys differ"
            )
            raise CertificateKeyMismatchError(msg)
        return cls(certificate, key)

    @property
    def subject(self) -> x509.Name:
        return self.certificate.subject


def create_root_ca(
    key: rsa.RSAPrivateKey, subject: x509.Name, *, days: int, now: datetime | None = None
) -> x509.Certificate:
    """A self-signed root CA certificate valid for ``days`` days from ``now``.

    Raises:
        ValueError: ``days`` is not between 1 and :data:`MAX_DAYS`.
    """
    start = _start(now)
    builder = _ca_builder(key.public_key(), subject, subject, start, _end(start, days))
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
    )
    return builder.sign(key, hashes.SHA256())


def create_intermediate_ca(
    public_key: rsa.RSAPublicKey,
    subject: x509.Name,
    issuer: CertificateAuthority,
    *,
    days: int,
    now: datetime | None = None,
) -> x509.Certificate:
    """An intermediate CA certificate for ``public_key``, signed by ``issuer``.

    Raises:
        ValueError: ``days`` is not between 1 and :data:`MAX_DAYS`.
        KeyPolicyError: ``public_key`` is not RSA of 2048 bits or more.
        CertificatePurposeError: the issuer's path length forbids CAs below it.
        CertificateExpiredError, CertificateNotYetValidError: the issuer is not valid now.
        CertificateError: the new certificate would outlive its issuer.
    """
    check_recording_key(public_key, "new CA key")
    constraints = basic_constraints(issuer.certificate)
    if constraints is not None and constraints.path_length == 0:
        msg = (
            f"the CA {quoted(issuer.subject)} may not issue CA certificates "
            "(pathLenConstraint 0); sign the intermediate with its parent"
        )
        raise CertificatePurposeError(msg, "not-ca")
    start = _start(now)
    end = _end(start, days)
    _check_issuer_covers(issuer, start, end, days)
    builder = _ca_builder(public_key, subject, issuer.subject, start, end)
    builder = builder.add_extension(_authority_key_id(issuer), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def sign_recording_certificate(
    csr: x509.CertificateSigningRequest | bytes,
    issuer: CertificateAuthority,
    *,
    days: int,
    now: datetime | None = None,
) -> x509.Certificate:
    """Issue a recording certificate for a CSR: not a CA, key usage keyEncipherment.

    The subject is copied from the request after its DN is validated (all six fields,
    as the vendor document requires); requested extensions are not copied.

    Raises:
        CertificateRequestError, SubjectFieldsError: unreadable CSR, bad signature, or
            DN fields missing or invalid.
        KeyPolicyError: the CSR's key is not RSA of 2048 to 8192 bits.
        CertificateExpiredError, CertificateNotYetValidError: the issuer is not valid now.
        CertificateError: the certificate would outlive its issuer.
        ValueError: ``days`` is not between 1 and :data:`MAX_DAYS`.
    """
    if isinstance(csr, bytes):
        csr = load_csr(csr)
    public_key = check_recording_key(csr.public_key(), "certificate request")
    SubjectFields.from_name(csr.subject, what="the certificate request")
    start = _start(now)
    end = _end(start, days)
    _check_issuer_covers(issuer, start, end, days)
    builder = (
        _base_builder(public_key, csr.subject, issuer.subject, start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(RECORDING_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    return builder.sign(issuer.key, hashes.SHA256())


def self_signed_recording_certificate(
    key: rsa.RSAPrivateKey, common_name: str, *, days: int, now: datetime | None = None
) -> x509.Certificate:
    """A self-signed recording certificate (keyEncipherment, not a CA) for ``key``.

    The vendor document allows self-signed recording certificates; benchmarks and
    throwaway fixtures use this one builder.

    Raises:
        ValueError: ``days`` is not between 1 and :data:`MAX_DAYS`.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _start(now)
    return (
        _base_builder(key.public_key(), name, name, start, _end(start, days))
        .add_extension(RECORDING_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )


def _check_is_ca(cert: x509.Certificate) -> None:
    if not is_ca(cert):
        msg = (
            f"{quoted(cert.subject)} is not a CA certificate (no basicConstraints "
            "CA:TRUE), so it cannot sign certificates"
        )
        raise CertificatePurposeError(msg, "not-ca")
    ku = key_usage(cert)
    if ku is not None and not ku.key_cert_sign:
        msg = f"the CA certificate {quoted(cert.subject)} has a key usage without keyCertSign"
        raise CertificatePurposeError(msg, "not-ca")


def _check_issuer_covers(
    issuer: CertificateAuthority, start: datetime, end: datetime, days: int
) -> None:
    ca = issuer.certificate
    if ca.not_valid_after_utc <= start:
        msg = (
            f"the CA certificate {quoted(ca.subject)} expired on "
            f"{fmt_time(ca.not_valid_after_utc)}; certificates it signs would not validate"
        )
        raise CertificateExpiredError(msg, ca.not_valid_after_utc)
    if ca.not_valid_before_utc > start:
        msg = (
            f"the CA certificate {quoted(ca.subject)} is not valid until "
            f"{fmt_time(ca.not_valid_before_utc)}"
        )
        raise CertificateNotYetValidError(msg, ca.not_valid_before_utc)
    if end > ca.not_valid_after_utc:
        most = (ca.not_valid_after_utc - start).days
        msg = (
            f"a certificate valid for {days} days would outlive its CA "
            f"{quoted(ca.subject)}, which expires on {fmt_time(ca.not_valid_after_utc)}, "
            f"and stop validating then; ask for {most} days or fewer, or renew the CA"
        )
        raise CertificateError(msg)


def _start(now: datetime | None) -> datetime:
    # whole seconds: X.509 UTCTime/GeneralizedTime carry no fraction (RFC 5280 §4.1.2.5)
    return (now or utcnow()).replace(microsecond=0)


def _end(start: datetime, days: int) -> datetime:
    if not 1 <= days <= MAX_DAYS:
        msg = f"validity must be 1 to {MAX_DAYS} days, not {days}"
        raise ValueError(msg)
    return start + timedelta(days=days)


def _base_builder(
    public_key: rsa.RSAPublicKey,
    subject: x509.Name,
    issuer: x509.Name,
    start: datetime,
    end: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _ca_builder(
    public_key: rsa.RSAPublicKey,
    subject: x509.Name,
    issuer: x509.Name,
    start: datetime,
    end: datetime,
) -> x509.CertificateBuilder:
    return (
        _base_builder(public_key, subject, issuer, start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _authority_key_id(issuer: CertificateAuthority) -> x509.AuthorityKeyIdentifier:
    # Prefer the issuer's own SKI (RFC 5280 §4.2.1.1): CAs made by openssl or a
    # third party may compute it differently from a hash of the key.
    try:
        ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
