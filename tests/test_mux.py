"""The muxer on the samples: streams, timing, the encryption rule, no plaintext on disk."""

from __future__ import annotations

import builtins
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import av
import pytest

from recstream import errors
from recstream.cli import main
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, new_metadata
from recstream.format import MAGIC, MediaKind
from recstream.mux import MixedEncryptionError, MuxError, mux_files
from tests.conftest import Party

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "recstream" / "samples"
CALL, SCREEN = SAMPLES / "call.wav", SAMPLES / "screen.webm"
T0 = 1_750_000_000_000
SCREEN_DELAY_MS = 2500


def seal_file(
    src: Path,
    dst: Path,
    party: Party,
    kind: MediaKind,
    created: int,
    tenant: str = "acme",
    rid: str = "call-7",
) -> Path:
    md = new_metadata(
        recording_id=rid,
        tenant=tenant,
        media_kind=kind,
        media_type="audio/wav" if kind is MediaKind.VOICE else "video/webm",
        created_ms=created,
    )
    enc = EnvelopeEncryptor([party.recipient], md)
    dst.write_bytes(enc.update(src.read_bytes()) + enc.finalize())
    return dst


def stream_span(data: bytes, kind: str) -> tuple[float, float]:
    with av.open(io.BytesIO(data)) as c:
        st = c.streams.audio[0] if kind == "audio" else c.streams.video[0]
        first = last = None
        for p in c.demux(st):
            if p.pts is None:
                continue
            t0 = float(p.pts * st.time_base)
            t1 = t0 + float((p.duration or 0) * st.time_base)
            first = t0 if first is None else min(first, t0)
            last = t1 if last is None else max(last, t1)
    assert first is not None and last is not None
    return first, last


def check_muxed(data: bytes, video_start: float) -> None:
    with av.open(io.BytesIO(data)) as c:
        assert [s.type for s in c.streams].count("audio") == 1
        assert [s.type for s in c.streams].count("video") == 1
    a0, a1 = stream_span(data, "audio")
    v0, v1 = stream_span(data, "video")
    assert abs(a0 - 0.0) < 0.1 and abs((a1 - a0) - 15.0) < 0.1  # call: 15 s
    assert abs(v0 - video_start) < 0.1 and abs((v1 - v0) - 12.0) < 0.1  # screen: 12 s


def test_plain_pair_muxes(tmp_path: Path) -> None:
    result = mux_files(CALL, SCREEN, tmp_path / "out.webm")
    assert not result.encrypted
    check_muxed((tmp_path / "out.webm").read_bytes(), 0.0)


def test_encrypted_pair_offsets_audio_and_stays_encrypted(
    tmp_path: Path, alice: Party, bob: Party
) -> None:
    voice = seal_file(CALL, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    screen = seal_file(SCREEN, tmp_path / "s.rsv", alice, MediaKind.SCREEN, T0 + SCREEN_DELAY_MS)
    out = tmp_path / "out.rsv"
    result = mux_files(voice, screen, out, keys=alice.keys, recipients=[bob.recipient])
    assert result.encrypted and result.cert_ids == (bob.cert_id,)
    assert result.video_offset_s == pytest.approx(2.5)
    raw = out.read_bytes()
    assert raw.startswith(MAGIC)
    dec = EnvelopeDecryptor(bob.keys)
    plain = dec.update(raw) + dec.finalize()
    check_muxed(plain, 2.5)


def test_mixed_pair_refused_with_nothing_written(tmp_path: Path, alice: Party) -> None:
    voice = seal_file(CALL, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    out = tmp_path / "out.rsv"
    with pytest.raises(MixedEncryptionError, match=r"screen recording .* is not encrypted") as info:
        mux_files(voice, SCREEN, out, keys=alice.keys, recipients=[alice.recipient])
    assert "provision a screen-recording certificate for tenant 'acme'" in str(info.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [voice]


@pytest.mark.parametrize("field", ["tenant", "rid"])
def test_mismatched_recordings_refused(tmp_path: Path, alice: Party, field: str) -> None:
    voice = seal_file(CALL, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    other = {"tenant": "globex"} if field == "tenant" else {"rid": "call-8"}
    screen = seal_file(SCREEN, tmp_path / "s.rsv", alice, MediaKind.SCREEN, T0, **other)
    with pytest.raises(
        MuxError, match="different tenants" if field == "tenant" else "different interactions"
    ):
        mux_files(voice, screen, tmp_path / "o", keys=alice.keys, recipients=[alice.recipient])
    assert not (tmp_path / "o").exists()


def test_tampered_input_fails_with_nothing_written(tmp_path: Path, alice: Party) -> None:
    voice = seal_file(CALL, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    screen = seal_file(SCREEN, tmp_path / "s.rsv", alice, MediaKind.SCREEN, T0)
    data = bytearray(voice.read_bytes())
    data[len(data) // 2] ^= 1
    voice.write_bytes(bytes(data))
    with pytest.raises(errors.IntegrityError):
        mux_files(voice, screen, tmp_path / "o", keys=alice.keys, recipients=[alice.recipient])
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_no_plaintext_touches_the_disk(
    tmp_path: Path, alice: Party, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    voice = seal_file(CALL, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    screen = seal_file(SCREEN, tmp_path / "s.rsv", alice, MediaKind.SCREEN, T0 + 1000)
    # A temporary directory of this test's own, for Python (tempfile) and native code
    # (TMPDIR) alike: the shared /tmp also gets other processes' files (a browser's
    # profile from a test on the other worker), which are not the mux's.
    own_tmp = tmp_path / "tmp"
    own_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    monkeypatch.setenv("TMPDIR", str(own_tmp))
    watched = [tmp_path, Path(tempfile.gettempdir()), Path.cwd()]
    before = {d: set(d.iterdir()) for d in watched}
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        if any(c in mode for c in "wax+"):
            opened.append(str(file))
        return real_open(file, mode, *a, **k)

    def spy_os_open(path: Any, flags: int, *a: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            opened.append(str(path))
        return real_os_open(path, flags, *a)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    seen_plain: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for d in watched:
                for p in set(d.iterdir()) - before[d]:
                    try:
                        head = p.read_bytes()[:8] if p.is_file() else b""
                    except OSError:
                        continue
                    if head and not head.startswith(MAGIC[: len(head)]):
                        seen_plain.append(str(p))
            time.sleep(0.001)

    t = threading.Thread(target=watch)
    t.start()
    try:
        mux_files(
            voice, screen, tmp_path / "out.rsv", keys=alice.keys, recipients=[alice.recipient]
        )
    finally:
        done.set()
        t.join()
    assert seen_plain == []
    # temporaries only: named ones, or unnamed O_TMPFILE ones (opened on the directory)
    assert all(p.endswith(".partial") or Path(p).is_dir() for p in opened), opened
    assert (tmp_path / "out.rsv").read_bytes().startswith(MAGIC)


def test_cli_mux_and_refusal(
    tmp_path: Path, alice: Party, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = alice.write(tmp_path)
    voice = seal_file(CALL, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    screen = seal_file(SCREEN, tmp_path / "s.rsv", alice, MediaKind.SCREEN, T0 + 500)
    assert (
        main(
            [
                "mux",
                "--voice",
                str(voice),
                "--screen",
                str(screen),
                "--key",
                str(key),
                "--cert",
                str(cert),
                str(tmp_path / "o.rsv"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "mux",
                "--voice",
                str(voice),
                "--screen",
                str(SCREEN),
                "--key",
                str(key),
                "--cert",
                str(cert),
                str(tmp_path / "p.rsv"),
            ]
        )
        == 4
    )
    err = capsys.readouterr().err
    assert "not encrypted" in err and "Traceback" not in err
    assert not (tmp_path / "p.rsv").exists()
    q = tmp_path / "q.webm"
    assert main(["mux", "--voice", str(CALL), "--screen", str(SCREEN), str(q)]) == 0
    assert (
        main(
            [
                "mux",
                "--voice",
                str(tmp_path / "none"),
                "--screen",
                str(SCREEN),
                str(tmp_path / "r.webm"),
            ]
        )
        == 2
    )
