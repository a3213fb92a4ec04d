"""Material for the media-streams tests: a keystore, tenants' secrets, a config, WAVs, a server.

Everything is made at test time: keys (tests.keystore_helpers), secrets, audio.
The server is the real command (``recstream streams --config``) in a subprocess;
tests wait for its "listening on" line, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recstream import tracks
from recstream.envelope import EnvelopeDecryptor
from recstream.format import MediaKind
from recstream.keystore import Keystore, create, load, update
from tests.keystore_helpers import NOW, PASSWORD, TINY_KDF, recording_cert
from tests.rlimits import with_nofile

SECRETS = {
    "acme": "acme-shared-secret-0123456789",
    "globex": "globex-shared-secret-987654",
    "nocert": "nocert-shared-secret-55555",  # configured here, but no certificate in the keystore
}
TWILIO_TOKEN = "twilio-auth-token-abcdef0123456789"
CONTACT_CENTER = "0a1b2c"
PHONE = "+14155550123"  # personal data: must appear only inside envelopes
BANNER = re.compile(r"listening on (wss?://\S+)")


@dataclass
class Env:
    root: Path
    keystore: Path
    recordings: Path
    audit: Path

    def config(self, name: str = "streams.toml", **server: object) -> Path:
        """Write a config; ``server`` keys override the [server] defaults used here."""
        opts: dict[str, object] = {"listen": "127.0.0.1:0", **server}
        lines = ["[server]"]
        lines += [f"{k} = {_toml(v)}" for k, v in opts.items()]
        lines += [
            "[recordings]",
            f'root = "{self.recordings}"',
            f'contact_center = "{CONTACT_CENTER}"',
            "flush_interval = 0.2",
            "[keystore]",
            f'path = "{self.keystore}"',
            'password_file = "keystore.pass"',
            "[audit]",
            f'log = "{self.audit}"',
            "[tenants.acme]",
            'secret_file = "acme.secret"',
            "[tenants.globex]",
            'secret_file = "globex.secret"',
            "[tenants.nocert]",
            'secret_file = "nocert.secret"',
            # Two tenants behind one Twilio account: the signature proves the platform,
            # the `tenant` custom parameter chooses between them.
            "[tenants.initech]",
            'twilio_auth_token_file = "twilio.token"',
            "[tenants.umbrella]",
            'twilio_auth_token_file = "twilio.token"',
        ]
        path = self.root / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def keys(self) -> Keystore:
        return load(self.keystore, PASSWORD)

    def audit_lines(self) -> list[str]:
        return self.audit.read_text().splitlines() if self.audit.exists() else []


def _toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def make_env(root: Path) -> Env:
    root.mkdir(parents=True, exist_ok=True)
    ks = root / "keystore.rsk"
    create(ks, PASSWORD, kdf=TINY_KDF)
    with update(ks, PASSWORD) as store:
        for tenant in ("acme", "globex", "initech", "umbrella"):
            cert = recording_cert(f"streams-{tenant}")
            store.add(tenant, MediaKind.VOICE, cert.cert, cert.key, now=NOW)
    (root / "keystore.pass").write_bytes(PASSWORD + b"\n")
    for tenant, secret in SECRETS.items():
        (root / f"{tenant}.secret").write_text(secret + "\n")
    (root / "twilio.token").write_text(TWILIO_TOKEN + "\n")
    recordings = root / "recordings"
    recordings.mkdir()
    return Env(root, ks, recordings, root / "audit.jsonl")


# --- audio ----------------------------------------------------------------------


def ulaw_to_linear(byte: int) -> int:
    """G.711 mu-law decoding (ITU-T G.711 / the Sun reference), written here independently."""
    u = ~byte & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - magnitude if u & 0x80 else magnitude - 0x84


def random_ulaw(n: int, seed: int) -> bytes:
    """Random mu-law bytes that any G.711 encoder maps back exactly (0x7F, -0, becomes 0xFF)."""
    rng = random.Random(seed)
    return bytes(rng.choice([b for b in range(256) if b != 0x7F]) for _ in range(n))


def write_wav(path: Path, ulaw: bytes) -> Path:
    """An 8 kHz mono 16-bit WAV whose samples are ``ulaw`` decoded."""
    pcm = b"".join(ulaw_to_linear(b).to_bytes(2, "little", signed=True) for b in ulaw)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    return path


# --- the server -------------------------------------------------------------------


class Server:
    """``recstream streams --config`` in a subprocess; ``url`` once it is listening."""

    def __init__(self, config: Path, log: Path, *, nofile: tuple[int, int] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recstream", "streams", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=with_nofile(nofile),  # noqa: PLW1509 - test only
        )
        self.lines: list[str] = []
        self._output: str | None = None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # readiness: the banner, however long it takes
            self.lines.append(line)
            found = BANNER.search(line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise AssertionError(f"server did not start: {''.join(self.lines)}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        """SIGTERM, wait, return everything it wrote to stderr (idempotent)."""
        if self._output is None:
            if self.alive():
                self.proc.send_signal(signal.SIGTERM)
            _, err = self.proc.communicate(timeout=60)
            self._output = "".join(self.lines) + (err or "")
            self.log.write_text(self._output)
        return self._output


def running(config: Path, log: Path) -> Iterator[Server]:
    server = Server(config, log)
    try:
        yield server
    finally:
        server.stop()


# --- recordings -------------------------------------------------------------------


def audit_entry(env: Env, stream_sid: str, timeout: float = 60) -> dict[str, Any]:
    """The stream's end in the audit log, waiting for it to be written (a hang guard only:
    a client may be gone before the server has finalised the recording)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in env.audit_lines():
            entry: dict[str, Any] = json.loads(line)
            if entry["event"] == "stream_ended" and entry["stream_sid"] == stream_sid:
                return entry
        assert time.monotonic() < deadline, f"no end of stream {stream_sid} in the audit log"
        time.sleep(0.02)


def recordings_of(env: Env, call_sid: str) -> list[Path]:
    return sorted(env.recordings.rglob(f"{call_sid}*/voice.rsv"))


def decrypt_tracks(env: Env, path: Path) -> tracks.Extraction:
    dec = EnvelopeDecryptor(env.keys())
    plain = dec.update(path.read_bytes()) + dec.finalize()
    assert dec.header is not None and dec.header.metadata.media_type == tracks.MEDIA_TYPE
    return tracks.extract(plain)
