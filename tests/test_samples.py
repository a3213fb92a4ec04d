"""src/recstream/samples/ (package data) holds exactly what samples/make_samples.py makes,
and each file is under 1 MB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "recstream" / "samples"


def test_the_script_makes_the_committed_samples(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "samples" / "make_samples.py"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in ("call.wav", "screen.webm"):
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
        assert (SAMPLES / name).stat().st_size < 1_000_000


def test_samples_are_the_media_they_claim() -> None:
    with av.open(str(SAMPLES / "call.wav")) as c:
        (audio,) = c.streams.audio
        assert audio.codec_context.sample_rate == 8000
        assert 10 <= float(c.duration or 0) / 1e6 <= 30
    with av.open(str(SAMPLES / "screen.webm")) as c:
        (video,) = c.streams.video
        assert video.codec_context.name == "vp8"
        frames = sum(1 for _ in c.decode(video=0))
        assert frames == 60  # 12 s at 5 frames/s
