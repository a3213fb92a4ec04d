"""Shared test material for the pki tests: keys and certificates built at test time.

Everything here uses plain ``cryptography`` calls, not recstream code, so the
tests cross-check recstream against an independent construction.  Keys are cached
for the whole session (RSA key generation is the slow part) and never written to
the repository.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

# A fixed clock for library tests: certificates are built around it.
NOW = datetime(2030, 6, 15, 12, 0, 0, tzinfo=UTC)

FULL_DN = {
    "common_name": "Interaction Recording",
    "organization": "Monster & Sons, Inc.",
    "organizational_unit": "Robot Repairs",
    "locality": "Pleasant Hill",
    "state": "California",
    "country": "US",
}
OPENSSL_SUBJ = (
    "/C=US/ST=California/L=Pleasant Hill/O=Monster & Sons, Inc./OU=Robot Repairs"
    "/CN=Interaction Recording"
)

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


@cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A session-cached RSA key; the same ``name`` gives the same key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str, **extra: str) -> x509.Name:
    oids = {"O": NameOID.ORGANIZATION_NAME, "C": NameOID.COUNTRY_NAME}
    attrs = [x509.NameAttribute(oids[k], v) for k, v in extra.items()]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def full_name() -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "California"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Pleasant Hill"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Monster & Sons, Inc."),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Robot Repairs"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Interaction Recording"),
        ]
    )


def key_usage(**on: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    flags.update(on)
    return x509.KeyUsage(**flags)


def make_cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None = None,
    issuer_key: rsa.RSAPrivateKey | None = None,
    *,
    ca: bool = False,
    path_length: int | None = None,
    ku: x509.KeyUsage | bool | None = True,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
    hash_alg: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    """A certificate built directly with cryptography.

    ``issuer=None`` makes it self-signed (with ``key``).  ``ku=True`` picks the usual
    key usage (keyCertSign+cRLSign for a CA, keyEncipherment otherwise); ``None``
    leaves the extension out; a KeyUsage is used as given.
    """
    signer = key if issuer is None else issuer_key
    assert signer is not None
    issuer_name = subject if issuer is None else issuer.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if ku is True:
        ku = (
            key_usage(key_cert_sign=True, crl_sign=True) if ca else key_usage(key_encipherment=True)
        )
    if isinstance(ku, x509.KeyUsage):
        builder = builder.add_extension(ku, critical=True)
    return builder.sign(signer, hash_alg or hashes.SHA256())  # type: ignore[arg-type]


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class Chain:
    """root -> inter1 -> inter2 -> leaf, all valid around ``now``."""

    root: x509.Certificate
    inter1: x509.Certificate
    inter2: x509.Certificate
    leaf: x509.Certificate
    root_key: rsa.RSAPrivateKey
    inter1_key: rsa.RSAPrivateKey
    inter2_key: rsa.RSAPrivateKey
    leaf_key: rsa.RSAPrivateKey

    def ca_file(self) -> bytes:
        return pem(self.inter2, self.inter1, self.root)


def make_chain(now: datetime = NOW, prefix: str = "") -> Chain:
    keys = [rsa_key(f"{prefix}{n}") for n in ("root", "inter1", "inter2", "leaf")]
    nb, na = now - timedelta(days=1), now + timedelta(days=365)
    root = make_cert(name(f"{prefix}Test Root CA", O="Test"), keys[0], ca=True,
                     not_before=nb, not_after=na + timedelta(days=30))  # fmt: skip
    inter1 = make_cert(name(f"{prefix}Test Inter 1"), keys[1], root, keys[0], ca=True,
                       not_before=nb, not_after=na + timedelta(days=20))  # fmt: skip
    inter2 = make_cert(name(f"{prefix}Test Inter 2"), keys[2], inter1, keys[1], ca=True,
                       not_before=nb, not_after=na + timedelta(days=10))  # fmt: skip
    leaf = make_cert(full_name(), keys[3], inter2, keys[2], not_before=nb, not_after=na)
    return Chain(root, inter1, inter2, leaf, *keys)


def openssl(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the openssl CLI; on failure show its output in the assertion."""
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if check:
        assert proc.returncode == 0, f"openssl {' '.join(args)} failed:\n{proc.stderr}"
    return proc
