"""The media fast path (issue 19, round 3) against the full path it short-cuts.

* ``media_fields`` (msgspec decode + byte-exact re-encode) gives, for anything it
  takes, the Media the full parser gives; it takes Twilio's canonical form; and
  whatever it leaves goes the full way (same result or same error).
* A StreamConnection with the fast path records byte for byte what one without it
  records, ends the same way (close code, complete or not) and counts the same,
  for random mixes of in-order media, duplicates, gaps, late and early chunks,
  non-canonical JSON, pings, malformed messages and oversized frames, cut into
  reads at random places.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.errors import StreamProtocolError
from recstream.format import MediaKind
from recstream.streams.connection import StreamConnection
from recstream.streams.protocol import (
    MAX_PAYLOAD_BYTES,
    Media,
    Track,
    media_fields,
    parse_message,
)
from tests.streams.test_frames import frame

SID = "MZ" + "ab" * 16
CALL = "CA" + "cd" * 16


def canonical(seq: int | str, track: str, chunk: int | str, ts: int | str, payload: bytes,
              sid: str = SID) -> bytes:  # fmt: skip
    """A media message as Twilio serialises it (compact, this key order)."""
    return (
        f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"{track}",'
        f'"chunk":"{chunk}","timestamp":"{ts}","payload":"{base64.b64encode(payload).decode()}"}},'
        f'"streamSid":"{sid}"}}'
    ).encode()


def full(raw: bytes) -> object:
    """The full parser's outcome: a leading space is valid JSON no fast path takes."""
    try:
        return parse_message(b" " + raw)
    except StreamProtocolError as exc:
        return ("error", exc.close_code)


def outcome(raw: bytes) -> object:
    try:
        return parse_message(raw)
    except StreamProtocolError as exc:
        return ("error", exc.close_code)


def test_takes_twilios_canonical_media_message() -> None:
    raw = canonical(7, "outbound", 3, 40, b"\xff" * 160)
    assert media_fields(raw) == (SID, "outbound", 3, 40, b"\xff" * 160, 7)
    assert parse_message(raw) == full(raw) == Media(7, SID, Track.OUTBOUND, 3, 40, b"\xff" * 160)


def test_takes_the_largest_numbers_and_payload_the_limits_allow() -> None:
    """The edges: 15-digit numbers and a payload of exactly MAX_PAYLOAD_BYTES are taken
    (one more digit or byte goes the full way, which refuses or reads it the same)."""
    big = 10**15 - 1
    raw = canonical(big, "inbound", big, big, b"\x01" * MAX_PAYLOAD_BYTES)
    assert media_fields(raw) == (SID, "inbound", big, big, b"\x01" * MAX_PAYLOAD_BYTES, big)
    assert media_fields(canonical(big + 1, "inbound", 1, 1, b"\x01")) is None
    assert media_fields(canonical(1, "inbound", 1, 1, b"\x01" * (MAX_PAYLOAD_BYTES + 1))) is None
    assert media_fields(canonical("", "inbound", 1, 1, b"\x01")) is None


def test_leaves_everything_not_canonical_to_the_full_parser() -> None:
    good = canonical(7, "inbound", 3, 40, b"\x01" * 160)
    doc = json.loads(good)
    variants = [
        json.dumps(doc).encode(),  # spaced
        good.replace(b'"chunk"', b'"chunk":"9","chunk"'),  # a duplicate key (refused: 1007)
        good[:-1] + b',"extra":1}',  # an unknown key
        good.replace(b'"inbound"', b'"in\\u0062ound"'),  # an escape
        good.replace(b'"3"', b'"+3"'),  # not a decimal
        good.replace(b'"3"', b'"\xd9\xa3"'),  # a non-ASCII digit
        good.replace(b'"40"', b'"1234567890123456"'),  # 16 digits: the full way
        canonical(7, "inbound", 3, 40, b""),  # empty payload (refused)
        canonical(7, "inbound", 3, 40, b"\x01" * 160).replace(b"AQ==", b"AQ"),  # padding
        canonical(7, "inbound", 3, 40, b"\x01" * 16_001),  # over the payload limit
        canonical(7, "inbound", 3, 40, b"\x01", sid="bad sid"),  # SID outside the alphabet
        good.replace(b"\x22media\x22,", b"\x22media\x22 ,", 1),
    ]
    for raw in variants:
        got = media_fields(raw)
        assert got is None or not _valid_sid(got[0]), raw[:80]
        assert outcome(raw) == full(raw), raw[:80]


def test_deep_nesting_is_refused_by_the_full_parser_not_a_recursion_error() -> None:
    """msgspec raises RecursionError on ~1,000 levels of nesting, even in a key it would
    skip; that is "not the fast path", and the full parser refuses the message (1007 or
    1008) instead of the error escaping the read callback (review, round 3)."""
    for depth in (900, 1_000, 3_000):
        raw = b'{"event":"media","x":' + b"[" * depth + b"]" * depth + b"}"
        assert media_fields(raw) is None
        got = outcome(raw)  # refused as the full parser refuses it, never an exception
        assert got == full(raw) and got in (("error", 1007), ("error", 1008)), (depth, got)


@settings(max_examples=400, deadline=None)
@given(
    seq=st.one_of(st.integers(0, 10**16), st.from_regex(r"[0-9+\- ]{0,4}", fullmatch=True)),
    track=st.sampled_from(["inbound", "outbound", "inbound_track", "both"]),
    chunk=st.one_of(st.integers(0, 10**16), st.from_regex(r"[0-9a ]{0,3}", fullmatch=True)),
    ts=st.integers(0, 10**17),
    payload=st.binary(min_size=0, max_size=300),
    sid=st.from_regex(r"[A-Za-z0-9._:\- -]{0,70}", fullmatch=True),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
)
def test_anything_the_fast_path_takes_the_full_parser_takes_the_same(
    seq: int | str, track: str, chunk: int | str, ts: int, payload: bytes, sid: str,
    edits: list[tuple[int, int]],
) -> None:  # fmt: skip
    raw = bytearray(canonical(seq, track, chunk, ts, payload, sid))
    for at, byte in edits:
        raw[at % len(raw)] = byte
    data = bytes(raw)
    got = media_fields(data)
    if got is not None and _valid_sid(got[0]):
        sid_, track_, chunk_, ts_, audio, seq_ = got
        assert full(data) == Media(seq_, sid_, Track(track_), chunk_, ts_, audio)
    assert outcome(data) == full(data)


def _valid_sid(sid: str) -> bool:
    from recstream.streams.protocol import _is_sid

    return _is_sid(sid)


# --- the connection: fast path on and off, same bytes recorded, same end ------------


def _timeless(data: bytes | bytearray) -> bytes:
    """The session and track records carry the wall-clock start: the one thing that differs."""
    return re.sub(rb'"(started|origin)_ms":[0-9]+', b"T", bytes(data))


class _Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Hook:
    """The recording hook's interface, keeping what is appended."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.errors: dict[tuple[str, MediaKind], BaseException] = {}
        self.finished: dict[tuple[str, MediaKind], Path] = {}
        self.appends = 0

    async def start(self, key: str, **_: Any) -> None:
        pass

    def media(self, key: str, data: bytes) -> None:
        self.data += data
        self.appends += 1

    async def stop(self, key: str) -> dict[MediaKind, Path]:
        return {MediaKind.VOICE: Path("/nonexistent/recording.rsv")}


class _Audit:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def write(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def _start(tracks: list[str]) -> bytes:
    return json.dumps({
        "event": "start", "sequenceNumber": "1",
        "start": {"accountSid": "AC" + "0" * 32, "streamSid": SID, "callSid": CALL,
                  "tracks": tracks, "customParameters": {},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        "streamSid": SID,
    }, separators=(",", ":")).encode()  # fmt: skip


_ODD = ["duplicate", "gap", "late", "jitter", "ahead", "spaced", "other_sid", "ping", "dtmf",
        "bad_json", "bad_base64", "too_big", "bad_utf8", "unannounced", "binary",
        "past_limit", "leap"]  # fmt: skip
_STEPS = st.sampled_from(["next"] * 12 + _ODD)


async def _drive(raw: bytes, cuts: list[int], fast: bool) -> tuple[Any, ...]:
    transport, hook, audit = _Transport(), _Hook(), _Audit()
    conn = StreamConnection(
        transport,  # type: ignore[arg-type]
        hook,  # type: ignore[arg-type]
        audit,  # type: ignore[arg-type]
        allowed=("acme",),
        remote="127.0.0.1",
        idle_timeout=60,
        max_call_seconds=60,
        tenant_parameter="tenant",
        max_message=4096,
    )
    conn.fast_media = fast
    conn.session._clock = lambda: 0.0  # the horizon fixed at SLACK_SECONDS: deterministic
    at = 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        if cut > at and not conn.done.done():
            conn.data_received(raw[at:cut])
            at = cut
            for _ in range(1000):  # let the start finish, as a real loop would
                if not conn._starting:
                    break
                await asyncio.sleep(0)
    conn.connection_lost(None)
    await asyncio.wait_for(conn.done, 30)
    stats = conn.session.statistics()
    recorded = _timeless(hook.data)
    return (recorded, conn.close_code, conn.session.state, stats.tracks, stats.ahead,
            stats.gap_ms, stats.dtmf, [e for e, _ in audit.lines])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    tracks=st.sampled_from([["inbound", "outbound"], ["inbound"]]),
    steps=st.lists(_STEPS, min_size=1, max_size=40),
    stop=st.booleans(),
    cuts=st.lists(st.integers(0, 20_000), max_size=6),
    each=st.booleans(),
    data=st.data(),
)
def test_connection_records_the_same_with_and_without_the_fast_path(
    tracks: list[str], steps: list[str], stop: bool, cuts: list[int], each: bool,
    data: st.DataObject,
) -> None:  # fmt: skip
    frames = [frame(1, _start(tracks))]
    counters = {"inbound": 0, "outbound": 0}
    seq = 1
    ts = 0
    for step in steps:
        track = data.draw(st.sampled_from(tracks))
        seq += 1
        audio = bytes([seq % 256]) * 160
        chunk = counters[track] + 1
        when = ts
        if step == "duplicate":
            chunk = counters[track]
        elif step == "gap":
            when = ts + 100
        elif step == "late":
            when = max(0, ts - 60)
        elif step == "jitter":
            when = ts + data.draw(st.integers(-4, 4))
        elif step == "ahead":
            when = ts + 30_000
        elif step == "leap":  # to just inside the horizon: what follows is ahead of it
            when = max(ts, 9_990)
        elif step == "past_limit":
            when = 61_000
        if step in ("next", "duplicate", "gap", "late", "jitter", "ahead", "past_limit", "leap"):
            frames.append(frame(1, canonical(seq, track, chunk, max(0, when), audio)))
            counters[track] = max(counters[track], chunk)
            if step == "leap":  # then 3 ms past the end: within the tolerance, past the horizon
                chunk = counters[track] = chunk + 1
                frames.append(frame(1, canonical(seq, track, chunk, when + 23, audio)))
            if track == tracks[-1]:
                ts = max(ts, when) + 20
        elif step == "spaced":
            doc = json.loads(canonical(seq, track, chunk, ts, audio))
            frames.append(frame(1, json.dumps(doc).encode()))
            counters[track] = chunk
        elif step == "other_sid":
            frames.append(frame(1, canonical(seq, track, chunk, ts, audio, sid="MZother")))
        elif step == "unannounced":
            frames.append(frame(1, canonical(seq, "outbound", 99, ts, audio)))
        elif step == "ping":
            frames.append(frame(0x9, b"hi"))
        elif step == "dtmf":
            frames.append(frame(1, json.dumps({"event": "dtmf", "streamSid": SID,
                                               "dtmf": {"track": "inbound_track", "digit": "5"}}
                                              ).encode()))  # fmt: skip
        elif step == "bad_json":
            frames.append(frame(1, canonical(seq, track, chunk, ts, audio)[:-1]))
        elif step == "bad_base64":
            frames.append(frame(1, canonical(seq, track, chunk, ts, audio).replace(b"==", b"=!")))
        elif step == "too_big":
            frames.append(frame(1, canonical(seq, track, chunk, ts, b"\x00" * 4000)))
        elif step == "bad_utf8":
            bad = canonical(seq, track, chunk, ts, audio).replace(b"MZ", b"\xff\xfe")
            frames.append(frame(1, bad))
        elif step == "binary":
            frames.append(frame(2, canonical(seq, track, chunk, ts, audio)))
    if stop:
        frames.append(frame(1, json.dumps({"event": "stop", "streamSid": SID}).encode()))
    raw = b"".join(frames)
    # Reads: the start alone (so media meets a recording session, the fast path's case),
    # then every frame alone or pairs as the platform writes them, plus random cuts.
    ends = [sum(map(len, frames[: i + 1])) for i in range(len(frames))]
    cuts = [ends[0], *cuts, *(ends[1:] if each else ends[2::2])]
    fast = asyncio.run(_drive(raw, cuts, fast=True))
    slow = asyncio.run(_drive(raw, cuts, fast=False))
    assert fast == slow


def test_fast_path_is_taken_and_appends_once_per_read() -> None:
    """The in-order run of a Twilio stream goes the fast way: one hook append per read."""
    frames = [frame(1, _start(["inbound", "outbound"]))]
    for k in range(50):
        frames.append(
            frame(1, canonical(2 + 2 * k, "outbound", k + 1, 20 * k, b"\x01" * 160))
            + frame(1, canonical(3 + 2 * k, "inbound", k + 1, 20 * k, b"\x02" * 160))
        )

    async def go(fast: bool) -> tuple[int, bytes]:
        transport, hook, audit = _Transport(), _Hook(), _Audit()
        conn = StreamConnection(
            transport, hook, audit,  # type: ignore[arg-type]
            allowed=("acme",), remote="127.0.0.1", idle_timeout=60, max_call_seconds=60,
            tenant_parameter="tenant", max_message=4096,
        )  # fmt: skip
        conn.fast_media = fast
        conn.data_received(frames[0])
        while conn._starting:
            await asyncio.sleep(0)
        before = hook.appends
        for pair in frames[1:]:
            conn.data_received(pair)
        appends = hook.appends - before
        conn.connection_lost(None)
        await conn.done
        return appends, _timeless(hook.data)

    fast_appends, fast_data = asyncio.run(go(True))
    slow_appends, slow_data = asyncio.run(go(False))
    assert fast_data == slow_data
    assert fast_appends == 50 and slow_appends == 100
