"""PKCS#12 in and out: for Java keystores and openssl tooling.

Exports use PBES2 (PBKDF2-HMAC-SHA-256, 600,000 rounds, AES-256-CBC) for the key
and certificate bags and an HMAC-SHA-256 MAC: what OpenSSL 3 writes by default
and Java reads since 8u301/11.0.12.  The legacy 3DES/RC2 forms are not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from recstream.errors import CertificateError, KeyLoadError
from recstream.keystore.model import Entry
from recstream.pki.certs import check_recording_key

__all__ = ["PBKDF2_ROUNDS", "export_pkcs12", "load_pkcs12"]

# OWASP's 2023 figure for PBKDF2-HMAC-SHA-256; ~0.13 s per export here.
PBKDF2_ROUNDS: Final = 600_000


def export_pkcs12(
    entry: Entry,
    key: rsa.RSAPrivateKey,
    password: bytes,
    *,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """A password-protected PKCS#12 file with ``entry``'s certificate, key and ``chain``.

    The friendly name (Java alias) is ``TENANT-KIND-<first 16 hex of the cert ID>``.

    Raises:
        ValueError: the password is empty (keys never leave unencrypted).
    """
    if not password:
        msg = "a PKCS#12 export needs a password"
        raise ValueError(msg)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PBKDF2_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    alias = f"{entry.tenant}-{entry.kind_name}-{entry.cert_id[:16]}".encode()
    return pkcs12.serialize_key_and_certificates(
        alias, key, entry.certificate, list(chain) or None, encryption
    )


def load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[x509.Certificate, rsa.RSAPrivateKey, list[x509.Certificate]]:
    """The certificate, private key and extra certificates of a PKCS#12 file.

    Raises:
        KeyLoadError: unreadable, wrong or missing password, or no private key.
        CertificateError: no certificate in it.
        KeyPolicyError: the key is not RSA of 2048..8192 bits.
    """
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        msg = (
            "could not read the PKCS#12 file: wrong or missing password "
            "(--key-password-file), or not a PKCS#12 file"
        )
        raise KeyLoadError(msg) from exc
    if key is None:
        msg = "the PKCS#12 file holds no private key"
        raise KeyLoadError(msg)
    if cert is None:
        msg = "the PKCS#12 file holds no certificate for its key"
        raise CertificateError(msg)
    check_recording_key(key.public_key(), "private key")
    assert isinstance(key, rsa.RSAPrivateKey)
    return cert, key, list(extra)
