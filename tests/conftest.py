"""Shared fixtures: RSA keys and certificates made at test time (never committed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from recstream.envelope import Identity, IdentitySet, Recipient, new_metadata
from recstream.format import MediaKind, Metadata
from tests.stores import (  # noqa: F401 - fixtures (issue 18)
    s3_server,
    s3_store,
    store,
    webdav_server,
    webdav_store,
)


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile ``src/`` once, before any test starts a ``python -m recstream``.

    Where PYTHONDONTWRITEBYTECODE is set (as on these machines), every CLI or server
    process a test starts would otherwise compile the modules it imports again
    (~50 ms a process, more on a loaded machine). ``.ci/run`` did this before the
    tests; here the README's test command does it too. Only the controller compiles
    (xdist workers start after it).
    """
    if hasattr(config, "workerinput"):
        return
    import compileall

    compileall.compile_dir(Path(__file__).parent.parent / "src", quiet=1)


def self_signed(key: rsa.RSAPrivateKey, cn: str, days: int = 365) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked slow first (in their order), everything else after as collected.

    Under ``-n 2 --dist worksteal`` (pyproject's addopts) the first worker starts with
    them, and the other worker takes over the end of its queue when it runs out: the
    slowest set-ups (an hour of media, a wheel build) never start in the last minute.
    Deterministic, so every worker collects the same order (xdist checks).
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class Party:
    """A key pair with its certificate, as a recipient and as an identity."""

    def __init__(self, cn: str, bits: int = 2048) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.cert = self_signed(self.key, cn)
        self.recipient = Recipient.from_certificate(self.cert)
        self.identity = Identity.from_private_key(self.key, self.cert)
        self.keys = IdentitySet([self.identity])

    def write(self, directory: Path, password: bytes | None = None) -> tuple[Path, Path]:
        cert = directory / f"{self.cert_cn}.cert.pem"
        key = directory / f"{self.cert_cn}.key.pem"
        cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
            )
        )
        return cert, key

    @property
    def cert_cn(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    @property
    def cert_id(self) -> str:
        return self.recipient.cert_id_hex


@pytest.fixture(scope="session")
def alice() -> Party:
    return Party("alice")


@pytest.fixture(scope="session")
def bob() -> Party:
    return Party("bob")


@pytest.fixture
def metadata() -> Metadata:
    return new_metadata(
        recording_id="rec-0001",
        tenant="acme",
        media_kind=MediaKind.VOICE,
        media_type="audio/wav",
        created_ms=1_700_000_000_000,
    )


@pytest.fixture
def seal(alice: Party, metadata: Metadata) -> Callable[..., bytes]:
    from recstream.envelope import EnvelopeEncryptor

    def _seal(plaintext: bytes, recipients: list[Recipient] | None = None) -> bytes:
        enc = EnvelopeEncryptor(recipients or [alice.recipient], metadata)
        return enc.update(plaintext) + enc.finalize()

    return _seal
