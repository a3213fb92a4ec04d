"""Seekable muxed output (issue 17): duration and Cues at the front, still encrypted.

The sealing sink keeps the first segments as changeable plaintext and seals the rest
as they come; these tests drive it the way FFmpeg does (append, go back into the
head, append more) and read the result with both readers, across segment boundaries.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import av
import pytest

from recstream.envelope import EnvelopeDecryptor, RandomAccessEncryptor, new_metadata
from recstream.errors import NoMatchingKeyError, StreamStateError
from recstream.format import MAGIC, SEGMENT_SIZE, MediaKind
from recstream.mux import MuxError, _SealingSink, mux_files
from recstream.reader import BytesSource, SegmentReader
from tests.conftest import Party
from tests.test_mux import CALL, SCREEN, SCREEN_DELAY_MS, T0, check_muxed, seal_file

S = SEGMENT_SIZE
EBML_CUES = b"\x1c\x53\xbb\x6b"


def sealer(party: Party) -> RandomAccessEncryptor:
    md = new_metadata(
        recording_id="r", tenant="t", media_kind=MediaKind.SCREEN, media_type="video/webm"
    )
    return RandomAccessEncryptor([party.recipient], md)


def both_readers(raw: bytes, party: Party) -> bytes:
    dec = EnvelopeDecryptor(party.keys)
    streamed = dec.update(raw) + dec.finalize()
    reader = SegmentReader(BytesSource(raw), party.keys)
    assert reader.read_at(0, reader.size) == streamed
    return streamed


@pytest.mark.parametrize(
    "size", [0, 1, S - 1, S, S + 1, 2 * S, 2 * S + 1, 3 * S, 5 * S - 1, 5 * S, 7 * S + 100]
)
def test_sink_round_trips_with_changes_in_the_head(alice: Party, size: int) -> None:
    rng = random.Random(size)
    expect = bytearray(rng.randbytes(size))
    out = io.BytesIO()
    sink = _SealingSink(out, sealer(alice), head_segments=2)
    pos = 0
    while pos < size:  # appends of uneven sizes, as the muxer's buffers flush
        n = min(size - pos, rng.choice([1, 7, 100, S - 3, S, 3 * S]))
        assert sink.write(expect[pos : pos + n]) == n
        pos += n
    for _ in range(5):  # then go back into the head and change it
        at = rng.randrange(0, min(size, 2 * S) + 1)
        patch = rng.randbytes(min(10, min(size, 2 * S) - at))
        sink.seek(at)
        sink.write(patch)
        expect[at : at + len(patch)] = patch
    sink.seek(0, io.SEEK_END)
    sink.finish()
    raw = out.getvalue()
    assert raw.startswith(MAGIC)
    assert both_readers(raw, alice) == bytes(expect)
    assert sink.written == size


def test_sink_refuses_going_back_into_sealed_bytes(alice: Party) -> None:
    sink = _SealingSink(io.BytesIO(), sealer(alice), head_segments=1)
    sink.write(bytes(5 * S))  # segments 1..3 are sealed (one segment of slack)
    sink.seek(S + 10)
    with pytest.raises(MuxError, match=r"went back to byte 16394, which is already encrypted"):
        sink.write(b"x")
    with pytest.raises(MuxError, match="before the start of the file"):
        sink.seek(-1)
    with pytest.raises(MuxError, match="before the start"):
        sink.seek(-5 * S - 1, io.SEEK_END)


def test_sink_fills_a_seek_past_the_end_with_zeros(alice: Party) -> None:
    # the MP4 muxer skips the space it reserves for the moov, then comes back to it
    out = io.BytesIO()
    sink = _SealingSink(out, sealer(alice), head_segments=3)
    sink.write(b"ftyp")
    sink.seek(2 * S + 5)  # a hole across the head's segment boundaries
    sink.write(b"mdat")
    sink.seek(4 * S, io.SEEK_CUR)  # and one past the head, into what is sealed as it comes
    sink.write(b"x" * (3 * S))
    assert sink.seek(0, io.SEEK_END) == sink.written == 9 * S + 9
    sink.seek(4)
    sink.write(b"moov")  # back into the hole
    sink.finish()
    expect = b"ftypmoov" + bytes(2 * S - 3) + b"mdat" + bytes(4 * S) + b"x" * (3 * S)
    assert both_readers(out.getvalue(), alice) == expect


def test_sealer_never_seals_past_or_twice_the_final_segment(alice: Party) -> None:
    enc = sealer(alice)
    enc.seal(3, b"short")  # the final segment
    with pytest.raises(StreamStateError, match="at or after the final segment 3"):
        enc.seal(3, b"again")
    with pytest.raises(StreamStateError):
        enc.seal(4, bytes(S))
    with pytest.raises(ValueError, match="at most 16384 bytes"):
        enc.seal(0, bytes(S + 1))
    with pytest.raises(ValueError, match="recipient"):
        RandomAccessEncryptor([], enc.metadata)


def webm_facts(data: bytes) -> tuple[float, int]:
    """(duration in seconds from the header, offset of the Cues element)."""
    with av.open(io.BytesIO(data)) as c:
        return float(c.duration or 0) / 1e6, data.find(EBML_CUES)


def test_plain_mux_has_duration_and_cues_at_the_front(tmp_path: Path) -> None:
    mux_files(CALL, SCREEN, tmp_path / "out.webm")
    data = (tmp_path / "out.webm").read_bytes()
    duration, cues = webm_facts(data)
    assert duration == pytest.approx(15.0, abs=0.1)
    assert 0 < cues < 4096  # in the reserved space, before the first cluster


def test_encrypted_mux_has_duration_and_cues_and_stays_encrypted(
    tmp_path: Path, alice: Party, bob: Party
) -> None:
    voice = seal_file(CALL, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    screen = seal_file(SCREEN, tmp_path / "s.rsv", alice, MediaKind.SCREEN, T0 + SCREEN_DELAY_MS)
    out = tmp_path / "out.rsv"
    result = mux_files(voice, screen, out, keys=alice.keys, recipients=[bob.recipient])
    raw = out.read_bytes()
    assert raw.startswith(MAGIC) and EBML_CUES not in raw
    plain = both_readers(raw, bob)
    assert len(plain) == result.bytes_written
    duration, cues = webm_facts(plain)
    assert duration == pytest.approx(15.0, abs=0.1)
    assert 0 < cues < 4096
    check_muxed(plain, 2.5)
    with pytest.raises(NoMatchingKeyError):  # only the output's recipient reads it
        both_readers(raw, alice)
