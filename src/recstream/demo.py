"""The end-to-end demo behind ``recstream demo`` (it yields lines; the CLI prints them)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import secrets
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from recstream.envelope import (
    EnvelopeDecryptor,
    EnvelopeEncryptor,
    Identity,
    IdentitySet,
    Recipient,
    new_metadata,
)
from recstream.errors import IntegrityError
from recstream.files import atomic_output, pump
from recstream.format import BodyLayout, MediaKind
from recstream.pki.certs import certificate_id

SAMPLE_RATE = 8000


def synth_call(seconds: float = 10.0, rate: int = SAMPLE_RATE) -> bytes:
    """A WAV (16-bit PCM mono) of a synthetic two-party call: voiced tones with pauses."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    voiced = np.sin(2 * np.pi * np.cumsum(pitch) / rate)
    voiced += 0.5 * np.sin(2 * np.pi * np.cumsum(2.1 * pitch) / rate)
    envelope = (np.sin(2 * np.pi * 0.9 * t) > -0.3).astype(np.float64)
    samples = (0.3 * 32767 * voiced * envelope).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def make_throwaway_certificate(
    cn: str, bits: int = 2048, days: int = 30
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed recording certificate, for the demo only."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recstream demo"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def run_demo(workdir: Path) -> Iterator[str]:
    """Provision, encrypt, inspect, decrypt and tamper-check; yield what happened."""
    t0 = time.perf_counter()
    cert, key = make_throwaway_certificate("recstream demo recording certificate")
    password = secrets.token_urlsafe(24).encode()
    (workdir / "recording_cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with atomic_output(workdir / "recording_key.pem") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(password),
            )
        )
    with atomic_output(workdir / "recording_key.pass") as fh:
        fh.write(password + b"\n")
    yield (
        f"1. made a throwaway RSA-2048 recording certificate, ID {certificate_id(cert)}; "
        "its private key is encrypted at rest (recording_key.pem, password in "
        f"recording_key.pass) [{time.perf_counter() - t0:.2f} s]"
    )

    call = workdir / "call.wav"
    call.write_bytes(synth_call())
    digest = hashlib.sha256(call.read_bytes()).hexdigest()
    yield f"2. synthesised a 10 s call recording: {call.name}, {call.stat().st_size} bytes"

    metadata = new_metadata(
        recording_id="demo-call-0001",
        tenant="demo",
        media_kind=MediaKind.VOICE,
        media_type="audio/wav",
    )
    enc = EnvelopeEncryptor([Recipient.from_certificate(cert)], metadata)
    sealed = workdir / "call.wav.rsv"
    t = time.perf_counter()
    with call.open("rb") as src, atomic_output(sealed) as dst:
        pump(src, dst, enc)
    yield (
        f"3. encrypted it with a fresh AES-256 file key wrapped by RSA-OAEP: {sealed.name}, "
        f"{sealed.stat().st_size} bytes, {enc.segments} segments "
        f"[{(time.perf_counter() - t) * 1000:.1f} ms]"
    )

    header_len = len(enc.header)
    layout = BodyLayout(sealed.stat().st_size - header_len)
    yield (
        f"4. inspected the header without a key: recording {metadata.recording_id}, tenant "
        f"{metadata.tenant}, {metadata.media_type}, header {header_len} bytes, "
        f"{layout.segments} segments, complete={layout.complete}"
    )

    keys = IdentitySet([Identity.from_private_key(key, cert)])
    plain = workdir / "call.decrypted.wav"
    t = time.perf_counter()
    with sealed.open("rb") as src, atomic_output(plain) as dst:
        pump(src, dst, EnvelopeDecryptor(keys))
    same = hashlib.sha256(plain.read_bytes()).hexdigest() == digest
    yield (
        f"5. decrypted it with the private key: {plain.name}, identical to the original: "
        f"{same} [{(time.perf_counter() - t) * 1000:.1f} ms]"
    )
    if not same:  # pragma: no cover - would be a bug
        msg = "the demo's decrypted recording differs from the original"
        raise IntegrityError(msg)

    tampered = bytearray(sealed.read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    try:
        dec = EnvelopeDecryptor(keys)
        dec.update(bytes(tampered))
        dec.finalize()
        verdict = "NOT DETECTED (bug)"
    except IntegrityError as exc:
        verdict = f"refused: {exc}"
    yield f"6. flipped one bit in the middle of a copy and decrypted it: {verdict}"
    yield f"done in {time.perf_counter() - t0:.2f} s; files in {workdir}{os.sep}"
