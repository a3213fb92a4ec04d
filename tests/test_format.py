"""The header codec: golden bytes, incremental parsing, strictness, limits."""

from __future__ import annotations

import struct

import pytest

from recstream import errors
from recstream.format import (
    MAGIC,
    MAX_HEADER_BYTES,
    SEGMENT_SIZE,
    SEGMENT_WIRE_SIZE,
    BodyLayout,
    Header,
    MediaKind,
    Metadata,
    NeedData,
    RecipientStanza,
    encode_header_body,
    parse_header,
)

META = Metadata("rec-1", "acme", MediaKind.SCREEN, "video/webm", 1_700_000_000_123)
STANZA = RecipientStanza(b"\x11" * 32, b"\x22" * 32, b"\x33" * 256)


def header_bytes(meta: Metadata = META, stanzas: tuple[RecipientStanza, ...] = (STANZA,)) -> bytes:
    return encode_header_body(meta, stanzas) + b"\x44" * 32


def test_golden_layout() -> None:
    raw = header_bytes()
    meta = (
        struct.pack(">IQB", 16384, 1_700_000_000_123, 2)
        + b"\x05rec-1"
        + b"\x04acme"
        + b"\x0avideo/webm"
    )
    expected = (
        b"\x89RSTRM\r\n"
        + b"\x00\x01"
        + struct.pack(">H", len(meta))
        + meta
        + b"\x01"
        + b"\x01"
        + b"\x11" * 32
        + b"\x22" * 32
        + b"\x01\x00"
        + b"\x33" * 256
        + b"\x44" * 32
    )
    assert raw == expected
    parsed = parse_header(raw)
    assert isinstance(parsed, Header)
    assert parsed.metadata == META
    assert parsed.recipients == (STANZA,)
    assert parsed.context == expected[: 12 + len(meta)]
    assert parsed.authenticated_bytes == expected[:-32]


def test_parse_one_byte_at_a_time_and_with_trailing_data() -> None:
    raw = header_bytes()
    # h11's tr(): whole, byte by byte, and with trailing bytes left unread.
    for n in range(len(raw)):
        result = parse_header(raw[:n])
        assert isinstance(result, NeedData)
        assert n < result.at_least <= len(raw)
    whole = parse_header(raw + b"body bytes")
    assert isinstance(whole, Header)
    assert whole.raw == raw
    assert whole.length == len(raw)


def test_serialize_parse_identity_two_recipients() -> None:
    s2 = RecipientStanza(b"\x55" * 32, b"\x66" * 32, b"\x77" * 512)
    raw = header_bytes(stanzas=(STANZA, s2))
    parsed = parse_header(raw)
    assert isinstance(parsed, Header)
    assert encode_header_body(parsed.metadata, parsed.recipients) + parsed.mac == raw


@pytest.mark.parametrize(
    ("mutate", "exc", "where"),
    [
        (lambda b: b"\x88" + b[1:], errors.NotAnEnvelopeError, 0),
        (lambda b: b[:8] + b"\x00\x03" + b[10:], errors.UnsupportedVersionError, 8),
        (lambda b: b[:8] + b"\x00\x63" + b[10:], errors.UnsupportedVersionError, 8),
        (lambda b: b[:10] + b"\x04\x01" + b[12:], errors.LimitExceededError, 10),
        (lambda b: b[:10] + b"\x00\x05" + b[12:], errors.EnvelopeFormatError, 10),
    ],
)
def test_fixed_part_refusals(mutate, exc, where) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc) as info:
        parse_header(mutate(header_bytes()))
    assert info.value.offset == where


def test_wrong_magic_refused_from_first_byte() -> None:
    with pytest.raises(errors.NotAnEnvelopeError, match="not a recstream envelope"):
        parse_header(b"RIFF")


def test_version_error_names_versions() -> None:
    raw = bytearray(header_bytes())
    raw[8:10] = b"\x00\x63"
    with pytest.raises(errors.UnsupportedVersionError, match="version 99 is not supported") as i:
        parse_header(bytes(raw))
    assert i.value.version == 99


def _meta_block(raw: bytes) -> tuple[int, int]:
    mlen = struct.unpack_from(">H", raw, 10)[0]
    return 12, 12 + mlen


def test_metadata_trailing_byte_refused() -> None:
    raw = bytearray(header_bytes())
    start, end = _meta_block(bytes(raw))
    raw[10:12] = struct.pack(">H", end - start + 1)
    raw[end:end] = b"\x00"
    with pytest.raises(errors.EnvelopeFormatError, match="unexpected byte"):
        parse_header(bytes(raw))


@pytest.mark.parametrize(
    ("offset_in_meta", "value", "message"),
    [
        (0, b"\x00\x01\x00\x00", "segment_size"),
        (12, b"\x03", "media_kind"),
        (13, b"\x00", "recording_id length"),
    ],
)
def test_metadata_field_refusals(offset_in_meta: int, value: bytes, message: str) -> None:
    raw = bytearray(header_bytes())
    raw[12 + offset_in_meta : 12 + offset_in_meta + len(value)] = value
    with pytest.raises(errors.EnvelopeFormatError, match=message):
        parse_header(bytes(raw))


def test_control_characters_and_bad_utf8_refused() -> None:
    with pytest.raises(ValueError, match="control"):
        Metadata("rec\x1b[2J", "acme", MediaKind.VOICE, "audio/wav", 0)
    raw = bytearray(header_bytes())
    raw[12 + 14] = 0xFF  # first byte of recording_id
    with pytest.raises(errors.EnvelopeFormatError, match="UTF-8"):
        parse_header(bytes(raw))


def test_recipient_limits() -> None:
    base = bytearray(header_bytes())
    _, end = _meta_block(bytes(base))
    zero = bytes(base[:end]) + b"\x00" + b"\x44" * 32
    with pytest.raises(errors.EnvelopeFormatError, match="no recipients"):
        parse_header(zero)
    many = bytes(base[:end]) + b"\x11"
    with pytest.raises(errors.LimitExceededError) as info:
        parse_header(many)
    assert (info.value.field, info.value.limit) == ("recipient_count", 16)
    for wlen, exc in ((1025, errors.LimitExceededError), (255, errors.EnvelopeFormatError)):
        bad = bytearray(base)
        bad[end + 1 + 65 : end + 1 + 67] = struct.pack(">H", wlen)
        with pytest.raises(exc):
            parse_header(bytes(bad))
    unknown = bytearray(base)
    unknown[end + 1] = 2
    with pytest.raises(errors.EnvelopeFormatError, match="unknown recipient type"):
        parse_header(bytes(unknown))


def test_duplicate_cert_id_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        encode_header_body(META, (STANZA, STANZA))
    raw = bytearray(encode_header_body(META, (STANZA,)))
    _, end = _meta_block(bytes(raw))
    raw[end] = 2
    raw += STANZA.encode() + b"\x44" * 32
    with pytest.raises(errors.EnvelopeFormatError, match="appears twice"):
        parse_header(bytes(raw))


def test_need_data_never_exceeds_max_header() -> None:
    big = tuple(RecipientStanza(bytes([i]) * 32, b"\x01" * 32, b"\x02" * 1024) for i in range(16))
    long_meta = Metadata("r" * 255, "t" * 255, MediaKind.VOICE, "a/" + "b" * 125, 0)
    raw = header_bytes(long_meta, big)
    assert len(raw) <= MAX_HEADER_BYTES
    for n in range(0, len(raw), 97):
        result = parse_header(raw[:n])
        assert isinstance(result, NeedData)
        assert result.at_least <= MAX_HEADER_BYTES


@pytest.mark.parametrize(
    "length", [0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 5 * SEGMENT_SIZE + 7]
)
def test_body_layout_arithmetic(length: int) -> None:
    layout = BodyLayout.for_plaintext(length)
    assert layout.complete
    assert layout.plaintext_length == length
    assert layout.segments == length // SEGMENT_SIZE + 1
    cut = BodyLayout(56 + layout.full_segments * SEGMENT_WIRE_SIZE)
    assert not cut.complete
    assert cut.segments == cut.full_segments == length // SEGMENT_SIZE
    assert not BodyLayout(56 + 15).complete
    assert BodyLayout.segment_offset(3) == 56 + 3 * SEGMENT_WIRE_SIZE


def test_magic_is_the_documented_bytes() -> None:
    assert bytes.fromhex("895253545 24d0d0a".replace(" ", "")) == MAGIC
