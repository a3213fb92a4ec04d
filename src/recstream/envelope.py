"""The recipes: seal a recording for recipients, open it with a key, re-wrap it.

Composes :mod:`recstream.format` (header bytes), :mod:`recstream._crypto`
(key schedule, OAEP, MAC) and :mod:`recstream.stream` (the body), the way
age.go composes its format and stream packages.  Still no I/O: bytes in,
bytes out.  Files and asyncio are adapters above this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from recstream import _crypto
from recstream.errors import (
    EmptyInputError,
    EnvelopeFormatError,
    HeaderAuthError,
    KeyUnwrapError,
    NoMatchingKeyError,
    StreamStateError,
    TruncatedStreamError,
)
from recstream.format import (
    FILE_KEY_BYTES,
    MAX_HEADER_BYTES,
    SEGMENT_SIZE,
    SEGMENT_WIRE_SIZE,
    TRAILER_BYTES,
    Buffer,
    Header,
    MediaKind,
    Metadata,
    NeedData,
    SignerBlock,
    Trailer,
    encode_header_body,
    parse_header,
    parse_trailer,
)
from recstream.parallel import (
    ParallelStreamDecryptor,
    ParallelStreamEncryptor,
    SegmentPool,
    pread_exact,
    put,
)
from recstream.pki.recipients import Identity, IdentitySet, KeyRing, Recipient
from recstream.signer import BodySignature, Signer
from recstream.stream import StreamDecryptor, StreamEncryptor

__all__ = [
    "EnvelopeDecryptor",
    "EnvelopeEncryptor",
    "Identity",
    "IdentitySet",
    "KeyRing",
    "RandomAccessEncryptor",
    "Recipient",
    "Signer",
    "amend_header",
    "build_header",
    "new_metadata",
    "open_file_key",
    "rewrap_header",
]


def new_metadata(
    *,
    recording_id: str,
    tenant: str,
    media_kind: MediaKind,
    media_type: str,
    created_ms: int | None = None,
) -> Metadata:
    """Metadata with ``created_ms`` defaulting to now."""
    created = int(time.time() * 1000) if created_ms is None else created_ms
    return Metadata(recording_id, tenant, media_kind, media_type, created)


def build_header(
    metadata: Metadata,
    recipients: Sequence[Recipient],
    file_key: Buffer,
    signer: SignerBlock | None = None,
) -> bytes:
    """Serialize and MAC a header wrapping ``file_key`` for every recipient.

    With a ``signer`` block the header is version 2 (FORMAT.md §3.1).
    """
    stanzas = tuple(r.stanza(file_key) for r in recipients)
    body = encode_header_body(metadata, stanzas, signer)
    return body + _crypto.header_mac(file_key, body)


def open_file_key(header: Header, keys: KeyRing) -> bytes:
    """Unwrap the file key with a matching key and verify the header MAC.

    At most one RSA unwrap per stanza the key ring holds a key for (≤ 16).

    Raises:
        NoMatchingKeyError: no key for any recipient (names their cert IDs).
        KeyUnwrapError: a matching key failed to unwrap.
        HeaderAuthError: the unwrapped key does not authenticate the header.
    """
    failure: KeyUnwrapError | None = None
    for stanza in header.recipients:
        key = keys.private_key_for(stanza)
        if key is None:
            continue
        try:
            file_key = _crypto.unwrap_file_key(key, stanza.wrapped_key, stanza.cert_id_hex)
        except KeyUnwrapError as exc:
            failure = failure or exc
            continue
        if not _crypto.verify_header_mac(file_key, header.authenticated_bytes, header.mac):
            raise HeaderAuthError
        return file_key
    if failure is not None:
        raise failure
    raise NoMatchingKeyError(header.cert_ids, keys.describe())


def rewrap_header(header: Header, file_key: Buffer, recipients: Sequence[Recipient]) -> bytes:
    """A new header for the same recording and body, wrapped for ``recipients``.

    The immutable part (and so the body's context, and a signature) is unchanged
    (FORMAT.md §7, §10).
    """
    new = build_header(header.metadata, recipients, file_key, header.signer)
    parsed = parse_header(new)
    assert isinstance(parsed, Header)
    assert parsed.context == header.context, "re-wrap must keep the immutable header part"
    return new


def amend_header(
    header: Header,
    file_key: Buffer,
    *,
    add: Sequence[Recipient] = (),
    drop: Iterable[str] = (),
) -> bytes:
    """A new header with recipients added and/or dropped; the body stays valid.

    Kept stanzas are carried over byte for byte (their certificates need not be
    at hand); new ones wrap ``file_key``.  The immutable part is unchanged
    (FORMAT.md §7), and the MAC is recomputed under the same file key.

    Raises:
        ValueError: the result would have no recipients or more than the limit,
            or ``drop`` names a certificate the header does not have.
    """
    dropping = {d.lower() for d in drop}
    unknown = dropping - set(header.cert_ids)
    if unknown:
        msg = f"certificate ID(s) {', '.join(sorted(unknown))} are not recipients of this file"
        raise ValueError(msg)
    kept = [s for s in header.recipients if s.cert_id_hex not in dropping]
    present = {s.cert_id for s in kept}
    kept += [r.stanza(file_key) for r in add if r.cert_id not in present]
    body = encode_header_body(header.metadata, tuple(kept), header.signer)
    new = body + _crypto.header_mac(file_key, body)
    parsed = parse_header(new)
    assert isinstance(parsed, Header)
    assert parsed.context == header.context, "re-wrap must keep the immutable header part"
    return new


class EnvelopeEncryptor:
    """Push-style encryption of a whole envelope: header, then body.

    The first bytes out of :meth:`update_into` (or :meth:`finalize`, for an
    empty recording) are the header; callers just write everything returned.
    With a ``pool`` (:func:`recstream.parallel.pool_for`), the body's segments
    are sealed on several cores; the bytes are the same either way.

    With a ``signer`` (:class:`recstream.signing.Signer`) the envelope is signed
    (FORMAT.md §10): a version-2 header naming the signer, and :meth:`finalize`
    returns the final segment followed by the 112-byte signature trailer.  The
    extra state is one running hash: memory does not grow with the recording.
    """

    def __init__(
        self,
        recipients: Sequence[Recipient],
        metadata: Metadata,
        *,
        file_key: bytes | None = None,
        pool: SegmentPool | None = None,
        signer: Signer | None = None,
    ) -> None:
        if not recipients:
            msg = "at least one recipient certificate is needed"
            raise ValueError(msg)
        key = _crypto.new_file_key() if file_key is None else file_key
        if len(key) != FILE_KEY_BYTES:
            msg = "file key must be 32 bytes"
            raise ValueError(msg)
        self.header = build_header(
            metadata, recipients, key, None if signer is None else signer.block()
        )
        parsed = parse_header(self.header)
        assert isinstance(parsed, Header)
        self.metadata = metadata
        self.cert_ids = parsed.cert_ids
        self.signer = signer
        self._signature = (
            None
            if signer is None
            else BodySignature(signer, parsed.context, runs=None if pool is None else pool.digest)
        )
        self._body: StreamEncryptor | ParallelStreamEncryptor = (
            StreamEncryptor(_crypto.body_key(key), parsed.context)
            if pool is None
            else ParallelStreamEncryptor(_crypto.body_key(key), parsed.context, pool)
        )
        # On a pool the threads that seal a block also hash it (one hand-off, cache-hot).
        self._fed_by_body = False
        if self._signature is not None and isinstance(self._body, ParallelStreamEncryptor):
            self._body.attach_signature(self._signature)
            self._fed_by_body = True
        self._header_pending = True

    def output_size(self, n: int) -> int:
        """Exactly what :meth:`update_into` writes for ``n`` more input bytes."""
        return self._body.output_size(n) + (len(self.header) if self._header_pending else 0)

    def update_into(self, data: Buffer, out: Buffer) -> int:
        view = memoryview(out)
        pos = self._take_header(view)
        n = self._body.update_into(data, view[pos:])
        if self._signature is not None and n and not self._fed_by_body:
            self._signature.update(view[pos : pos + n])
        return pos + n

    def update(self, data: Buffer) -> bytes:
        out = bytearray(self.output_size(len(data)))
        return bytes(out[: self.update_into(data, out)])

    def finalize(self, *, signed_ms: int | None = None) -> bytes:
        """The rest of the envelope: the final segment, then the signature trailer if signing.

        Args:
            signed_ms: the signing time to state (now by default); ignored unsigned.
        """
        head = self.header if self._header_pending else b""
        self._header_pending = False
        tail = self._body.finalize()
        if self._signature is None:
            return head + tail
        self._signature.update(tail)
        return head + tail + self._signature.trailer(signed_ms=signed_ms)

    @property
    def positional(self) -> bool:
        """Whether :meth:`encrypt_file` can run: a pool, and nothing output yet."""
        return (
            isinstance(self._body, ParallelStreamEncryptor)
            and (self._signature is None or self._fed_by_body)
            and self._header_pending
        )

    def encrypt_file(self, src: int, size: int, dst: int, *, ordered: bool = False) -> int:
        """The whole envelope of ``size`` bytes of the file ``src`` (from offset 0), written
        into ``dst`` on the pool's threads; bytes written.

        ``dst`` is a regular file this process owns, written from offset 0 out of
        order; or with ``ordered``, any descriptor (stdout, a pipe) written in order
        at its position.  The bytes are those :meth:`update_into` and
        :meth:`finalize` give.

        Raises:
            InputShrankError: ``src`` has fewer than ``size`` bytes.
            ValueError: not :attr:`positional`.
        """
        body = self._body
        if not self.positional or not isinstance(body, ParallelStreamEncryptor):
            msg = "positional encryption needs a pool and nothing output yet"
            raise ValueError(msg)
        header = self.take_header()
        at = put((dst, None if ordered else 0), header)
        n = len(header) + body.update_from_file((src, 0), size, at)
        tail = self.finalize()
        put((dst, None if ordered else n), tail)
        return n + len(tail)

    def take_header(self) -> bytes:
        """Return the header now, for writers that put it on disk before any media.

        Later output then starts with the body.
        """
        if not self._header_pending:
            msg = "the header was already emitted"
            raise StreamStateError(msg)
        self._header_pending = False
        return self.header

    def _take_header(self, out: memoryview) -> int:
        if not self._header_pending:
            return 0
        n = len(self.header)
        out[:n] = self.header
        self._header_pending = False
        return n

    @property
    def segments(self) -> int:
        return self._body.segments


class RandomAccessEncryptor:
    """An envelope whose body segments are sealed in any order, each exactly once.

    For writers that must go back and change what they wrote (a muxer writing an
    index into space it reserved at the front): they keep the plaintext of the
    segments they may still change, and seal those last, into their place at
    :meth:`offset`.  The file is :attr:`head` (header and body prefix), then
    segment *i* at ``offset(i)``: full segments of ``SEGMENT_SIZE`` bytes and a
    final one shorter than that (possibly empty), as FORMAT.md §6 lays out; so the
    result reads exactly like what :class:`EnvelopeEncryptor` writes.
    Re-sealing an index would reuse its nonce, so :meth:`seal` refuses it for the
    final segment and the caller guarantees it for the rest.

    With a ``signer``, :meth:`trailer` returns the signature trailer once every
    segment up to the final one was sealed; it goes at :meth:`trailer_offset`.
    Segment digests sealed ahead of a gap wait for it (32 bytes per segment).
    """

    def __init__(
        self,
        recipients: Sequence[Recipient],
        metadata: Metadata,
        *,
        signer: Signer | None = None,
    ) -> None:
        if not recipients:
            msg = "at least one recipient certificate is needed"
            raise ValueError(msg)
        key = _crypto.new_file_key()
        header = build_header(metadata, recipients, key, None if signer is None else signer.block())
        parsed = parse_header(header)
        assert isinstance(parsed, Header)
        self.metadata = metadata
        self.cert_ids = parsed.cert_ids
        self.signer = signer
        prefix, self._cipher = _crypto.new_segment_sealer(_crypto.body_key(key), parsed.context)
        self.head = header + prefix
        self._final: int | None = None
        self._final_wire = 0
        self._signature = None if signer is None else BodySignature(signer, parsed.context)
        if self._signature is not None:
            self._signature.set_prefix(prefix)

    def offset(self, index: int) -> int:
        """Where segment ``index`` starts in the file."""
        return len(self.head) + index * SEGMENT_WIRE_SIZE

    def seal(self, index: int, plaintext: Buffer) -> bytes:
        """Segment ``index``: full-size, or shorter for the final segment (sealed once).

        Raises:
            StreamStateError: a second final segment, or a segment after the final one.
            ValueError: a segment over ``SEGMENT_SIZE`` bytes.
        """
        n = len(plaintext)
        if n > SEGMENT_SIZE:
            msg = f"a segment holds at most {SEGMENT_SIZE} bytes, not {n}"
            raise ValueError(msg)
        if self._final is not None and index >= self._final:
            msg = f"segment {index} is at or after the final segment {self._final}"
            raise StreamStateError(msg)
        if n < SEGMENT_SIZE:
            self._final = index
            self._final_wire = n + SEGMENT_WIRE_SIZE - SEGMENT_SIZE
        out = bytearray(n + SEGMENT_WIRE_SIZE - SEGMENT_SIZE)
        self._cipher.seal_into(index, plaintext, out)
        if self._signature is not None:
            self._signature.add_segment(index, out, final=n < SEGMENT_SIZE)
        return bytes(out)

    def trailer_offset(self) -> int:
        """Where the signature trailer goes: right after the final segment.

        Raises:
            StreamStateError: the final segment was not sealed yet.
        """
        if self._final is None:
            msg = "the final segment was not sealed yet"
            raise StreamStateError(msg)
        return self.offset(self._final) + self._final_wire

    def trailer(self, *, signed_ms: int | None = None) -> bytes:
        """The signature trailer (FORMAT.md §10), once every segment was sealed.

        Raises:
            StreamStateError: not signing, segments missing, or called twice.
        """
        if self._signature is None:
            msg = "this envelope is not signed"
            raise StreamStateError(msg)
        return self._signature.trailer(signed_ms=signed_ms)


class EnvelopeDecryptor:
    """Push-style decryption of a whole envelope.

    Buffers at most :data:`~recstream.format.MAX_HEADER_BYTES` until the header
    is complete, opens it with ``keys``, then streams the body (its segments
    opened on several cores with a ``pool``: :func:`recstream.parallel.pool_for`).
    """

    def __init__(
        self, keys: KeyRing, *, pool: SegmentPool | None = None, header: Header | None = None
    ) -> None:
        """``header``: the envelope's header, parsed already by the caller
        (:func:`recstream.format.parse_header`); the file key is unwrapped now and
        only the bytes after the header are to be fed.

        Raises:
            KeyAccessError subclasses, HeaderAuthError: ``header`` given and it
                cannot be opened with ``keys``.
        """
        self._keys = keys
        self._pool = pool
        self._head = bytearray()
        self._need = 0
        self.header: Header | None = None
        self.cert_id: str | None = None
        self._body: StreamDecryptor | None = None
        self._failed = False
        self._hold: bytearray | None = None  # signed: the last TRAILER_BYTES seen
        self.trailer: Trailer | None = None
        if header is not None:
            self._open_body(header)

    def output_size(self, n: int) -> int:
        if self._body is None:
            return n + SEGMENT_SIZE
        return self._body.output_size(n + (TRAILER_BYTES if self._hold is not None else 0))

    def update_into(self, data: Buffer, out: Buffer) -> int:
        """Feed envelope bytes; return authenticated plaintext bytes written to ``out``.

        Raises:
            EnvelopeFormatError and subclasses, KeyAccessError subclasses,
            IntegrityError subclasses, StreamStateError.
        """
        if self._failed:
            msg = "cannot update: the envelope already failed"
            raise StreamStateError(msg)
        try:
            if self._body is not None:
                return self._feed_body(memoryview(data), memoryview(out))
            return self._update_header(memoryview(data), out)
        except BaseException:
            self._failed = True
            raise

    def _feed_body(self, data: memoryview, out: memoryview) -> int:
        """Feed the body, holding back the last TRAILER_BYTES of a signed envelope."""
        assert self._body is not None
        hold = self._hold
        if hold is None:
            return self._body.update_into(data, out)
        if len(data) >= TRAILER_BYTES:
            written = self._body.update_into(hold, out) if hold else 0
            written += self._body.update_into(data[:-TRAILER_BYTES], out[written:])
            hold[:] = data[-TRAILER_BYTES:]
            return written
        hold += data
        excess = len(hold) - TRAILER_BYTES
        if excess <= 0:
            return 0
        written = self._body.update_into(hold[:excess], out)
        del hold[:excess]
        return written

    def update(self, data: Buffer) -> bytes:
        out = bytearray(self.output_size(len(data)))
        return bytes(out[: self.update_into(data, out)])

    @property
    def positional(self) -> bool:
        """Whether :meth:`decrypt_file` can run: a pool, and nothing fed yet."""
        return self._pool is not None and not self._head and self._body is None and not self._failed

    def decrypt_file(self, src: int, size: int, dst: int, *, ordered: bool = False) -> int | None:
        """Decrypt the envelope in the first ``size`` bytes of the file ``src`` into ``dst``,
        the body's whole segments read and opened on the pool's threads.

        For a fresh decryptor with a pool.  ``dst`` is a regular output file this
        process owns and discards on failure (written from offset 0, segments out of
        order, each once it authenticated); or with ``ordered``, any descriptor
        (stdout, a pipe) written in order, where nothing after a failed segment is
        ever written.  The header, the final segment and a signed envelope's
        trailer go through :meth:`update_into` and :meth:`finalize`, so what is
        accepted or refused, and the errors, are the stream path's.

        Returns:
            The plaintext bytes written, or None when the header cannot be parsed from
            the file (nothing was consumed: the stream path then says why).

        Raises:
            The errors of :meth:`update_into` and :meth:`finalize`.
        """
        if not self.positional:
            msg = "positional decryption needs a fresh decryptor with a pool"
            raise ValueError(msg)
        limit = min(size, MAX_HEADER_BYTES)
        head = bytearray(min(limit, 64 << 10))
        while True:
            with memoryview(head) as view:
                got = pread_exact(src, view, 0)
            parsed = parse_header(head[:got])
            if isinstance(parsed, Header):
                break
            if got < len(head) or parsed.at_least > limit or parsed.at_least <= len(head):
                return None
            head = bytearray(parsed.at_least)
        length = parsed.length
        self.update_into(memoryview(head)[:length], bytearray(0))  # opens the file key
        body = self._body
        assert isinstance(body, ParallelStreamDecryptor)
        try:
            trailer = TRAILER_BYTES if self._hold is not None else 0
            consumed, written = body.update_from_file(
                (src, length), size - length - trailer, (dst, None if ordered else 0)
            )
            rest = bytearray(size - length - consumed)
            with memoryview(rest) as view:
                if pread_exact(src, view, length + consumed) < len(rest):
                    raise TruncatedStreamError(body.segments)
            out = bytearray(self.output_size(len(rest)))
            n = self.update_into(rest, out)
            put((dst, None if ordered else written), memoryview(out)[:n])
            tail = self.finalize()
            put((dst, None if ordered else written + n), tail)
        except BaseException:
            self._failed = True
            raise
        return written + n + len(tail)

    def _update_header(self, data: memoryview, out: Buffer) -> int:
        if not self._head:
            # The usual case, the whole header in the first block: parse it where it
            # is, no copy (a short recording's first block is the whole file).
            parsed = parse_header(data[:MAX_HEADER_BYTES])
            if not isinstance(parsed, NeedData):
                self._open_body(parsed)
                rest = data[parsed.length :]
                return self._feed_body(rest, memoryview(out)) if rest else 0
            self._need = parsed.at_least
        # Never buffer more than MAX_HEADER_BYTES (FORMAT.md §5), and re-parse
        # only once the bytes the last parse asked for are there: O(header) total.
        take = min(len(data), MAX_HEADER_BYTES - len(self._head))
        self._head += data[:take]
        if len(self._head) < self._need:
            return 0
        parsed = parse_header(self._head)
        if isinstance(parsed, NeedData):
            self._need = parsed.at_least
            return 0
        self._open_body(parsed)
        # The bytes after the header: what the buffer holds past it, then the rest
        # of ``data`` (fed in two calls: no copy of the block).
        tail = bytes(self._head[parsed.length :])
        self._head.clear()
        view = memoryview(out)
        written = self._feed_body(memoryview(tail), view) if tail else 0
        if take < len(data):
            written += self._feed_body(data[take:], view[written:])
        return written

    def _open_body(self, parsed: Header) -> None:
        """Unwrap the file key for ``parsed`` and set up the body's decryptor."""
        self.header = parsed
        if parsed.signed:
            self._hold = bytearray()
        file_key = open_file_key(parsed, self._keys)
        body_key = _crypto.body_key(file_key)
        self._body = (
            StreamDecryptor(body_key, parsed.context)
            if self._pool is None
            else ParallelStreamDecryptor(body_key, parsed.context, self._pool)
        )

    def finalize(self) -> bytes:
        """Authenticate the end of the recording and return the last plaintext.

        Raises:
            TruncatedStreamError: the envelope ends inside the header or body.
            SegmentAuthError: the final segment fails.
        """
        if self._failed:
            msg = "cannot finalize: the envelope already failed"
            raise StreamStateError(msg)
        if self._body is None:
            self._failed = True
            if not self._head:
                raise EmptyInputError
            raise TruncatedStreamError(0, "the file ends inside the envelope header")
        try:
            if self._hold is not None:
                self.trailer = _take_trailer(self._hold, self._body.segments)
            return self._body.finalize()
        except BaseException:
            self._failed = True
            raise

    @property
    def segments(self) -> int:
        return 0 if self._body is None else self._body.segments


def _take_trailer(hold: bytearray, segments: int) -> Trailer:
    """The held-back trailer of a signed envelope, or why the file has none."""
    if len(hold) < TRAILER_BYTES:
        raise TruncatedStreamError(segments, "the signed recording ends without its trailer")
    try:
        return parse_trailer(hold)
    except EnvelopeFormatError:
        detail = "the signed recording does not end with its signature trailer"
        raise TruncatedStreamError(segments, detail) from None
