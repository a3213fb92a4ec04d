"""Shared pieces of the SRS tests: a keystore, a config, the server as a real process,
SIPp, and a small RTP/SRTP sender (SIPp 3.6 feeds only the first m= line)."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream.envelope import EnvelopeDecryptor
from recstream.format import MediaKind
from recstream.keystore import create, load, update
from recstream.tracks import Extraction, extract
from tests.keystore_helpers import NOW, PASSWORD, TINY_KDF, recording_cert
from tests.rlimits import with_nofile

HERE = Path(__file__).parent
HANG_GUARD = 60.0  # seconds: only ever reached when something hangs


def make_keystore(directory: Path) -> tuple[Path, Path]:
    ks, pw = directory / "keystore.rsk", directory / "keystore.pass"
    pw.write_bytes(PASSWORD + b"\n")
    create(ks, PASSWORD, kdf=TINY_KDF)
    with update(ks, PASSWORD) as store:
        for tenant in ("acme", "globex"):
            c = recording_cert(f"srs-{tenant}")
            store.add(tenant, MediaKind.VOICE, c.cert, c.key, now=NOW)
    return ks, pw


def free_rtp_range(size: int = 200) -> tuple[int, int]:
    """A random even range; the server skips ports another process holds."""
    low = random.randrange(20000, 60000 - size) & ~1
    return low, low + size - 2


def write_config(directory: Path, extra: str = "", *, sip: str = "", rtp: str = "") -> Path:
    ks, pw = make_keystore(directory)
    (directory / "recordings").mkdir(exist_ok=True)
    low, high = free_rtp_range()
    cfg = directory / "srs.toml"
    cfg.write_text(
        f'[sip]\nlisten = "127.0.0.1:0"\n{sip or "rtp_timeout = 30"}\n'
        f'[rtp]\nhost = "127.0.0.1"\nports = "{low}-{high}"\n{rtp}\n'
        f'[recordings]\nroot = "recordings"\ncontact_center = "0a1b2c"\nflush_interval = 0.2\n'
        f'[keystore]\npath = "{ks.name}"\npassword_file = "{pw.name}"\n'
        f'[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[tenants]\ndefault = "acme"\n{extra}'
    )
    return cfg


@dataclass
class Srs:
    """``recstream srs`` as a real process; its JSON lines arrive on ``events``."""

    proc: subprocess.Popen[str]
    directory: Path
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, config: Path, *, nofile: tuple[int, int] | None = None) -> Srs:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "recstream", "srs", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=config.parent,
            preexec_fn=with_nofile(nofile),  # noqa: PLW1509 - test only
        )
        srs = cls(proc, config.parent)
        threading.Thread(target=srs._read, daemon=True).start()
        threading.Thread(target=srs._read_err, daemon=True).start()
        srs.ready = srs.wait_for("ready")
        return srs

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    @property
    def sip(self) -> tuple[str, int]:
        host, port = self.ready["sip"].rsplit(":", 1)
        return host, int(port)

    def wait_for(self, event: str, timeout: float = HANG_GUARD, **match: Any) -> dict[str, Any]:
        for doc in self.seen:
            if doc["event"] == event and all(doc.get(k) == v for k, v in match.items()):
                self.seen.remove(doc)
                return doc
        deadline = time.monotonic() + timeout
        while True:
            try:
                doc = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                msg = f"no {event} line from the SRS; stderr: {''.join(self.stderr)[-2000:]}"
                raise AssertionError(msg) from None
            if doc["event"] == event and all(doc.get(k) == v for k, v in match.items()):
                return doc
            if doc["event"] == "exit":
                msg = f"SRS exited waiting for {event}: {''.join(self.stderr)[-2000:]}"
                raise AssertionError(msg)
            self.seen.append(doc)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=HANG_GUARD)

    def recordings(self) -> list[Path]:
        return sorted((self.directory / "recordings").rglob("*.rsv"))


def decrypt_tracks(path: Path, directory: Path) -> Extraction:
    ks = load(directory / "keystore.rsk", PASSWORD)
    dec = EnvelopeDecryptor(ks)
    data = dec.update(path.read_bytes()) + dec.finalize()
    assert dec.header is not None
    assert dec.header.metadata.media_type == "application/vnd.recstream.tracks"
    return extract(data)


def free_udp_port() -> int:
    """An even port whose port+2 is free too (SIPp binds -mp and -mp+2)."""
    for _ in range(100):
        port = random.randrange(30000, 60000) & ~1
        socks = []
        try:
            for p in (port, port + 1, port + 2, port + 3):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free UDP port")


def run_sipp(
    scenario: str,
    srs: Srs,
    workdir: Path,
    *,
    transport: str = "u1",
    pause_ms: int = 2500,
    extra: list[str] | None = None,
    calls: int = 1,
) -> subprocess.CompletedProcess[str]:
    host, port = srs.sip
    cmd = [
        "sipp",
        f"{host}:{port}",
        "-sf",
        str(HERE / scenario),
        "-m",
        str(calls),
        "-l",
        str(calls),
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-p",
        "0",
        "-mi",
        "127.0.0.1",
        "-mp",
        str(free_udp_port()),
        "-d",
        str(pause_ms),
        "-nostdin",
        "-timeout",
        "45s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(workdir / "sipp_errors.log"),
        *(extra or []),
    ]
    return subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=HANG_GUARD, check=False
    )


_RTP = struct.Struct(">BBHII")


def rtp_packet(
    seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 8, marker: bool = False
) -> bytes:
    return (
        _RTP.pack(0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload
    )


class Sender:
    """A UDP socket on loopback that sends RTP packets (a second participant)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, port: int, packets: list[bytes], pace: float = 0.0) -> None:
        for p in packets:
            self.sock.sendto(p, ("127.0.0.1", port))
            if pace:
                time.sleep(pace)

    def close(self) -> None:
        self.sock.close()


def payloads(n: int, seed: int, size: int = 160) -> list[bytes]:
    rng = random.Random(seed)
    # No 0xFF/0xD5 bytes: a silence fill can never be mistaken for sent audio.
    return [bytes(rng.choice(range(0x10, 0xD0)) for _ in range(size)) for _ in range(n)]


METADATA = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode>'
    '<session session_id="c2Vzc2lvbi1yYXc="><sipSessionID>raw-1</sipSessionID></session>'
    '<participant participant_id="cA=="><nameID aor="sip:carol@example.org"><name>Carol</name>'
    "</nameID></participant>"
    '<stream stream_id="c1" session_id="c2Vzc2lvbi1yYXc="><label>1</label></stream>'
    '<participantstreamassoc participant_id="cA=="><send>c1</send></participantstreamassoc>'
    "</recording>\r\n"
)


def sdp_offer(streams: list[tuple[str, int]], srtp: dict[str, bytes] | None = None) -> str:
    """An offer with one m=audio per (label, port); SDES keys by label make it RTP/SAVP."""
    import base64

    lines = ["v=0", "o=SRC 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for label, port in streams:
        key = (srtp or {}).get(label)
        lines.append(f"m=audio {port} RTP/{'SAVP' if key else 'AVP'} 0 101")
        lines += ["a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000"]
        if key:
            lines.append(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(key).decode()
            )
        lines += [f"a=label:{label}", "a=sendonly"]
    return "\r\n".join(lines) + "\r\n"


def request(
    method: str,
    srs: tuple[str, int],
    local: tuple[str, int],
    call_id: str,
    *,
    branch: str,
    cseq: int = 1,
    to_tag: str = "",
    body: str = "",
    content_type: str = "",
    headers: tuple[str, ...] = (),
    transport: str = "UDP",
) -> bytes:
    host, port = srs
    lines = [
        f"{method} sip:srs@{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch={branch}",
        f"From: <sip:src@{local[0]}:{local[1]}>;tag=src-{call_id}",
        f"To: <sip:srs@{host}:{port}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:src@{local[0]}:{local[1]}>;+sip.src",
        "Max-Forwards: 70",
        *headers,
    ]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    data = body.encode()
    lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def siprec_body(streams: list[tuple[str, int]], srtp: dict[str, bytes] | None = None) -> str:
    return (
        "--b1\r\nContent-Type: application/sdp\r\n\r\n"
        + sdp_offer(streams, srtp)
        + "--b1\r\nContent-Type: application/rs-metadata+xml\r\n"
        "Content-Disposition: recording-session\r\n\r\n" + METADATA + "--b1--\r\n"
    )


SIPREC_TYPE = "multipart/mixed;boundary=b1"
SIPREC_HEADERS = ("Require: siprec",)


class SipClient:
    """A raw SIP client on UDP: sends bytes, waits for responses by status code."""

    def __init__(self, srs: Srs) -> None:
        self.srs = srs.sip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(HANG_GUARD)
        self.local = self.sock.getsockname()
        self.received: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.srs)

    def next(self) -> bytes:
        data, _ = self.sock.recvfrom(65535)
        self.received.append(data)
        return data

    def expect(self, code: int, method: str = "") -> bytes:
        """Read until a response with ``code`` (and CSeq method) arrives; return it."""
        while True:
            data = self.next()
            first = data.split(b"\r\n", 1)[0]
            if first.startswith(f"SIP/2.0 {code} ".encode()) and (
                not method or f" {method}\r\n".encode() in data
            ):
                return data

    def close(self) -> None:
        self.sock.close()


def to_tag(response: bytes) -> str:
    for line in response.split(b"\r\n"):
        if line.lower().startswith(b"to:") and b";tag=" in line:
            return line.split(b";tag=", 1)[1].decode().strip()
    return ""


def answer_ports(response: bytes) -> list[int]:
    body = response.split(b"\r\n\r\n", 1)[1].decode()
    return [int(line.split()[1]) for line in body.splitlines() if line.startswith("m=audio")]
