"""Synthetic recordings with sync markers, made at test time (low bitrate, fast).

The call is 8 kHz mono WAV: a quiet 200 Hz hum (so the audio codec has something to
code, as in a real call) with a loud 1 kHz beep (100 ms) at each marker.  The screen
recording is 160x120 video at ``FPS`` frames a second, black with a moving grey bar
and an all-white frame shown for 100 ms at each marker, H.264 (libx264, in MP4) or
VP8 (in WebM).  A marker given in *call* time ``t`` is put at ``t - screen_delay_s`` in
the screen recording, so after muxing (the screen placed ``screen_delay_s`` later on the
timeline) beep and flash fall on the same instant.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CALL_RATE = 8000
FPS = 1  # the screen recording's steady frame rate
TICKS = 10  # its time base: 1/10 s
FLASH_S = 0.1  # how long a white frame is shown
BEEP_S = 0.1
BEEP_HZ = 1000
HUM = 600  # peak of the hum: 0.018 of full scale, well under the beep's 0.37
W, H = 160, 120
NOISE_ROW = 72  # the noise strip: clear of the centre, where the page looks for a flash


def write_call(path: Path, seconds: int, beeps: Iterable[float]) -> None:
    """``seconds`` of hum with a beep starting at each of ``beeps`` (call time, s)."""
    # the hum, one period (200 Hz at 8 kHz: 40 samples) repeated: an hour is 28.8 M samples
    period = np.arange(CALL_RATE // 200)
    hum = (np.sin(period * 2 * np.pi * 200 / CALL_RATE) * HUM).astype("<i2")
    pcm = np.tile(hum, seconds * 200)
    tone = np.sin(np.arange(int(BEEP_S * CALL_RATE)) * 2 * np.pi * BEEP_HZ / CALL_RATE) * 12000
    for t in beeps:
        at = round(t * CALL_RATE)
        pcm[at : at + len(tone)] = tone.astype("<i2")[: len(pcm) - at]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(CALL_RATE)
        w.writeframes(pcm.tobytes())


def write_screen(
    path: Path | io.BytesIO,
    seconds: float,
    flashes: Iterable[float],
    *,
    codec: str = "h264",
    bframes: bool = False,
    kbps: int = 0,
) -> None:
    """Black frames with a white one at each of ``flashes`` (screen time, s).

    One frame a second, as a screen recorder makes when little changes, plus a black
    frame ``FLASH_S`` after each flash (variable frame rate): the white frame is shown
    for ``FLASH_S`` only, so when a browser shows it tells the sync to that precision.
    ``codec`` "h264" writes an MP4 (libx264, a keyframe every ~2 s, optionally with
    B-frames so presentation and decoding order differ), "vp8" a WebM.  With ``kbps``,
    a strip of noise along the bottom gives the encoder detail to spend that bitrate
    on (a screen recording's size, without its encoding time).
    """
    flash_ticks = {round(t * TICKS) for t in flashes}
    ticks = sorted(
        {i * TICKS // FPS for i in range(int(seconds * FPS))}
        | flash_ticks
        | {t + round(FLASH_S * TICKS) for t in flash_ticks}
    )
    ticks = [t for t in ticks if t < seconds * TICKS]
    rng = np.random.default_rng(17)
    fmt = "mp4" if codec == "h264" else "webm"
    with av.open(path, "w", format=fmt) as out:
        if codec == "h264":
            s = out.add_stream("libx264", rate=TICKS)
            s.options = {
                "preset": "ultrafast",
                "g": str(3 * FPS),
                "bf": "2" if bframes else "0",
                **({"b": f"{kbps}k"} if kbps else {"crf": "40"}),
            }
        else:
            s = out.add_stream("libvpx", rate=TICKS)
            s.options = {"g": str(3 * FPS), "deadline": "realtime", "cpu-used": "8"}
            s.bit_rate = 1000 * kbps or 20_000
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.time_base = Fraction(1, TICKS)
        # one encoder thread: for 160x120 frames the encoders' default thread pools
        # (one per core) cost several times the encoding itself in hand-offs (VP8: 6x)
        s.codec_context.thread_count = 1
        img = np.zeros((H, W, 3), np.uint8)
        white = np.full((H, W, 3), 255, np.uint8)
        for i, tick in enumerate(ticks):
            img[:] = 0
            img[:, i % (W - 4) : i % (W - 4) + 4] = 96  # a grey bar: never taken for a flash
            if kbps:
                img[NOISE_ROW:] = rng.integers(0, 256, (H - NOISE_ROW, W, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(white if tick in flash_ticks else img, "rgb24")
            frame.pts = tick
            frame.time_base = Fraction(1, TICKS)
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


def beep_onsets(data: bytes, start_s: float, end_s: float) -> list[float]:
    """Output-timeline times where the decoded audio goes from silence to a beep."""
    onsets: list[float] = []
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        c.seek(max(0, int((start_s - 2) / stream.time_base)), stream=stream)
        quiet = 0
        for frame in c.decode(stream):
            if frame.pts is None:
                continue
            t0 = float(frame.pts * stream.time_base)
            if t0 > end_s:
                break
            # decoded AAC and Opus are float samples in [-1, 1]; the beep peaks at 0.37
            loud = np.flatnonzero(np.abs(frame.to_ndarray().reshape(-1)) > 0.1)
            last = -1 - quiet  # index of the last loud sample, relative to this frame
            for i in loud:
                if i - last > frame.sample_rate // 10:  # 100 ms of silence before it
                    t = t0 + i / frame.sample_rate
                    if start_s <= t <= end_s:
                        onsets.append(t)
                last = i
            quiet = frame.samples - 1 - last
    return onsets


def flash_times(data: bytes, start_s: float, end_s: float) -> list[float]:
    """Output-timeline presentation times of the white frames."""
    times: list[float] = []
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        c.seek(max(0, int((start_s - 3) / stream.time_base)), stream=stream)
        for frame in c.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if t > end_s + 3:
                break
            if start_s <= t <= end_s and frame.to_ndarray(format="gray").mean() > 128:
                times.append(t)
    return times
