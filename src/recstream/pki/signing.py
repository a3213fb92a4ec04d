"""The signing profile: a recording node's signing key and certificate (issue 16).

A recording certificate is public by design, so anyone can encrypt for it; a
*signing* certificate says which recorder made a recording.  The profile:

* **Keys**: ECDSA P-256 (the default: small, fast, accepted everywhere) or Ed25519.
  RSA is refused: an RSA key is what a recording certificate has, and keeping the
  two key types apart keeps the two roles apart (a node cannot be handed its
  recording key to sign with).  Other curves are refused because the envelope's
  signature trailer names only these two algorithms (docs/FORMAT.md).
* **Key usage** digitalSignature, critical, and nothing else: never keyEncipherment
  (the key signs, it wraps nothing) nor keyCertSign.  nonRepudiation
  (contentCommitment) is left out: its legal meaning varies by jurisdiction, and
  verifiers here do not need it.
* **Extended key usage** id-kp-documentSigning (RFC 9336, 1.3.6.1.5.5.7.3.36),
  non-critical.  There is no EKU for "signs recordings"; documentSigning is the
  standard one for signing content (not TLS, not code), so a verifier that checks
  TLS purposes will not take a recorder's certificate for a TLS client.  Our
  verification (:mod:`recstream.pki.signers`) accepts a certificate without EKU
  (RFC 5280 §4.2.1.12: no restriction; openssl's default) or one listing
  documentSigning or anyExtendedKeyUsage, and refuses one limited to other
  purposes (a TLS-only certificate from a shared CA).
* Not a CA (basicConstraints CA:FALSE, critical), key identifiers, random serial,
  SHA-256 signature by the issuing CA: as recording certificates (:mod:`.ca`).

The subject needs only a common name (the node's name); O, OU and C are optional.
The recording-certificate profile (:mod:`.csr`, :mod:`.ca`) is unchanged.  This
module *issues*; :mod:`recstream.pki.signers` decides whether a certificate may
sign (one set of rules for the keystore, the recorders and ``verify``), and
:func:`recstream._crypto.load_signing_key` reads key files (both re-exported here).
``now`` is always an argument.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from recstream._crypto import load_signing_key
from recstream.errors import CertificatePurposeError, KeyPolicyError
from recstream.pki._util import key_kind
from recstream.pki.ca import (
    CertificateAuthority,
    _authority_key_id,
    _base_builder,
    _check_issuer_covers,
    _end,
    _start,
)
from recstream.pki.csr import load_csr, private_key_pem
from recstream.pki.signers import DOCUMENT_SIGNING, validate_signing_certificate
from recstream.pki.signers import check_signing_certificate as check_signer

__all__ = [
    "DEFAULT_SIGNING_KEY_TYPE",
    "DOCUMENT_SIGNING",
    "SIGNING_KEY_TYPES",
    "SIGNING_KEY_USAGE",
    "SigningPrivateKey",
    "SigningPublicKey",
    "build_signing_csr",
    "check_signing_certificate",
    "check_signing_key",
    "describe_key_type",
    "generate_signing_key",
    "load_signing_key",
    "sign_signing_certificate",
    "signing_key_pem",
    "signing_key_type",
    "validate_signing_certificate",
]

SigningPrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
SigningPublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

SIGNING_KEY_TYPES: Final = ("p256", "ed25519")
DEFAULT_SIGNING_KEY_TYPE: Final = "p256"


SIGNING_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
SIGNING_EKU: Final = x509.ExtendedKeyUsage([DOCUMENT_SIGNING])


def generate_signing_key(key_type: str = DEFAULT_SIGNING_KEY_TYPE) -> SigningPrivateKey:
    """A new signing key: ``"p256"`` (ECDSA P-256) or ``"ed25519"``.

    Raises:
        ValueError: another ``key_type``.
    """
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    msg = f"signing key type must be one of {', '.join(SIGNING_KEY_TYPES)}, not {key_type!r}"
    raise ValueError(msg)


def signing_key_type(key: SigningPublicKey | SigningPrivateKey) -> str:
    """``"p256"`` or ``"ed25519"`` for a key that passed :func:`check_signing_key`."""
    return (
        "ed25519"
        if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey)
        else "p256"
    )


def check_signing_key(key: object, what: str = "certificate") -> SigningPublicKey:
    """Return ``key`` (a public key) if the signing profile allows it.

    Raises:
        KeyPolicyError: RSA, another curve, or another algorithm.
    """
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    kind, size = key_kind(key)
    shown = f"{kind} {size}-bit" if size and kind == "RSA" else kind
    hint = (
        "; RSA keys are for recording certificates (keyEncipherment), a signing identity "
        "needs its own ECDSA P-256 or Ed25519 key"
        if kind == "RSA"
        else ""
    )
    article = "an" if shown[:1] in "AEIOR" else "a"  # an RSA, an EC, an Ed448, a DSA
    msg = (
        f"the {what} has {article} {shown} key; signing certificates use ECDSA P-256 or "
        f"Ed25519{hint}"
    )
    raise KeyPolicyError(msg)


def build_signing_csr(key: SigningPrivateKey, subject: x509.Name) -> x509.CertificateSigningRequest:
    """A CSR for a signing certificate: key usage digitalSignature, EKU documentSigning.

    Raises:
        KeyPolicyError: ``key`` is not ECDSA P-256 or Ed25519.
    """
    check_signing_key(key.public_key(), "private key")
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(SIGNING_KEY_USAGE, critical=True)
        .add_extension(SIGNING_EKU, critical=False)
    )
    return builder.sign(key, _hash_for(key))


def sign_signing_certificate(
    csr: x509.CertificateSigningRequest | bytes,
    issuer: CertificateAuthority,
    *,
    days: int,
    now: datetime | None = None,
) -> x509.Certificate:
    """Issue a signing certificate for a CSR (see the module doc for the profile).

    The subject is copied from the request; it must hold a common name.  Requested
    extensions are not copied: the profile's are written.

    Raises:
        CertificateRequestError: unreadable CSR or bad self-signature.
        KeyPolicyError: the CSR's key is not ECDSA P-256 or Ed25519.
        CertificatePurposeError: the subject has no common name (``check="subject"``).
        CertificateExpiredError, CertificateNotYetValidError: the issuer is not valid now.
        CertificateError: the certificate would outlive its issuer.
        ValueError: ``days`` is out of range.
    """
    if isinstance(csr, bytes):
        csr = load_csr(csr)
    public_key = check_signing_key(csr.public_key(), "certificate request")
    if not csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        msg = "the request's subject has no common name (CN); name the recording node in it"
        raise CertificatePurposeError(msg, "subject")
    start = _start(now)
    end = _end(start, days)
    _check_issuer_covers(issuer, start, end, days)
    builder = (
        _base_builder(public_key, csr.subject, issuer.subject, start, end)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(SIGNING_KEY_USAGE, critical=True)
        .add_extension(SIGNING_EKU, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    return builder.sign(issuer.key, hashes.SHA256())


def check_signing_certificate(cert: x509.Certificate) -> SigningPublicKey:
    """The signer checks on the certificate itself, with no clock and no CA file.

    What the keystore applies to a node identity it stores, including retired
    ones whose certificates have expired: :func:`recstream.pki.signers.
    check_signing_certificate` (X.509 v3, ECDSA P-256 or Ed25519, not a CA, key
    usage with digitalSignature) as of the certificate's first valid moment.

    Returns its public key.

    Raises:
        CertificatePurposeError, KeyPolicyError: as that function.
    """
    check_signer(cert, at=cert.not_valid_before_utc)
    return check_signing_key(cert.public_key())


def _hash_for(key: SigningPrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself (RFC 8032 PureEdDSA): no separate hash
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def signing_key_pem(key: SigningPrivateKey, password: bytes | None) -> bytes:
    """PKCS#8 PEM of a signing key, encrypted (PBES2) when ``password`` is given.

    Raises:
        ValueError: ``password`` is empty.
    """
    return private_key_pem(key, password)


def describe_key_type(key: SigningPublicKey | SigningPrivateKey) -> str:
    """``"ECDSA P-256"`` or ``"Ed25519"``."""
    return "Ed25519" if signing_key_type(key) == "ed25519" else "ECDSA P-256"
