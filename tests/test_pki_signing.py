"""The signing profile (issue 16): ``pki csr/sign/verify --profile signing`` and the library.

Certificates and keys are built at test time; the openssl interop is in
tests/test_pki_signing_openssl.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from recstream.cli import main
from recstream.errors import (
    CertificateExpiredError,
    CertificatePurposeError,
    ChainVerificationError,
    KeyLoadError,
    KeyPolicyError,
)
from recstream.pki.ca import CertificateAuthority, sign_recording_certificate
from recstream.pki.csr import RECORDING_KEY_USAGE, build_csr
from recstream.pki.dn import SubjectFields
from recstream.pki.signing import (
    DOCUMENT_SIGNING,
    SIGNING_KEY_USAGE,
    build_signing_csr,
    check_signing_certificate,
    generate_signing_key,
    load_signing_key,
    sign_signing_certificate,
    signing_key_pem,
    validate_signing_certificate,
)
from tests.pki_helpers import (
    FULL_DN,
    NOW,
    Chain,
    key_usage,
    make_cert,
    make_chain,
    name,
    rsa_key,
)

PASSWORD = b"node keys sign evidence"


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


@pytest.fixture(scope="module")
def issuer(chain: Chain) -> CertificateAuthority:
    return CertificateAuthority.from_objects(chain.inter2, chain.inter2_key)


def node_name(cn: str = "recorder-01") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Monster & Sons, Inc."),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


# --- library: profile --------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["p256", "ed25519"])
def test_signing_certificate_profile(
    chain: Chain, issuer: CertificateAuthority, key_type: str
) -> None:
    key = generate_signing_key(key_type)
    csr = build_signing_csr(key, node_name())
    cert = sign_signing_certificate(csr, issuer, days=30, now=NOW)
    ext = cert.extensions
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value == SIGNING_KEY_USAGE
    assert ku.value.digital_signature and not ku.value.key_encipherment
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not eku.critical and list(eku.value) == [DOCUMENT_SIGNING]
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert cert.subject == node_name()
    expected = ed25519.Ed25519PublicKey if key_type == "ed25519" else ec.EllipticCurvePublicKey
    assert isinstance(cert.public_key(), expected)
    result = validate_signing_certificate(cert, chain.ca_file(), at=NOW)
    assert result.chain == (cert, chain.inter2, chain.inter1, chain.root)


def test_default_key_is_p256() -> None:
    key = generate_signing_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    with pytest.raises(ValueError, match="signing key type must be one of p256, ed25519"):
        generate_signing_key("p384")


def test_recording_profile_unchanged(issuer: CertificateAuthority) -> None:
    """The recording certificate keeps exactly its extensions: KU keyEncipherment only, no EKU."""
    subject = SubjectFields.parse(**FULL_DN)
    cert = sign_recording_certificate(build_csr(rsa_key("rec"), subject), issuer, days=30, now=NOW)
    ext = cert.extensions
    assert [e.oid for e in ext] == [
        x509.BasicConstraints.oid,
        x509.KeyUsage.oid,
        x509.SubjectKeyIdentifier.oid,
        x509.AuthorityKeyIdentifier.oid,
    ]
    assert ext.get_extension_for_class(x509.KeyUsage).value == RECORDING_KEY_USAGE
    assert RECORDING_KEY_USAGE.key_encipherment and not RECORDING_KEY_USAGE.digital_signature


def test_rsa_key_refused_for_signing(issuer: CertificateAuthority) -> None:
    with pytest.raises(KeyPolicyError, match="RSA keys are for recording certificates"):
        build_signing_csr(rsa_key("rec"), node_name())  # type: ignore[arg-type]
    # an RSA request signed under the signing profile
    rsa_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(node_name())
        .sign(rsa_key("rec"), hashes.SHA256())
    )
    with pytest.raises(KeyPolicyError, match="signing certificates use ECDSA P-256 or Ed25519"):
        sign_signing_certificate(rsa_csr, issuer, days=30, now=NOW)


def test_other_curve_refused(issuer: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(node_name()).sign(key, hashes.SHA256())
    )
    with pytest.raises(KeyPolicyError, match=r"EC \(secp384r1\) key; signing certificates use"):
        sign_signing_certificate(csr, issuer, days=30, now=NOW)


def test_subject_needs_common_name(issuer: CertificateAuthority) -> None:
    key = generate_signing_key()
    no_cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org")])
    with pytest.raises(CertificatePurposeError, match="no common name"):
        sign_signing_certificate(build_signing_csr(key, no_cn), issuer, days=30, now=NOW)


# --- library: refusals of foreign certificates ---------------------------------------


def signing_leaf(chain: Chain, **kw: object) -> x509.Certificate:
    key = kw.pop("key", generate_signing_key())
    extra = kw.pop("eku", None)
    cert = make_cert(node_name(), key, chain.inter2, chain.inter2_key, **kw)  # type: ignore[arg-type]
    if extra is None:
        return cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())  # type: ignore[arg-type]
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for e in cert.extensions:
        builder = builder.add_extension(e.value, e.critical)
    builder = builder.add_extension(x509.ExtendedKeyUsage(extra), critical=False)  # type: ignore[arg-type]
    return builder.sign(chain.inter2_key, hashes.SHA256())


def test_wrong_key_usage_refused(chain: Chain) -> None:
    cert = signing_leaf(chain, ku=key_usage(key_encipherment=True))
    with pytest.raises(CertificatePurposeError, match="must allow digitalSignature") as info:
        validate_signing_certificate(cert, chain.ca_file(), at=NOW)
    assert info.value.check == "key-usage"


def test_no_key_usage_refused(chain: Chain) -> None:
    # a signer must say it may sign (pki.signers): no key usage at all is refused
    cert = signing_leaf(chain, ku=None)
    with pytest.raises(CertificatePurposeError, match="no key usage extension"):
        validate_signing_certificate(cert, chain.ca_file(), at=NOW)


def test_tls_only_eku_refused_any_eku_accepted(chain: Chain) -> None:
    ku = key_usage(digital_signature=True)
    tls = signing_leaf(chain, ku=ku, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(CertificatePurposeError) as info:
        validate_signing_certificate(tls, chain.ca_file(), at=NOW)
    assert info.value.check == "extended-key-usage"
    anyeku = signing_leaf(chain, ku=ku, eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    assert validate_signing_certificate(anyeku, chain.ca_file(), at=NOW).chain[0] == anyeku


def test_ca_certificate_as_signer_refused(chain: Chain) -> None:
    with pytest.raises(KeyPolicyError):  # our CAs are RSA
        check_signing_certificate(chain.inter2)
    ku = key_usage(digital_signature=True, key_cert_sign=True)
    ec_key = generate_signing_key()
    ec_ca = make_cert(name("EC CA"), ec_key, chain.inter2, chain.inter2_key, ca=True, ku=ku)  # type: ignore[arg-type]
    with pytest.raises(CertificatePurposeError, match="is a CA certificate") as info:
        validate_signing_certificate(ec_ca, chain.ca_file(), at=NOW)
    assert info.value.check == "ca"


def test_recording_certificate_as_signer_refused(chain: Chain) -> None:
    with pytest.raises(KeyPolicyError, match="signers use ECDSA P-256 or Ed25519"):
        validate_signing_certificate(chain.leaf, chain.ca_file(), at=NOW)


def test_validity_judged_at_signing_time(chain: Chain) -> None:
    window = {"not_before": NOW - timedelta(days=2), "not_after": NOW + timedelta(days=1)}
    cert = signing_leaf(chain, ku=key_usage(digital_signature=True), **window)
    assert validate_signing_certificate(cert, chain.ca_file(), at=NOW).chain[0] == cert
    later = NOW + timedelta(days=3)
    with pytest.raises(CertificateExpiredError, match="expired on"):
        validate_signing_certificate(cert, chain.ca_file(), at=later)


def test_foreign_ca_refused(chain: Chain) -> None:
    other = make_chain(prefix="Other ")
    cert = signing_leaf(chain, ku=key_usage(digital_signature=True))
    with pytest.raises(ChainVerificationError, match="not in the CA file"):
        validate_signing_certificate(cert, other.ca_file(), at=NOW)


def test_key_files_round_trip_encrypted() -> None:
    key = generate_signing_key("ed25519")
    data = signing_key_pem(key, PASSWORD)
    assert b"ENCRYPTED PRIVATE KEY" in data
    loaded = load_signing_key(data, PASSWORD)
    assert loaded.public_key() == key.public_key()
    with pytest.raises(KeyLoadError, match="wrong password"):
        load_signing_key(data, b"not it")
    with pytest.raises(KeyLoadError, match="encrypted; give its password"):
        load_signing_key(data, None)
    rsa_pem = rsa_key("rec").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyPolicyError, match="must be ECDSA P-256 or Ed25519, not RSA"):
        load_signing_key(rsa_pem, None)


# --- CLI -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    dir: Path

    def __truediv__(self, name: str) -> Path:
        return self.dir / name


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    d = tmp_path_factory.mktemp("signing-cli")
    (d / "pw").write_bytes(PASSWORD + b"\n")
    (d / "pw").chmod(0o600)
    assert run("pki", "ca", "--cn", "Signing Root", "--key-size", "2048",
               "--out-cert", d / "root.pem", "--out-key", d / "root.key",
               "--password-file", d / "pw") == 0  # fmt: skip
    return Setup(d)


def sign_cli(s: Setup, csr: str, out: str, *extra: str) -> int:
    return run("pki", "sign", "--ca-cert", s / "root.pem", "--ca-key", s / "root.key",
               "--ca-password-file", s / "pw", "--csr", s / csr, "--days", "30",
               "--out", s / out, *extra)  # fmt: skip


@pytest.mark.parametrize("key_type", [None, "ed25519"])
def test_cli_csr_sign_verify(
    setup: Setup, capsys: pytest.CaptureFixture[str], key_type: str | None
) -> None:
    stem = key_type or "p256"
    extra = ["--key-type", key_type] if key_type else []
    rc = run("pki", "csr", "--profile", "signing", "--cn", "recorder-01", "--org", "Acme",
             *extra, "--out-key", setup / f"{stem}.key", "--out-csr", setup / f"{stem}.req",
             "--out-key-password-file", setup / "pw")  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "encrypted, owner-only" in out
    assert ("Ed25519" if key_type else "ECDSA P-256") in out
    key_file = setup / f"{stem}.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
    load_signing_key(key_file.read_bytes(), PASSWORD)
    assert sign_cli(setup, f"{stem}.req", f"{stem}.pem", "--profile", "signing") == 0
    assert "wrote signing certificate" in capsys.readouterr().out
    rc = run("pki", "verify", "--profile", "signing", "--ca-file", setup / "root.pem",
             setup / f"{stem}.pem")  # fmt: skip
    assert rc == 0
    assert "is a valid signing certificate" in capsys.readouterr().out
    # the signing certificate is not a recording certificate
    assert run("pki", "verify", "--ca-file", setup / "root.pem", setup / f"{stem}.pem") == 4
    assert "recording certificates must be RSA" in capsys.readouterr().err


def test_cli_refusals(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    # an RSA recording request under the signing profile
    assert run("pki", "csr", "--cn", "x", "--org", "O", "--ou", "U", "--locality", "L",
               "--state", "California", "--country", "US", "--key-size", "2048",
               "--out-key", setup / "rsa.key", "--out-csr", setup / "rsa.req",
               "--no-encrypt") == 0  # fmt: skip
    capsys.readouterr()
    assert sign_cli(setup, "rsa.req", "rsa-sig.pem", "--profile", "signing") == 4
    err = capsys.readouterr().err
    assert "RSA keys are for recording certificates" in err and "Traceback" not in err
    assert not (setup / "rsa-sig.pem").exists()
    # a signing request under the recording profile: told about --profile signing
    run("pki", "csr", "--profile", "signing", "--cn", "n", "--out-key", setup / "n.key",
        "--out-csr", setup / "n.req", "--no-encrypt")  # fmt: skip
    capsys.readouterr()
    assert sign_cli(setup, "n.req", "n-rec.pem") == 4
    assert "use --profile signing" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--key-type", "ed25519"], "--key-type is for --profile signing"),
        (["--profile", "signing", "--key-size", "2048"], "--key-size is for RSA recording keys"),
        (["--profile", "signing", "--state", "California"], "--state is not part of"),
        (["--profile", "signing", "--key-type", "p384"], "invalid choice: 'p384'"),
        (["--profile", "signing"], "the signing key must be protected"),
        (["--profile", "signing", "--cn", "", "--no-encrypt"], "--cn:"),
    ],
)
def test_cli_usage_errors(
    setup: Setup, capsys: pytest.CaptureFixture[str], argv: list[str], expect: str
) -> None:
    if "--cn" not in argv:
        argv = [*argv, "--cn", "node"]
    rc = run("pki", "csr", *argv, "--out-key", setup / "u.key", "--out-csr", setup / "u.req")
    assert rc == 2
    assert expect in capsys.readouterr().err
    assert not (setup / "u.key").exists()
