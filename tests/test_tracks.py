"""The multi-track container (docs/TRACKS.md): vectors, any split, encoder rules."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream import tracks as T
from recstream.errors import StreamStateError, TracksFormatError

VECTORS = Path(__file__).parent / "vectors" / "tracks"
FILES = sorted(VECTORS.glob("*.trk"))


def _read(path: Path) -> tuple[dict[str, str], bytes]:
    head, body = path.read_bytes().split(b"\n\n", 1)
    meta = dict(line.split(": ", 1) for line in head.decode().splitlines())
    return meta, body


def _splits(body: bytes) -> list[list[bytes]]:
    return [
        [body],
        [body[i : i + 1] for i in range(len(body))],
        [body[i : i + 7] for i in range(0, len(body), 7)],
    ]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_vector(path: Path) -> None:
    meta, body = _read(path)
    for chunks in _splits(body):
        if meta["expect"] == "format failure":
            with pytest.raises(TracksFormatError):
                T.extract(chunks)
            continue
        got = T.extract(chunks)
        assert got.complete is (meta["expect"] == "success")
        assert got.records == int(meta["records"])
        hashes = {int(k.split()[1]): v for k, v in meta.items() if k.startswith("track ")}
        assert {n: t.sha256() for n, t in got.tracks.items()} == hashes


def test_vectors_regenerate_identically(tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in FILES}
    subprocess.run([sys.executable, str(VECTORS / "generate.py")], check=True)
    assert {p.name: p.read_bytes() for p in sorted(VECTORS.glob("*.trk"))} == before


def test_every_failure_kind_has_a_vector() -> None:
    kinds = {_read(p)[0]["expect"] for p in FILES}
    assert kinds == {"success", "incomplete", "format failure"}


def test_two_tracks_vector_details() -> None:
    _, body = _read(VECTORS / "two_tracks_gap_event.trk")
    got = T.extract(body)
    assert got.session is not None and got.session.info["call_id"] == "vec-1@example"
    t1, t2 = got.tracks[1], got.tracks[2]
    assert [g.packets for g in t1.gaps] == [1]
    assert [e.digit for e in t2.events] == ["#"]
    assert t2.stats is not None and t2.stats.counts["foreign"] == 2
    assert t1.decl.participant == "p1" and t2.decl.codec == "PCMA"
    summary = got.summary()
    assert summary["tracks"][1]["events"][0]["digit"] == "#"


def _encode_call(payloads: list[bytes], lost: set[int]) -> tuple[bytes, bytes]:
    enc = T.TracksEncoder()
    out = [enc.start("test", 1, {"call_id": "x"})]
    out.append(enc.declare(T.TrackDecl(1, "PCMU", 8000, 1)))
    expect = b""
    for i, p in enumerate(payloads):
        if i in lost:
            out.append(enc.gap(1, 160 * i, 160, 1))
            expect += b"\xff" * 160
        else:
            out.append(enc.media(1, 160 * i, p))
            expect += p
    out.append(enc.stats(1, {"received": len(payloads) - len(lost), "lost": len(lost)}))
    out.append(enc.end())
    return b"".join(out), expect


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=160, max_size=160), min_size=1, max_size=8),
    st.sets(st.integers(0, 7)),
    st.lists(st.integers(1, 50), min_size=1),
)
def test_round_trip_any_split(payloads: list[bytes], lost: set[int], steps: list[int]) -> None:
    body, expect = _encode_call(payloads, {i for i in lost if i < len(payloads)})
    chunks, i, k = [], 0, 0
    while i < len(body):
        n = steps[k % len(steps)]
        chunks.append(body[i : i + n])
        i, k = i + n, k + 1
    got = T.extract(chunks)
    assert got.complete and got.tracks[1].audio == expect


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_raises_only_tracks_errors(data: bytes) -> None:
    _, body = _read(VECTORS / "two_tracks_gap_event.trk")
    for candidate in (data, body[:40] + data):
        with contextlib.suppress(TracksFormatError):
            T.extract(candidate)


def test_any_truncation_is_incomplete_never_an_error() -> None:
    _, body = _read(VECTORS / "two_tracks_gap_event.trk")
    for n in range(len(T.MAGIC) + 1, len(body)):
        got = T.extract(body[:n])
        assert not got.complete


def test_decoder_errors_are_sticky_and_eof_is_final() -> None:
    dec = T.TracksDecoder()
    dec.receive_data(b"RSTRACKZ\x01")
    with pytest.raises(TracksFormatError) as first:
        dec.next_record()
    with pytest.raises(TracksFormatError) as again:
        dec.next_record()
    assert again.value is first.value and first.value.offset == 0
    dec2 = T.TracksDecoder()
    dec2.receive_data(b"")
    assert dec2.next_record() is None
    with pytest.raises(RuntimeError):
        dec2.receive_data(b"x")


def test_decoder_pull_returns_need_data() -> None:
    body, _ = _encode_call([b"\x01" * 160], set())
    dec = T.TracksDecoder()
    dec.receive_data(body[:12])
    assert dec.next_record() is T.NEED_DATA
    dec.receive_data(body[12:])
    assert isinstance(dec.next_record(), T.Session)


def test_encoder_rejects_contract_breaks_and_poisons() -> None:
    enc = T.TracksEncoder()
    with pytest.raises(ValueError, match="start"):
        enc.declare(T.TrackDecl(1, "PCMU", 8000, 0))
    with pytest.raises(StreamStateError):
        enc.start("x", 0)
    cases = [
        lambda e: e.media(9, 0, b"x"),
        lambda e: e.media(1, 0, b""),
        lambda e: (e.media(1, 0, b"x" * 160), e.media(1, 159, b"x")),
        lambda e: e.gap(1, 0, 0, 1),
        lambda e: e.event(1, 0, 1, 64, 0),
        lambda e: (e.stats(1, {}), e.stats(1, {})),
        lambda e: e.stats(1, {"bogus": 1}),
        lambda e: e.declare(T.TrackDecl(1, "PCMU", 8000, 0)),
        lambda e: e.declare(T.TrackDecl(2, "pcmu", 8000, 0)),
        lambda e: e.declare(T.TrackDecl(2, "PCMU", 0, 0)),
    ]
    for case in cases:
        e = T.TracksEncoder()
        e.start("x", 0)
        e.declare(T.TrackDecl(1, "PCMU", 8000, 0))
        with pytest.raises(ValueError):
            case(e)
        with pytest.raises(StreamStateError):
            e.end()


def test_media_at_end_is_media_at_the_tracks_end() -> None:
    """The live front door's shortcut writes what :meth:`media` writes, and every
    chunk it cannot take (not at the end, bad length, state, track) goes to media's checks."""
    a, b = T.TracksEncoder(), T.TracksEncoder()
    out_a = [a.start("x", 0), a.declare(T.TrackDecl(1, "PCMU", 8000, 0)),
             a.declare(T.TrackDecl(2, "L16", 8000, 0))]  # fmt: skip
    out_b = [b.start("x", 0), b.declare(T.TrackDecl(1, "PCMU", 8000, 0)),
             b.declare(T.TrackDecl(2, "L16", 8000, 0))]  # fmt: skip
    out_a += [a.media_at_end(1, 0, b"x" * 160), a.media_at_end(1, 160, b"y" * 80)]
    out_b += [b.media(1, 0, b"x" * 160), b.media(1, 160, b"y" * 80)]
    # Past the end (a caller that skipped a GAP) is placed by media's own rule, the same.
    out_a.append(a.media_at_end(1, 500, b"z"))
    out_b.append(b.media(1, 500, b"z"))
    # Not one byte per sample: media's rule for the end (one position per payload).
    out_a += [a.media_at_end(2, 0, b"ab"), a.media_at_end(2, 1, b"cd"), a.end()]
    out_b += [b.media(2, 0, b"ab"), b.media(2, 1, b"cd"), b.end()]
    assert out_a == out_b
    assert bytes(T.extract(out_a).tracks[1].audio).startswith(b"x" * 160 + b"y" * 80)
    cases = [
        lambda e: e.media_at_end(1, 100, b"x"),  # behind the end: goes back in time
        lambda e: e.media_at_end(9, 0, b"x"),  # undeclared
        lambda e: e.media_at_end(1, 240, b""),  # empty
        lambda e: e.media_at_end(1, 240, b"x" * 65536),  # too long
    ]
    for case in cases:
        e = T.TracksEncoder()
        e.start("x", 0)
        e.declare(T.TrackDecl(1, "PCMU", 8000, 0))
        e.media_at_end(1, 0, b"x" * 240)
        with pytest.raises(ValueError):
            case(e)
        with pytest.raises(StreamStateError):  # poisoned, as media leaves it
            e.media_at_end(1, 240, b"x")
    e = T.TracksEncoder()
    with pytest.raises(ValueError, match="start"):
        e.media_at_end(1, 0, b"x")
    e = T.TracksEncoder()
    e.start("x", 0)
    e.declare(T.TrackDecl(1, "PCMU", 8000, 0))
    e.media_at_end(1, 0, b"x")
    e.end()
    with pytest.raises(StreamStateError):  # nothing after END
        e.media_at_end(1, 1, b"x")


def test_encoder_output_is_what_the_decoder_reads() -> None:
    enc = T.TracksEncoder()
    parts = [
        enc.start("siprec", 5, {"participants": [{"aor": ["sip:a@b"]}]}),
        enc.declare(T.TrackDecl(3, "PCMA", 8000, 7, 8, "lbl", "p9", {"x": 1})),
        enc.media(3, 0, b"\x01\x02"),
        enc.event(3, 0, 16, 5, 400),
        enc.end(),
    ]
    got = T.extract(parts)
    decl = got.tracks[3].decl
    assert (decl.payload_type, decl.label, decl.participant, decl.info["x"]) == (8, "lbl", "p9", 1)
    assert got.tracks[3].events[0].digit == "flash"
    assert hashlib.sha256(got.tracks[3].audio).digest() == hashlib.sha256(b"\x01\x02").digest()
    with pytest.raises(StreamStateError):
        enc.media(3, 10, b"x")


def test_close_record_round_trip() -> None:
    enc = T.TracksEncoder()
    parts = [
        enc.start("media-stream", 1),
        enc.declare(T.TrackDecl(1, "PCMU", 8000, 1)),
        enc.media(1, 0, b"\x01"),
        enc.close("idle_timeout", complete=False),
    ]
    got = T.extract(parts)  # no END: incomplete, with the reason
    assert not got.complete and got.close == T.Close("idle_timeout", False)
    assert got.summary()["close"] == {"reason": "idle_timeout", "complete": False}
    with pytest.raises(ValueError):
        enc.close("again")


def test_cli_makes_a_missing_out_dir_and_refuses_a_file_as_one(tmp_path: Path) -> None:
    from recstream.cli import main

    _, body = _read(VECTORS / "two_tracks_gap_event.trk")
    plain = tmp_path / "call.trk"
    plain.write_bytes(body)
    out = tmp_path / "new" / "dir"
    assert main(["tracks", "--plain", "--out-dir", str(out), str(plain)]) == 0
    assert (out / "summary.json").is_file() and (out / "track-1.raw").is_file()
    not_dir = tmp_path / "file"
    not_dir.write_bytes(b"")
    assert main(["tracks", "--plain", "--out-dir", str(not_dir), str(plain)]) == 2
