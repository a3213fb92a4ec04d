"""Sans-I/O body encryption and decryption (docs/FORMAT.md §6.1).

:class:`StreamEncryptor` and :class:`StreamDecryptor` are push-style state
machines over Cobblestone-256 (``cryptography.cobblestone``): bytes go in with
``update_into``, authenticated bytes come out, ``finalize`` ends the stream.
They do no I/O and read no clock.  After ``finalize`` or after any failure
every call raises :class:`~recstream.errors.StreamStateError` (the object is
poisoned, like age's sticky error).

The decryptor feeds Cobblestone whole segments only, keeping at most one
partial segment of its own.  That costs one small copy per call at most, and
buys exact error reporting: when a batch fails, the cold path finds the first
bad segment with single-segment AES-GCM (:class:`~recstream._crypto.SegmentCipher`).
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from recstream import _crypto
from recstream.errors import (
    CommitmentError,
    FinalSegmentAuthError,
    IntegrityError,
    LimitExceededError,
    SegmentAuthError,
    StreamStateError,
    TruncatedStreamError,
)
from recstream.format import (
    BODY_PREFIX_BYTES,
    MAX_SEGMENTS,
    SEGMENT_SIZE,
    SEGMENT_WIRE_SIZE,
    TAG_BYTES,
    Buffer,
)

__all__ = ["StreamDecryptor", "StreamEncryptor"]


class _State(Enum):
    OPEN = "open"
    DONE = "finalized"
    FAILED = "failed"


class _Op(Enum):
    UPDATE = "update"
    FINALIZE = "finalize"


# Transitions are data (h11 style): any (state, op) pair not here is misuse.
_TRANSITIONS: Final = {
    (_State.OPEN, _Op.UPDATE): _State.OPEN,
    (_State.OPEN, _Op.FINALIZE): _State.DONE,
}


class _Machine:
    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = _State.OPEN

    def _enter(self, op: _Op) -> None:
        if (self._state, op) not in _TRANSITIONS:
            msg = f"cannot {op.value}: the stream is already {self._state.value}"
            raise StreamStateError(msg)

    def _leave(self, op: _Op) -> None:
        self._state = _TRANSITIONS[(self._state, op)]

    def _fail(self) -> None:
        self._state = _State.FAILED

    @property
    def finalized(self) -> bool:
        return self._state is _State.DONE


class StreamEncryptor(_Machine):
    """Encrypt one body.  Output starts with the 56-byte salt and commitment."""

    __slots__ = ("_cipher", "_pending", "_segments", "_started")

    def __init__(self, input_key: Buffer, context: Buffer) -> None:
        super().__init__()
        self._cipher = _crypto.Cobblestone256Encryptor(bytes(input_key), bytes(context))
        self._pending = 0  # plaintext bytes Cobblestone holds (< SEGMENT_SIZE)
        self._segments = 0
        self._started = False

    def output_size(self, n: int) -> int:
        """Exactly how many bytes :meth:`update_into` returns for ``n`` more input bytes."""
        prefix = 0 if self._started else BODY_PREFIX_BYTES
        return prefix + (self._pending + n) // SEGMENT_SIZE * SEGMENT_WIRE_SIZE

    def update_into(self, data: Buffer, out: Buffer) -> int:
        """Encrypt ``data``; write completed segments to ``out``; return bytes written.

        ``out`` must hold at least :meth:`output_size` ``(len(data))`` bytes.

        Raises:
            StreamStateError: after finalize or a failure.
            ValueError: ``out`` too small (the stream is then poisoned).
        """
        self._enter(_Op.UPDATE)
        n = len(data)
        full = (self._pending + n) // SEGMENT_SIZE
        if self._segments + full >= MAX_SEGMENTS:
            self._fail()
            msg = f"a recording may hold at most {MAX_SEGMENTS} segments (docs/FORMAT.md §5)"
            raise ValueError(msg)
        try:
            written = self._cipher.update_into(data, out)
        except BaseException:
            self._fail()
            raise
        self._started = True
        self._pending = (self._pending + n) % SEGMENT_SIZE
        self._segments += full
        self._leave(_Op.UPDATE)
        return written

    def update(self, data: Buffer) -> bytes:
        """Like :meth:`update_into`, returning a new ``bytes``."""
        out = bytearray(self.output_size(len(data)))
        n = self.update_into(data, out)
        return bytes(out[:n])

    def finalize(self) -> bytes:
        """Emit the final (short) segment, and the prefix if nothing came out yet."""
        self._enter(_Op.FINALIZE)
        try:
            tail = self._cipher.finalize()
        except BaseException:
            self._fail()
            raise
        self._segments += 1
        self._leave(_Op.FINALIZE)
        return tail

    @property
    def segments(self) -> int:
        """Segments emitted so far (the final one counts after finalize)."""
        return self._segments


class StreamDecryptor(_Machine):
    """Decrypt one body, releasing only authenticated segments.

    Attributes:
        segments: segments authenticated so far.
        released: plaintext bytes released so far.
    """

    __slots__ = ("_carry", "_cipher", "_consumed", "_context", "_key", "_prefix", "segments")

    def __init__(self, input_key: Buffer, context: Buffer) -> None:
        super().__init__()
        self._key = bytes(input_key)
        self._context = bytes(context)
        self._cipher = _crypto.BodyDecryptor(self._key, self._context)
        self._carry = bytearray()  # the prefix, or a partial segment; never a full one
        self._prefix = b""
        self._consumed = 0  # body bytes fed to Cobblestone
        self.segments = 0

    @property
    def released(self) -> int:
        return self.segments * SEGMENT_SIZE

    def output_size(self, n: int) -> int:
        """An upper bound on what :meth:`update_into` writes for ``n`` input bytes."""
        return (len(self._carry) + n) // SEGMENT_WIRE_SIZE * SEGMENT_SIZE

    def update_into(self, data: Buffer, out: Buffer) -> int:
        """Feed body bytes; write authenticated plaintext to ``out``; return its length.

        Raises:
            IntegrityError: the key commitment fails (wrong key or foreign body).
            SegmentAuthError: a segment fails authentication (index attribute).
            LimitExceededError: more segments than the format allows.
            StreamStateError: after finalize or a failure.
        """
        self._enter(_Op.UPDATE)
        try:
            written = self._update(memoryview(data), memoryview(out))
        except BaseException:
            self._fail()
            raise
        self._leave(_Op.UPDATE)
        return written

    def update(self, data: Buffer) -> bytes:
        out = bytearray(self.output_size(len(data)))
        n = self.update_into(data, out)
        return bytes(out[:n])

    def _update(self, data: memoryview, out: memoryview) -> int:
        pos = 0
        if not self._prefix:
            take = min(BODY_PREFIX_BYTES - len(self._carry), len(data))
            self._carry += data[:take]
            pos = take
            if len(self._carry) < BODY_PREFIX_BYTES:
                return 0
            self._prefix = bytes(self._carry)
            self._carry.clear()
            self._feed(memoryview(self._prefix), out)
        written = 0
        if self._carry:
            take = min(SEGMENT_WIRE_SIZE - len(self._carry), len(data) - pos)
            self._carry += data[pos : pos + take]
            pos += take
            if len(self._carry) < SEGMENT_WIRE_SIZE:
                return 0
            with memoryview(self._carry) as whole:
                written = self._feed(whole, out)
            self._carry.clear()
        aligned = (len(data) - pos) // SEGMENT_WIRE_SIZE * SEGMENT_WIRE_SIZE
        if aligned:
            written += self._feed(data[pos : pos + aligned], out[written:])
            pos += aligned
        self._carry += data[pos:]
        return written

    def _feed(self, chunk: memoryview, out: memoryview) -> int:
        """Feed whole segments (or the prefix) to Cobblestone, mapping failures."""
        nseg = len(chunk) // SEGMENT_WIRE_SIZE
        if self.segments + nseg >= MAX_SEGMENTS:
            raise LimitExceededError("segments", self.segments + nseg, MAX_SEGMENTS - 1, 0)
        try:
            written = self._cipher.update_into(chunk, out)
        except _crypto.TagMismatch:
            raise self._explain_failure(chunk) from None
        self._consumed += len(chunk)
        self.segments += nseg
        return written

    def _explain_failure(self, chunk: memoryview) -> IntegrityError:
        """Cold path: which segment of ``chunk`` failed (or was it the commitment)?"""
        if self._consumed == 0:
            return CommitmentError()
        cipher = _crypto.SegmentCipher(self._key, self._prefix, self._context)
        scratch = bytearray(SEGMENT_SIZE)
        for i in range(len(chunk) // SEGMENT_WIRE_SIZE):
            seg = chunk[i * SEGMENT_WIRE_SIZE : (i + 1) * SEGMENT_WIRE_SIZE]
            try:
                cipher.open_into(self.segments + i, seg, scratch)
            except SegmentAuthError as exc:
                return exc
        return SegmentAuthError(self.segments)  # pragma: no cover - Cobblestone disagreed

    def finalize(self) -> bytes:
        """Authenticate the final segment and return its plaintext.

        Raises:
            TruncatedStreamError: the body ends without a final segment.
            SegmentAuthError: the final segment fails authentication.
            StreamStateError: after finalize or a failure.
        """
        self._enter(_Op.FINALIZE)
        try:
            tail = self._finalize()
        except BaseException:
            self._fail()
            raise
        self._leave(_Op.FINALIZE)
        return tail

    def _finalize(self) -> bytes:
        if not self._prefix:
            raise TruncatedStreamError(0, "the body is shorter than its 56-byte prefix")
        if len(self._carry) < TAG_BYTES:
            raise TruncatedStreamError(self.segments)
        try:
            self._cipher.update(self._carry)
            tail = self._cipher.finalize()
        except _crypto.TagMismatch:
            raise FinalSegmentAuthError(self.segments) from None
        self.segments += 1
        return tail
