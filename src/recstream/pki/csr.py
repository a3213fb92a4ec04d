"""Recording keys and certificate signing requests (PKCS#10).

What ``openssl req -newkey rsa:N -keyout private_key.pem -out cert.req`` does, with
the DN validated first (:mod:`recstream.pki.dn`) and the key encrypted by default.
Functions take and return objects and bytes; the CLI reads and writes the files.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from recstream import _crypto
from recstream.errors import CertificateRequestError
from recstream.pki._util import parse_failure
from recstream.pki.certs import check_recording_key
from recstream.pki.dn import SubjectFields

__all__ = [
    "DEFAULT_KEY_SIZE",
    "KEY_SIZES",
    "build_csr",
    "generate_private_key",
    "load_csr",
    "private_key_pem",
]

KEY_SIZES = (2048, 3072, 4096)  # 2048 is the vendor minimum; larger keys cost unwrap time
DEFAULT_KEY_SIZE = 3072  # NIST SP 800-57: 128-bit security, good beyond 2030
RSA_PUBLIC_EXPONENT = 65537

# A recording certificate's key only wraps data keys (RSA-OAEP): keyEncipherment.
RECORDING_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def generate_private_key(key_size: int = DEFAULT_KEY_SIZE) -> rsa.RSAPrivateKey:
    """Generate a new RSA key of ``key_size`` bits (one of :data:`KEY_SIZES`).

    Raises:
        ValueError: ``key_size`` is not one of :data:`KEY_SIZES`.
    """
    if key_size not in KEY_SIZES:
        msg = f"key size must be one of {', '.join(map(str, KEY_SIZES))}, not {key_size}"
        raise ValueError(msg)
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=key_size)


def private_key_pem(key: PrivateKeyTypes, password: bytes | None) -> bytes:
    """Serialize a private key (a recording key or a signing key) as PKCS#8 PEM,
    encrypted when ``password`` is given.

    Encryption is the library's best available PKCS#8 scheme (PBES2), which
    ``openssl pkey`` and ``openssl rsa`` read with ``-passin``.

    Raises:
        ValueError: ``password`` is empty.
    """
    if password is None:
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    elif not password:
        msg = "an empty password would leave the key unprotected; pass None to mean that"
        raise ValueError(msg)
    else:
        encryption = serialization.BestAvailableEncryption(password)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def build_csr(key: rsa.RSAPrivateKey, subject: SubjectFields) -> x509.CertificateSigningRequest:
    """Build a CSR for ``subject``, signed with ``key`` (SHA-256).

    The request asks for key usage keyEncipherment (critical); CAs that copy
    requested extensions (``openssl x509 -req -copy_extensions copy``) keep it.

    Raises:
        KeyPolicyError: ``key`` is under 2048 or over 8192 bits.
    """
    check_recording_key(key.public_key(), "private key")
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject.to_name())
        .add_extension(RECORDING_KEY_USAGE, critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR and check its self-signature.

    Windows line endings and text around the PEM block are tolerated.

    Raises:
        CertificateRequestError: not a CSR, or its signature does not verify.
    """
    data = data.replace(b"\r\n", b"\n")
    try:
        if b"-----BEGIN" in data:
            csr = x509.load_pem_x509_csr(_csr_block(data))
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError as exc:
        msg = (
            f"not a readable certificate signing request (PEM or DER PKCS#10): {parse_failure(exc)}"
        )
        raise CertificateRequestError(msg) from exc
    valid = _crypto.csr_signature_valid(csr)
    if valid is None:
        msg = "the request's signature cannot be checked: its algorithm is not supported"
        raise CertificateRequestError(msg)
    if not valid:
        msg = (
            "the request's self-signature does not verify: it was altered after it was "
            "made, or its subject and key do not belong together"
        )
        raise CertificateRequestError(msg)
    return csr


def _csr_block(data: bytes) -> bytes:
    for label in (b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"):
        begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
        start = data.find(begin)
        stop = data.find(end, start)
        if start >= 0 and stop > start:
            return data[start : stop + len(end)] + b"\n"
    if b"-----BEGIN CERTIFICATE-----" in data:
        msg = "this is a certificate, not a certificate signing request"
    elif b"PRIVATE KEY-----" in data:
        msg = "this is a private key, not a certificate signing request"
    else:
        msg = "no BEGIN CERTIFICATE REQUEST block found"
    raise CertificateRequestError(msg)
