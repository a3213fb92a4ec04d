"""The Twilio Media Streams envelope parser: every message kind, every rejection, and a
property that anything at all either parses or raises StreamProtocolError (never quoting
a value: custom parameters carry phone numbers)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.errors import StreamProtocolError
from recstream.streams.protocol import (
    MAX_MESSAGE_BYTES,
    Codec,
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    Track,
    Unknown,
    parse_message,
)
from tests.streams.wsclient import Call

PHONE = "+14155550123"


def start_doc(**changes: Any) -> dict[str, Any]:
    c = Call()
    doc: dict[str, Any] = json.loads(c.start({"From": PHONE}))
    for key, value in changes.items():
        doc["start"][key] = value
    return doc


def rejected(text: str | bytes, code: int = 1008) -> str:
    with pytest.raises(StreamProtocolError) as info:
        parse_message(text)
    assert info.value.close_code == code
    message = str(info.value)
    assert PHONE not in message
    return message


def test_each_message_kind() -> None:
    c = Call()
    assert parse_message(c.connected()) == Connected("Call", "1.0.0")
    start = parse_message(c.start({"From": PHONE, "tenant": "acme"}))
    assert isinstance(start, Start)
    assert start.stream_sid == c.stream_sid and start.call_sid == c.call_sid
    assert start.tracks == (Track.INBOUND, Track.OUTBOUND) and start.codec is Codec.PCMU
    assert dict(start.custom_parameters) == {"From": PHONE, "tenant": "acme"}
    assert PHONE not in repr(start)  # personal data stays out of reprs (and so of logs)
    media = parse_message(c.media("outbound", 40, b"\x00\xff" * 80))
    assert media == Media(2, c.stream_sid, Track.OUTBOUND, 1, 40, b"\x00\xff" * 80)
    assert parse_message(c.dtmf("#")) == Dtmf(3, c.stream_sid, Track.INBOUND, "#")
    mark = {"event": "mark", "sequenceNumber": "5", "streamSid": c.stream_sid,
            "mark": {"name": "greeting"}}  # fmt: skip
    assert parse_message(json.dumps(mark)) == Mark(5, c.stream_sid, "greeting")
    assert parse_message(c.stop()) == Stop(4, c.stream_sid)
    assert parse_message(c.stop().encode()) == Stop(5, c.stream_sid)  # bytes: UTF-8
    assert parse_message('{"event": "clear", "streamSid": "x"}') == Unknown("clear")


def test_numbers_may_be_strings_or_integers_but_nothing_else() -> None:
    c = Call()
    doc = json.loads(c.media("inbound", 20, b"\x01" * 160))
    doc["media"]["chunk"] = 7
    doc["media"]["timestamp"] = 140
    media = parse_message(json.dumps(doc))
    assert isinstance(media, Media) and (media.chunk, media.timestamp_ms) == (7, 140)
    for bad in ("-1", " 1", "1.0", "1e3", "0x10", True, 1.5, None, "", "1" * 17):
        doc["media"]["timestamp"] = bad
        assert "media.timestamp" in rejected(json.dumps(doc))


def test_media_format_and_alaw() -> None:
    alaw = parse_message(json.dumps(start_doc(mediaFormat={
        "encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1})))  # fmt: skip
    assert isinstance(alaw, Start) and alaw.codec is Codec.PCMA
    for fmt in (
        {"encoding": "audio/l16", "sampleRate": 8000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
        {"encoding": "audio/x-mulaw", "sampleRate": True, "channels": 1},
        "audio/x-mulaw",
    ):
        assert "mediaFormat" in rejected(json.dumps(start_doc(mediaFormat=fmt)))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tracks": []}, "start.tracks"),
        ({"tracks": ["inbound", "inbound"]}, "start.tracks"),
        ({"tracks": ["both_tracks"]}, "start.tracks"),
        ({"streamSid": "../../etc"}, "start.streamSid"),
        ({"streamSid": "M" * 65}, "start.streamSid"),
        ({"callSid": 42}, "start.callSid"),
        ({"customParameters": {"From": 5}}, "customParameters['From']"),
        ({"customParameters": {"From": "x" * 1025}}, "customParameters['From']"),
        ({"customParameters": {f"p{i}": "v" for i in range(33)}}, "customParameters"),
        ({"customParameters": ["From"]}, "customParameters"),
    ],
)
def test_bad_start_fields(change: dict[str, Any], field: str) -> None:
    assert field in rejected(json.dumps(start_doc(**change)))


def test_start_stream_sid_must_agree() -> None:
    doc = start_doc()
    doc["streamSid"] = "MZother"
    assert "differs" in rejected(json.dumps(doc))


def test_bad_json_and_base64_close_1007() -> None:
    assert "not valid JSON" in rejected('{"event": "media"', 1007)
    assert "not valid JSON" in rejected(b"\xff\xfe{}", 1007)
    assert "not a JSON object" in rejected("[1, 2]", 1007)
    assert "not valid JSON" in rejected("[" * 30_000 + "]" * 30_000, 1007)  # nesting
    assert "duplicate key" in rejected('{"event": "stop", "event": "media"}', 1007)
    c = Call()
    doc = json.loads(c.media("inbound", 0, b"\x01\x02\x03"))
    for bad in ("AQID!", "AQI", "AQ ID", "====", ""):
        doc["media"]["payload"] = bad
        rejected(json.dumps(doc), 1008 if bad == "" else 1007)


def test_limits() -> None:
    assert "over the limit" in rejected("x" * (MAX_MESSAGE_BYTES + 1), 1009)
    c = Call()
    doc = json.loads(c.media("inbound", 0, b""))
    doc["media"]["payload"] = base64.b64encode(b"\x00" * 16_001).decode()
    assert "over the limit" in rejected(json.dumps(doc))
    assert "mark.name" in rejected(
        json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "n" * 257}})
    )


@pytest.mark.parametrize(
    "doc",
    [
        {"event": 5},
        {"event": ""},
        {"event": "media", "streamSid": "MZ1"},
        {
            "event": "media",
            "streamSid": "MZ1",
            "media": {"track": "sideways", "chunk": "1", "timestamp": "0", "payload": "AA=="},
        },
        {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "12"}},
        {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "E"}},
        {"event": "stop"},
        {"event": "stop", "streamSid": "MZ1", "stop": "now"},
        {"event": "connected", "protocol": 1},
    ],
)
def test_malformed_messages(doc: dict[str, Any]) -> None:
    rejected(json.dumps(doc))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_anything_parses_or_raises_protocol_error(data: st.DataObject) -> None:
    c = Call()
    seeds = [c.connected(), c.start({"From": PHONE}), c.media("inbound", 0, b"\x01" * 160),
             c.dtmf("1"), c.stop()]  # fmt: skip
    text = data.draw(st.sampled_from(seeds))
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        parse_message(bytes(raw))
    except StreamProtocolError as exc:
        assert PHONE not in str(exc)


def _media_text(seq: str, track: str, chunk: str, ts: str, payload: str, sid: str, sep: str) -> str:
    c, s = ":" + sep, "," + sep
    return (
        f'{{"event"{c}"media"{s}"sequenceNumber"{c}"{seq}"{s}"media"{c}{{"track"{c}"{track}"{s}'
        f'"chunk"{c}"{chunk}"{s}"timestamp"{c}"{ts}"{s}"payload"{c}"{payload}"}}{s}'
        f'"streamSid"{c}"{sid}"}}'
    )


def _outcome(text: str) -> object:
    try:
        return parse_message(text)
    except StreamProtocolError as exc:
        return ("error", exc.close_code)


@settings(max_examples=400, deadline=None)
@given(
    seq=st.from_regex(r"[0-9]{1,17}", fullmatch=True),
    track=st.sampled_from(["inbound", "outbound", "inbound_track", "both"]),
    chunk=st.from_regex(r"[0-9]{1,16}", fullmatch=True),
    ts=st.from_regex(r"[0-9]{1,16}", fullmatch=True),
    payload=st.one_of(
        st.binary(min_size=0, max_size=200).map(lambda b: base64.b64encode(b).decode()),
        st.from_regex(r"[A-Za-z0-9+/]{1,12}={0,3}", fullmatch=True),
        # what the fast path's payload group lets through to the decoder: escapes,
        # padding anywhere, non-ASCII, whitespace (all must go the full way)
        st.from_regex(r"(?:[A-Za-z0-9+/=\\ \n\t\u00e9\u2028-]|\\u003d|\\/){1,16}", fullmatch=True),
    ),
    sid=st.from_regex(r"[A-Za-z0-9._:-]{1,66}", fullmatch=True),
    sep=st.sampled_from(["", " "]),
)
def test_fast_media_path_agrees_with_the_full_parser(
    seq: str, track: str, chunk: str, ts: str, payload: str, sid: str, sep: str
) -> None:
    from recstream.streams.protocol import _FAST_MEDIA

    text = _media_text(seq, track, chunk, ts, payload, sid, sep)
    # A leading space is valid JSON that the fast path never matches: the full parser.
    assert _FAST_MEDIA.fullmatch(" " + text) is None
    assert _outcome(text) == _outcome(" " + text)


def test_fast_path_takes_what_twilio_and_streamdouble_send() -> None:
    from recstream.streams.protocol import _FAST_COMPACT, _FAST_MEDIA

    c = Call()
    spaced = c.media("inbound", 20, b"\x01" * 160)  # json.dumps: ", " and ": "
    compact = json.dumps(json.loads(spaced), separators=(",", ":"))
    for text in (spaced, compact):
        assert _FAST_MEDIA.fullmatch(text) is not None
        assert parse_message(text) == parse_message(" " + text)
    # Twilio's compact form also takes the cheaper regex; it is the general one without spaces.
    assert _FAST_COMPACT.fullmatch(compact) is not None and _FAST_COMPACT.fullmatch(spaced) is None
