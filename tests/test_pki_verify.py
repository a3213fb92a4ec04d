"""Validation of a recording certificate against a CA file, and every refusal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509

from recstream.errors import (
    BundleError,
    CertificateError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificatePurposeError,
    ChainVerificationError,
    KeyPolicyError,
)
from recstream.pki.verify import (
    validate_recording_certificate,
    verify_recording_certificate,
)
from tests.pki_helpers import (
    NOW,
    Chain,
    ec_key,
    full_name,
    key_usage,
    make_cert,
    make_chain,
    name,
    pem,
    rsa_key,
)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


def leaf_under(chain: Chain, **kw: object) -> x509.Certificate:
    key = kw.pop("key", chain.leaf_key)
    return make_cert(full_name(), key, chain.inter2, chain.inter2_key, **kw)  # type: ignore[arg-type]


def test_valid_chain(chain: Chain) -> None:
    assert verify_recording_certificate(chain.leaf, chain.ca_file(), now=NOW) == []
    result = validate_recording_certificate(chain.leaf, chain.ca_file(), now=NOW)
    assert result.chain == (chain.leaf, chain.inter2, chain.inter1, chain.root)


def test_ca_file_order_and_noise_do_not_matter(chain: Chain) -> None:
    messy = b"Bag Attributes\n  friendlyName: x\n" + pem(chain.root, chain.inter1, chain.inter2)
    assert verify_recording_certificate(chain.leaf, messy.replace(b"\n", b"\r\n"), now=NOW) == []


def test_certificate_without_key_usage_is_allowed(chain: Chain) -> None:
    # RFC 5280 §4.2.1.3: no key usage extension means no restriction
    assert verify_recording_certificate(leaf_under(chain, ku=None), chain.ca_file(), now=NOW) == []


def test_warning_when_expiring_within_30_days(chain: Chain) -> None:
    cert = leaf_under(chain, not_after=NOW + timedelta(days=29, hours=1))
    warnings = verify_recording_certificate(cert, chain.ca_file(), now=NOW)
    assert warnings == [
        "the certificate expires in 29 days, on 2030-07-14 13:00:00 UTC; provision its successor"
    ]
    cert = leaf_under(chain, not_after=NOW + timedelta(days=30))
    assert verify_recording_certificate(cert, chain.ca_file(), now=NOW) == []


def test_warning_when_a_ca_expires_within_30_days(chain: Chain) -> None:
    later = NOW + timedelta(days=350)  # leaf +365, inter2 +375: 25 days left
    cert = leaf_under(chain, not_after=NOW + timedelta(days=400 - 10))
    warnings = verify_recording_certificate(cert, chain.ca_file(), now=later)
    assert warnings == [
        "the CA 'CN=Test Inter 2' expires in 25 days, on 2031-06-25 12:00:00 UTC; "
        "provision its successor"
    ]


# --- refusals: each its own error and message --------------------------------


def test_refuses_1024_bit_rsa(chain: Chain) -> None:
    cert = leaf_under(chain, key=rsa_key("small", 1024))
    with pytest.raises(KeyPolicyError) as info:
        verify_recording_certificate(cert, chain.ca_file(), now=NOW)
    assert str(info.value) == (
        "the certificate has an RSA key of 1024 bits; recording certificates need 2048 bits or more"
    )


def test_refuses_ec_certificate(chain: Chain) -> None:
    cert = leaf_under(chain, key=ec_key("leaf"))
    with pytest.raises(KeyPolicyError, match="recording certificates must be RSA"):
        verify_recording_certificate(cert, chain.ca_file(), now=NOW)


def test_refuses_expired(chain: Chain) -> None:
    later = NOW + timedelta(days=366)
    with pytest.raises(CertificateExpiredError) as info:
        verify_recording_certificate(chain.leaf, chain.ca_file(), now=later)
    assert info.value.not_after == chain.leaf.not_valid_after_utc
    assert str(info.value) == (
        "the certificate expired on 2031-06-15 12:00:00 UTC (1 days ago); nothing can be "
        "encrypted under it"
    )


def test_refuses_not_yet_valid(chain: Chain) -> None:
    cert = leaf_under(chain, not_before=NOW + timedelta(days=2))
    with pytest.raises(CertificateNotYetValidError) as info:
        verify_recording_certificate(cert, chain.ca_file(), now=NOW)
    assert info.value.not_before == NOW + timedelta(days=2)
    assert "the certificate is not valid until 2030-06-17 12:00:00 UTC" in str(info.value)


def test_refuses_certificate_of_a_ca_missing_from_the_file(chain: Chain) -> None:
    other = make_chain(prefix="Other ")
    with pytest.raises(ChainVerificationError) as info:
        verify_recording_certificate(other.leaf, chain.ca_file(), now=NOW)
    assert str(info.value) == (
        "the certificate was issued by 'CN=Other Test Inter 2', which is not in the CA file "
        "(it holds 'CN=Test Inter 2', 'CN=Test Inter 1', 'CN=Test Root CA,O=Test')"
    )


def test_refuses_ca_certificate_as_recording_certificate(chain: Chain) -> None:
    with pytest.raises(CertificatePurposeError) as info:
        verify_recording_certificate(chain.inter2, chain.ca_file(), now=NOW)
    assert info.value.check == "ca"
    assert str(info.value).startswith(
        "'CN=Test Inter 2' is a CA certificate (basicConstraints CA:TRUE), not a recording"
    )
    with pytest.raises(CertificatePurposeError, match="is a CA certificate"):
        verify_recording_certificate(chain.root, chain.ca_file(), now=NOW)


def test_refuses_key_usage_without_key_encipherment(chain: Chain) -> None:
    cert = leaf_under(chain, ku=key_usage(digital_signature=True, content_commitment=True))
    with pytest.raises(CertificatePurposeError) as info:
        verify_recording_certificate(cert, chain.ca_file(), now=NOW)
    assert info.value.check == "key-usage"
    assert str(info.value) == (
        "the certificate's key usage allows digitalSignature, nonRepudiation but not "
        "keyEncipherment, so its key may not wrap recording keys"
    )


def test_refuses_missing_intermediate_in_ca_file(chain: Chain) -> None:
    with pytest.raises(ChainVerificationError) as info:
        verify_recording_certificate(chain.leaf, pem(chain.inter2, chain.root), now=NOW)
    assert str(info.value).startswith(
        "the CA 'CN=Test Inter 2' was issued by 'CN=Test Inter 1', which is not in the CA file"
    )


def test_refuses_ca_file_without_root(chain: Chain) -> None:
    with pytest.raises(
        ChainVerificationError,
        match="the CA 'CN=Test Inter 1' was issued by 'CN=Test Root CA,O=Test', which is not "
        "in the CA file",
    ):
        verify_recording_certificate(chain.leaf, pem(chain.inter2, chain.inter1), now=NOW)


def test_refuses_same_name_different_key(chain: Chain) -> None:
    impostor = make_cert(
        name("Test Inter 2"), rsa_key("impostor"), chain.inter1, chain.inter1_key, ca=True
    )
    with pytest.raises(ChainVerificationError) as info:
        verify_recording_certificate(chain.leaf, pem(impostor, chain.inter1, chain.root), now=NOW)
    assert str(info.value).startswith(
        "the signature on the certificate does not verify under the key of "
        "'CN=Test Inter 2' in the CA file"
    )


def test_picks_the_right_ca_among_same_named_ones(chain: Chain) -> None:
    impostor = make_cert(
        name("Test Inter 2"), rsa_key("impostor"), chain.inter1, chain.inter1_key, ca=True
    )
    ca_file = pem(impostor, chain.inter2, chain.inter1, chain.root)
    assert verify_recording_certificate(chain.leaf, ca_file, now=NOW) == []


def test_refuses_expired_intermediate(chain: Chain) -> None:
    validity = {"not_before": NOW - timedelta(days=10), "not_after": NOW - timedelta(hours=1)}
    short = make_cert(
        name("Test Inter 2"), chain.inter2_key, chain.inter1, chain.inter1_key, ca=True, **validity
    )
    with pytest.raises(CertificateExpiredError) as info:
        verify_recording_certificate(chain.leaf, pem(short, chain.inter1, chain.root), now=NOW)
    assert str(info.value).startswith("the CA 'CN=Test Inter 2' in the CA file expired on")
    assert info.value.not_after == NOW - timedelta(hours=1)


def test_refuses_non_ca_issuer_in_file(chain: Chain) -> None:
    not_ca = make_cert(
        name("Test Inter 2"), chain.inter2_key, chain.inter1, chain.inter1_key, ca=False
    )
    with pytest.raises(
        ChainVerificationError,
        match="'CN=Test Inter 2' in the CA file signed the certificate but is not a CA",
    ):
        verify_recording_certificate(chain.leaf, pem(not_ca, chain.inter1, chain.root), now=NOW)


def test_path_validation_failure_is_reported(chain: Chain) -> None:
    # The root allows no intermediate below it (pathLenConstraint 0): only RFC 5280
    # path validation (cryptography's verifier) catches this one.
    root = make_cert(name("Strict Root"), chain.root_key, ca=True, path_length=0)
    inter1 = make_cert(name("Test Inter 1"), chain.inter1_key, root, chain.root_key, ca=True)
    with pytest.raises(ChainVerificationError) as info:
        verify_recording_certificate(chain.leaf, pem(chain.inter2, inter1, root), now=NOW)
    assert str(info.value).startswith(
        "the chain to 'CN=Strict Root' in the CA file does not validate: "
    )
    assert "<Certificate" not in str(info.value)


def test_self_signed_certificate(chain: Chain) -> None:
    self_signed = make_cert(full_name(), chain.leaf_key)  # not a CA, keyEncipherment
    assert verify_recording_certificate(self_signed, pem(self_signed), now=NOW) == []
    with pytest.raises(
        ChainVerificationError, match="the certificate is self-signed and is not in the CA file"
    ):
        verify_recording_certificate(self_signed, chain.ca_file(), now=NOW)


def test_unreadable_ca_file(chain: Chain) -> None:
    with pytest.raises(BundleError, match="the CA file: no certificate found"):
        verify_recording_certificate(chain.leaf, b"not a CA file", now=NOW)


def test_every_refusal_has_its_own_message(chain: Chain) -> None:
    other = make_chain(prefix="Other ")
    cases = [
        (leaf_under(chain, key=rsa_key("small", 1024)), chain.ca_file(), NOW),
        (leaf_under(chain, key=ec_key("leaf")), chain.ca_file(), NOW),
        (chain.leaf, chain.ca_file(), NOW + timedelta(days=366)),
        (leaf_under(chain, not_before=NOW + timedelta(days=2)), chain.ca_file(), NOW),
        (other.leaf, chain.ca_file(), NOW),
        (chain.inter2, chain.ca_file(), NOW),
        (leaf_under(chain, ku=key_usage(digital_signature=True)), chain.ca_file(), NOW),
        (chain.leaf, pem(chain.inter2, chain.root), NOW),
    ]
    messages = set()
    for cert, ca_file, now in cases:
        with pytest.raises((CertificateError, KeyPolicyError)) as info:
            verify_recording_certificate(cert, ca_file, now=now)
        messages.add(str(info.value))
    assert len(messages) == len(cases)


def test_long_ca_file_listing_is_shortened(chain: Chain) -> None:
    roots = [make_chain(prefix=f"R{i} ").root for i in range(7)]
    with pytest.raises(ChainVerificationError) as info:
        verify_recording_certificate(chain.leaf, pem(*roots), now=NOW)
    assert str(info.value).endswith("'CN=R4 Test Root CA,O=Test' and 2 more)")


def test_private_key_in_ca_file_is_warned_about(chain: Chain) -> None:
    from cryptography.hazmat.primitives import serialization

    key = chain.root_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    warnings = verify_recording_certificate(chain.leaf, key + chain.ca_file(), now=NOW)
    assert warnings == ["the CA file: dropped a private key block; never put keys in a CA file"]
