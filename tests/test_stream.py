"""Body encryption/decryption across sizes and feed patterns (age's stream_test sweep)."""

from __future__ import annotations

import os

import pytest

from recstream import errors
from recstream.format import SEGMENT_SIZE, SEGMENT_WIRE_SIZE, BodyLayout
from recstream.stream import StreamDecryptor, StreamEncryptor

KEY = bytes(range(32))
CTX = b"context"
SIZES = [
    0,
    1,
    SEGMENT_SIZE - 1,
    SEGMENT_SIZE,
    SEGMENT_SIZE + 1,
    2 * SEGMENT_SIZE,
    2 * SEGMENT_SIZE + 1,
]
STEPS = [1, 7, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1]


def encrypt(pt: bytes, step: int) -> bytes:
    enc = StreamEncryptor(KEY, CTX)
    parts = []
    for i in range(0, len(pt), step):
        chunk = pt[i : i + step]
        out = bytearray(enc.output_size(len(chunk)))
        n = enc.update_into(chunk, out)
        assert n == len(out)  # output_size is exact
        parts.append(bytes(out))
    parts.append(enc.finalize())
    return b"".join(parts)


def decrypt(ct: bytes, step: int) -> bytes:
    dec = StreamDecryptor(KEY, CTX)
    parts = [dec.update(ct[i : i + step]) for i in range(0, len(ct), step)]
    parts.append(dec.finalize())
    return b"".join(parts)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("step", STEPS)
def test_round_trip_sizes_and_steps(size: int, step: int) -> None:
    pt = os.urandom(size)
    ct = encrypt(pt, step)
    assert len(ct) == BodyLayout.for_plaintext(size).body_length
    assert decrypt(ct, step) == pt
    assert decrypt(ct, len(ct) + 1) == pt


def test_decryptor_releases_each_segment_as_soon_as_it_is_whole() -> None:
    pt = os.urandom(3 * SEGMENT_SIZE + 5)
    ct = encrypt(pt, len(pt))
    dec = StreamDecryptor(KEY, CTX)
    assert dec.update(ct[: 56 + SEGMENT_WIRE_SIZE - 1]) == b""
    assert dec.update(ct[56 + SEGMENT_WIRE_SIZE - 1 : 56 + SEGMENT_WIRE_SIZE]) == pt[:SEGMENT_SIZE]
    assert dec.segments == 1


def test_state_machine_poisons_after_finalize_and_failure() -> None:
    enc = StreamEncryptor(KEY, CTX)
    enc.finalize()
    with pytest.raises(errors.StreamStateError, match="already finalized"):
        enc.update(b"x")
    with pytest.raises(errors.StreamStateError):
        enc.finalize()
    ct = encrypt(b"a" * 40000, 40000)
    bad = bytearray(ct)
    bad[100] ^= 1
    dec = StreamDecryptor(KEY, CTX)
    with pytest.raises(errors.SegmentAuthError):
        dec.update(bytes(bad))
    with pytest.raises(errors.StreamStateError, match="already failed"):
        dec.update(b"")
    with pytest.raises(errors.StreamStateError):
        dec.finalize()


def test_small_output_buffer_poisons_encryptor() -> None:
    enc = StreamEncryptor(KEY, CTX)
    with pytest.raises(ValueError, match="buffer"):
        enc.update_into(b"x" * SEGMENT_SIZE, bytearray(10))
    with pytest.raises(errors.StreamStateError):
        enc.update(b"")


def test_wrong_context_or_key_fails_at_the_commitment() -> None:
    ct = encrypt(b"hello", 5)
    with pytest.raises(errors.IntegrityError, match="commitment"):
        StreamDecryptor(KEY, b"other").update(ct)
    with pytest.raises(errors.IntegrityError, match="commitment"):
        StreamDecryptor(bytes(32), CTX).update(ct)


def test_failure_index_is_exact_within_a_batch() -> None:
    pt = os.urandom(10 * SEGMENT_SIZE)
    ct = bytearray(encrypt(pt, len(pt)))
    ct[56 + 6 * SEGMENT_WIRE_SIZE + 3] ^= 0x80
    dec = StreamDecryptor(KEY, CTX)
    with pytest.raises(errors.SegmentAuthError) as info:
        dec.update(bytes(ct))
    assert info.value.index == 6
