"""The recording hook's keystore resolver: rotation without restart, failing closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from recstream.aio import RecordingHook
from recstream.errors import (
    CertificateError,
    CertificateExpiredError,
    KeystoreDamagedError,
    KeystoreLockedError,
    NoActiveCertificateError,
    ScreenCertificateMissingError,
)
from recstream.format import Header, MediaKind, parse_header
from recstream.keystore import create, load, resolver, update
from tests.keystore_helpers import (
    NOW,
    PASSWORD,
    TINY_KDF,
    Cert,
    ca_cert,
    open_envelope,
    recording_cert,
)
from tests.pki_helpers import pem

V, S = MediaKind.VOICE, MediaKind.SCREEN


@pytest.fixture(scope="module")
def certs() -> dict[str, Cert]:
    ca = ca_cert("hook")
    return {
        "CA": ca,
        "B": recording_cert("B", start_days=-30, end_days=335, issuer=ca),
        "C": recording_cert("C", start_days=-1, end_days=365),
        "S": recording_cert("S", start_days=-1, end_days=365),
        "A": recording_cert("A", start_days=-400, end_days=-20),
    }


@pytest.fixture
def ks_path(tmp_path: Path, certs: dict[str, Cert]) -> Path:
    path = tmp_path / "keystore.rsk"
    create(path, PASSWORD, kdf=TINY_KDF)
    with update(path, PASSWORD) as ks:
        ks.add("acme", V, certs["B"].cert, certs["B"].key, now=NOW)
    return path


def _cert_ids(path: Path) -> tuple[str, ...]:
    header = parse_header(path.read_bytes())
    assert isinstance(header, Header)
    return header.cert_ids


def test_rotation_reaches_new_recordings_without_restart(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path
) -> None:
    resolve = resolver(ks_path, PASSWORD)
    out = tmp_path / "rec"
    out.mkdir()

    async def main() -> None:
        async with RecordingHook(out, resolve, flush_interval=0.01, sync=False) as hook:
            await hook.start("call-1", tenant="acme")
            hook.media("call-1", b"before rotation " * 2000)
            # The operator imports C and rotates while call-1 is still recording.
            with update(ks_path, PASSWORD) as ks:
                ks.add("acme", V, certs["C"].cert, certs["C"].key, now=NOW)
                ks.rotate("acme", V, certs["C"].cert_id, now=NOW)
            await hook.start("call-2", tenant="acme")
            hook.media("call-1", b"still call one " * 2000)
            hook.media("call-2", b"after rotation " * 2000)
            await hook.stop("call-1")
            await hook.stop("call-2")
            assert hook.errors == {}

    asyncio.run(main())
    assert _cert_ids(out / "call-1-voice.rsv") == (certs["B"].cert_id,)  # finished under B
    assert _cert_ids(out / "call-2-voice.rsv") == (certs["C"].cert_id,)
    ks = load(ks_path, PASSWORD)
    assert open_envelope((out / "call-1-voice.rsv").read_bytes(), ks) == (
        b"before rotation " * 2000 + b"still call one " * 2000
    )
    assert open_envelope((out / "call-2-voice.rsv").read_bytes(), ks) == b"after rotation " * 2000
    assert resolve.reloads == 2  # once at start, once after the rotation; not per call


def test_screen_without_certificate_fails_at_once_voice_goes_on(
    ks_path: Path, tmp_path: Path
) -> None:
    resolve = resolver(ks_path, PASSWORD)

    async def main() -> RecordingHook:
        async with RecordingHook(tmp_path, resolve, flush_interval=0.01, sync=False) as hook:
            await hook.start("call", tenant="acme", kinds=(V, S))
            hook.media("call", b"voice", V)
            await hook.stop("call")
        return hook

    hook = asyncio.run(main())
    error = hook.errors[("call", S)]
    assert isinstance(error, ScreenCertificateMissingError)
    provision = "provision one: recstream keystore import --tenant acme --media-kind screen"
    assert provision in str(error)
    assert (tmp_path / "call-voice.rsv").exists()
    assert not list(tmp_path.glob("call-screen*"))


def test_resolver_fails_closed(ks_path: Path, certs: dict[str, Cert]) -> None:
    resolve = resolver(ks_path, PASSWORD)
    with pytest.raises(NoActiveCertificateError, match="tenant beta has no voice"):
        resolve("beta", V)
    # A CA file that does not vouch for the active certificate: refused, no fallback.
    other_ca = pem(ca_cert("unrelated").cert)
    strict = resolver(ks_path, PASSWORD, ca_bundle=other_ca)
    with pytest.raises(CertificateError, match="CA file refuses the active"):
        strict("acme", V)
    vouched = resolver(ks_path, PASSWORD, ca_bundle=pem(certs["CA"].cert))
    assert vouched("acme", V)[0].cert_id_hex == certs["B"].cert_id
    # The active certificate has expired: refused, although C sits in the keystore.
    a = certs["A"]
    with update(ks_path, PASSWORD) as ks:
        ks.add("acme", S, a.cert, a.key, now=NOW)
        ks.rotate("acme", S, a.cert_id, now=NOW.replace(year=NOW.year - 1))
        ks.add("acme", S, certs["S"].cert, certs["S"].key, now=NOW)
    with pytest.raises(CertificateExpiredError, match="expired on"):
        resolve("acme", S)
    # The keystore file is damaged: every new recording fails; no stale certificate.
    data = bytearray(ks_path.read_bytes())
    data[150] ^= 1
    ks_path.write_bytes(bytes(data))
    with pytest.raises(KeystoreDamagedError):
        resolve("acme", V)
    with pytest.raises(KeystoreDamagedError):
        resolve("acme", V)


def test_resolver_needs_the_right_password(ks_path: Path) -> None:
    with pytest.raises(KeystoreLockedError):
        resolver(ks_path, b"other password 123")


def test_resolver_warns_about_expiry_and_adds_escrow(
    tmp_path: Path, certs: dict[str, Cert]
) -> None:
    soon = recording_cert("SOON", start_days=-1, end_days=5)
    path = tmp_path / "k.rsk"
    create(path, PASSWORD, kdf=TINY_KDF)
    with update(path, PASSWORD) as ks:
        ks.add("acme", V, soon.cert, soon.key, now=NOW)
    warnings: list[str] = []
    resolve = resolver(path, PASSWORD, escrow=[certs["C"].recipient], on_warning=warnings.append)
    recipients = resolve("acme", V)
    assert [r.cert_id_hex for r in recipients] == [soon.cert_id, certs["C"].cert_id]
    assert warnings and "expires in" in warnings[0] and warnings[0].startswith("acme/voice")
