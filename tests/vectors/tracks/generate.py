"""Write the track-container vectors (docs/TRACKS.md §8) from the spec alone.

Never imports recstream: a second reading of TRACKS.md.  Re-running it reproduces
every byte.  Run: python tests/vectors/tracks/generate.py
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRE = b"RSTRACKS\x01"
SESSION = {
    "source": "siprec",
    "started_ms": 1_700_000_000_000,
    "call_id": "vec-1@example",
    "session_id": "FRRsNQwYRAqzGk3yEeBmAQ==",
    "participants": [
        {"id": "p1", "name": "Alice", "aor": ["sip:alice@example.com"]},
        {"id": "p2", "name": "Bob", "aor": ["tel:+15551230000"]},
    ],
}


def rec(kind: int, body: bytes) -> bytes:
    return struct.pack(">BI", kind, len(body)) + body


def js(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def session(doc: object = SESSION) -> bytes:
    return rec(1, js(doc))


def track(n: int, codec: str = "PCMU", **extra: object) -> bytes:
    doc = {
        "track": n,
        "codec": codec,
        "clock_rate": 8000,
        "origin_ms": 1_700_000_000_000,
        "payload_type": {"PCMU": 0, "PCMA": 8}.get(codec),
        "label": str(n),
        "participant": f"p{n}",
        **extra,
    }
    return rec(2, js(doc))


def media(t: int, pos: int, payload: bytes) -> bytes:
    return rec(3, struct.pack(">HQ", t, pos) + payload)


def gap(t: int, pos: int, samples: int, packets: int) -> bytes:
    return rec(4, struct.pack(">HQII", t, pos, samples, packets))


def event(t: int, pos: int, ev: int, vol: int, dur: int) -> bytes:
    return rec(5, struct.pack(">HQBBI", t, pos, ev, vol, dur))


def stats(t: int, *values: int) -> bytes:
    counters = b"".join(struct.pack(">Q", v) for v in values)
    return rec(6, struct.pack(">HB", t, len(values)) + counters)


END = rec(7, b"")
P1 = bytes(range(160))
P2 = bytes((i * 7) % 256 for i in range(160))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write(
    name: str,
    expect: str,
    body: bytes,
    comment: str,
    tracks: dict[int, bytes] | None = None,
    records: int | None = None,
) -> None:
    lines = [f"expect: {expect}"]
    for n, audio in sorted((tracks or {}).items()):
        lines.append(f"track {n}: {sha(audio)}")
    if records is not None:
        lines.append(f"records: {records}")
    lines.append(f"comment: {comment}")
    (HERE / f"{name}.trk").write_bytes("\n".join(lines).encode() + b"\n\n" + body)


def main() -> None:
    two = (
        session()
        + track(1)
        + track(2, "PCMA")
        + media(1, 0, P1)
        + media(2, 0, P2)
        + media(1, 160, P1)
        + gap(1, 320, 160, 1)
        + media(1, 480, P1)
        + event(2, 160, 11, 10, 800)
        + media(2, 400, P2)
        + stats(1, 3, 1, 0, 0, 0, 0, 0, 0, 0)
        + stats(2, 2, 0, 1, 1, 1, 2, 0, 0, 0)
        + END
    )
    t1 = P1 + P1 + b"\xff" * 160 + P1
    t2 = P2 + b"\xd5" * 240 + P2
    write(
        "two_tracks_gap_event",
        "success",
        PRE + two,
        "two G.711 tracks, one lost packet, a silence jump, a DTMF event, stats",
        {1: t1, 2: t2},
        13,
    )
    write(
        "recovered_cut_mid_record",
        "incomplete",
        PRE + two[: len(two) - 120],
        "a recovered recording cut inside a record: whole records before the cut",
        {1: t1, 2: t2},
        10,
    )
    no_end = PRE + session() + track(1) + media(1, 0, P1)
    write("no_end_record", "incomplete", no_end, "clean cut after a record, no END", {1: P1}, 3)
    write(
        "ancillary_skipped",
        "success",
        PRE + session() + rec(0x9F, b"future") + track(1) + media(1, 0, P1) + END,
        "an ancillary record (0x80-0xff) is skipped",
        {1: P1},
        4,
    )
    write(
        "opus_no_fill",
        "success",
        PRE
        + session()
        + track(1, "OPUS", clock_rate=48000)
        + media(1, 0, b"abc")
        + gap(1, 960, 960, 1)
        + media(1, 2880, b"de")
        + END,
        "a codec without a silence byte: payloads concatenated, gaps listed",
        {1: b"abcde"},
        6,
    )
    write(
        "close_reason",
        "success",
        PRE
        + session()
        + track(1)
        + media(1, 0, P1)
        + stats(1, 1)
        + rec(0x80, js({"reason": "rtp_timeout", "complete": True}))
        + END,
        "a CLOSE record saying why the recording ended",
        {1: P1},
        6,
    )
    write(
        "update_mid_call",
        "success",
        PRE
        + session()
        + track(1)
        + media(1, 0, P1)
        + rec(
            0x81,
            js(
                {
                    "metadata": {"participants": [{"aor": ["sip:carol@x"]}]},
                    "at_ms": 1_700_000_001_000,
                }
            ),
        )
        + media(1, 160, P1)
        + END,
        "session metadata updated mid-call",
        {1: P1 + P1},
        6,
    )
    fail = "format failure"
    write(
        "update_not_json",
        fail,
        PRE + session() + rec(0x81, b"[") + END,
        "an UPDATE that is not a JSON object",
    )
    write(
        "close_twice",
        fail,
        PRE + session() + rec(0x80, js({"reason": "a"})) + rec(0x80, js({"reason": "b"})) + END,
        "two CLOSE records",
    )
    write(
        "close_without_reason",
        fail,
        PRE + session() + rec(0x80, js({"complete": False})) + END,
        "CLOSE without a reason",
    )
    write("bad_magic", fail, b"RSTRACKZ\x01" + session() + END, "wrong magic")
    write("version_2", fail, b"RSTRACKS\x02" + session() + END, "unsupported version")
    write(
        "media_before_track",
        fail,
        PRE + session() + media(1, 0, P1) + END,
        "MEDIA for an undeclared track",
    )
    write(
        "track_declared_twice",
        fail,
        PRE + session() + track(1) + track(1) + END,
        "the same track number twice",
    )
    write("session_not_first", fail, PRE + track(1) + session() + END, "TRACK before SESSION")
    write("two_sessions", fail, PRE + session() + session() + END, "SESSION twice")
    write(
        "overlapping_media",
        fail,
        PRE + session() + track(1) + media(1, 0, P1) + media(1, 100, P1) + END,
        "MEDIA overlapping the previous one",
    )
    write(
        "gap_goes_back",
        fail,
        PRE + session() + track(1) + media(1, 160, P1) + gap(1, 0, 160, 1) + END,
        "GAP before the end of the previous MEDIA",
    )
    write("data_after_end", fail, PRE + session() + END + END, "a record after END")
    write("unknown_type_0x08", fail, PRE + session() + rec(8, b"") + END, "a reserved record type")
    write(
        "media_empty_payload",
        fail,
        PRE + session() + track(1) + media(1, 0, b"") + END,
        "MEDIA with no payload",
    )
    write(
        "media_length_over_limit",
        fail,
        PRE + session() + track(1) + struct.pack(">BI", 3, 10 + 65536),
        "length over limit (rejected before the body is read)",
    )
    write(
        "gap_wrong_length",
        fail,
        PRE + session() + track(1) + rec(4, b"\x00" * 17) + END,
        "GAP body not 18 bytes",
    )
    write(
        "session_duplicate_key",
        fail,
        PRE + rec(1, b'{"source":"x","source":"y","started_ms":0}') + END,
        "duplicate JSON key",
    )
    write("session_not_object", fail, PRE + rec(1, b"[1]") + END, "SESSION JSON not an object")
    write("track_bad_codec", fail, PRE + session() + track(1, "pcmu") + END, "codec not upper case")
    write(
        "stats_twice",
        fail,
        PRE + session() + track(1) + stats(1, 0) + stats(1, 0) + END,
        "two STATS for a track",
    )
    write(
        "silence_fill_over_an_hour",
        fail,
        PRE + session() + track(1) + media(1, 8000 * 3600 + 1, P1) + END,
        "a position jump that would fill more than an hour of silence",
    )
    write(
        "g711_clock_not_8000",
        fail,
        PRE + session() + track(1, clock_rate=1_000_000) + gap(1, 0, 1000, 1) + END,
        "PCMU at a clock other than 8000 Hz (G.711 is 8 kHz)",
    )


if __name__ == "__main__":
    main()
