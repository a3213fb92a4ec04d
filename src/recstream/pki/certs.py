"""Recording certificates and private keys: loading, IDs, and the key policy.

The certificate ID is the SHA-256 of the certificate's DER encoding in lowercase
hex, so it equals ``openssl x509 -noout -fingerprint -sha256`` without colons.
The public key ID is the SHA-256 of the DER SubjectPublicKeyInfo; it lets a bare
private key find its recipient entry without a certificate (docs/FORMAT.md §4).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream import _crypto
from recstream.errors import CertificateError, KeyPolicyError

if TYPE_CHECKING:  # imported where a certificate is parsed: `decrypt --key` never is
    from cryptography import x509

MIN_RSA_BITS = 2048  # vendor requirement: "2048 bit RSA (or higher)"
MAX_RSA_BITS = 8192  # bounds the wrapped-key field (docs/FORMAT.md §5) and unwrap cost

__all__ = [
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "certificate_id",
    "check_recording_key",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "name_str",
    "public_key_id",
]


def name_str(name: x509.Name) -> str:
    """A distinguished name as RFC 4514 text, or ``(empty)``."""
    return name.rfc4514_string() or "(empty)"


def certificate_id(cert: x509.Certificate) -> str:
    """Return the certificate ID: lowercase hex SHA-256 of the DER encoding."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def public_key_id(key: rsa.RSAPublicKey) -> bytes:
    """Return the 32-byte SHA-256 of the key's DER SubjectPublicKeyInfo."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def check_recording_key(key: object, what: str = "certificate") -> rsa.RSAPublicKey:
    """Return ``key`` as an RSA public key if policy allows it for recordings.

    Raises:
        KeyPolicyError: not RSA, or its size is outside 2048..8192 bits.
    """
    if not isinstance(key, rsa.RSAPublicKey):
        kind = type(key).__name__.removeprefix("_").replace("PublicKey", "")
        kind = kind or "non-RSA"
        article = "an" if kind[:1] in "AEIOUX" else "a"  # an EC, an Ed25519, a DSA
        msg = (
            f"the {what} has {article} {kind} key; recording certificates must be RSA "
            f"of {MIN_RSA_BITS} bits or more"
        )
        raise KeyPolicyError(msg)
    if key.key_size < MIN_RSA_BITS:
        msg = (
            f"the {what} has an RSA key of {key.key_size} bits; recording certificates "
            f"need {MIN_RSA_BITS} bits or more"
        )
        raise KeyPolicyError(msg)
    if key.key_size > MAX_RSA_BITS:
        msg = f"the {what} has an RSA key of {key.key_size} bits, over the limit of {MAX_RSA_BITS}"
        raise KeyPolicyError(msg)
    return key


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Parse every PEM certificate in ``data`` (or one DER certificate).

    Raises:
        CertificateError: no certificate could be read.
    """
    from cryptography import x509

    if b"-----BEGIN" in data:
        try:
            certs = x509.load_pem_x509_certificates(data.replace(b"\r\n", b"\n"))
        except ValueError as exc:
            from recstream.pki._util import parse_failure

            msg = f"not a readable PEM certificate: {parse_failure(exc)}"
            raise CertificateError(msg) from exc
        return certs
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        msg = "not a certificate: no PEM block and not DER"
        raise CertificateError(msg) from exc


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse exactly one certificate (PEM or DER).

    Raises:
        CertificateError: none, or more than one.
    """
    certs = load_certificates(data)
    if len(certs) != 1:
        msg = f"expected one certificate, found {len(certs)}"
        raise CertificateError(msg)
    return certs[0]


def load_private_key(data: bytes, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load a PEM (or DER) private key, encrypted or not, and apply the key policy.

    Raises:
        KeyLoadError: unreadable, or the password is missing or wrong.
        KeyPolicyError: not an RSA key of an allowed size.
    """
    key = _crypto.load_private_key_bytes(
        data, password, what="private key", option="--password-file", forms="PKCS#1"
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        check_recording_key(key.public_key(), "private key")
    assert isinstance(key, rsa.RSAPrivateKey)
    check_recording_key(key.public_key(), "private key")
    return key
