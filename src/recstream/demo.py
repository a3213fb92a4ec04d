"""The end-to-end demo behind ``recstream demo`` (it yields lines; the CLI prints them).

The whole story on built-in defaults: a CA and a voice and a screen recording
certificate for a demo tenant; the sample call and screen recordings recorded
through the live hook (faster than real time, the screen starting 2.5 s after
the call); the pair muxed into one encrypted WebM; that decrypted for playback
and checked with the media library.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from recstream.aio.hook import RecordingHook
from recstream.aio.run import loop_name, run
from recstream.durable import atomic_output, write_all
from recstream.envelope import EnvelopeDecryptor
from recstream.errors import IntegrityError
from recstream.files import pump
from recstream.format import MediaKind
from recstream.keystore import (
    Keystore,
    KeystoreResolver,
    active_recipient,
    create,
    load,
    resolver,
    update,
)
from recstream.mux import mux_files
from recstream.pki.ca import CertificateAuthority, create_root_ca, sign_recording_certificate
from recstream.pki.certs import certificate_id
from recstream.pki.csr import build_csr, generate_private_key
from recstream.pki.dn import SubjectFields, ca_subject

TENANT = "demo"
CONTACT_CENTER = "0a1b2c"
DEMO_USER = "demo-player"
CALL_ID = "demo-call-0001"
SCREEN_DELAY_MS = 2500
VOICE_FRAME = 320  # 20 ms of 8 kHz 16-bit PCM
SCREEN_CHUNK = 4096
KEY_BITS = 2048  # demo speed; `recstream pki csr` defaults to 3072


@dataclass
class Provisioned:
    ca: x509.Certificate
    certs: dict[MediaKind, x509.Certificate]
    keystore: Path
    password: bytes

    def open_keystore(self) -> Keystore:
        return load(self.keystore, self.password)


def sample_bytes(name: str) -> bytes:
    """A bundled sample recording: package data (``recstream/samples/``), so the demo
    runs the same from a source checkout, an editable install or an installed wheel."""
    return resources.files("recstream").joinpath("samples", name).read_bytes()


def provision(workdir: Path) -> Provisioned:
    """A CA, voice and screen certificates for the demo tenant, in a fresh keystore."""
    ca_key = generate_private_key(KEY_BITS)
    now = dt.datetime.now(dt.UTC)
    ca_cert = create_root_ca(
        ca_key, ca_subject("recstream demo CA", organization="Demo Co"), days=365, now=now
    )
    ca = CertificateAuthority.from_objects(ca_cert, ca_key)
    password = secrets.token_urlsafe(24).encode()
    write_secret(workdir / "keystore.pass", password + b"\n")
    path = workdir / "keystore.rsk"
    certs = {}
    create(path, password)
    with update(path, password) as ks:
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
            certs[kind] = sign_recording_certificate(build_csr(key, subject), ca, days=90, now=now)
            ks.add(TENANT, kind, certs[kind], key, now=now)
            (workdir / f"{kind.name.lower()}_cert.pem").write_bytes(
                certs[kind].public_bytes(serialization.Encoding.PEM)
            )
    (workdir / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return Provisioned(ca_cert, certs, path, password)


def write_secret(path: Path, data: bytes) -> None:
    with atomic_output(path) as fh:
        write_all(fh, data)


async def record(archive: Path, resolve: KeystoreResolver) -> dict[MediaKind, Path]:
    """Feed the samples through the live hook as fast as it takes them."""
    call = sample_bytes("call.wav")
    screen = sample_bytes("screen.webm")
    start = int(time.time() * 1000)
    async with RecordingHook(
        archive, resolve, flush_interval=0.25, contact_center=CONTACT_CENTER
    ) as hook:
        await hook.start(
            CALL_ID,
            tenant=TENANT,
            kinds=[MediaKind.VOICE, MediaKind.SCREEN],
            media_types={MediaKind.VOICE: "audio/wav", MediaKind.SCREEN: "video/webm"},
            created_ms={MediaKind.VOICE: start, MediaKind.SCREEN: start + SCREEN_DELAY_MS},
        )
        if hook.errors:  # a recording that cannot start: say why, not "no recording"
            raise next(iter(hook.errors.values()))
        for i in range(0, max(len(call), len(screen)), VOICE_FRAME):
            if i < len(call):
                hook.media(CALL_ID, call[i : i + VOICE_FRAME], MediaKind.VOICE)
            j = i // VOICE_FRAME * SCREEN_CHUNK
            if j < len(screen):
                hook.media(CALL_ID, screen[j : j + SCREEN_CHUNK], MediaKind.SCREEN)
            if i % (VOICE_FRAME * 50) == 0:
                await asyncio.sleep(0)  # let the flusher run, as a real loop would
        done = await hook.stop(CALL_ID)
    if hook.errors:
        raise next(iter(hook.errors.values()))
    return done


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
    prov = provision(workdir)
    yield (
        f"1. provisioned a CA and RSA-{KEY_BITS} voice and screen recording certificates "
        f"for tenant '{TENANT}' in a fresh keystore (keystore.rsk, Argon2id-sealed; its "
        f"password in keystore.pass) [{time.perf_counter() - t0:.1f} s]"
    )
    yield f"     CA      {certificate_id(prov.ca)}  (ca.pem)"
    for kind, cert in prov.certs.items():
        name = kind.name.lower()
        yield f"     {name:<7} {certificate_id(cert)}  ({name}_cert.pem, active)"

    archive = workdir / "recordings"
    resolve = resolver(prov.keystore, prov.password)  # what a media server holds
    t = time.perf_counter()
    paths = run(record(archive, resolve))
    dt_ = time.perf_counter() - t
    rel = paths[MediaKind.VOICE].parent.relative_to(workdir)
    yield (
        f"2. recorded the sample call (15 s) and screen (12 s, starting 2.5 s later) through "
        f"the live hook on {loop_name()}, each under its tenant's active certificate: "
        f"{dt_ * 1000:.0f} ms, {15 / dt_:,.0f}x faster than real time, into {rel}/ "
        f"(voice.rsv {paths[MediaKind.VOICE].stat().st_size} bytes, screen.rsv "
        f"{paths[MediaKind.SCREEN].stat().st_size} bytes, recording.json)"
    )

    ks = prov.open_keystore()
    screen_cert, _ = active_recipient(ks, TENANT, MediaKind.SCREEN, now=dt.datetime.now(dt.UTC))
    muxed = paths[MediaKind.VOICE].parent / "call+screen.rsv"
    t = time.perf_counter()
    result = mux_files(
        paths[MediaKind.VOICE], paths[MediaKind.SCREEN], muxed, keys=ks, recipients=[screen_cert]
    )
    yield (
        f"3. muxed them into one WebM, encrypted for the tenant's screen certificate: "
        f"{muxed.name}, {muxed.stat().st_size} bytes, video placed at "
        f"+{result.video_offset_s:.2f} s [{(time.perf_counter() - t) * 1000:.0f} ms; "
        "nothing decrypted touched the disk]"
    )

    playback = workdir / "playback.webm"
    t = time.perf_counter()
    with muxed.open("rb") as src, atomic_output(playback) as dst:
        pump(src, dst, EnvelopeDecryptor(ks))
    yield (
        f"4. decrypted it for playback with the keystore: {playback.name}, "
        f"{playback.stat().st_size} bytes [{(time.perf_counter() - t) * 1000:.0f} ms]"
    )
    yield f"5. checked it with the media library: {media_summary(playback.read_bytes())}"

    tampered = bytearray(muxed.read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    try:
        dec = EnvelopeDecryptor(ks)
        dec.update(bytes(tampered))
        dec.finalize()
        verdict = "NOT DETECTED (a bug)"
    except IntegrityError as exc:
        verdict = f"refused: {exc}"
    yield f"6. flipped one bit of a copy and decrypted it: {verdict}"
    yield f"done in {time.perf_counter() - t0:.1f} s; files in {workdir}"


def serve_config(workdir: Path, port: int) -> Path:
    """Write an RCS config serving the demo's recordings with its keystore."""
    config = workdir / "rcs.toml"
    config.write_text(
        "# written by `recstream demo --serve`\n"
        "[server]\n"
        f'listen = "127.0.0.1:{port}"\n'
        "[keystore]\n"
        'path = "keystore.rsk"\n'
        'password_file = "keystore.pass"\n'
        "[recordings]\n"
        'root = "recordings"\n'
        "[audit]\n"
        'log = "audit.jsonl"\n'
        "[settings]\n"
        'db = "settings.sqlite"\n'
    )
    return config


def add_demo_player(config_path: Path, workdir: Path) -> tuple[str, Path]:
    """A player user for the demo tenant, with a generated password in player.pass."""
    from recstream.service import passwords
    from recstream.service.config import load_config
    from recstream.service.store import Role, SettingsStore, User

    password = secrets.token_urlsafe(12).encode()
    write_secret(workdir / "player.pass", password + b"\n")
    config = load_config(config_path)
    store = SettingsStore.open(config.settings_db)
    try:
        store.put_user(
            User(DEMO_USER, Role.PLAYER, frozenset({TENANT})),
            passwords.hash_password(password),
            replace=True,
        )
    finally:
        store.close()
    return DEMO_USER, workdir / "player.pass"
