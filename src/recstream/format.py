"""The envelope format in code: constants, limits, header values, parse and serialize.

docs/FORMAT.md is the contract; section numbers below refer to it.  This module
is pure: no files, sockets, clocks, randomness or cryptography.  It imports
only the standard library and :mod:`recstream.errors`.

``parse_header(serialize(h)) == h`` and ``serialize(parse_header(b)) == b`` for
every header that parses: each value has exactly one encoding.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from recstream.errors import (
    EnvelopeFormatError,
    LimitExceededError,
    NotAnEnvelopeError,
    UnsupportedVersionError,
)

__all__ = [
    "BODY_PREFIX_BYTES",
    "COMMITMENT_BYTES",
    "FILE_KEY_BYTES",
    "MAC_BYTES",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "MAX_RECIPIENTS",
    "MAX_SEGMENTS",
    "SALT_BYTES",
    "SEGMENTS_DOMAIN",
    "SEGMENT_SIZE",
    "SEGMENT_WIRE_SIZE",
    "SIGNATURE_BYTES",
    "SIGNED_VERSION",
    "TAG_BYTES",
    "TRAILER_BYTES",
    "TRAILER_MAGIC",
    "VERSION",
    "BodyLayout",
    "Buffer",
    "Header",
    "MediaKind",
    "Metadata",
    "NeedData",
    "RecipientStanza",
    "RecipientType",
    "SignatureAlgorithm",
    "SignerBlock",
    "Trailer",
    "encode_header_body",
    "parse_header",
    "parse_trailer",
    "signed_message",
]

Buffer = bytes | bytearray | memoryview

MAGIC: Final = b"\x89RSTRM\r\n"  # §2
VERSION: Final = 1  # what an unsigned recording is written as (§9)
SIGNED_VERSION: Final = 2  # a signed recording: signer block in the header, trailer after the body
SUPPORTED_VERSIONS: Final = (1, 2)
FIXED_BYTES: Final = 12  # magic, version, metadata_length
MAC_BYTES: Final = 32  # HMAC-SHA-256, §6
FILE_KEY_BYTES: Final = 32
ID_BYTES: Final = 32  # cert_id and key_id are SHA-256 digests

# §5 limits, each with its reason in FORMAT.md.
MAX_METADATA_BYTES: Final = 1024
MIN_METADATA_BYTES: Final = 4 + 8 + 1 + 2 + 2 + 4
MAX_RECIPIENTS: Final = 16
MIN_WRAPPED_BYTES: Final = 256  # RSA-2048
MAX_WRAPPED_BYTES: Final = 1024  # RSA-8192
STANZA_FIXED_BYTES: Final = 1 + ID_BYTES + ID_BYTES + 2
# §3.1 (version 2) signer block: algorithm, certificate length, certificate DER.
SIGNER_FIXED_BYTES: Final = 3
MAX_SIGNER_CERT_BYTES: Final = 4096
MAX_HEADER_BYTES: Final = (
    FIXED_BYTES
    + MAX_METADATA_BYTES
    + SIGNER_FIXED_BYTES
    + MAX_SIGNER_CERT_BYTES
    + 1
    + MAX_RECIPIENTS * (STANZA_FIXED_BYTES + MAX_WRAPPED_BYTES)
    + MAC_BYTES
)

# §6.1 body: Cobblestone-256 (C2SP chunked-encryption with AES-256-GCM).
SEGMENT_SIZE: Final = 16 * 1024
TAG_BYTES: Final = 16
SEGMENT_WIRE_SIZE: Final = SEGMENT_SIZE + TAG_BYTES
SALT_BYTES: Final = 24
COMMITMENT_BYTES: Final = 32
BODY_PREFIX_BYTES: Final = SALT_BYTES + COMMITMENT_BYTES
MAX_SEGMENTS: Final = 2**32

# §10 signature trailer (version 2): signed_ms, segments_root, signature, trailer magic.
SIGNATURE_BYTES: Final = 64  # ECDSA P-256 raw r || s, or Ed25519
ROOT_BYTES: Final = 32
TRAILER_MAGIC: Final = b"\x89RSTSIG\n"
TRAILER_BYTES: Final = 8 + ROOT_BYTES + SIGNATURE_BYTES + len(TRAILER_MAGIC)
SIGNATURE_DOMAIN: Final = b"recstream/v2 signature\x00"
SEGMENTS_DOMAIN: Final = b"recstream/v2 segments\x00"

_FIXED = struct.Struct(">8sHH")
_SIGNER_FIXED = struct.Struct(">BH")
_TRAILER = struct.Struct(f">Q{ROOT_BYTES}s{SIGNATURE_BYTES}s8s")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_META_FIXED = struct.Struct(">IQB")
_STANZA_FIXED = struct.Struct(">B32s32sH")
_MIME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
MAX_MEDIA_TYPE_BYTES: Final = 127


class MediaKind(IntEnum):
    """§3 media_kind."""

    VOICE = 1  # a call recording
    SCREEN = 2  # a screen recording


class RecipientType(IntEnum):
    """§4 recipient stanza type."""

    RSA_OAEP_SHA256 = 1  # RSA-OAEP, SHA-256, MGF1-SHA-256, empty label


class SignatureAlgorithm(IntEnum):
    """§3.1 signer block algorithm; both give 64-byte signatures (§10)."""

    ECDSA_P256_SHA256 = 1  # ECDSA over P-256 with SHA-256, signature raw r || s (32 + 32)
    ED25519 = 2  # RFC 8032 Ed25519 (pure), over the signed message itself


@dataclass(frozen=True, slots=True)
class SignerBlock:
    """§3.1: who signs a version-2 recording (part of the immutable header).

    Attributes:
        algorithm: the signature algorithm the trailer uses.
        certificate: the signer's X.509 certificate, DER (not parsed here).
    """

    algorithm: SignatureAlgorithm
    certificate: bytes

    def __post_init__(self) -> None:
        if not 1 <= len(self.certificate) <= MAX_SIGNER_CERT_BYTES:
            msg = f"the signer certificate must be 1 to {MAX_SIGNER_CERT_BYTES} bytes of DER"
            raise ValueError(msg)
        object.__setattr__(self, "algorithm", SignatureAlgorithm(self.algorithm))

    def encode(self) -> bytes:
        return _SIGNER_FIXED.pack(self.algorithm, len(self.certificate)) + self.certificate


@dataclass(frozen=True, slots=True)
class Trailer:
    """§10: the signature trailer after a version-2 body (exactly TRAILER_BYTES).

    Attributes:
        signed_ms: signing time, ms since the epoch (UTC), as the signer's clock said.
        segments_root: §10.1 digest over the per-segment digests of the body.
        signature: 64 bytes (raw r || s for ECDSA P-256, or Ed25519).
    """

    signed_ms: int
    segments_root: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.segments_root) != ROOT_BYTES or len(self.signature) != SIGNATURE_BYTES:
            msg = f"a trailer holds a {ROOT_BYTES}-byte root and a {SIGNATURE_BYTES}-byte signature"
            raise ValueError(msg)
        if not 0 <= self.signed_ms < 2**64:
            msg = "signed_ms must fit in 64 bits"
            raise ValueError(msg)

    def encode(self) -> bytes:
        return _TRAILER.pack(self.signed_ms, self.segments_root, self.signature, TRAILER_MAGIC)


def parse_trailer(data: Buffer) -> Trailer:
    """Parse the last :data:`TRAILER_BYTES` of a version-2 envelope (§10).

    Raises:
        EnvelopeFormatError: wrong length, or no trailer magic at the end (an
            interrupted recording, or a truncated or extended file).
    """
    if len(data) != TRAILER_BYTES:
        msg = f"a signature trailer is {TRAILER_BYTES} bytes, not {len(data)}"
        raise EnvelopeFormatError(msg, 0)
    signed_ms, root, signature, magic = _TRAILER.unpack(bytes(data))
    if magic != TRAILER_MAGIC:
        msg = (
            "the header announces a signature but the file does not end with a signature "
            "trailer (the recording was interrupted, or the file was truncated or extended)"
        )
        raise EnvelopeFormatError(msg, 0)
    return Trailer(signed_ms, root, signature)


def signed_message(
    context: Buffer, body_prefix: Buffer, segment_count: int, segments_root: bytes, signed_ms: int
) -> bytes:
    """§10.2: the exact bytes the signer signs (and a verifier checks).

    Args:
        context: the header's immutable part (signer block included).
        body_prefix: the body's first 56 bytes (Cobblestone salt and commitment).
        segment_count: segments in the body, the final one included.
        segments_root: §10.1.
        signed_ms: the trailer's signing time.
    """
    if len(body_prefix) != BODY_PREFIX_BYTES:
        msg = f"body prefix must be {BODY_PREFIX_BYTES} bytes"
        raise ValueError(msg)
    return b"".join(
        (
            SIGNATURE_DOMAIN,
            _U16.pack(len(context)),
            bytes(context),
            bytes(body_prefix),
            _U64.pack(segment_count),
            segments_root,
            _U64.pack(signed_ms),
        )
    )


@dataclass(frozen=True, slots=True)
class NeedData:
    """Returned by :func:`parse_header` when more bytes are needed.

    Attributes:
        at_least: total bytes (from the start of the envelope) needed before
            parsing can progress; never more than :data:`MAX_HEADER_BYTES`.
    """

    at_least: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """§3: what the header says about the recording, readable without a key."""

    recording_id: str
    tenant: str
    media_kind: MediaKind
    media_type: str
    created_ms: int
    segment_size: int = SEGMENT_SIZE

    def __post_init__(self) -> None:
        _check_text("recording_id", self.recording_id)
        _check_text("tenant", self.tenant)
        if len(self.media_type) > MAX_MEDIA_TYPE_BYTES or not _MIME_RE.fullmatch(self.media_type):
            msg = f"media type {self.media_type!r} is not a MIME type of the form type/subtype"
            raise ValueError(msg)
        if not 0 <= self.created_ms < 2**64:
            msg = "created_ms must fit in 64 bits"
            raise ValueError(msg)
        if self.segment_size != SEGMENT_SIZE:
            msg = f"segment size must be {SEGMENT_SIZE} in format version 1"
            raise ValueError(msg)
        object.__setattr__(self, "media_kind", MediaKind(self.media_kind))

    def encode(self) -> bytes:
        parts = [_META_FIXED.pack(self.segment_size, self.created_ms, self.media_kind)]
        for text in (self.recording_id, self.tenant, self.media_type):
            raw = text.encode()
            parts.append(bytes([len(raw)]) + raw)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class RecipientStanza:
    """§4: one recipient's wrapped copy of the file key."""

    cert_id: bytes
    key_id: bytes
    wrapped_key: bytes
    type: RecipientType = RecipientType.RSA_OAEP_SHA256

    def __post_init__(self) -> None:
        if len(self.cert_id) != ID_BYTES or len(self.key_id) != ID_BYTES:
            msg = "cert_id and key_id must be 32-byte SHA-256 digests"
            raise ValueError(msg)
        if not MIN_WRAPPED_BYTES <= len(self.wrapped_key) <= MAX_WRAPPED_BYTES:
            msg = f"wrapped key must be {MIN_WRAPPED_BYTES}..{MAX_WRAPPED_BYTES} bytes"
            raise ValueError(msg)

    @property
    def cert_id_hex(self) -> str:
        return self.cert_id.hex()

    def encode(self) -> bytes:
        head = _STANZA_FIXED.pack(self.type, self.cert_id, self.key_id, len(self.wrapped_key))
        return head + self.wrapped_key


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header.  ``raw`` is exactly the bytes read (MAC included)."""

    version: int
    metadata: Metadata
    recipients: tuple[RecipientStanza, ...]
    mac: bytes
    raw: bytes
    signer: SignerBlock | None = None  # version 2 only (§3.1)

    @property
    def length(self) -> int:
        return len(self.raw)

    @property
    def context(self) -> bytes:
        """The immutable part (§3, §3.1): the body's Cobblestone context."""
        end = FIXED_BYTES + _FIXED.unpack_from(self.raw)[2]
        if self.signer is not None:
            end += SIGNER_FIXED_BYTES + len(self.signer.certificate)
        return self.raw[:end]

    @property
    def signed(self) -> bool:
        """True for a version-2 header: a signature trailer follows the body (§10)."""
        return self.signer is not None

    @property
    def trailer_bytes(self) -> int:
        """Bytes after the body: :data:`TRAILER_BYTES` when signed, else 0."""
        return TRAILER_BYTES if self.signer is not None else 0

    def body_length(self, file_size: int) -> int:
        """The body's length in a file of ``file_size`` bytes (§10: the trailer is not body)."""
        return max(0, file_size - self.length - self.trailer_bytes)

    @property
    def authenticated_bytes(self) -> bytes:
        """The bytes ``header_mac`` covers (§6)."""
        return self.raw[:-MAC_BYTES]

    @property
    def cert_ids(self) -> tuple[str, ...]:
        return tuple(r.cert_id_hex for r in self.recipients)


def encode_header_body(
    metadata: Metadata,
    recipients: tuple[RecipientStanza, ...],
    signer: SignerBlock | None = None,
) -> bytes:
    """Serialize everything before ``header_mac``; the caller appends the MAC.

    With a ``signer`` the header is version 2 (§3.1, a trailer must follow the
    body); without, version 1, byte for byte what earlier releases wrote.

    Raises:
        ValueError: no recipients, too many, or a duplicate cert_id.
    """
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        msg = f"an envelope needs 1 to {MAX_RECIPIENTS} recipients, got {len(recipients)}"
        raise ValueError(msg)
    if len({r.cert_id for r in recipients}) != len(recipients):
        msg = "the same certificate is named twice among the recipients"
        raise ValueError(msg)
    meta = metadata.encode()
    version = VERSION if signer is None else SIGNED_VERSION
    parts = [_FIXED.pack(MAGIC, version, len(meta)), meta]
    if signer is not None:
        parts.append(signer.encode())
    parts.append(bytes([len(recipients)]))
    parts.extend(r.encode() for r in recipients)
    return b"".join(parts)


def parse_header(data: Buffer) -> Header | NeedData:
    """Parse a header from the start of ``data`` (which may hold body bytes too).

    Each limit is checked as soon as its field is read, so a hostile header can
    never make the caller buffer more than :data:`MAX_HEADER_BYTES`.

    Returns:
        The :class:`Header` (its ``length`` says where the body starts), or
        :class:`NeedData` saying how many bytes in total are needed first.

    Raises:
        NotAnEnvelopeError, UnsupportedVersionError, LimitExceededError,
        EnvelopeFormatError: the bytes are not a valid version-1 or version-2 header.
    """
    view = memoryview(data)
    n = len(view)
    if n < FIXED_BYTES:
        # Refuse as early as the bytes allow: magic from byte 0, version at 10 (§2).
        m = min(n, len(MAGIC))
        if bytes(view[:m]) != MAGIC[:m]:
            raise NotAnEnvelopeError("not a recstream envelope: wrong magic bytes", 0)
        if n >= 10 and (version := int.from_bytes(view[8:10], "big")) not in SUPPORTED_VERSIONS:
            raise UnsupportedVersionError(version, SUPPORTED_VERSIONS)
        return NeedData(FIXED_BYTES)
    magic, version, meta_len = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise NotAnEnvelopeError("not a recstream envelope: wrong magic bytes", 0)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(version, SUPPORTED_VERSIONS)
    if meta_len > MAX_METADATA_BYTES:
        raise LimitExceededError("metadata_length", meta_len, MAX_METADATA_BYTES, 10)
    if meta_len < MIN_METADATA_BYTES:
        msg = f"metadata_length {meta_len} is too short to hold the required fields"
        raise EnvelopeFormatError(msg, 10)
    pos = FIXED_BYTES + meta_len
    if n < pos:
        return NeedData(pos)
    metadata = _parse_metadata(view[FIXED_BYTES:pos])
    signer: SignerBlock | None = None
    if version == SIGNED_VERSION:
        signer, pos = _parse_signer(view, pos)
        if signer is None:
            return NeedData(pos)
    if n < pos + 1:
        return NeedData(pos + 1)
    count = view[pos]
    if not 1 <= count <= MAX_RECIPIENTS:
        if count == 0:
            raise EnvelopeFormatError("the envelope has no recipients", pos)
        raise LimitExceededError("recipient_count", count, MAX_RECIPIENTS, pos)
    pos += 1
    stanzas: list[RecipientStanza] = []
    for _ in range(count):
        stanza, pos = _parse_stanza(view, pos, stanzas)
        if stanza is None:
            return NeedData(pos)
        stanzas.append(stanza)
    if n < pos + MAC_BYTES:
        return NeedData(pos + MAC_BYTES)
    end = pos + MAC_BYTES
    return Header(
        version=version,
        metadata=metadata,
        recipients=tuple(stanzas),
        mac=bytes(view[pos:end]),
        raw=bytes(view[:end]),
        signer=signer,
    )


def _parse_signer(view: memoryview, pos: int) -> tuple[SignerBlock | None, int]:
    """Parse the §3.1 signer block at ``pos``; ``(None, needed)`` when more bytes are needed."""
    if len(view) < pos + SIGNER_FIXED_BYTES:
        return None, pos + SIGNER_FIXED_BYTES
    alg, cert_len = _SIGNER_FIXED.unpack_from(view, pos)
    if alg not in SignatureAlgorithm._value2member_map_:
        msg = f"unknown signature algorithm {alg} (1 = ECDSA P-256, 2 = Ed25519)"
        raise EnvelopeFormatError(msg, pos)
    if cert_len > MAX_SIGNER_CERT_BYTES:
        raise LimitExceededError("signer_cert_length", cert_len, MAX_SIGNER_CERT_BYTES, pos + 1)
    if cert_len == 0:
        raise EnvelopeFormatError("the signer block holds no certificate", pos + 1)
    end = pos + SIGNER_FIXED_BYTES + cert_len
    if len(view) < end:
        return None, end
    cert = bytes(view[pos + SIGNER_FIXED_BYTES : end])
    return SignerBlock(SignatureAlgorithm(alg), cert), end


def _parse_stanza(
    view: memoryview, pos: int, seen: list[RecipientStanza]
) -> tuple[RecipientStanza | None, int]:
    """Parse one stanza at ``pos``; ``(None, needed)`` when more bytes are needed."""
    if len(view) < pos + STANZA_FIXED_BYTES:
        return None, pos + STANZA_FIXED_BYTES
    rtype, cert_id, key_id, wlen = _STANZA_FIXED.unpack_from(view, pos)
    if rtype != RecipientType.RSA_OAEP_SHA256:
        msg = f"unknown recipient type {rtype}"
        raise EnvelopeFormatError(msg, pos)
    if wlen > MAX_WRAPPED_BYTES:
        raise LimitExceededError("wrapped_length", wlen, MAX_WRAPPED_BYTES, pos + 65)
    if wlen < MIN_WRAPPED_BYTES:
        msg = f"wrapped_length {wlen} is under {MIN_WRAPPED_BYTES} (RSA keys under 2048 bits)"
        raise EnvelopeFormatError(msg, pos + 65)
    if any(s.cert_id == cert_id for s in seen):
        msg = f"certificate ID {cert_id.hex()} appears twice among the recipients"
        raise EnvelopeFormatError(msg, pos + 1)
    end = pos + STANZA_FIXED_BYTES + wlen
    if len(view) < end:
        return None, end
    wrapped = bytes(view[pos + STANZA_FIXED_BYTES : end])
    return RecipientStanza(cert_id, key_id, wrapped, RecipientType(rtype)), end


def _parse_metadata(view: memoryview) -> Metadata:
    base = FIXED_BYTES
    if len(view) < _META_FIXED.size:
        raise EnvelopeFormatError("metadata too short", base)
    seg, created, kind = _META_FIXED.unpack_from(view)
    if seg != SEGMENT_SIZE:
        msg = f"segment_size {seg} is not {SEGMENT_SIZE}, the only size version 1 allows"
        raise EnvelopeFormatError(msg, base)
    if kind not in MediaKind._value2member_map_:
        msg = f"unknown media_kind {kind} (1 = voice, 2 = screen)"
        raise EnvelopeFormatError(msg, base + 12)
    pos = _META_FIXED.size
    texts: list[str] = []
    for name, lo, hi in (("recording_id", 1, 255), ("tenant", 1, 255), ("media_type", 3, 127)):
        if pos >= len(view):
            msg = f"metadata ends before {name}"
            raise EnvelopeFormatError(msg, base + pos)
        length = view[pos]
        if not lo <= length <= hi or pos + 1 + length > len(view):
            msg = f"{name} length {length} is invalid or runs past the metadata"
            raise EnvelopeFormatError(msg, base + pos)
        raw = bytes(view[pos + 1 : pos + 1 + length])
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            msg = f"{name} is not valid UTF-8"
            raise EnvelopeFormatError(msg, base + pos + 1) from exc
        texts.append(text)
        pos += 1 + length
    if pos != len(view):
        msg = f"{len(view) - pos} unexpected byte(s) after the metadata fields"
        raise EnvelopeFormatError(msg, base + pos)
    try:
        return Metadata(texts[0], texts[1], MediaKind(kind), texts[2], created, seg)
    except ValueError as exc:
        raise EnvelopeFormatError(str(exc), base) from exc


def _check_text(name: str, text: str) -> None:
    raw = text.encode("utf-8", errors="surrogatepass")
    if not 1 <= len(raw) <= 255:
        msg = f"{name} must be 1 to 255 bytes of UTF-8, got {len(raw)}"
        raise ValueError(msg)
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        msg = f"{name} must not contain control characters"
        raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class BodyLayout:
    """§6.1 size arithmetic for a body of ``body_length`` bytes (no key needed).

    Attributes:
        body_length: bytes after the header.
        full_segments: complete 16,400-byte segments present.
        tail: bytes after the last full segment (the final segment if complete).
        complete: the shape of a finished recording (``tail >= 16``); only
            authentication proves it is one.
    """

    body_length: int

    @property
    def full_segments(self) -> int:
        return max(0, self.body_length - BODY_PREFIX_BYTES) // SEGMENT_WIRE_SIZE

    @property
    def tail(self) -> int:
        return max(0, self.body_length - BODY_PREFIX_BYTES) % SEGMENT_WIRE_SIZE

    @property
    def complete(self) -> bool:
        return self.body_length >= BODY_PREFIX_BYTES + TAG_BYTES and self.tail >= TAG_BYTES

    @property
    def segments(self) -> int:
        """Segments including the final one when complete."""
        return self.full_segments + (1 if self.complete else 0)

    @property
    def plaintext_length(self) -> int:
        """Plaintext bytes if complete; else those of the full segments."""
        extra = self.tail - TAG_BYTES if self.complete else 0
        return self.full_segments * SEGMENT_SIZE + extra

    @staticmethod
    def for_plaintext(length: int) -> BodyLayout:
        """Return the layout of the body that encrypts ``length`` plaintext bytes."""
        full, rest = divmod(length, SEGMENT_SIZE)
        return BodyLayout(BODY_PREFIX_BYTES + full * SEGMENT_WIRE_SIZE + rest + TAG_BYTES)

    @staticmethod
    def segment_offset(index: int) -> int:
        """Body offset of segment ``index``."""
        return BODY_PREFIX_BYTES + index * SEGMENT_WIRE_SIZE
