"""Hypothesis properties and the fuzz targets for the header parser and decoder."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recstream import errors
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor
from recstream.format import (
    MAX_HEADER_BYTES,
    SEGMENT_SIZE,
    Header,
    MediaKind,
    Metadata,
    NeedData,
    RecipientStanza,
    encode_header_body,
    parse_header,
)
from tests.conftest import Party

ALICE = Party("prop-alice")
KEYS = ALICE.keys
META = Metadata("prop", "tenant", MediaKind.VOICE, "audio/wav", 0)
FIXED_KEY = bytes(range(32))
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def seal(pt: bytes, pieces: list[int] | None = None) -> bytes:
    enc = EnvelopeEncryptor([ALICE.recipient], META, file_key=FIXED_KEY)
    out, pos = [], 0
    for size in pieces or []:
        out.append(enc.update(pt[pos : pos + size]))
        pos += size
    out.append(enc.update(pt[pos:]))
    return b"".join(out) + enc.finalize()


def open_split(data: bytes, cuts: list[int]) -> bytes:
    dec = EnvelopeDecryptor(KEYS)
    points = sorted({min(c, len(data)) for c in cuts})
    out, prev = [], 0
    for c in [*points, len(data)]:
        out.append(dec.update(data[prev:c]))
        prev = c
    return b"".join(out) + dec.finalize()


sizes = st.sampled_from(
    [0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 3 * SEGMENT_SIZE + 17]
) | st.integers(0, 5 * SEGMENT_SIZE)


@PROFILE
@given(
    size=sizes,
    enc_cuts=st.lists(st.integers(0, 20_000), max_size=6),
    dec_cuts=st.lists(st.integers(0, 100_000), max_size=8),
)
def test_round_trip_under_any_split(size: int, enc_cuts: list[int], dec_cuts: list[int]) -> None:
    pt = os.urandom(size)
    envelope = seal(pt, enc_cuts)
    assert open_split(envelope, dec_cuts) == pt


stanzas = st.builds(
    RecipientStanza,
    cert_id=st.binary(min_size=32, max_size=32),
    key_id=st.binary(min_size=32, max_size=32),
    wrapped_key=st.binary(min_size=256, max_size=1024),
)
text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=60)
metas = st.builds(
    Metadata,
    recording_id=text,
    tenant=text,
    media_kind=st.sampled_from(MediaKind),
    media_type=st.sampled_from(["audio/wav", "video/webm", "audio/basic", "video/mp4"]),
    created_ms=st.integers(0, 2**64 - 1),
)


@PROFILE
@given(
    meta=metas,
    recips=st.lists(stanzas, min_size=1, max_size=4, unique_by=lambda s: s.cert_id),
    mac=st.binary(min_size=32, max_size=32),
)
def test_parse_serialize_identity(
    meta: Metadata, recips: list[RecipientStanza], mac: bytes
) -> None:
    raw = encode_header_body(meta, tuple(recips)) + mac
    parsed = parse_header(raw)
    assert isinstance(parsed, Header)
    assert parsed.metadata == meta and list(parsed.recipients) == recips
    assert encode_header_body(parsed.metadata, parsed.recipients) + parsed.mac == raw


VECTOR = seal(b"x" * (SEGMENT_SIZE + 5))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
@example(data=VECTOR[:300])
@example(data=b"\x89RSTRM\r\n\x00\x01\x04\x00")
def test_fuzz_header_parser(data: bytes) -> None:
    """Any input: a Header, NeedData within the bound, or an EnvelopeFormatError."""
    try:
        result = parse_header(data)
    except errors.EnvelopeFormatError:
        return
    if isinstance(result, NeedData):
        assert len(data) < result.at_least <= MAX_HEADER_BYTES
    else:
        assert result.raw == data[: result.length]
        assert encode_header_body(result.metadata, result.recipients) + result.mac == result.raw


@settings(max_examples=200, deadline=None)
@given(
    pos=st.integers(0, len(VECTOR) - 1),
    bit=st.integers(0, 7),
    cuts=st.lists(st.integers(0, len(VECTOR)), max_size=4),
)
def test_fuzz_any_bit_flip_is_a_recstream_error(pos: int, bit: int, cuts: list[int]) -> None:
    bad = bytearray(VECTOR)
    bad[pos] ^= 1 << bit
    try:
        open_split(bytes(bad), cuts)
    except errors.RecstreamError:
        return
    raise AssertionError(f"bit {bit} of byte {pos} flipped and decryption succeeded")


@settings(max_examples=200, deadline=None)
@given(
    prefix_len=st.integers(0, len(VECTOR)),
    junk=st.binary(max_size=400),
    cuts=st.lists(st.integers(0, 20_000), max_size=4),
)
def test_fuzz_decoder_on_mangled_envelopes(prefix_len: int, junk: bytes, cuts: list[int]) -> None:
    """Truncated or extended envelopes end in a recstream error, never anything else."""
    data = VECTOR[:prefix_len] + junk
    try:
        out = open_split(data, cuts)
    except errors.RecstreamError:
        return
    assert data == VECTOR and out == b"x" * (SEGMENT_SIZE + 5)
