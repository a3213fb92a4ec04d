"""The muxer: one playable file from a call recording and its screen recording.

The rule (vendor document, "For Call Recordings"): both inputs encrypted, or
neither.  Encrypted inputs are read through :class:`~recstream.reader.DecryptingFile`
(random access, nothing decrypted touches the disk).  The output is a seekable
WebM, with its duration and a seek index (Cues) that the muxer writes into space
reserved at the front when it ends; an encrypted output goes through a
:class:`_SealingSink` that keeps only those first segments as changeable plaintext
in memory and seals everything after them as it comes, placing each segment
where it belongs (segments are independent), so memory stays bounded by the
header and the media library's buffers, not by the recording's length.

Media work is PyAV (FFmpeg): the video stream is copied without re-encoding;
the call audio is decoded, resampled to 48 kHz and encoded as Opus, so the
output (WebM: VP8/VP9 + Opus) plays in Chromium's own ``<video>`` element.
Timing: the output timeline starts at the earlier of the two recordings'
start times (the envelope headers' ``created`` for encrypted inputs), and each
stream is placed at its own start, so nothing of either recording is cut.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av

from recstream.durable import atomic_output, write_all
from recstream.envelope import KeyRing, RandomAccessEncryptor, Recipient, Signer, new_metadata
from recstream.errors import MixedEncryptionError, MuxError
from recstream.format import MAGIC, SEGMENT_SIZE, Buffer, MediaKind
from recstream.reader import DecryptingFile, FileSource, SegmentReader

__all__ = ["MixedEncryptionError", "MuxError", "MuxInput", "MuxResult", "mux_files"]

AUDIO_RATE = 48_000  # Opus's native rate
OPUS_BITRATE = 32_000  # speech
# Room at the front for the Cues: a video cue point is ~25 bytes, so 256 KiB indexes
# ~10,000 keyframes (over 5 hours at a keyframe every 2 s). Should a recording need more,
# FFmpeg writes the Cues after the last cluster instead, still seekable for players.
INDEX_RESERVE = 256 * 1024
# The plaintext kept changeable until the end: the WebM header and the reserved index.
HEAD_SEGMENTS = (INDEX_RESERVE + 64 * 1024) // SEGMENT_SIZE


@dataclass(frozen=True, slots=True)
class MuxInput:
    """One side of the pair, opened: a seekable plaintext file object and its facts."""

    path: Path
    file: IO[bytes]
    encrypted: bool
    start_ms: int | None
    tenant: str | None
    recording_id: str | None


@dataclass(frozen=True, slots=True)
class MuxResult:
    path: Path
    encrypted: bool
    cert_ids: tuple[str, ...]
    audio_offset_s: float
    video_offset_s: float
    bytes_written: int


def is_envelope(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def open_input(path: Path, keys: KeyRing | None, fd_list: list[int]) -> MuxInput:
    if not is_envelope(path):
        return MuxInput(path, path.open("rb"), False, None, None, None)
    if keys is None:
        msg = f"{path} is encrypted: give a keystore or the private key to decrypt it"
        raise MuxError(msg)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    fd_list.append(fd)
    reader = SegmentReader(FileSource(fd), keys)
    md = reader.header.metadata
    buffered = io.BufferedReader(DecryptingFile(reader), buffer_size=64 * 1024)
    return MuxInput(path, buffered, True, md.created_ms, md.tenant, md.recording_id)


def check_pair(voice: MuxInput, screen: MuxInput) -> None:
    """Refuse mixed encryption and mismatched recordings, before anything is written."""
    if voice.encrypted != screen.encrypted:
        plain, kind = (voice, "call") if not voice.encrypted else (screen, "screen")
        other = screen if plain is voice else voice
        msg = (
            f"cannot mux: the {kind} recording {plain.path} is not encrypted but "
            f"{other.path} is. Encrypted and unencrypted recordings are never muxed together"
        )
        if kind == "screen":
            msg += (
                f"; provision a screen-recording certificate for tenant "
                f"{other.tenant!r} so that screen recordings are encrypted too"
            )
        else:
            msg += "; provision a voice-recording certificate for this tenant"
        raise MixedEncryptionError(msg)
    if voice.encrypted:
        if voice.tenant != screen.tenant:
            msg = (
                f"cannot mux recordings of different tenants: {voice.tenant!r} (call) and "
                f"{screen.tenant!r} (screen)"
            )
            raise MuxError(msg)
        if voice.recording_id != screen.recording_id:
            msg = (
                f"cannot mux recordings of different interactions: call {voice.recording_id!r}"
                f" and screen {screen.recording_id!r}"
            )
            raise MuxError(msg)


class _SealingSink(io.RawIOBase):
    """A seekable file for the media library that encrypts what it is given.

    The WebM muxer writes its header, then reserved space for the seek index
    (Cues), then clusters in order; at the end it goes back to write the duration,
    the Cues and the sizes into the first bytes.  So the first ``head_segments``
    segments stay here as plaintext in memory, open to changes, and everything
    after them is sealed a segment at a time (one segment of slack behind the write
    position) and written at its place; at :meth:`finish` the rest, then the head,
    are sealed into their places (segments are independent, FORMAT.md §6).
    Memory: the head plus two segments, whatever the recording's length; the disk
    only ever sees ciphertext (and holes, until the head is written).
    """

    def __init__(self, dst: IO[bytes], sealer: RandomAccessEncryptor, head_segments: int) -> None:
        super().__init__()
        self._dst = dst
        self._enc = sealer
        self._head_cap = head_segments * SEGMENT_SIZE
        self._head = bytearray()  # plaintext [0, _head_cap), changeable until finish
        self._tail = bytearray()  # plaintext from segment _next on, not yet sealed
        self._next = head_segments
        self._pos = 0
        self.written = 0  # plaintext size
        write_all(dst, sealer.head)  # header and body prefix: fixed from the start

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.written}[whence]
        if not 0 <= base + offset <= self.written:
            msg = f"the muxer sought to {base + offset}, outside the {self.written} bytes written"
            raise MuxError(msg)
        self._pos = base + offset
        return self._pos

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n, pos = len(view), self._pos
        if pos < self._head_cap:
            take = min(n, self._head_cap - pos)
            self._head[pos : pos + take] = view[:take]
            view, pos = view[take:], pos + take
        if view:
            at = pos - self._next * SEGMENT_SIZE
            if at < 0:
                msg = (
                    f"the muxer went back to byte {pos}, which is already encrypted; "
                    "nothing was written"
                )
                raise MuxError(msg)
            self._tail[at : at + len(view)] = view
            while len(self._tail) >= 2 * SEGMENT_SIZE:
                self._emit(self._next, self._tail[:SEGMENT_SIZE])
                del self._tail[:SEGMENT_SIZE]
                self._next += 1
        self._pos += n
        self.written = max(self.written, self._pos)
        return n

    def _emit(self, index: int, plaintext: Buffer) -> None:
        self._dst.seek(self._enc.offset(index))
        write_all(self._dst, self._enc.seal(index, plaintext))

    def finish(self) -> None:
        """Seal the tail, the head into its reserved place, and the final segment."""
        pieces = [(0, self._head)]
        if self.written > self._head_cap:
            pieces.append((self._next, self._tail))
        for base, buf in pieces:
            for i in range(len(buf) // SEGMENT_SIZE):
                self._emit(base + i, buf[i * SEGMENT_SIZE : (i + 1) * SEGMENT_SIZE])
        base, last = pieces[-1]
        full = len(last) // SEGMENT_SIZE
        self._emit(base + full, last[full * SEGMENT_SIZE :])
        if self._enc.signer is not None:  # FORMAT.md §10: the trailer after the final segment
            self._dst.seek(self._enc.trailer_offset())
            write_all(self._dst, self._enc.trailer())
        self._dst.seek(0, io.SEEK_END)


def _video_packets(container: Any, shift_s: float) -> Iterator[tuple[float, Any]]:
    stream = container.streams.video[0]
    shift = round(shift_s / stream.time_base)
    for packet in container.demux(stream):
        if packet.dts is None:
            continue
        packet.pts = (packet.pts or packet.dts) + shift
        packet.dts += shift
        yield float(packet.dts * stream.time_base), packet


def _audio_packets(container: Any, out_stream: Any, shift_s: float) -> Iterator[tuple[float, Any]]:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
    shift = round(shift_s * AUDIO_RATE)
    samples = 0

    def encode(frame: Any) -> Iterator[tuple[float, Any]]:
        for packet in out_stream.encode(frame):
            if packet.pts is not None:
                packet.pts += shift
                packet.dts = packet.pts
            yield float((packet.pts or 0) / AUDIO_RATE), packet

    for frame in container.decode(audio=0):
        for out in resampler.resample(frame):
            out.pts = samples
            out.time_base = Fraction(1, AUDIO_RATE)
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


def mux_streams(voice: MuxInput, screen: MuxInput, sink: IO[bytes]) -> tuple[float, float]:
    """Mux the opened inputs into the seekable ``sink``; return the offsets."""
    starts = (voice.start_ms, screen.start_ms)
    if None in starts:
        audio_off = video_off = 0.0
    else:
        origin = min(voice.start_ms or 0, screen.start_ms or 0)
        audio_off = ((voice.start_ms or 0) - origin) / 1000
        video_off = ((screen.start_ms or 0) - origin) / 1000
    try:
        in_a = av.open(voice.file, "r")
        in_v = av.open(screen.file, "r")
    except av.FFmpegError as exc:
        # FFmpeg's text, not its "[Errno -1094995529]" repr
        msg = f"cannot read the media: {getattr(exc, 'strerror', None) or exc}"
        raise MuxError(msg) from exc
    if not in_a.streams.audio or not in_v.streams.video:
        msg = "the call recording needs an audio stream and the screen recording a video stream"
        raise MuxError(msg)
    # A seekable output, so the muxer writes the duration and the Cues (seek index) into
    # the header's reserved space at the end: players show the length and seek by range.
    options = {"reserve_index_space": str(INDEX_RESERVE)}
    with in_a, in_v, av.open(sink, "w", format="webm", options=options) as out:
        vstream = out.add_stream_from_template(in_v.streams.video[0])
        astream = out.add_stream("libopus", rate=AUDIO_RATE, layout="mono")
        astream.bit_rate = OPUS_BITRATE
        for packet in _interleave(
            _video_packets(in_v, video_off), _audio_packets(in_a, astream, audio_off)
        ):
            packet.stream = vstream if packet.stream.type == "video" else astream
            out.mux(packet)
    return audio_off, video_off


def mux_files(
    voice_path: str | os.PathLike[str],
    screen_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    keys: KeyRing | None = None,
    recipients: Sequence[Recipient] | Callable[[str], Sequence[Recipient]] = (),
    tenant: str = "default",
    recording_id: str | None = None,
    signer: Signer | None = None,
) -> MuxResult:
    """Mux a call and a screen recording into ``out_path`` (WebM, encrypted if they were).

    Encrypted inputs need ``keys`` to read them and ``recipients`` for the
    output (the tenant's active screen certificate, or certificates given); a
    callable gets the inputs' tenant.  Unencrypted inputs with recipients make an
    encrypted output too (for ``tenant`` and ``recording_id``, a new UUID if None):
    whoever names a certificate never gets plaintext by surprise.
    Nothing is written unless the pair is valid; on any failure the output
    does not exist.  With a ``signer`` an encrypted output is signed (FORMAT.md §10);
    the segment digests sealed ahead of the reserved head wait in memory until it
    is sealed (32 bytes per 16 KiB segment).

    Raises:
        MixedEncryptionError, MuxError, and the decryption errors of the inputs.
    """
    fds: list[int] = []
    voice = screen = None
    try:
        voice = open_input(Path(voice_path), keys, fds)
        screen = open_input(Path(screen_path), keys, fds)
        check_pair(voice, screen)
        encryptor = None
        if callable(recipients):
            recipients = recipients(voice.tenant or tenant)
        if voice.encrypted or recipients:
            if not recipients:
                msg = "the output of an encrypted pair must be encrypted: give its certificate(s)"
                raise MuxError(msg)
            encryptor = RandomAccessEncryptor(
                recipients,
                new_metadata(
                    recording_id=voice.recording_id or recording_id or _uuid4(),
                    tenant=voice.tenant or tenant,
                    media_kind=MediaKind.SCREEN,
                    media_type="video/webm",
                    # the output's timeline starts at the earlier recording's start
                    created_ms=min(voice.start_ms or 0, screen.start_ms or 0) or None,
                ),
                signer=signer,
            )
        if signer is not None and encryptor is None:
            msg = "only an encrypted recording can be signed: give the output's certificate(s)"
            raise MuxError(msg)
        with atomic_output(out_path) as dst:
            if encryptor is None:
                audio_off, video_off = mux_streams(voice, screen, dst)
                written = dst.seek(0, io.SEEK_END)
            else:
                sink = _SealingSink(dst, encryptor, HEAD_SEGMENTS)
                audio_off, video_off = mux_streams(voice, screen, sink)  # type: ignore[arg-type]
                sink.finish()
                written = sink.written
        return MuxResult(
            Path(out_path),
            encryptor is not None,
            encryptor.cert_ids if encryptor else (),
            audio_off,
            video_off,
            written,
        )
    finally:
        for side in (voice, screen):
            if side is not None:
                side.file.close()
        for fd in fds:
            os.close(fd)


def _uuid4() -> str:
    import uuid

    return str(uuid.uuid4())
