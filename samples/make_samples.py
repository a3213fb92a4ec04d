"""Make the sample recordings in src/recstream/samples/ (run: python samples/make_samples.py).

* ``call.wav``: 15 s of synthetic two-party "speech" (voiced vowels with formants,
  pitch contours and pauses), 8 kHz 16-bit PCM mono, as a contact-centre call
  recording would be after G.711 decoding.
* ``screen.webm``: 12 s of a synthetic agent desktop (windows, a moving cursor,
  typing bars), 320x240 at 5 frames/s, VP8, as a screen recording.  In the
  demo the screen recording starts 2.5 s after the call.

Deterministic: the same bytes every run (fixed seeds; no timestamps written);
``tests/test_samples.py`` checks that this script makes exactly the committed files.
"""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).resolve().parent
# The samples ship inside the package (package data), so `recstream demo` works from a wheel.
OUT = HERE.parent / "src" / "recstream" / "samples"
RATE = 8000
CALL_SECONDS = 15.0
SCREEN_SECONDS = 12.0
FPS = 5
WIDTH, HEIGHT = 320, 240

# (F1, F2) formants of a few vowels, Hz.
VOWELS = [(730, 1090), (270, 2290), (300, 870), (530, 1840), (640, 1190)]


def speech(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    t = 0
    speaker = 0
    while t < n:
        turn = int(rng.uniform(1.2, 2.8) * RATE)
        base = 120.0 if speaker == 0 else 210.0
        pos = t
        while pos < min(t + turn, n):
            syl = int(rng.uniform(0.12, 0.3) * RATE)
            end = min(pos + syl, n)
            k = np.arange(end - pos)
            f0 = base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * k / RATE))
            phase = 2 * np.pi * np.cumsum(f0) / RATE
            f1, f2 = VOWELS[rng.integers(len(VOWELS))]
            # Harmonics weighted by two formant resonances.
            sig = np.zeros(len(k))
            for h in range(1, 30):
                freq = h * base
                if freq > RATE / 2 - 200:
                    break
                w = np.exp(-((freq - f1) / 150) ** 2) + 0.6 * np.exp(-((freq - f2) / 200) ** 2)
                sig += (w + 0.02) * np.sin(h * phase)
            env = np.sin(np.pi * k / len(k)) ** 0.5
            out[pos:end] = sig * env
            pos = end + int(rng.uniform(0.02, 0.08) * RATE)
        t += turn + int(rng.uniform(0.3, 0.8) * RATE)
        speaker ^= 1
    out /= np.max(np.abs(out)) + 1e-9
    return (out * 0.6 * 32767).astype("<i2")


def write_call(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(speech(CALL_SECONDS).tobytes())


def desktop_frame(i: int, rng: np.random.Generator) -> np.ndarray:
    img = np.full((HEIGHT, WIDTH, 3), (58, 110, 165), np.uint8)  # desktop blue
    img[10:200, 15:220] = (235, 235, 235)  # a window
    img[10:28, 15:220] = (40, 60, 90)  # its title bar
    typed = min(12, 1 + i // 4)
    for line in range(typed):
        width = 40 + (line * 37) % 140
        img[40 + line * 12 : 46 + line * 12, 25 : 25 + width] = (30, 30, 30)
    img[150:230, 230:310] = (250, 250, 210)  # a sticky note
    x = int(160 + 120 * np.sin(i / 9))
    y = int(120 + 80 * np.cos(i / 7))
    img[y : y + 10, x : x + 3] = 0  # cursor
    img[y : y + 3, x : x + 8] = 0
    img[220:240, :] = (20, 20, 20)  # taskbar
    img[224:236, 280 + (i % 2) * 2 : 300] = (200, 200, 200)  # clock ticking
    return img


def write_screen(path: Path) -> None:
    rng = np.random.default_rng(2)
    with av.open(str(path), "w", format="webm", options={"fflags": "+bitexact"}) as out:
        out.metadata.clear()
        stream = out.add_stream("libvpx", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = 200_000
        for i in range(int(SCREEN_SECONDS * FPS)):
            frame = av.VideoFrame.from_ndarray(desktop_frame(i, rng), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    """Write the samples into the package, or into the directory given as the first argument."""
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.mkdir(parents=True, exist_ok=True)
    write_call(out / "call.wav")
    write_screen(out / "screen.webm")
    for name in ("call.wav", "screen.webm"):
        print(f"{name}: {(out / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
