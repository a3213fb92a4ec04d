"""The muxer: one playable file from a call recording and its screen recording.

The rule (vendor document, "For Call Recordings"): both inputs encrypted, or
neither.  Encrypted inputs are read through :class:`~recstream.reader.DecryptingFile`
(random access, nothing decrypted touches the disk).  The output is seekable: a
WebM with its duration and seek index (Cues), or an MP4 with its ``moov`` index,
written by the media library into space reserved at the front when it ends; an
encrypted output goes through a :class:`_SealingSink` that keeps only those first
segments as changeable plaintext in memory and seals everything after them as it
comes, placing each segment where it belongs (segments are independent), so memory
stays bounded by the index and the media library's buffers, not by the media's size.

Media work is PyAV (FFmpeg), in :mod:`recstream.muxmedia`: the video stream is
copied without re-encoding (VP8/VP9/AV1 into WebM with Opus audio, H.264 into MP4
with AAC audio), so the output plays in a browser's own ``<video>`` element.
Timing: the output timeline starts at the earlier of the two recordings'
start times (the envelope headers' ``created`` for encrypted inputs), and each
stream is placed at its own start, so nothing of either recording is cut.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from recstream.durable import atomic_output, write_all
from recstream.envelope import KeyRing, RandomAccessEncryptor, Recipient, Signer, new_metadata
from recstream.errors import MixedEncryptionError, MuxError
from recstream.format import MAGIC, SEGMENT_SIZE, Buffer, MediaKind
from recstream.muxmedia import MP4, WEBM, MediaPair, OutputFormat
from recstream.reader import DecryptingFile, FileSource, SegmentReader

__all__ = ["MixedEncryptionError", "MuxError", "MuxInput", "MuxResult", "mux_files"]

# The plaintext kept changeable until the end: the container's header and the reserved
# index, plus this much for what the muxer writes around them (EBML header and
# SeekHead; ftyp and the mdat header).
HEAD_SLACK = 64 * 1024


@dataclass(frozen=True, slots=True)
class MuxInput:
    """One side of the pair, opened: a seekable plaintext file object and its facts."""

    path: Path
    file: IO[bytes]
    encrypted: bool
    start_ms: int | None
    tenant: str | None
    recording_id: str | None
    media_type: str | None  # the header's (attacker-written: only compared with the content)


@dataclass(frozen=True, slots=True)
class MuxResult:
    path: Path
    encrypted: bool
    cert_ids: tuple[str, ...]
    audio_offset_s: float
    video_offset_s: float
    bytes_written: int
    format: OutputFormat = WEBM
    warnings: tuple[str, ...] = ()  # things the caller should tell the user


def is_envelope(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def open_input(path: Path, keys: KeyRing | None, fd_list: list[int]) -> MuxInput:
    if not is_envelope(path):
        return MuxInput(path, path.open("rb"), False, None, None, None, None)
    if keys is None:
        msg = f"{path} is encrypted: give a keystore or the private key to decrypt it"
        raise MuxError(msg)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    fd_list.append(fd)
    reader = SegmentReader(FileSource(fd), keys)
    md = reader.header.metadata
    buffered = io.BufferedReader(DecryptingFile(reader), buffer_size=64 * 1024)
    return MuxInput(path, buffered, True, md.created_ms, md.tenant, md.recording_id, md.media_type)


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
    the Cues and the sizes into the first bytes.  The MP4 muxer writes ``ftyp``,
    seeks past the space it reserves for the ``moov`` (a hole: zeros, as in a
    file), then the ``mdat``; at the end it goes back to write the ``mdat`` size and
    the ``moov`` into the hole.  So the first ``head_segments``
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
        if base + offset < 0:
            msg = f"the muxer sought to {base + offset}, before the start of the file"
            raise MuxError(msg)
        self._pos = base + offset  # past the end: a hole, filled by the next write
        return self._pos

    def write(self, data: Any) -> int:
        if self._pos > self.written:  # a hole left by a seek past the end reads as zeros
            pos, self._pos = self._pos, self.written
            while self._pos < pos:
                self._write(bytes(min(pos - self._pos, SEGMENT_SIZE)))
        return self._write(data)

    def _write(self, data: Any) -> int:
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


def timeline_offsets(voice: MuxInput, screen: MuxInput) -> tuple[float, float]:
    """Where the call and the screen recording start on the output's timeline (s).

    The timeline starts at the earlier of the two start times; without both start
    times (unencrypted inputs) both start at 0.
    """
    if voice.start_ms is None or screen.start_ms is None:
        return 0.0, 0.0
    origin = min(voice.start_ms, screen.start_ms)
    return (voice.start_ms - origin) / 1000, (screen.start_ms - origin) / 1000


def _check_suffix(out_path: Path, fmt: OutputFormat) -> None:
    """A plain output named for the other container would be mislabelled: refuse it."""
    suffix = out_path.suffix.lower()
    known = {s: f for f in (WEBM, MP4) for s in f.suffixes}
    if suffix in known and known[suffix] is not fmt:
        msg = (
            f"the output is {fmt.label} (the screen recording's video is copied, not "
            f"re-encoded), but it is named {out_path.name}: name it {fmt.suffixes[0]}"
        )
        raise MuxError(msg)


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
    """Mux a call and a screen recording into ``out_path``, encrypted if they were.

    The output is a WebM (VP8/VP9/AV1 screen video, Opus audio) or an MP4 (H.264
    screen video, AAC audio), whichever the screen recording's codec makes; both
    carry their index at the front.  Encrypted inputs need ``keys`` to read them and
    ``recipients`` for the output (the tenant's active screen certificate, or
    certificates given); a callable gets the inputs' tenant.  Unencrypted inputs
    with recipients make an encrypted output too (for ``tenant`` and
    ``recording_id``, a new UUID if None): whoever names a certificate never gets
    plaintext by surprise.  Nothing is written unless the pair is valid; on any
    failure the output does not exist.  With a ``signer`` an encrypted output is
    signed (FORMAT.md §10); the segment digests sealed ahead of the reserved head
    wait in memory until it is sealed (32 bytes per 16 KiB segment).

    Raises:
        MixedEncryptionError, MuxError (also for an unsupported codec or container),
        and the decryption errors of the inputs.
    """
    fds: list[int] = []
    voice = screen = None
    try:
        voice = open_input(Path(voice_path), keys, fds)
        screen = open_input(Path(screen_path), keys, fds)
        check_pair(voice, screen)
        with MediaPair(voice.file, screen.file, screen.media_type) as media:
            encryptor = _output_encryptor(
                voice,
                screen,
                media.format,
                recipients=recipients,
                tenant=tenant,
                recording_id=recording_id,
                signer=signer,
            )
            if encryptor is None:
                _check_suffix(Path(out_path), media.format)
            audio_off, video_off = timeline_offsets(voice, screen)
            with atomic_output(out_path) as dst:
                if encryptor is None:
                    media.mux_into(dst, audio_off, video_off)
                    written = dst.seek(0, io.SEEK_END)
                else:
                    head = -(-(media.index_reserve + HEAD_SLACK) // SEGMENT_SIZE)
                    sink = _SealingSink(dst, encryptor, head)
                    media.mux_into(sink, audio_off, video_off)  # type: ignore[arg-type]
                    sink.finish()
                    written = sink.written
        return MuxResult(
            Path(out_path),
            encryptor is not None,
            encryptor.cert_ids if encryptor else (),
            audio_off,
            video_off,
            written,
            media.format,
            media.warnings,
        )
    finally:
        for side in (voice, screen):
            if side is not None:
                side.file.close()
        for fd in fds:
            os.close(fd)


def _output_encryptor(
    voice: MuxInput,
    screen: MuxInput,
    fmt: OutputFormat,
    *,
    recipients: Sequence[Recipient] | Callable[[str], Sequence[Recipient]],
    tenant: str,
    recording_id: str | None,
    signer: Signer | None = None,
) -> RandomAccessEncryptor | None:
    """The output's encryptor, or None for a plain output (neither input encrypted)."""
    if callable(recipients):
        recipients = recipients(voice.tenant or tenant)
    if not voice.encrypted and not recipients:
        if signer is not None:
            msg = "only an encrypted recording can be signed: give the output's certificate(s)"
            raise MuxError(msg)
        return None
    if not recipients:
        msg = "the output of an encrypted pair must be encrypted: give its certificate(s)"
        raise MuxError(msg)
    return RandomAccessEncryptor(
        recipients,
        new_metadata(
            recording_id=voice.recording_id or recording_id or _uuid4(),
            tenant=voice.tenant or tenant,
            media_kind=MediaKind.SCREEN,
            media_type=fmt.media_type,
            # the output's timeline starts at the earlier recording's start
            created_ms=min(voice.start_ms or 0, screen.start_ms or 0) or None,
        ),
        signer=signer,
    )


def _uuid4() -> str:
    import uuid

    return str(uuid.uuid4())
