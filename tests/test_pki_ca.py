"""The private CA: roots, intermediates and recording certificates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from recstream.errors import (
    CertificateError,
    CertificateExpiredError,
    CertificateKeyMismatchError,
    CertificateNotYetValidError,
    CertificatePurposeError,
    CertificateRequestError,
    KeyLoadError,
    KeyPolicyError,
    SubjectFieldsError,
)
from recstream.pki.ca import (
    CertificateAuthority,
    create_intermediate_ca,
    create_root_ca,
    sign_recording_certificate,
)
from recstream.pki.csr import build_csr, private_key_pem
from recstream.pki.dn import SubjectFields
from recstream.pki.verify import verify_recording_certificate
from tests.pki_helpers import FULL_DN, NOW, full_name, key_usage, make_cert, name, rsa_key


def ext(
    cert: x509.Certificate, cls: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    cert = create_root_ca(rsa_key("ca-root"), name("Root", O="Org"), days=3650, now=NOW)
    return CertificateAuthority.from_objects(cert, rsa_key("ca-root"))


@pytest.fixture(scope="module")
def inter(root: CertificateAuthority) -> CertificateAuthority:
    key = rsa_key("ca-inter")
    cert = create_intermediate_ca(key.public_key(), name("Inter"), root, days=1825, now=NOW)
    return CertificateAuthority.from_objects(cert, key)


@pytest.fixture(scope="module")
def csr() -> x509.CertificateSigningRequest:
    return build_csr(rsa_key("ca-leaf"), SubjectFields.parse(**FULL_DN))


def test_root_ca(root: CertificateAuthority) -> None:
    cert = root.certificate
    assert cert.version is x509.Version.v3
    assert cert.subject == cert.issuer == name("Root", O="Org")
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca  # type: ignore[attr-defined]
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign  # type: ignore[attr-defined]
    assert not ku.value.key_encipherment  # type: ignore[attr-defined]
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest  # type: ignore[attr-defined]
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_intermediate_ca(root: CertificateAuthority, inter: CertificateAuthority) -> None:
    cert = inter.certificate
    cert.verify_directly_issued_by(root.certificate)
    assert cert.issuer == root.subject
    assert ext(cert, x509.BasicConstraints).value.ca  # type: ignore[attr-defined]
    root_ski = ext(root.certificate, x509.SubjectKeyIdentifier).value.digest  # type: ignore[attr-defined]
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski  # type: ignore[attr-defined]


def test_recording_certificate(
    inter: CertificateAuthority, root: CertificateAuthority, csr: x509.CertificateSigningRequest
) -> None:
    cert = sign_recording_certificate(csr, inter, days=365, now=NOW)
    cert.verify_directly_issued_by(inter.certificate)
    assert cert.version is x509.Version.v3
    assert cert.subject == full_name()
    assert cert.public_key() == rsa_key("ca-leaf").public_key()
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca  # type: ignore[attr-defined]
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_encipherment  # type: ignore[attr-defined]
    assert not (ku.value.digital_signature or ku.value.key_cert_sign)  # type: ignore[attr-defined]
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        rsa_key("ca-leaf").public_key()
    )
    inter_ski = ext(inter.certificate, x509.SubjectKeyIdentifier).value.digest  # type: ignore[attr-defined]
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == inter_ski  # type: ignore[attr-defined]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=365)
    ca_file = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in (inter.certificate, root.certificate)
    )
    assert verify_recording_certificate(cert, ca_file, now=NOW) == []


def test_serial_numbers_are_random_and_positive(
    inter: CertificateAuthority, csr: x509.CertificateSigningRequest
) -> None:
    serials = {
        sign_recording_certificate(csr, inter, days=30, now=NOW).serial_number for _ in range(5)
    }
    assert len(serials) == 5
    assert all(0 < s < 2**159 for s in serials)
    assert max(s.bit_length() for s in serials) > 64


def test_sign_accepts_pem_bytes(
    inter: CertificateAuthority, csr: x509.CertificateSigningRequest
) -> None:
    cert = sign_recording_certificate(
        csr.public_bytes(serialization.Encoding.PEM), inter, days=1, now=NOW
    )
    assert cert.subject == csr.subject


def csr_for(
    subject: x509.Name, key_name: str = "ca-leaf", bits: int = 2048
) -> x509.CertificateSigningRequest:
    key = rsa_key(key_name, bits)
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def test_sign_refuses_incomplete_dn(inter: CertificateAuthority) -> None:
    no_ou = x509.Name([a for a in full_name() if a.oid != NameOID.ORGANIZATIONAL_UNIT_NAME])
    with pytest.raises(CertificateRequestError) as info:
        sign_recording_certificate(csr_for(no_ou), inter, days=30, now=NOW)
    assert info.value.field == "organizational_unit"
    with pytest.raises(SubjectFieldsError) as many:
        sign_recording_certificate(csr_for(name("only a CN")), inter, days=30, now=NOW)
    assert len(many.value.problems) == 5


def test_sign_refuses_small_key(inter: CertificateAuthority) -> None:
    with pytest.raises(KeyPolicyError, match="certificate request has an RSA key of 1024 bits"):
        sign_recording_certificate(csr_for(full_name(), "small", 1024), inter, days=30, now=NOW)


def test_sign_refuses_outliving_the_ca(
    inter: CertificateAuthority, csr: x509.CertificateSigningRequest
) -> None:
    with pytest.raises(
        CertificateError, match=r"would outlive its CA 'CN=Inter'.*ask for 1825 days or fewer"
    ):
        sign_recording_certificate(csr, inter, days=1826, now=NOW)


def test_sign_refuses_expired_or_future_ca(
    inter: CertificateAuthority, csr: x509.CertificateSigningRequest
) -> None:
    late = NOW + timedelta(days=1826)
    with pytest.raises(
        CertificateExpiredError, match="the CA certificate 'CN=Inter' expired on"
    ) as info:
        sign_recording_certificate(csr, inter, days=1, now=late)
    assert info.value.not_after == inter.certificate.not_valid_after_utc
    with pytest.raises(CertificateNotYetValidError, match="is not valid until"):
        sign_recording_certificate(csr, inter, days=1, now=NOW - timedelta(days=1))


@pytest.mark.parametrize("days", [0, -1, 100 * 366 + 1])
def test_days_out_of_range(root: CertificateAuthority, days: int) -> None:
    with pytest.raises(ValueError, match="validity must be 1 to"):
        create_root_ca(rsa_key("ca-root"), name("R"), days=days, now=NOW)


def test_ca_from_pem(root: CertificateAuthority) -> None:
    cert_pem = root.certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = private_key_pem(root.key, b"pw")
    loaded = CertificateAuthority.from_pem(cert_pem, key_pem, b"pw")
    assert loaded.certificate == root.certificate
    with pytest.raises(KeyLoadError, match="wrong password"):
        CertificateAuthority.from_pem(cert_pem, key_pem, b"nope")


def test_ca_key_must_match(root: CertificateAuthority, inter: CertificateAuthority) -> None:
    with pytest.raises(
        CertificateKeyMismatchError, match="does not belong to the CA certificate 'CN=Root,O=Org'"
    ):
        CertificateAuthority.from_objects(root.certificate, inter.key)


def test_ca_must_be_a_ca(inter: CertificateAuthority, csr: x509.CertificateSigningRequest) -> None:
    leaf = sign_recording_certificate(csr, inter, days=30, now=NOW)
    with pytest.raises(CertificatePurposeError, match="is not a CA certificate") as info:
        CertificateAuthority.from_objects(leaf, rsa_key("ca-leaf"))
    assert info.value.check == "not-ca"
    no_sign = make_cert(name("NoSign"), rsa_key("ca-root"), ca=True, ku=None)
    assert CertificateAuthority.from_objects(no_sign, rsa_key("ca-root"))  # no KU: any use
    crl_only = make_cert(name("CRLOnly"), rsa_key("ca-root"), ca=True, ku=key_usage(crl_sign=True))
    with pytest.raises(CertificatePurposeError, match="without keyCertSign"):
        CertificateAuthority.from_objects(crl_only, rsa_key("ca-root"))


def test_ca_key_policy_message(root: CertificateAuthority) -> None:
    small = rsa_key("small", 1024)
    with pytest.raises(KeyPolicyError, match=r"the CA key cannot be used: .*1024 bits"):
        CertificateAuthority.from_pem(
            root.certificate.public_bytes(serialization.Encoding.PEM), private_key_pem(small, None)
        )


def test_intermediate_refuses_small_key(root: CertificateAuthority) -> None:
    with pytest.raises(KeyPolicyError, match="new CA key"):
        create_intermediate_ca(
            rsa_key("small", 1024).public_key(), name("X"), root, days=1, now=NOW
        )


def test_intermediate_refused_under_path_length_zero() -> None:
    strict = make_cert(
        name("Strict"),
        rsa_key("ca-root"),
        ca=True,
        path_length=0,
        not_after=NOW + timedelta(days=99),
    )
    ca = CertificateAuthority.from_objects(strict, rsa_key("ca-root"))
    with pytest.raises(CertificatePurposeError, match="may not issue CA certificates"):
        create_intermediate_ca(rsa_key("ca-inter").public_key(), name("X"), ca, days=1, now=NOW)


def test_self_signed_recording_certificate() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa as _rsa

    from recstream.envelope import Recipient
    from recstream.pki.ca import self_signed_recording_certificate

    key = _rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = self_signed_recording_certificate(key, "throwaway", days=2)
    assert cert.subject == cert.issuer
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_encipherment and not ku.key_cert_sign
    cert.verify_directly_issued_by(cert)
    assert Recipient.from_certificate(cert).public_key.key_size == 2048
    with pytest.raises(ValueError, match="validity"):
        self_signed_recording_certificate(key, "x", days=0)
