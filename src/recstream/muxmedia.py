"""The media side of muxing: which container a pair becomes, and the packets that go in.

PyAV (FFmpeg) only: no files, no keys.  The screen recording's video is copied, never
re-encoded, so its codec decides the output:

* H.264 (in MP4/MOV or Matroska) becomes an **MP4** with the call audio as AAC-LC,
  which every browser plays.  The ``moov`` (the MP4's index: durations, sample sizes
  and offsets, keyframes) is written *in front of* the media: FFmpeg's mov muxer
  reserves ``moov_size`` bytes after ``ftyp`` and writes the ``moov`` into them at
  the end (the rest becomes a ``free`` box), so a browser reads the index in the
  first request and seeks by range, without a second pass over the output.
* VP8, VP9 or AV1 (in WebM/Matroska) becomes a **WebM** with the call audio as Opus;
  the WebM muxer reserves space for the Cues and the duration the same way.

Anything else is refused with a :class:`~recstream.errors.MuxError` that names the
codec and the container.  Timing: each stream is shifted by its offset on the common
timeline (the caller works that out from the recordings' start times).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any

import av

from recstream.errors import MuxError

__all__ = ["MP4", "WEBM", "MediaPair", "OutputFormat"]


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """One output container: FFmpeg's muxer, its media type and the audio it carries."""

    name: str  # FFmpeg muxer
    label: str
    media_type: str
    audio_codec: str
    sample_format: str  # what the audio encoder takes
    audio_bit_rate: int
    suffixes: tuple[str, ...]
    audio_options: tuple[tuple[str, str], ...] = ()


WEBM = OutputFormat("webm", "WebM", "video/webm", "libopus", "s16", 32_000, (".webm",))
# AAC-LC: the audio codec every browser's MP4 support includes (Opus-in-MP4 is not in Safari)
# aac_coder=fast: FFmpeg's default two-loop search costs 2.3x the CPU (an hour of 8 kHz
# speech: 16 s against 7 s here), for a difference telephone audio does not carry
MP4 = OutputFormat(
    "mp4", "MP4", "video/mp4", "aac", "fltp", 32_000, (".mp4", ".m4v"), (("aac_coder", "fast"),)
)

OPUS_RATE = 48_000  # Opus's native rate
# AAC keeps the call's own rate when it is one AAC has (8 kHz telephony stays 8 kHz: a
# third of the frames of 24 kHz, so a smaller index), else 48 kHz.
AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
AAC_FRAME_SAMPLES = 1024  # ISO/IEC 14496-3: one AAC-LC frame
# Room at the front for the WebM Cues: a video cue point is ~25 bytes, so 256 KiB indexes
# ~10,000 keyframes (over 5 hours at a keyframe every 2 s). Should a recording need more,
# FFmpeg writes the Cues after the last cluster instead, still seekable for players.
WEBM_INDEX_RESERVE = 256 * 1024
# Room for the MP4 moov (ISO/IEC 14496-12 §8.6-8.7), a bound from the sample counts:
# every sample has an stsz entry (4); a video sample at worst its own stts and ctts
# entries (8 + 8) and an stss entry (4); audio has one stts duration, no ctts, no stss.
# FFmpeg's mov muxer starts a chunk where the other track's samples interrupt a run, so
# with the tracks interleaved there are at most 2 * min(video, audio) + 2 chunks, each
# at worst an stsc entry (12) and a co64 offset (8). Plus the fixed boxes (mvhd, tkhd,
# mdhd, hdlr, stsd with avcC, edts, udta) and a margin: 64 KiB.
MOOV_FIXED = 64 * 1024
MOOV_PER_VIDEO_SAMPLE = 4 + 8 + 8 + 4
MOOV_PER_AUDIO_SAMPLE = 4
MOOV_PER_CHUNK = 12 + 8

# FFmpeg demuxer names of the containers a screen recording may come in
_CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV", "matroska,webm": "WebM/Matroska"}
# the header's media type, where it names a container, must agree with what is inside
_MEDIA_TYPES = {
    "video/mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    "video/quicktime": "mov,mp4,m4a,3gp,3g2,mj2",
    "video/webm": "matroska,webm",
    "video/x-matroska": "matroska,webm",
}
_OUTPUT_OF_CODEC = {"h264": MP4, "vp8": WEBM, "vp9": WEBM, "av1": WEBM}


def _open(file: IO[bytes], what: str) -> Any:
    try:
        return av.open(file, "r")
    except av.FFmpegError as exc:
        # FFmpeg's text, not its "[Errno -1094995529]" repr
        why = getattr(exc, "strerror", None) or exc
        msg = f"cannot read the media of the {what} recording: {why}"
        raise MuxError(msg) from exc


def _output_for(container: Any, media_type: str | None) -> tuple[OutputFormat, str | None]:
    """The output the screen recording's container and video codec allow (or why none).

    The content decides, not the header's media type (attacker-written, and the live
    hook labels every screen recording ``video/webm`` unless told otherwise); a media
    type that names the other container comes back as a warning.
    """
    kind = _CONTAINERS.get(container.format.name)
    codec = container.streams.video[0].codec_context.codec.canonical_name
    if kind is None:
        msg = (
            f"the screen recording is a {container.format.long_name} ({container.format.name})"
            " file: recstream muxes screen recordings in MP4/MOV (H.264) or WebM/Matroska "
            "(VP8, VP9, AV1)"
        )
        raise MuxError(msg)
    declared = (media_type or "").split(";")[0].strip().lower()
    warning = None
    if declared in _MEDIA_TYPES and _MEDIA_TYPES[declared] != container.format.name:
        warning = (
            f"the screen recording's header says {declared} but the content is {kind}; "
            "muxed as what the content is"
        )
    out = _OUTPUT_OF_CODEC.get(codec)
    if out is None:
        msg = (
            f"the screen recording's video is {codec} in {kind}: recstream copies H.264 "
            "(into MP4) or VP8, VP9, AV1 (into WebM) without re-encoding; re-encode the "
            "screen recording to one of those"
        )
        raise MuxError(msg)
    return out, warning


class MediaPair:
    """The call's audio and the screen's video, opened and checked, ready to mux.

    Opening reads the containers' headers only (and, for an H.264 screen recording
    in Matroska, which does not record its frame count, one pass over its packets to
    size the MP4 index).  Use as a context manager: it closes both containers, not
    the file objects under them.

    Raises:
        MuxError: unreadable media, a missing stream, an unsupported codec or
            container.
    """

    def __init__(self, voice: IO[bytes], screen: IO[bytes], screen_media_type: str | None) -> None:
        self._screen_file = screen
        self._a = _open(voice, "call")
        try:
            self._v = _open(screen, "screen")
        except BaseException:
            self._a.close()
            raise
        try:
            if not self._a.streams.audio:
                msg = "the call recording has no audio stream"
                raise MuxError(msg)
            if not self._v.streams.video:
                msg = "the screen recording has no video stream"
                raise MuxError(msg)
            self.format, warning = _output_for(self._v, screen_media_type)
            self.warnings = (warning,) if warning else ()
            rate = self._a.streams.audio[0].rate
            if self.format is WEBM:
                self.audio_rate = OPUS_RATE
            else:
                self.audio_rate = rate if rate in AAC_RATES else 48_000
            self.index_reserve = self._index_reserve()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> MediaPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._a.close()
        self._v.close()

    def _index_reserve(self) -> int:
        """Bytes to reserve at the front for the index (Cues, or the moov)."""
        if self.format is WEBM:
            return WEBM_INDEX_RESERVE
        video = self._v.streams.video[0]
        frames = video.frames or self._count_video_packets()
        seconds = _duration_s(self._a)
        audio_frames = math.ceil(seconds * self.audio_rate / AAC_FRAME_SAMPLES) + 16
        chunks = 2 * min(frames, audio_frames) + 2
        return (
            MOOV_FIXED
            + frames * MOOV_PER_VIDEO_SAMPLE
            + audio_frames * MOOV_PER_AUDIO_SAMPLE
            + chunks * MOOV_PER_CHUNK
        )

    def _count_video_packets(self) -> int:
        n = sum(1 for p in self._v.demux(video=0) if p.size)
        self._v.close()  # and start again from the top for the mux
        self._screen_file.seek(0)
        self._v = _open(self._screen_file, "screen")
        return n

    def mux_into(self, sink: IO[bytes], audio_offset_s: float, video_offset_s: float) -> None:
        """Write the output container into ``sink`` (seekable; it is gone back into).

        Raises:
            MuxError: FFmpeg could not write the output (the text says why).
        """
        fmt = self.format
        if fmt is WEBM:
            options = {"reserve_index_space": str(self.index_reserve)}
        else:
            options = {"moov_size": str(self.index_reserve)}
        try:
            with av.open(sink, "w", format=fmt.name, options=options) as out:
                vstream = out.add_stream_from_template(self._v.streams.video[0])
                astream: Any = out.add_stream(fmt.audio_codec, rate=self.audio_rate, layout="mono")
                astream.bit_rate = fmt.audio_bit_rate
                astream.options = dict(fmt.audio_options)
                for packet in _interleave(
                    _video_packets(self._v, video_offset_s),
                    _audio_packets(self._a, astream, fmt.sample_format, audio_offset_s),
                ):
                    packet.stream = vstream if packet.stream.type == "video" else astream
                    out.mux(packet)
        except av.FFmpegError as exc:
            msg = f"cannot write the {fmt.label}: {getattr(exc, 'strerror', None) or exc}"
            raise MuxError(msg) from exc


def _duration_s(container: Any) -> float:
    if container.duration is not None:
        return float(container.duration) / 1e6
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    # no duration recorded: add up the packets (no decoding)
    total = Fraction(0)
    for p in container.demux(stream):
        if p.duration and p.time_base:
            total += p.duration * p.time_base
    container.seek(0)
    return float(total)


def _video_packets(container: Any, shift_s: float) -> Iterator[tuple[float, Any]]:
    stream = container.streams.video[0]
    shift = round(shift_s / stream.time_base)
    for packet in container.demux(stream):
        if packet.dts is None:
            continue
        packet.pts = (packet.pts if packet.pts is not None else packet.dts) + shift
        packet.dts += shift
        yield float(packet.dts * stream.time_base), packet


def _audio_packets(
    container: Any, out_stream: Any, sample_format: str, shift_s: float
) -> Iterator[tuple[float, Any]]:
    rate = out_stream.rate
    resampler = av.AudioResampler(format=sample_format, layout="mono", rate=rate)
    shift = round(shift_s * rate)
    samples = 0

    def encode(frame: Any) -> Iterator[tuple[float, Any]]:
        for packet in out_stream.encode(frame):
            if packet.pts is not None:
                packet.pts += shift
                packet.dts = packet.pts
            yield float((packet.pts or 0) / rate), packet

    for frame in container.decode(audio=0):
        for out in resampler.resample(frame):
            out.pts = samples
            out.time_base = Fraction(1, rate)
            samples += out.samples
            yield from encode(out)
    for out in resampler.resample(None):
        out.pts = samples
        samples += out.samples
        yield from encode(out)
    yield from encode(None)


def _interleave(*sources: Iterator[tuple[float, Any]]) -> Iterator[Any]:
    """Merge packet streams by time, keeping one look-ahead packet per stream."""
    heads: list[tuple[float, Any] | None] = [next(s, None) for s in sources]
    while any(h is not None for h in heads):
        i = min((i for i, h in enumerate(heads) if h is not None), key=lambda i: heads[i][0])  # type: ignore[index]
        yield heads[i][1]  # type: ignore[index]
        heads[i] = next(sources[i], None)
