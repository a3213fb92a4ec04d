"""H.264 screen recordings mux into an MP4 (issue 17): video copied, moov in front, in sync.

The inputs are made here (tests/media_helpers.py): a call that beeps and a screen
recording that flashes at the same instants, the screen starting later than the call.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from recstream.cli import main
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, new_metadata
from recstream.format import MAGIC, MediaKind
from recstream.mux import MixedEncryptionError, MuxError, mux_files
from recstream.reader import BytesSource, SegmentReader
from tests.conftest import Party
from tests.media_helpers import beep_onsets, flash_times, write_call, write_screen
from tests.test_mux import T0, seal_file

SECONDS = 30
DELAY_S = 1.0  # the screen recording starts this much after the call
BEEPS = [5.0 * k + 2 for k in range(SECONDS // 5)]  # call time
SYNC_S = 0.1  # the issue's bound, and far more than any real drift here


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("mp4-src")
    write_call(d / "call.wav", SECONDS, BEEPS)
    # B-frames: presentation and decoding order differ, as in real screen recorders
    write_screen(d / "screen.mp4", SECONDS - DELAY_S, [t - DELAY_S for t in BEEPS], bframes=True)
    return d / "call.wav", d / "screen.mp4"


def seal_mp4(src: Path, dst: Path, party: Party, created: int) -> Path:
    md = new_metadata(
        recording_id="call-7",
        tenant="acme",
        media_kind=MediaKind.SCREEN,
        media_type="video/mp4",
        created_ms=created,
    )
    enc = EnvelopeEncryptor([party.recipient], md)
    dst.write_bytes(enc.update(src.read_bytes()) + enc.finalize())
    return dst


def boxes(data: bytes) -> list[str]:
    """The top-level ISO BMFF boxes in order (ISO/IEC 14496-12 §4.2)."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        name = data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        out.append(name)
        if size < 8:
            break
        pos += size
    return out


def video_payloads(data: bytes | Path) -> list[bytes]:
    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(src) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def check_mp4(data: bytes, screen: Path, video_start: float) -> None:
    assert boxes(data)[:2] == ["ftyp", "moov"], boxes(data)[:6]  # index before the media
    assert boxes(data).index("mdat") > 1
    with av.open(io.BytesIO(data)) as c:
        assert c.format.name.startswith("mov,mp4")
        assert [(s.type, s.codec_context.name) for s in c.streams] == [
            ("video", "h264"),
            ("audio", "aac"),
        ]
        assert float(c.duration) / 1e6 == pytest.approx(SECONDS, abs=0.2)
        assert c.streams.audio[0].rate == 8000  # the call's own rate
    assert video_payloads(data) == video_payloads(screen)  # copied, not re-encoded
    beeps = beep_onsets(data, 0, SECONDS)
    flashes = flash_times(data, 0, SECONDS)
    assert len(beeps) == len(flashes) == len(BEEPS)
    for beep, flash, want in zip(beeps, flashes, BEEPS, strict=True):
        assert beep == pytest.approx(want, abs=SYNC_S)
        assert flash == pytest.approx(want - DELAY_S + video_start, abs=SYNC_S)


def test_plain_h264_pair_makes_an_mp4_with_moov_in_front(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    call, screen = pair
    result = mux_files(call, screen, tmp_path / "out.mp4")
    assert result.format.name == "mp4" and not result.encrypted
    # plain inputs have no start times: both start at 0, the screen's flashes 1 s early
    check_mp4((tmp_path / "out.mp4").read_bytes(), screen, 0.0)


def test_encrypted_h264_pair_makes_an_encrypted_mp4_in_sync(
    pair: tuple[Path, Path], tmp_path: Path, alice: Party, bob: Party
) -> None:
    call, screen = pair
    voice = seal_file(call, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    sealed = seal_mp4(screen, tmp_path / "s.rsv", alice, T0 + round(DELAY_S * 1000))
    out = tmp_path / "out.rsv"
    result = mux_files(voice, sealed, out, keys=alice.keys, recipients=[bob.recipient])
    assert result.encrypted and result.video_offset_s == pytest.approx(DELAY_S)
    assert result.warnings == ()
    raw = out.read_bytes()
    assert raw.startswith(MAGIC) and b"moov" not in raw and b"ftyp" not in raw
    reader = SegmentReader(BytesSource(raw), bob.keys)
    assert reader.header.metadata.media_type == "video/mp4"
    plain = reader.read_at(0, reader.size)
    dec = EnvelopeDecryptor(bob.keys)
    assert dec.update(raw) + dec.finalize() == plain
    check_mp4(plain, screen, DELAY_S)  # beeps and flashes on the same instants


def test_h264_in_matroska_also_makes_an_mp4(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    call, screen = pair
    mkv = tmp_path / "screen.mkv"
    with av.open(str(screen)) as src, av.open(str(mkv), "w", format="matroska") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(video=0):
            if p.dts is not None:
                p.stream = out
                dst.mux(p)
    result = mux_files(call, mkv, tmp_path / "out.mp4")  # frame count from one packet pass
    assert result.format.name == "mp4"
    assert boxes((tmp_path / "out.mp4").read_bytes())[:2] == ["ftyp", "moov"]


def other_video(path: Path, fmt: str, codec: str) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=2)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            f = av.VideoFrame(64, 48, "yuv420p")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return path


@pytest.mark.parametrize(
    ("name", "fmt", "codec", "message"),
    [
        ("s.mp4", "mp4", "mpeg4", r"video is mpeg4 in MP4/MOV: recstream copies H\.264"),
        ("s.ts", "mpegts", "libx264", r"is a MPEG-TS .*\(mpegts\) file: recstream muxes"),
        ("s.avi", "avi", "libx264", r"\(avi\) file: recstream muxes screen recordings in MP4"),
    ],
)
def test_unsupported_codec_or_container_refused(
    tmp_path: Path, pair: tuple[Path, Path], name: str, fmt: str, codec: str, message: str
) -> None:
    screen = other_video(tmp_path / name, fmt, codec)
    with pytest.raises(MuxError, match=message):
        mux_files(pair[0], screen, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_content_not_header_decides_and_a_mislabel_is_reported(
    tmp_path: Path, pair: tuple[Path, Path], alice: Party, bob: Party
) -> None:
    # the live hook labels screen recordings video/webm unless told otherwise
    voice = seal_file(pair[0], tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    screen = seal_file(pair[1], tmp_path / "s.rsv", alice, MediaKind.SCREEN, T0)
    result = mux_files(
        voice, screen, tmp_path / "o.rsv", keys=alice.keys, recipients=[bob.recipient]
    )
    assert result.format.name == "mp4"
    assert result.warnings == (
        "the screen recording's header says video/webm but the content is MP4/MOV; "
        "muxed as what the content is",
    )


def test_mixed_encryption_refused_for_mp4_too(
    tmp_path: Path, pair: tuple[Path, Path], alice: Party
) -> None:
    voice = seal_file(pair[0], tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    with pytest.raises(MixedEncryptionError, match=r"screen recording .* is not encrypted"):
        mux_files(voice, pair[1], tmp_path / "o.rsv", keys=alice.keys, recipients=[alice.recipient])
    assert not (tmp_path / "o.rsv").exists()


def test_cli_names_the_mp4_and_refuses_a_webm_name(
    tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    call, screen = pair
    assert (
        main(["mux", "--voice", str(call), "--screen", str(screen), str(tmp_path / "o.mp4")]) == 0
    )
    assert "bytes of MP4" in capsys.readouterr().err
    bad = tmp_path / "o.webm"
    assert main(["mux", "--voice", str(call), "--screen", str(screen), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "the output is MP4" in err and "name it .mp4" in err and "Traceback" not in err
    assert not bad.exists()


def test_signed_mp4_verifies_and_plays(
    pair: tuple[Path, Path], tmp_path: Path, alice: Party, bob: Party
) -> None:
    """Issue 16 x 17: a signed mux is signed in either container; Range reads checked."""
    from recstream.signing import SignatureStatus, Signer, verify_file
    from tests.signing_helpers import Ca, p256

    ca = Ca.make("Signers CA")
    key = p256()
    signer = Signer.from_objects(key, ca.issue("recorder-01", key))
    call, screen = pair
    voice = seal_file(call, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    sealed = seal_mp4(screen, tmp_path / "s.rsv", alice, T0 + round(DELAY_S * 1000))
    out = tmp_path / "out.rsv"
    mux_files(voice, sealed, out, keys=alice.keys, recipients=[bob.recipient], signer=signer)
    report = verify_file(out, ca.pem, keep_digests=True)
    assert report.status is SignatureStatus.VALID, report.reason
    raw = out.read_bytes()
    reader = SegmentReader(BytesSource(raw), bob.keys, verified=report.verified)
    check_mp4(reader.read_at(0, reader.size), screen, DELAY_S)
