"""Recording keys and CSRs."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from recstream.errors import CertificateRequestError, KeyLoadError, KeyPolicyError
from recstream.pki.certs import load_private_key
from recstream.pki.csr import (
    KEY_SIZES,
    build_csr,
    generate_private_key,
    load_csr,
    private_key_pem,
)
from recstream.pki.dn import SubjectFields
from tests.pki_helpers import FULL_DN, full_name, rsa_key

SUBJECT = SubjectFields.parse(**FULL_DN)


@pytest.fixture(scope="module")
def csr() -> x509.CertificateSigningRequest:
    return build_csr(rsa_key("csr"), SUBJECT)


def test_csr_subject_key_and_signature(csr: x509.CertificateSigningRequest) -> None:
    assert csr.subject == full_name()
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    assert csr.public_key() == rsa_key("csr").public_key()
    ku = csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_encipherment
    assert not ku.value.digital_signature


def test_csr_refuses_small_key() -> None:
    with pytest.raises(KeyPolicyError, match="1024 bits"):
        build_csr(rsa_key("small", 1024), SUBJECT)


def test_generate_private_key_sizes() -> None:
    assert KEY_SIZES == (2048, 3072, 4096)
    assert generate_private_key(2048).key_size == 2048
    for bad in (1024, 2047, 8192):
        with pytest.raises(ValueError, match="key size must be one of 2048, 3072, 4096"):
            generate_private_key(bad)


def test_private_key_pem_encrypted_round_trip() -> None:
    key = rsa_key("csr")
    data = private_key_pem(key, b"correct horse")
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    loaded = load_private_key(data, b"correct horse")
    assert loaded.private_numbers() == key.private_numbers()
    with pytest.raises(KeyLoadError, match="wrong password"):
        load_private_key(data, b"wrong horse")
    with pytest.raises(KeyLoadError, match="encrypted"):
        load_private_key(data, None)


def test_private_key_pem_unencrypted_and_empty_password() -> None:
    data = private_key_pem(rsa_key("csr"), None)
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="empty password"):
        private_key_pem(rsa_key("csr"), b"")


def test_load_csr_pem_der_crlf_and_surrounding_text(
    csr: x509.CertificateSigningRequest,
) -> None:
    pem = csr.public_bytes(serialization.Encoding.PEM)
    der = csr.public_bytes(serialization.Encoding.DER)
    assert load_csr(pem) == csr
    assert load_csr(der) == csr
    assert load_csr(pem.replace(b"\n", b"\r\n")) == csr
    assert load_csr(b"Subject: whatever\nnotes\n" + pem + b"trailing text\n") == csr
    legacy = pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    assert load_csr(legacy) == csr


def test_load_csr_refuses_tampered_request(csr: x509.CertificateSigningRequest) -> None:
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    # The CN's last character sits inside the signed CertificationRequestInfo.
    at = bytes(der).index(b"Interaction Recording") + 3
    der[at] ^= 0x01
    with pytest.raises(CertificateRequestError, match="self-signature does not verify"):
        load_csr(bytes(der))


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (b"not a csr at all", "not a readable certificate signing request"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "this is a certif"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "private key, not"),
        (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "no BEGIN CERTIFICATE REQ"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "not a readable certificate signing request",
        ),
    ],
)
def test_load_csr_refuses_garbage(data: bytes, expect: str) -> None:
    with pytest.raises(CertificateRequestError, match=expect):
        load_csr(data)
