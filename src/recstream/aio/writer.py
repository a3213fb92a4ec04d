"""The async recording writer: one live recording, encrypted as it arrives.

Media goes in as chunks of any size.  Chunks gather in a plaintext buffer
until a whole 16 KiB segment is there; then the segment is encrypted at once
(a few microseconds) and its ciphertext queued for the shared
:class:`~recstream.aio.flusher.Flusher`.  At most one segment of plaintext is
in memory per recording, and a complete segment reaches the disk within about
one flush interval (docs/FORMAT.md §6.3: the format has no partial segments).

Durability: the recording is written to ``<final>.incomplete`` (created
exclusively, owner-only) with its header first; :meth:`RecordingWriter.close`
writes the final segment, fsyncs, renames to the final name (never over an
existing file) and fsyncs the directory (:func:`recstream.durable.commit_rename`).
The writer holds an exclusive advisory lock (``flock``) on its file from creation
until after that rename, so batch jobs and re-wraps leave it alone.  A crash
leaves the ``.incomplete`` file, which ``recstream recover`` turns into the
authenticated prefix; it never leaves a file under the final name that is not
complete.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from recstream import durable
from recstream.aio.flusher import Flusher
from recstream.envelope import EnvelopeEncryptor, Recipient, Signer
from recstream.errors import PipelineError, PipelineOverflowError, StreamStateError
from recstream.format import SEGMENT_SIZE, SEGMENT_WIRE_SIZE, Buffer, Metadata

__all__ = ["INCOMPLETE_SUFFIX", "RecordingWriter", "WriterStatistics"]

INCOMPLETE_SUFFIX = ".incomplete"
# Ciphertext a recording may hold in memory before write_nowait() refuses and
# write() waits: 64 segments is ~2 minutes of G.711, ~2 s of 4 Mbit/s video.
DEFAULT_MAX_BUFFERED = 64 * SEGMENT_WIRE_SIZE


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    bytes_in: int
    segments: int
    bytes_written: int
    buffered: int
    closed: bool
    failed: bool


class RecordingWriter:
    """One live recording.  Open with :meth:`open`; use as ``async with``.

    ``write_nowait`` never blocks (for media-server callbacks); ``write``
    waits for room when the disk is behind.  Who closes what: :meth:`close`
    closes the file it opened; the :class:`Flusher` is the caller's.
    """

    # Slots (issue 20): with thousands of recordings every frame lands on a writer
    # that is cold in the cache, and slots keep its fields in the object itself
    # instead of a separate ``__dict__``.  CPython lays slots out in sorted order,
    # so the three a frame reads (:meth:`write_nowait`, :meth:`RecordingHook.media`)
    # are named to sort first and sit together: ``_accepting``, ``_at`` (bytes in
    # the partial segment) and ``_buf`` (a view of its buffer).
    __slots__ = (
        "_accepting",
        "_at",
        "_buf",
        "_buffered",
        "_cipher",
        "_closed",
        "_enc",
        "_error",
        "_flusher",
        "_in_flight",
        "_max_buffered",
        "_room",
        "_sealed_in",
        "_settled",
        "_times",
        "bytes_written",
        "cert_ids",
        "fd",
        "metadata",
        "path",
        "synchronous",
        "temp_path",
    )

    def __init__(
        self, path: Path, fd: int, encryptor: EnvelopeEncryptor, flusher: Flusher, max_buffered: int
    ) -> None:
        self.path = path
        self.temp_path = path.with_name(path.name + INCOMPLETE_SUFFIX)
        self.fd = fd
        # Opened O_DSYNC when the flusher syncs: each write is then durable by itself,
        # one syscall (one GIL round trip on the flusher's thread) instead of two.
        self.synchronous = flusher.sync
        self.metadata = encryptor.metadata
        self.cert_ids = encryptor.cert_ids
        self._enc = encryptor
        self._flusher = flusher
        self._max_buffered = max_buffered
        # The partial segment: a fixed buffer each chunk is copied into once (no
        # per-chunk objects, no regrowth), and a view of it that is never resized.
        # A memoryview, not the bytearray: slice assignment into a bytearray first
        # copies any other buffer type into a temporary bytearray (two copies).
        self._buf = memoryview(bytearray(SEGMENT_SIZE))
        self._at = 0
        # Sealed segments waiting for the flusher, one buffer each (written with one
        # writev per file), and their total size.
        self._cipher: list[bytearray] = []
        self._buffered = 0
        # The one flag write_nowait() reads per chunk: open, not failed, and room in
        # the buffer.  Kept up to date where any of the three changes (issue 20).
        self._accepting = True
        self._sealed_in = 0  # plaintext bytes already sealed (bytes_in without _fill)
        self._times: list[float] = []
        self._room = asyncio.Event()
        self._room.set()
        self._in_flight = 0  # batches taken by the flusher and not yet written
        self._settled = asyncio.Event()
        self._settled.set()
        self._error: BaseException | None = None
        self._closed = False
        self.bytes_written = 0

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        recipients: Sequence[Recipient],
        metadata: Metadata,
        flusher: Flusher,
        *,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        signer: Signer | None = None,
    ) -> RecordingWriter:
        """Create ``<path>.incomplete`` and write the header.

        With a ``signer`` the recording is signed (FORMAT.md §10): :meth:`close`
        writes the signature trailer after the final segment; an interrupted
        recording has none (its recovered prefix is unsigned, §10.4).

        Raises:
            FileExistsError: the final or the temporary file already exists.
            OSError: the file cannot be created (permissions, disk full).
        """
        final = Path(path)
        if final.exists():
            msg = "recording already exists"
            raise FileExistsError(17, msg, str(final))
        enc = EnvelopeEncryptor(recipients, metadata, signer=signer)
        header = enc.take_header()
        temp = final.with_name(final.name + INCOMPLETE_SUFFIX)
        fd = await flusher.run_blocking(_create, temp, header, flusher.sync)
        assert isinstance(fd, int)
        return cls(final, fd, enc, flusher, max_buffered)

    # --- media in -----------------------------------------------------------

    def write_nowait(self, chunk: Buffer) -> None:
        """Take a chunk of media now; never blocks.

        Raises:
            PipelineOverflowError: the recording's buffer is full (the disk is behind).
            PipelineError: the recording already failed (its cause is ``__cause__``).
            StreamStateError: the recording is closed.
        """
        # The per-frame path (a media server calls it for every RTP packet): one
        # flag, one copy into the segment buffer; everything else once per segment.
        if not self._accepting:
            self._refuse()
        start = self._at
        end = start + len(chunk)
        if end < SEGMENT_SIZE:
            try:
                self._buf[start:end] = chunk
            except (TypeError, ValueError):  # wider items or a strided view: as bytes
                self._take(_bytes_view(chunk))
                return
            self._at = end
        else:
            self._take(_bytes_view(chunk))

    def _take(self, data: memoryview) -> None:
        """The slow path: fill the segment, seal every whole one, keep the rest."""
        pos, n = 0, len(data)
        while pos < n:
            if self._at == 0 and n - pos >= SEGMENT_SIZE:  # whole segments, no copy
                whole = (n - pos) // SEGMENT_SIZE * SEGMENT_SIZE
                self._seal(data[pos : pos + whole])
                pos += whole
                continue
            take = min(SEGMENT_SIZE - self._at, n - pos)
            self._buf[self._at : self._at + take] = data[pos : pos + take]
            self._at += take
            pos += take
            if self._at == SEGMENT_SIZE:
                self._seal(self._buf)
                self._at = 0

    def _refuse(self) -> NoReturn:
        self._check_open()
        raise PipelineOverflowError(
            self._buffered // SEGMENT_WIRE_SIZE, self._max_buffered // SEGMENT_WIRE_SIZE
        )

    def _update_accepting(self) -> None:
        self._accepting = (
            self._error is None and not self._closed and self._buffered < self._max_buffered
        )

    @property
    def bytes_in(self) -> int:
        """Media bytes taken so far."""
        return self._sealed_in + self._at

    async def write(self, chunk: Buffer) -> None:
        """Take a chunk of media, waiting while the recording's buffer is full."""
        self._check_open()
        while self._buffered >= self._max_buffered:
            self._room.clear()
            self._flusher.request(self, 0, urgent=True)
            await self._room.wait()
            self._check_open()
        self.write_nowait(chunk)

    def _seal(self, plain: memoryview) -> None:
        """Encrypt whole segments at once and queue them for the flusher.

        The ciphertext goes into a buffer of its own, sized exactly, which the
        flusher writes as is (no concatenation, no regrowth of a shared buffer)
        and, for a whole segment, hands back for reuse once it is on disk.
        """
        whole = len(plain)
        size = self._enc.output_size(whole)
        out = self._flusher.segment_buffer() if size == SEGMENT_WIRE_SIZE else bytearray(size)
        n = self._enc.update_into(plain, out)
        if n != len(out):  # pragma: no cover - output_size is exact
            del out[n:]
        self._cipher.append(out)
        self._buffered += n
        self._sealed_in += whole
        if self._buffered >= self._max_buffered:
            self._accepting = False
        now = time.monotonic()
        segments = whole // SEGMENT_SIZE
        if segments == 1:
            self._times.append(now)
        else:
            self._times.extend([now] * segments)
        self._flusher.request(self, n)

    # --- flusher side -------------------------------------------------------

    def take_pending(self) -> tuple[list[bytearray], list[float]]:
        data, times = self._cipher, self._times
        self._cipher, self._times = self._flusher.empty_lists()
        self._buffered = 0
        self._update_accepting()
        if data:
            self._in_flight += 1
            self._settled.clear()
        return data, times

    def flushed(self, nbytes: int, completed_at: list[float], done: float) -> None:
        self.bytes_written += nbytes
        self._landed()

    def flush_failed(self, exc: OSError) -> None:
        if self._error is None:
            self._error = exc
        self._accepting = False
        self._landed()

    def _landed(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._settled.set()
        self._room.set()

    async def _wait_written(self) -> None:
        """Wait until every byte handed to the flusher has been written (or failed)."""
        await self._flusher.flush_now()
        await self._settled.wait()

    # --- end ----------------------------------------------------------------

    async def close(self) -> Path:
        """Finish the recording: final segment, fsync, rename.  Returns the final path.

        Raises:
            PipelineError: writing failed at any point; the ``.incomplete`` file
                is left for ``recstream recover``.
        """
        if self._closed:
            msg = f"recording {self.metadata.recording_id} is closed"
            raise StreamStateError(msg)
        self._closed = True
        self._accepting = False
        if self._error is None:
            tail = bytearray(self._enc.update(self._buf[: self._at]) + self._enc.finalize())
            self._sealed_in += self._at
            self._at = 0
            self._cipher.append(tail)
            self._buffered += len(tail)
            self._flusher.request(self, len(tail))
            await self._wait_written()
        if self._error is not None:
            await self._flusher.run_blocking(os.close, self.fd)
            raise self._failure()
        try:
            await self._flusher.run_blocking(_commit, self.fd, self.temp_path, self.path)
        except OSError as exc:
            self._error = exc
            raise self._failure() from exc
        return self.path

    async def abort(self) -> None:
        """Stop without finishing; keep what was written as ``.incomplete``."""
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        await self._wait_written()
        await self._flusher.run_blocking(os.close, self.fd)

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self) -> RecordingWriter:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._closed:
            return
        if et is None:
            await self.close()
        else:
            await self.abort()

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._failure()
        if self._closed:
            msg = f"recording {self.metadata.recording_id} is closed"
            raise StreamStateError(msg)

    def _failure(self) -> PipelineError:
        err = self._error
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        msg = (
            f"recording {self.metadata.recording_id} failed: {reason}; what was written is "
            f"kept in {self.temp_path} for 'recstream recover'"
        )
        exc = PipelineError(msg)
        exc.__cause__ = err
        return exc

    @property
    def failed(self) -> bool:
        return self._error is not None

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            bytes_in=self.bytes_in,
            segments=self._enc.segments,
            bytes_written=self.bytes_written,
            buffered=self._buffered + self._at,
            closed=self._closed,
            failed=self.failed,
        )


def _bytes_view(chunk: Buffer) -> memoryview:
    """``chunk`` as unsigned bytes, whatever its item type or layout.

    Raises:
        TypeError: not a buffer.
    """
    view = memoryview(chunk)
    return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())


def _create(temp: Path, header: bytes, sync: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | (os.O_DSYNC if sync else 0)
    fd = os.open(temp, flags, 0o600)
    try:
        durable.lock_file(fd)  # ours alone: created exclusively just now
        durable.write_all(fd, header)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _commit(fd: int, temp: Path, final: Path) -> None:
    try:
        durable.commit_rename(fd, temp, final)
    finally:
        os.close(fd)  # releases the lock, after the rename
