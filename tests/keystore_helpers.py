"""Shared material for the keystore tests: certificates around the real clock, a tiny
KDF, and a CLI runner that checks no password ever reaches the output.

RSA keys come from :func:`tests.pki_helpers.rsa_key` (generated once per session).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.cli import main
from recstream.envelope import (
    EnvelopeDecryptor,
    EnvelopeEncryptor,
    KeyRing,
    Recipient,
    new_metadata,
)
from recstream.format import MediaKind
from recstream.keystore import KdfParams
from recstream.pki.certs import certificate_id
from tests.pki_helpers import make_cert, name, rsa_key

# Argon2id's minimum cost: the tests exercise the format, not the KDF's strength
# (test_keystore.py checks the default tuning and the caps separately).
TINY_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
PASSWORD = b"correct horse battery staple"
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Cert:
    """A recording certificate with its key, and their PEM files once written."""

    name: str
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def cert_id(self) -> str:
        return certificate_id(self.cert)

    @property
    def recipient(self) -> Recipient:
        return Recipient.from_certificate(self.cert)

    def write(self, directory: Path) -> tuple[Path, Path]:
        cert = directory / f"{self.name}.cert.pem"
        key = directory / f"{self.name}.key.pem"
        cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert, key


def recording_cert(
    label: str, *, start_days: float = -1, end_days: float = 365, issuer: Cert | None = None
) -> Cert:
    """A certificate valid from NOW+start_days to NOW+end_days (self-signed by default)."""
    key = rsa_key(f"ks-{label}")
    cert = make_cert(
        name(f"recording {label}"),
        key,
        issuer.cert if issuer else None,
        issuer.key if issuer else None,
        not_before=NOW + timedelta(days=start_days),
        not_after=NOW + timedelta(days=end_days),
    )
    return Cert(label, key, cert)


def ca_cert(label: str) -> Cert:
    key = rsa_key(f"ks-ca-{label}")
    cert = make_cert(
        name(f"CA {label}"),
        key,
        ca=True,
        not_before=NOW - timedelta(days=800),
        not_after=NOW + timedelta(days=800),
    )
    return Cert(label, key, cert)


def seal(
    plaintext: bytes,
    recipients: list[Recipient],
    *,
    tenant: str = "acme",
    kind: MediaKind = MediaKind.VOICE,
    rid: str = "rec",
) -> bytes:
    metadata = new_metadata(
        recording_id=rid, tenant=tenant, media_kind=kind, media_type="audio/wav"
    )
    enc = EnvelopeEncryptor(recipients, metadata)
    return enc.update(plaintext) + enc.finalize()


def open_envelope(data: bytes, keys: KeyRing) -> bytes:
    dec = EnvelopeDecryptor(keys)
    return dec.update(data) + dec.finalize()


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr).

    Fails the test if a traceback or any test password appears in the output.
    """
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    for secret in (PASSWORD.decode(), "p12-export-secret", "other password 123"):
        assert secret not in out and secret not in err, "a password reached the output"
    assert "Traceback" not in err
    return code, out, err


def no_partials(*directories: Path) -> list[str]:
    """Temporary files a failed write could have left (none may be)."""
    found = []
    for d in directories:
        found += [str(p) for p in d.rglob("*.partial")]
    return found


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def env_without_keystore(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point HOME and XDG_DATA_HOME at ``home`` and clear the keystore variables."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    for var in ("RECSTREAM_KEYSTORE", "RECSTREAM_KEYSTORE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    assert "RECSTREAM_KEYSTORE" not in os.environ
