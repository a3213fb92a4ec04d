"""Random-access playback: decrypt any segment without reading those before it.

:class:`SegmentReader` is age's ``DecryptReaderAt``: it opens the header,
checks the body's key commitment, and authenticates the final segment up front
(docs/FORMAT.md §6.2), so the plaintext size it reports can be trusted and a
seek relative to the end cannot be fooled.  :class:`DecryptingFile` is a
seekable, read-only binary file object over it, for media libraries and HTTP
Range requests.  Sources are anything with ``read_at(offset, n)`` and ``size``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from recstream import _crypto
from recstream.envelope import KeyRing, open_file_key
from recstream.errors import (
    EmptyInputError,
    SegmentAuthError,
    SignedSegmentMismatchError,
    TruncatedStreamError,
)
from recstream.format import (
    BODY_PREFIX_BYTES,
    MAX_HEADER_BYTES,
    SEGMENT_SIZE,
    SEGMENT_WIRE_SIZE,
    TAG_BYTES,
    TRAILER_BYTES,
    TRAILER_MAGIC,
    BodyLayout,
    Buffer,
    Header,
    NeedData,
    parse_header,
)
from recstream.signer import VerifiedBody

__all__ = [
    "BytesSource",
    "DecryptingFile",
    "FileSource",
    "Recovery",
    "SeekSource",
    "SegmentReader",
    "StreamPrefix",
    "read_header_at",
    "recover",
]


class Source(Protocol):
    size: int

    def read_at(self, offset: int, n: int) -> bytes: ...


class FileSource:
    """A file read with ``os.pread`` (thread-safe, no shared file position)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def read_at(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)


class SeekSource:
    """A :class:`Source` over a seekable file object (store objects have no descriptor)."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self._fh, self.size = fh, size

    def read_at(self, offset: int, n: int) -> bytes:
        self._fh.seek(offset)
        return self._fh.read(n)


class BytesSource:
    def __init__(self, data: Buffer) -> None:
        self._data = memoryview(data)
        self.size = len(self._data)

    def read_at(self, offset: int, n: int) -> bytes:
        return bytes(self._data[offset : offset + n])


class StreamPrefix:
    """A :class:`Source` over the start of a stream that cannot seek (stdin, a remote
    file): ``read_at`` reads forward as far as asked and keeps what it read.
    ``size`` stays 0 until :meth:`drain`; :func:`read_header_at` needs only the prefix.
    """

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self._buf = bytearray()
        self.size = 0

    def read_at(self, offset: int, n: int) -> bytes:
        while len(self._buf) < offset + n and (
            chunk := self._src.read(offset + n - len(self._buf))
        ):
            self._buf += chunk
        return bytes(self._buf[offset : offset + n])

    def drain(self) -> int:
        """Read to the end; return (and set as ``size``) the stream's total length."""
        return self.drain_keeping(0)[0]

    def drain_keeping(self, keep: int) -> tuple[int, bytes]:
        """Read to the end; return the total length and the stream's last ``keep`` bytes."""
        total = len(self._buf)
        last = bytes(self._buf[-keep:]) if keep else b""
        while chunk := self._src.read(1 << 20):
            total += len(chunk)
            if keep:
                last = (last + chunk)[-keep:]
        self.size = total
        return total, last


def read_header_at(source: Source) -> Header:
    """Read and parse the header at the start of ``source`` (bounded reads).

    Raises:
        EnvelopeFormatError and subclasses; TruncatedStreamError if the source
        ends inside the header.
    """
    need = 12
    while True:
        data = source.read_at(0, need)
        if len(data) < need:
            if not data:
                raise EmptyInputError
            raise TruncatedStreamError(0, "the file ends inside the envelope header")
        parsed = parse_header(data)
        if isinstance(parsed, Header):
            return parsed
        assert isinstance(parsed, NeedData)
        need = min(parsed.at_least, MAX_HEADER_BYTES)


class SegmentReader:
    """Authenticated random access to an envelope's plaintext.

    A signed recording's body ends before its trailer (FORMAT.md §10).  Given a
    ``verified`` body (:func:`recstream.signing.verify_file` with
    ``keep_digests=True``, cached by the caller), every segment read is also
    checked against the digest the signature covers, so a Range read proves the
    bytes it serves are the signed ones without re-reading the file.

    Attributes:
        header: the parsed, authenticated header.
        size: plaintext length, authenticated by the final segment.
        segments: number of segments, the final one included.
        verified: the signed digests reads are checked against, or None.
    """

    def __init__(
        self, source: Source, keys: KeyRing, *, verified: VerifiedBody | None = None
    ) -> None:
        """Open ``source``; authenticate header, commitment and final segment.

        Raises:
            EnvelopeFormatError, KeyAccessError, HeaderAuthError, IntegrityError,
            TruncatedStreamError (no final segment), SegmentAuthError,
            SignedSegmentMismatchError (``verified`` is for another file or version).
        """
        self._source = source
        self.header = read_header_at(source)
        file_key = open_file_key(self.header, keys)
        self._base = self.header.length
        layout = BodyLayout(self.header.body_length(source.size))
        if not layout.complete:
            raise TruncatedStreamError(layout.full_segments)
        self.verified = verified
        if verified is not None and (verified.segments != layout.segments):
            raise SignedSegmentMismatchError(min(verified.segments, layout.segments))
        prefix = source.read_at(self._base, BODY_PREFIX_BYTES)
        self._cipher = _crypto.SegmentCipher(
            _crypto.body_key(file_key), prefix, self.header.context
        )
        self.segments = layout.segments
        self._final_wire = layout.tail  # the final segment's wire length
        self._scratch = bytearray(SEGMENT_SIZE)
        self._cache_index = -1
        self._cache = b""
        final = self.read_segment(self.segments - 1)  # length authentication, §6.2
        self.size = (self.segments - 1) * SEGMENT_SIZE + len(final)

    def read_segment(self, index: int) -> bytes:
        """Decrypt and return segment ``index``.

        Raises:
            IndexError: no such segment.
            SegmentAuthError: it does not authenticate at this index.
        """
        if not 0 <= index < self.segments:
            msg = f"segment {index} out of range 0..{self.segments - 1}"
            raise IndexError(msg)
        if index == self._cache_index:
            return self._cache
        wire = self._source.read_at(
            self._base + BodyLayout.segment_offset(index), SEGMENT_WIRE_SIZE
        )
        if (index < self.segments - 1 and len(wire) != SEGMENT_WIRE_SIZE) or len(wire) < TAG_BYTES:
            raise TruncatedStreamError(index, "the file changed size while being read")
        if index == self.segments - 1 and self.header.signed:
            wire = wire[: self._final_wire]
        if self.verified is not None:
            self.verified.check_segment(index, wire)
        n = self._cipher.open_into(index, wire, self._scratch)
        self._cache_index, self._cache = index, bytes(self._scratch[:n])
        return self._cache

    def read_at(self, offset: int, n: int) -> bytes:
        """Return up to ``n`` plaintext bytes from ``offset`` (fewer only at the end).

        The segments covering the range are read with one ``read_at`` of the
        source and decrypted straight into one buffer (Range requests, seeks).
        """
        if offset < 0 or n < 0:
            msg = "offset and n must be non-negative"
            raise ValueError(msg)
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        first, last = offset // SEGMENT_SIZE, (end - 1) // SEGMENT_SIZE
        if first == last:
            seg = self.read_segment(first)
            within = offset - first * SEGMENT_SIZE
            return seg[within : within + end - offset]
        count = last - first + 1
        wire = memoryview(
            self._source.read_at(
                self._base + BodyLayout.segment_offset(first), count * SEGMENT_WIRE_SIZE
            )
        )
        out = bytearray(count * SEGMENT_SIZE)
        view = memoryview(out)
        filled = 0
        for k in range(count):
            piece = wire[k * SEGMENT_WIRE_SIZE : (k + 1) * SEGMENT_WIRE_SIZE]
            short = first + k < self.segments - 1 and len(piece) != SEGMENT_WIRE_SIZE
            if short or len(piece) < TAG_BYTES:
                raise TruncatedStreamError(first + k, "the file changed size while being read")
            if first + k == self.segments - 1:
                piece = piece[: self._final_wire]  # a signed file's trailer follows
            if self.verified is not None:
                self.verified.check_segment(first + k, piece)
            filled += self._cipher.open_into(first + k, piece, view[filled:])
        start = offset - first * SEGMENT_SIZE
        return bytes(view[start : start + end - offset])


class DecryptingFile(io.RawIOBase):
    """A seekable, read-only file of an envelope's plaintext.  Does not close the source."""

    def __init__(self, reader: SegmentReader) -> None:
        super().__init__()
        self.reader = reader
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.reader.size}[whence]
        if base + offset < 0:
            msg = "negative seek position"
            raise ValueError(msg)
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.reader.read_at(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :func:`recover` released.

    Attributes:
        segments: authenticated segments written out.
        plaintext_bytes: bytes written out.
        complete: the recording had its final segment (nothing was lost).
        lost_bytes: envelope bytes after the recovered prefix (the torn tail).
        signed: the recording was signed and complete, trailer included (the
            signature was not checked: ``recstream verify`` does that).  An
            interrupted signed recording's recovered prefix is unsigned: False.
        signed_header: the header announced a signature (format version 2).
    """

    segments: int
    plaintext_bytes: int
    complete: bool
    lost_bytes: int
    signed: bool = False
    signed_header: bool = False


def recover(source: Source, keys: KeyRing, write: Callable[[bytes], object]) -> Recovery:
    """Release the authenticated prefix of a possibly interrupted recording (§6.3).

    Every full segment is authenticated in order and passed to ``write``.  The
    tail — a partial segment, or a last full-size segment with nothing after
    it that fails (a torn write) — is where the recording stopped.  A segment
    that fails while more bytes follow it is tampering, and is refused.

    A signed recording (FORMAT.md §10.4) that ends with its trailer is complete;
    one that does not was interrupted, and its body is everything after the
    header.  What is released is never covered by a signature: a recovered
    prefix is unsigned (``Recovery.signed`` is False unless the whole recording,
    trailer included, was there, and even then recover does not verify it).

    Raises:
        EnvelopeFormatError, KeyAccessError, HeaderAuthError: as for decryption.
        IntegrityError: the body's commitment fails, or a segment inside the
            recording fails (SegmentAuthError).
    """
    header = read_header_at(source)
    file_key = open_file_key(header, keys)
    base = header.length
    end = source.size
    magic_at = end - len(TRAILER_MAGIC)
    if (
        header.signed
        and end - base >= TRAILER_BYTES
        and (source.read_at(magic_at, len(TRAILER_MAGIC)) == TRAILER_MAGIC)
    ):
        end -= TRAILER_BYTES
    layout = BodyLayout(end - base)
    if end - base < BODY_PREFIX_BYTES:
        return Recovery(0, 0, False, source.size - base, signed_header=header.signed)
    prefix = source.read_at(base, BODY_PREFIX_BYTES)
    cipher = _crypto.SegmentCipher(_crypto.body_key(file_key), prefix, header.context)
    out = bytearray(SEGMENT_SIZE)
    total = 0
    count = layout.segments if layout.complete else layout.full_segments
    for index in range(count):
        offset = base + BodyLayout.segment_offset(index)
        wire = source.read_at(offset, min(SEGMENT_WIRE_SIZE, end - offset))
        last_region = offset + len(wire) >= end
        try:
            n = cipher.open_into(index, wire, out)
        except SegmentAuthError:
            if last_region:  # torn tail: the recording stopped here
                lost = source.size - offset
                return Recovery(index, total, False, lost, signed_header=header.signed)
            raise
        write(bytes(out[:n]))
        total += n
    consumed = base + BodyLayout.segment_offset(count) if not layout.complete else source.size
    lost = source.size - consumed
    signed = header.signed and layout.complete and end != source.size
    return Recovery(count, total, layout.complete, lost, signed, signed_header=header.signed)
