"""The end-to-end demo behind ``recstream demo`` (it yields lines; the CLI prints them).

The whole story on built-in defaults: a CA and a voice and a screen recording
certificate for a demo tenant; the sample call and screen recordings recorded
through the live hook (faster than real time, the screen starting 2.5 s after
the call); the pair muxed into one encrypted WebM; that decrypted for playback
and checked with the media library.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.aio.hook import RecordingHook
from recstream.aio.run import loop_name, run
from recstream.envelope import EnvelopeDecryptor, Identity, IdentitySet, Recipient
from recstream.errors import IntegrityError
from recstream.files import atomic_output, pump
from recstream.format import MediaKind
from recstream.mux import mux_files
from recstream.pki.ca import CertificateAuthority, create_root_ca, sign_recording_certificate
from recstream.pki.certs import certificate_id
from recstream.pki.csr import build_csr, generate_private_key, private_key_pem
from recstream.pki.dn import SubjectFields, ca_subject

TENANT = "demo"
CALL_ID = "demo-call-0001"
SCREEN_DELAY_MS = 2500
VOICE_FRAME = 320  # 20 ms of 8 kHz 16-bit PCM
SCREEN_CHUNK = 4096
KEY_BITS = 2048  # demo speed; `recstream pki csr` defaults to 3072


@dataclass
class Provisioned:
    ca: x509.Certificate
    certs: dict[MediaKind, x509.Certificate]
    keys: dict[MediaKind, rsa.RSAPrivateKey]

    def recipient(self, kind: MediaKind) -> Recipient:
        return Recipient.from_certificate(self.certs[kind])

    def keyring(self) -> IdentitySet:
        return IdentitySet(
            Identity.from_private_key(self.keys[k], self.certs[k]) for k in self.certs
        )


def sample_path(name: str) -> Path:
    """The bundled sample recordings (samples/ in a source checkout)."""
    here = Path(__file__).resolve().parents[2] / "samples" / name
    if here.exists():
        return here
    return Path(str(resources.files("recstream") / "samples" / name))  # pragma: no cover


def provision(workdir: Path, password: bytes) -> Provisioned:
    ca_key = generate_private_key(KEY_BITS)
    ca_cert = create_root_ca(
        ca_key, ca_subject("recstream demo CA", organization="Demo Co"), days=365
    )
    ca = CertificateAuthority.from_objects(ca_cert, ca_key)
    certs, keys = {}, {}
    for kind in (MediaKind.VOICE, MediaKind.SCREEN):
        key = generate_private_key(KEY_BITS)
        subject = SubjectFields.parse(
            common_name=f"Interaction Recording {kind.name.lower()}",
            organization="Demo Co",
            organizational_unit="Recording",
            locality="Pleasant Hill",
            state="California",
            country="US",
        )
        certs[kind] = sign_recording_certificate(build_csr(key, subject), ca, days=90)
        keys[kind] = key
        name = kind.name.lower()
        (workdir / f"{name}_cert.pem").write_bytes(
            certs[kind].public_bytes(serialization.Encoding.PEM)
        )
        with atomic_output(workdir / f"{name}_key.pem") as fh:
            fh.write(private_key_pem(key, password))
    (workdir / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return Provisioned(ca_cert, certs, keys)


async def record(workdir: Path, prov: Provisioned) -> dict[MediaKind, Path]:
    """Feed the samples through the live hook as fast as it takes them."""
    call = sample_path("call.wav").read_bytes()
    screen = sample_path("screen.webm").read_bytes()
    start = int(time.time() * 1000)
    async with RecordingHook(
        workdir, lambda tenant, kind: [prov.recipient(kind)], flush_interval=0.25
    ) as hook:
        await hook.start(
            CALL_ID,
            tenant=TENANT,
            kinds=[MediaKind.VOICE, MediaKind.SCREEN],
            media_types={MediaKind.VOICE: "audio/wav", MediaKind.SCREEN: "video/webm"},
            created_ms={MediaKind.VOICE: start, MediaKind.SCREEN: start + SCREEN_DELAY_MS},
        )
        for i in range(0, max(len(call), len(screen)), VOICE_FRAME):
            if i < len(call):
                hook.media(CALL_ID, call[i : i + VOICE_FRAME], MediaKind.VOICE)
            j = i // VOICE_FRAME * SCREEN_CHUNK
            if j < len(screen):
                hook.media(CALL_ID, screen[j : j + SCREEN_CHUNK], MediaKind.SCREEN)
            if i % (VOICE_FRAME * 50) == 0:
                await asyncio.sleep(0)  # let the flusher run, as a real loop would
        return await hook.stop(CALL_ID)


def media_summary(data: bytes) -> str:
    """Each stream's codec and time span, read back with the media library."""
    import av

    parts = []
    with av.open(io.BytesIO(data)) as probe:
        kinds = [(s.index, s.type, s.codec_context.name) for s in probe.streams]
    for index, kind, codec in kinds:
        with av.open(io.BytesIO(data), "r") as c:
            s = c.streams[index]
            tb = s.time_base or 1
            spans = [
                (float(p.pts * tb), float((p.pts + (p.duration or 0)) * tb))
                for p in c.demux(s)
                if p.pts is not None
            ]
        first, last = min(a for a, _ in spans), max(b for _, b in spans)
        parts.append(f"{kind} {codec} from {max(first, 0):.2f} s to {last:.2f} s")
    return "; ".join(parts)


def run_demo(workdir: Path) -> Iterator[str]:
    """Provision, record live, mux, decrypt and check; yield what happened."""
    t0 = time.perf_counter()
    password = hashlib.sha256(str(workdir).encode() + str(time.time()).encode()).hexdigest()
    (workdir / "keys.pass").write_text(password + "\n")
    (workdir / "keys.pass").chmod(0o600)
    prov = provision(workdir, password.encode())
    yield (
        f"1. provisioned a CA and two RSA-{KEY_BITS} recording certificates for tenant "
        f"'{TENANT}' [{time.perf_counter() - t0:.1f} s]"
    )
    yield f"     CA      {certificate_id(prov.ca)}  (ca.pem)"
    for kind, cert in prov.certs.items():
        yield (
            f"     {kind.name.lower():<7} {certificate_id(cert)}  "
            f"({kind.name.lower()}_cert.pem; key encrypted at rest, password in keys.pass)"
        )

    t = time.perf_counter()
    paths = run(record(workdir, prov))
    dt = time.perf_counter() - t
    total = sum(p.stat().st_size for p in paths.values())
    yield (
        f"2. recorded the sample call (15 s) and screen (12 s, starting 2.5 s later) through "
        f"the live hook on {loop_name()}: {dt * 1000:.0f} ms, "
        f"{', '.join(f'{p.name} {p.stat().st_size} bytes' for p in paths.values())}"
        f" ({total / dt / 1e6:.1f} MB/s)"
    )

    keys = prov.keyring()
    muxed = workdir / "call+screen.rsv"
    t = time.perf_counter()
    result = mux_files(
        paths[MediaKind.VOICE],
        paths[MediaKind.SCREEN],
        muxed,
        keys=keys,
        recipients=[prov.recipient(MediaKind.SCREEN)],
    )
    yield (
        f"3. muxed them into one WebM, encrypted for the screen certificate: {muxed.name}, "
        f"{muxed.stat().st_size} bytes, video placed at +{result.video_offset_s:.2f} s "
        f"[{(time.perf_counter() - t) * 1000:.0f} ms; nothing decrypted touched the disk]"
    )

    playback = workdir / "playback.webm"
    t = time.perf_counter()
    with muxed.open("rb") as src, atomic_output(playback) as dst:
        pump(src, dst, EnvelopeDecryptor(keys))
    yield (
        f"4. decrypted it for playback: {playback.name}, {playback.stat().st_size} bytes "
        f"[{(time.perf_counter() - t) * 1000:.0f} ms]"
    )
    yield f"5. checked it with the media library: {media_summary(playback.read_bytes())}"

    tampered = bytearray(muxed.read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    try:
        dec = EnvelopeDecryptor(keys)
        dec.update(bytes(tampered))
        dec.finalize()
        verdict = "NOT DETECTED (a bug)"
    except IntegrityError as exc:
        verdict = f"refused: {exc}"
    yield f"6. flipped one bit of a copy and decrypted it: {verdict}"
    yield f"done in {time.perf_counter() - t0:.1f} s; files in {workdir}"
