"""Random access: any segment without the ones before; length authenticated up front."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import pytest

from recstream import errors
from recstream.format import SEGMENT_SIZE, SEGMENT_WIRE_SIZE
from recstream.reader import BytesSource, DecryptingFile, SegmentReader
from tests.conftest import Party

Seal = Callable[..., bytes]


class CountingSource(BytesSource):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read_at(self, offset: int, n: int) -> bytes:
        self.reads.append((offset, n))
        return super().read_at(offset, n)


def test_read_segment_touches_only_that_segment(seal: Seal, alice: Party) -> None:
    pt = os.urandom(20 * SEGMENT_SIZE + 123)
    src = CountingSource(seal(pt))
    reader = SegmentReader(src, alice.keys)
    assert reader.size == len(pt)
    assert reader.segments == 21
    src.reads.clear()
    assert reader.read_segment(13) == pt[13 * SEGMENT_SIZE : 14 * SEGMENT_SIZE]
    assert len(src.reads) == 1
    assert src.reads[0][1] == SEGMENT_WIRE_SIZE
    assert (
        reader.read_at(5 * SEGMENT_SIZE - 3, 10) == pt[5 * SEGMENT_SIZE - 3 : 5 * SEGMENT_SIZE + 7]
    )
    assert reader.read_at(len(pt) - 5, 100) == pt[-5:]
    assert reader.read_at(len(pt) + 10, 5) == b""


def test_decrypting_file_seeks_like_a_file(seal: Seal, alice: Party) -> None:
    pt = os.urandom(3 * SEGMENT_SIZE + 77)
    f = io.BufferedReader(DecryptingFile(SegmentReader(BytesSource(seal(pt)), alice.keys)))
    assert f.read() == pt
    f.seek(-10, io.SEEK_END)
    assert f.read() == pt[-10:]
    f.seek(SEGMENT_SIZE + 1)
    assert f.read(5) == pt[SEGMENT_SIZE + 1 : SEGMENT_SIZE + 6]


def test_incomplete_or_tampered_final_segment_refused_at_open(seal: Seal, alice: Party) -> None:
    data = seal(os.urandom(2 * SEGMENT_SIZE + 50))
    with pytest.raises(errors.TruncatedStreamError):
        SegmentReader(BytesSource(data[:-66]), alice.keys)
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(errors.SegmentAuthError):
        SegmentReader(BytesSource(bytes(bad)), alice.keys)


def test_tampered_middle_segment_fails_only_when_read(seal: Seal, alice: Party) -> None:
    pt = os.urandom(4 * SEGMENT_SIZE + 1)
    data = bytearray(seal(pt))
    reader = SegmentReader(BytesSource(bytes(data)), alice.keys)
    data[reader.header.length + 56 + 2 * SEGMENT_WIRE_SIZE + 9] ^= 4
    reader = SegmentReader(BytesSource(bytes(data)), alice.keys)
    assert reader.read_segment(1) == pt[SEGMENT_SIZE : 2 * SEGMENT_SIZE]
    with pytest.raises(errors.SegmentAuthError) as info:
        reader.read_segment(2)
    assert info.value.index == 2
    with pytest.raises(errors.SegmentAuthError) as info:  # a range across it, one read
        reader.read_at(SEGMENT_SIZE + 5, 3 * SEGMENT_SIZE)
    assert info.value.index == 2
    assert reader.read_at(5, 2 * SEGMENT_SIZE - 10) == pt[5 : 2 * SEGMENT_SIZE - 5]
    with pytest.raises(IndexError):
        reader.read_segment(99)
