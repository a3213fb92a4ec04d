"""The track container's decoder limits (docs/TRACKS.md §7) against hostile containers.

Anyone holding a tenant's public certificate can author a container, so the
decoder must answer every shape of it with a TracksFormatError or a result, and
never with a crash or gigabytes of silence.
"""

from __future__ import annotations

import json
import struct
import sys

import pytest

from recstream import tracks as T
from recstream.errors import TracksFormatError

PRE = T.MAGIC + bytes([T.VERSION])


def _rec(kind: int, body: bytes) -> bytes:
    return struct.pack(">BI", kind, len(body)) + body


def _session() -> bytes:
    return _rec(1, json.dumps({"source": "test", "started_ms": 0}).encode())


def _track(n: int, codec: str = "PCMU", rate: int = 8000) -> bytes:
    doc = {"track": n, "codec": codec, "clock_rate": rate, "origin_ms": 0}
    return _rec(2, json.dumps(doc).encode())


def _gap(track: int, position: int, samples: int) -> bytes:
    return _rec(4, struct.pack(">HQII", track, position, samples, 1))


def _media(track: int, position: int, payload: bytes) -> bytes:
    return _rec(3, struct.pack(">HQ", track, position) + payload)


END = _rec(7, b"")


def test_many_skipped_ancillary_records_are_a_loop_not_recursion() -> None:
    # More empty ancillary records than the interpreter's recursion limit.
    n = sys.getrecursionlimit() * 5
    body = PRE + _session() + _rec(0x90, b"") * n + _track(1) + _media(1, 0, b"\x01") + END
    got = T.extract(body)
    assert got.complete and got.records == 4 and bytes(got.tracks[1].audio) == b"\x01"
    # The same through the pull decoder, fed one record header at a time.
    dec = T.TracksDecoder()
    for i in range(0, len(body), 5):
        dec.receive_data(body[i : i + 5])
    dec.receive_data(b"")
    assert [type(r).__name__ for r in dec] == ["Session", "TrackDecl", "Media", "End"]


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
@pytest.mark.parametrize("rate", [1_000_000, 16000, 7999])
def test_g711_must_be_8000_hz(codec: str, rate: int) -> None:
    body = PRE + _session() + _track(1, codec, rate) + _gap(1, 0, 1000) + END
    with pytest.raises(TracksFormatError, match="clock_rate"):
        T.extract(body)
    enc = T.TracksEncoder()
    enc.start("test", 0)
    with pytest.raises(ValueError, match="8000"):
        enc.declare(T.TrackDecl(1, codec, rate, 0))


def test_other_codecs_keep_their_own_clock() -> None:
    body = PRE + _session() + _track(1, "OPUS", 48000) + _media(1, 0, b"ab") + END
    assert bytes(T.extract(body).tracks[1].audio) == b"ab"


def _hours_of_gaps(track: int, hours: int) -> bytes:
    hour = 3600 * 8000
    return b"".join(_gap(track, h * hour, hour) for h in range(hours))


def test_a_tracks_total_audio_is_capped_across_records() -> None:
    # Each GAP is within the one-fill limit; together they pass the track limit.
    # The limit is scaled down here (the default, 24 h, would be 691 MB to reach).
    ok = PRE + _session() + _track(1) + _hours_of_gaps(1, 2) + END
    assert len(T.extract(ok, max_track_seconds=2 * 3600).tracks[1].audio) == 2 * 3600 * 8000
    over = PRE + _session() + _track(1) + _hours_of_gaps(1, 3) + END
    with pytest.raises(TracksFormatError, match="track 1 is longer than"):
        T.extract(over, max_track_seconds=2 * 3600)
    # MEDIA payload counts too: one byte past the limit is refused.
    edge = PRE + _session() + _track(1) + _hours_of_gaps(1, 2)
    with pytest.raises(TracksFormatError, match="longer than"):
        T.extract(edge + _media(1, 2 * 3600 * 8000, b"\x00") + END, max_track_seconds=2 * 3600)


def test_the_tracks_together_are_capped() -> None:
    body = PRE + _session() + _track(1) + _track(2) + _hours_of_gaps(1, 1)
    body += _hours_of_gaps(2, 2) + END
    with pytest.raises(TracksFormatError, match="tracks together"):
        T.extract(body, max_track_seconds=2 * 3600, max_total_seconds=2 * 3600)
    got = T.extract(body, max_track_seconds=2 * 3600, max_total_seconds=3 * 3600)
    assert len(got.tracks[2].audio) == 2 * len(got.tracks[1].audio)


def test_default_limits_are_the_documented_ones() -> None:
    # docs/TRACKS.md §7 states these; a change here is a spec change.
    assert T.MAX_TRACK_SECONDS == 24 * 3600
    assert T.MAX_TOTAL_SECONDS == 4 * 24 * 3600
    assert T.MAX_FILL_SECONDS == 3600
