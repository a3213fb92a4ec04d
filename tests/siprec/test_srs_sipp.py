"""The SRS against a client nobody on this project wrote: SIPp 3.6 (Debian sip-tester).

SIPp sends the SIPREC INVITE (multipart SDP + rs-metadata) and the first stream
(rtp_stream from a raw mu-law file); the second stream, with a lost, a reordered,
a late, a duplicated and an injected packet and a DTMF digit, comes from the
test's own sender.  The recording is decrypted and each track must equal what
was sent, byte for byte (lost packets as codec silence).
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recstream.cli import main
from tests.siprec.helpers import (
    Sender,
    Srs,
    decrypt_tracks,
    payloads,
    rtp_packet,
    run_sipp,
    write_config,
)

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="needs sipp (sip-tester)")

PERSONAL = ("alice", "Alice", "+15551230000", "atlanta.example.com", "Bob", "SIPpTag")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srs]:
    """One server for the tests that need no special configuration."""
    directory = tmp_path_factory.mktemp("srs")
    srs = Srs.start(write_config(directory))
    yield srs
    assert srs.stop() == 0


def _in_background(fn: Any, *args: Any, **kw: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(result=fn(*args, **kw)), daemon=True)
    t.start()
    return t, box


def _port(start: dict[str, Any], label: str) -> int:
    return next(r["port"] for r in start["rtp"] if r["label"] == label)


def _stream2() -> tuple[list[bytes], bytes, list[bytes]]:
    """Stream 2's wire packets (in send order), its expected audio, and the late packet."""
    audio = payloads(25, seed=2)
    ssrc = 0x5EC0_0002
    by_seq = {}
    for i, p in enumerate(audio):
        seq = 1000 + i + (3 if i >= 20 else 0)  # 3 DTMF packets sit in the sequence
        by_seq[seq] = rtp_packet(seq, 8000 + i * 160, ssrc, p, pt=8)
    for k, (dur, end) in enumerate(((160, False), (320, False), (480, True))):
        body = struct.pack(">BBH", 5, (0x80 if end else 0) | 10, dur)
        by_seq[1020 + k] = rtp_packet(1020 + k, 8000 + 20 * 160, ssrc, body, pt=101, marker=k == 0)
    order = sorted(by_seq)
    order.remove(1010)  # lost (and sent much later: late)
    i11, i12 = order.index(1011), order.index(1012)
    order[i11], order[i12] = order[i12], order[i11]  # reordered
    wire = [by_seq[s] for s in order]
    wire.insert(order.index(1015), by_seq[1005])  # a duplicate
    expected = b"".join(audio[:10]) + b"\xd5" * 160 + b"".join(audio[11:])
    return wire, expected, [by_seq[1010]]


def _inject(port: int) -> None:
    """RTP from another source onto the stream: dropped and counted (RTP injection)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(
            rtp_packet(1013, 8000 + 13 * 160, 0x5EC0_0002, b"\x00" * 160, pt=8), ("127.0.0.1", port)
        )


def _record_call(srs: Srs, workdir: Path, transport: str) -> tuple[dict[str, Any], bytes]:
    audio1 = b"".join(payloads(25, seed=1))
    (workdir / "stream1.ul").write_bytes(audio1)
    t, box = _in_background(
        run_sipp, "uac_siprec.xml", srs, workdir, transport=transport, pause_ms=1500
    )
    start = srs.wait_for("call_start")
    port2 = _port(start, "2")
    wire, expected2, late = _stream2()
    sender = Sender()
    sender.send(port2, wire[:5], pace=0.01)  # the stream latches onto the sender here
    _inject(port2)
    sender.send(port2, wire[5:], pace=0.01)
    sender.send(port2, late)  # behind everything released: late
    t.join()
    sender.close()
    res = box["result"]
    assert res.returncode == 0, res.stderr + res.stdout[-2000:]
    end = srs.wait_for("call_end", recording_id=start["recording_id"])
    return {"start": start, "end": end, "audio1": audio1, "audio2": expected2}, audio1


def _check_no_personal_data(*docs: dict[str, Any]) -> None:
    text = json.dumps(docs)
    for word in PERSONAL:
        assert word not in text


def _recording(srs: Srs, rid: str) -> Path:
    path = next(p for p in srs.recordings() if p.parent.name == rid)
    assert not path.with_name(path.name + ".incomplete").exists()
    return path


def test_udp_call_two_streams_byte_exact(shared: Srs, tmp_path: Path) -> None:
    call, audio1 = _record_call(shared, tmp_path, "u1")
    start, end = call["start"], call["end"]
    assert end["reason"] == "bye" and end["complete"]
    _check_no_personal_data(start, end)
    path = _recording(shared, start["recording_id"])
    got = decrypt_tracks(path, shared.directory)
    assert got.complete and got.close is not None and got.close.reason == "bye"
    t1, t2 = got.tracks[1], got.tracks[2]
    assert (t1.decl.label, t1.decl.codec, t2.decl.label, t2.decl.codec) == (
        "1",
        "PCMU",
        "2",
        "PCMA",
    )
    assert bytes(t1.audio) == audio1
    assert bytes(t2.audio) == call["audio2"]
    assert [(e.digit, e.duration, e.position) for e in t2.events] == [("5", 480, 20 * 160)]
    assert t2.stats is not None
    stats = t2.stats.counts
    assert (
        stats["lost"],
        stats["late"],
        stats["duplicate"],
        stats["reordered"],
        stats["foreign"],
    ) == (1, 1, 1, 1, 1)
    assert stats["received"] == 27  # 24 audio + 3 DTMF packets
    info = got.session.info if got.session else {}
    assert info["session_id"] == "hVpd7YQgRW2nD22h7q60JQ=="
    assert info["call_id"] and info["recording_id"] == start["recording_id"]
    aors = [a for p in info["metadata"]["participants"] for a in p["aor"]]
    assert aors == ["sip:alice@atlanta.example.com", "tel:+15551230000"]
    assert t1.decl.participant == "srfBElmCRp2QB23b7Mpk0w=="
    # The archive's cleartext side file has no personal data either.
    side = (path.parent / "recording.json").read_text()
    for word in (*PERSONAL, info["call_id"]):
        assert word not in side


def test_tcp_call_and_the_cli_reads_it(
    shared: Srs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    call, audio1 = _record_call(shared, tmp_path, "t1")
    assert call["start"]["transport"] == "tcp"
    path = _recording(shared, call["start"]["recording_id"])
    ks, pw = shared.directory / "keystore.rsk", shared.directory / "keystore.pass"
    assert main(["inspect", "--json", str(path)]) == 0
    header = json.loads(capsys.readouterr().out)
    assert header["media_type"] == "application/vnd.recstream.tracks" and header["complete"]
    _check_no_personal_data(header)
    out = tmp_path / "tracks"
    out.mkdir()
    assert (
        main(
            [
                "tracks",
                "--keystore",
                str(ks),
                "--password-file",
                str(pw),
                "--out-dir",
                str(out),
                str(path),
            ]
        )
        == 0
    )
    assert (out / "track-1.raw").read_bytes() == audio1
    assert (out / "track-2.raw").read_bytes() == call["audio2"]
    assert (out / "track-1.wav").read_bytes()[:4] == b"RIFF"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracks"][1]["stats"]["lost"] == 1
    assert (out / "summary.json").stat().st_mode & 0o077 == 0  # plaintext: owner-only
    plain = tmp_path / "call.tracks"
    assert (
        main(["decrypt", "--keystore", str(ks), "--password-file", str(pw), str(path), str(plain)])
        == 0
    )
    assert plain.read_bytes()[:8] == b"RSTRACKS"


def test_options_ping(shared: Srs, tmp_path: Path) -> None:
    res = run_sipp("uac_options.xml", shared, tmp_path)
    assert res.returncode == 0, res.stderr
    res = run_sipp("uac_options.xml", shared, tmp_path, transport="t1")
    assert res.returncode == 0, res.stderr


def test_metrics(shared: Srs) -> None:
    url = f"http://{shared.ready['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    for name in (
        "recstream_srs_calls_total",
        "recstream_srs_active_calls",
        "recstream_srs_rtp_packets_total",
        "recstream_srs_bytes_encrypted_total",
    ):
        assert name in text
    assert 'outcome="answered"' in text
    for word in PERSONAL:
        assert word not in text
