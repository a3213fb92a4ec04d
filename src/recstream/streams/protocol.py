"""The Twilio Media Streams message envelope, sans I/O: text in, typed messages out.

Cloud-telephony platforms that fork a live call to a WebSocket (Twilio Media
Streams, and SignalWire and others that copy its envelope) send one JSON text
message per event:

* ``connected`` -- first, no stream SID;
* ``start`` -- call, account and stream SIDs, ``tracks`` (``inbound`` and/or
  ``outbound``), ``mediaFormat`` (``audio/x-mulaw``, 8000 Hz, 1 channel) and the
  TwiML ``<Parameter>`` values in ``customParameters``;
* ``media`` -- ``track``, ``chunk`` (from 1), ``timestamp`` (milliseconds of
  presentation time from the start of the stream) and a base64 ``payload``;
* ``dtmf`` -- ``track`` (``inbound_track``, note the suffix) and ``digit``;
* ``mark`` -- a named playback checkpoint (bidirectional streams);
* ``stop`` -- the stream has ended.

``sequenceNumber``, ``chunk`` and ``timestamp`` are JSON strings holding
decimal numbers; integers are accepted too, nothing else (no sign, no
whitespace, no exponent).

:func:`parse_message` checks everything before anything is believed, with a
limit on every length, and raises :class:`~recstream.errors.StreamProtocolError`
naming the message and field -- never quoting a value, because custom
parameters carry phone numbers.  It holds no state; ordering rules (nothing
before ``start``, one stream SID per socket) belong to the session.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, NamedTuple

import msgspec

from recstream.errors import StreamProtocolError

__all__ = [
    "MAX_CUSTOM_PARAMETERS",
    "MAX_MESSAGE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "Codec",
    "Connected",
    "Dtmf",
    "Mark",
    "Media",
    "Message",
    "Start",
    "Stop",
    "Track",
    "Unknown",
    "media_fields",
    "parse_message",
]

# Limits, each with its reason.  A Twilio media message is ~300 bytes (160
# bytes of audio, base64); a start message with a dozen parameters ~1.5 KiB.
MAX_MESSAGE_BYTES: Final = 64 * 1024  # the server's default frame limit too
MAX_PAYLOAD_BYTES: Final = 16_000  # 2 s of G.711 in one chunk; Twilio sends 20 ms
MAX_SID_CHARS: Final = 64  # Twilio SIDs are 34; UUIDs 36
MAX_CUSTOM_PARAMETERS: Final = 32  # TwiML <Parameter> values on a <Stream>
MAX_PARAMETER_NAME_CHARS: Final = 64
MAX_PARAMETER_VALUE_CHARS: Final = 1024
MAX_MARK_NAME_CHARS: Final = 256
MAX_NUMBER: Final = 10**15  # chunk, sequence number, timestamp (31,700 years of ms)
_CLOSE_INVALID_DATA: Final = 1007  # RFC 6455 §7.4.1: data inconsistent with its type

# Identifiers become file names (archive layout) and log fields: a closed set of characters.
_SID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_DTMF_DIGITS: Final = frozenset("0123456789*#ABCDabcd")


class Track(enum.Enum):
    """A media track: ``inbound`` is what the caller's side sends, ``outbound`` what it hears."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


# dtmf.track is "inbound_track"; media.track is "inbound": both Twilio spellings.
_TRACK_NAMES: Final = {
    **{t.value: t for t in Track},
    **{t.value + "_track": t for t in Track},
}


class Codec(enum.Enum):
    """``start.mediaFormat.encoding`` values recorded as they arrive (G.711, 8 kHz, mono)."""

    PCMU = "audio/x-mulaw"  # what Twilio sends
    PCMA = "audio/x-alaw"  # offered by some platforms with the same envelope


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class Start:
    """The stream's identity and format.  ``custom_parameters`` is personal data: never log it."""

    sequence: int | None
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[Track, ...]
    codec: Codec
    sample_rate: int
    channels: int
    custom_parameters: Mapping[str, str] = field(repr=False)


class Media(NamedTuple):
    """One chunk of one track.

    A NamedTuple, not a frozen dataclass like the others: one is made per message
    (100 a second per stream), and a frozen dataclass's ``__init__`` costs 3x.
    """

    sequence: int | None
    stream_sid: str
    track: Track
    chunk: int
    timestamp_ms: int
    payload: bytes

    def __repr__(self) -> str:  # the audio stays out of logs and test output
        return (
            f"Media(sequence={self.sequence}, stream_sid={self.stream_sid!r}, "
            f"track={self.track}, chunk={self.chunk}, timestamp_ms={self.timestamp_ms}, "
            f"payload=<{len(self.payload)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence: int | None
    stream_sid: str
    track: Track
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    sequence: int | None
    stream_sid: str
    name: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Stop:
    sequence: int | None
    stream_sid: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed message of an event type this version does not know (kept for counting).

    Platforms add event types over time (``mark`` came later than ``media``);
    a recorder that closed the stream on one would lose the call.
    """

    event: str


Message = Connected | Start | Media | Dtmf | Mark | Stop | Unknown


def parse_message(text: str | bytes) -> Message:
    """Parse and check one WebSocket text message.

    Args:
        text: the message as received (``str``, or UTF-8 ``bytes``).

    Returns:
        The typed message.

    Raises:
        StreamProtocolError: too long, not UTF-8, not JSON (close code 1007), a
            duplicate key, a missing or malformed field, bad base64 (1007), a
            value over its limit, or an unsupported media format.
    """
    if len(text) > MAX_MESSAGE_BYTES:
        msg = f"message of {len(text)} bytes is over the limit of {MAX_MESSAGE_BYTES}"
        raise StreamProtocolError(msg, 1009)
    fields = media_fields(text.encode() if isinstance(text, str) else text)
    if fields is not None and _is_sid(fields[0]):
        sid, track, chunk, timestamp, audio, seq = fields
        return Media(seq, sid, _FAST_TRACKS[track], chunk, timestamp, audio)
    if isinstance(text, str):
        fast = _FAST_COMPACT.fullmatch(text) or _FAST_MEDIA.fullmatch(text)
        if fast is not None:
            media = _fast_media(fast)
            if media is not None:
                return media
    try:
        doc = _decode(text if isinstance(text, str) else text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; RecursionError
        # is deep nesting.  The position is safe to report, the text is not.
        where = f" at offset {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        msg = f"message is not valid JSON{where}"
        raise StreamProtocolError(msg, _CLOSE_INVALID_DATA) from None
    if not isinstance(doc, dict):
        msg = "message is not a JSON object"
        raise StreamProtocolError(msg, _CLOSE_INVALID_DATA)
    event = doc.get("event")
    if not isinstance(event, str) or not event:
        msg = "message has no 'event' string"
        raise StreamProtocolError(msg)
    parser = _PARSERS.get(event)
    if parser is None:
        return Unknown(_bounded(event, "event", "event", MAX_SID_CHARS))
    return parser(_Fields(doc, event))


# The fast path: a media message exactly as Twilio and its simulators serialise it
# (this key order, no escapes, at most one space after ':' and ','), matched by one
# regex instead of decoded as JSON and checked field by field (a third of the
# server's CPU).  The payload is only delimited here (a scan for the quote is half the
# cost of a character class) and its alphabet checked by the strict base64 decoder.
# Anything _fast_media returns is valid, duplicate-free JSON that the full parser gives
# the same Media for (tests/streams/test_protocol.py checks); anything else, or a
# payload that does not decode strictly, goes the full way and gets its error there.
_SP = "[ ]?"
_FAST_MEDIA: Final = re.compile(
    "".join(
        (
            r'\{"event":', _SP, r'"media",', _SP, r'"sequenceNumber":', _SP, r'"([0-9]{1,15})",',
            _SP, r'"media":', _SP, r'\{"track":', _SP, r'"(inbound|outbound)",', _SP,
            r'"chunk":', _SP, r'"([0-9]{1,15})",', _SP, r'"timestamp":', _SP,
            r'"([0-9]{1,15})",', _SP, r'"payload":', _SP, r'"([^"]+)"\},', _SP,
            r'"streamSid":', _SP, r'"([A-Za-z0-9][A-Za-z0-9._:-]{0,63})"\}',
        )
    )
)  # fmt: skip
# Twilio's own serialisation has no spaces: that regex first, without the optional
# spaces that make the general one ~60% dearer (a miss fails at the first ", ").
_FAST_COMPACT: Final = re.compile(_FAST_MEDIA.pattern.replace(_SP, ""))
_FAST_TRACKS: Final = {"inbound": Track.INBOUND, "outbound": Track.OUTBOUND}


# The fastest path: Twilio's own serialisation, exactly.  msgspec decodes the message
# (the JSON and the base64 payload, in C) and encodes what it decoded; only when that
# is byte for byte the message received is it taken here.  That proves the text was
# the canonical compact form -- this key order, no whitespace, no escape, no duplicate
# or unknown key, canonical base64 with its padding -- which is valid JSON that the full
# parser gives the same Media for (tests/streams/test_fast_path.py checks, with
# hypothesis).  Anything else returns None and goes the way it always went.
# The lengths are checked by msgspec as it decodes (in C, at no measurable cost): what
# is left to Python is that the three numbers are ASCII digits.
_MAX_DIGITS: Final = 15  # below MAX_NUMBER; a 16-digit number goes the full way
_Digits = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_DIGITS)]
_Audio = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_PAYLOAD_BYTES)]


class _MediaBody(msgspec.Struct):
    track: Literal["inbound", "outbound"]
    chunk: _Digits
    timestamp: _Digits
    payload: _Audio


class _MediaMessage(msgspec.Struct, tag_field="event", tag="media"):
    sequenceNumber: _Digits  # Twilio's keys
    media: _MediaBody
    streamSid: str


_MEDIA_DECODE: Final = msgspec.json.Decoder(_MediaMessage).decode
_MEDIA_ENCODE: Final = msgspec.json.Encoder().encode


def media_fields(raw: bytes) -> tuple[str, str, int, int, bytes, int] | None:
    """A media message in Twilio's canonical form, or None for the full parser.

    Returns:
        ``(stream_sid, track, chunk, timestamp_ms, payload, sequence)`` with
        ``track`` ``"inbound"`` or ``"outbound"``, every number checked as
        :func:`parse_message` checks it.  The stream SID is NOT checked: compare
        it with one that was (the session's), or check it with :func:`_is_sid`.
        ``raw`` need not be known UTF-8: equal to msgspec's own output, it is.
    """
    if raw[:17] != b'{"event":"media",':
        return None
    try:
        m = _MEDIA_DECODE(raw)
    # ValidationError is a DecodeError; bad UTF-8 a ValueError; deep nesting (even in a
    # key msgspec would skip) a RecursionError: all the full parser's to refuse, as 1007.
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if _MEDIA_ENCODE(m) != raw:
        return None
    body = m.media
    seq, chunk, ts = m.sequenceNumber, body.chunk, body.timestamp
    digits = seq + chunk + ts
    if not (digits.isdigit() and digits.isascii()):
        return None
    return m.streamSid, body.track, int(chunk), int(ts), body.payload, int(seq)


def _fast_media(m: re.Match[str]) -> Media | None:
    seq, track, chunk, timestamp, payload, sid = m.groups()
    if len(payload) > (MAX_PAYLOAD_BYTES + 2) // 3 * 4:
        return None
    try:
        # Strict mode takes only the base64 alphabet with correct padding: a JSON escape,
        # a non-ASCII character or a stray '=' sends the message the full way.
        audio = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(audio) > MAX_PAYLOAD_BYTES:
        return None
    return Media(int(seq), sid, _FAST_TRACKS[track], int(chunk), int(timestamp), audio)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two values for one key: parsers disagree on which wins (malleability).
            msg = f"duplicate key {key[:MAX_PARAMETER_NAME_CHARS]!r} in message"
            raise StreamProtocolError(msg, _CLOSE_INVALID_DATA)
        out[key] = value
    return out


# One decoder for every message: json.loads with a hook builds a new one per call.
_DECODER: Final = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)


def _decode(text: str) -> Any:
    # raw_decode skips JSONDecoder.decode's two whitespace regexes (a third of its cost);
    # the whitespace JSON allows around the value is still allowed.
    if text[:1].isspace():
        text = text.lstrip()
    doc, end = _DECODER.raw_decode(text)
    if end != len(text) and text[end:].strip():
        raise json.JSONDecodeError("Extra data", text, end)
    return doc


@functools.lru_cache(maxsize=4096)
def _is_sid(value: str) -> bool:
    # Cached: every media message repeats its stream's SID.
    return len(value) <= MAX_SID_CHARS and _SID_RE.fullmatch(value) is not None


class _Fields:
    """Typed access to one message's fields; every error names the event and the field."""

    def __init__(self, doc: dict[str, Any], event: str) -> None:
        self.doc = doc
        self.event = event

    def fail(self, name: str, problem: str) -> StreamProtocolError:
        return StreamProtocolError(f"'{self.event}' message: {name} {problem}")

    def table(self, name: str, *, required: bool = True) -> dict[str, Any]:
        value = self.doc.get(name)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object")
        return value

    def sid(self, name: str, value: Any = None, *, required: bool = True) -> str:
        value = self.doc.get(name) if value is None else value
        if value is None and not required:
            return ""
        if type(value) is not str or not _is_sid(value):
            raise self.fail(
                name, f"must be an identifier of up to {MAX_SID_CHARS} letters, digits and ._:-"
            )
        return value

    def number(self, name: str, value: Any) -> int:
        # Twilio sends numbers as strings; accept a JSON integer too, never a bool.
        if type(value) is str and 0 < len(value) <= 16 and value.isascii() and value.isdigit():
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            number = value
        else:
            raise self.fail(name, "must be a non-negative decimal integer")
        if number > MAX_NUMBER:
            raise self.fail(name, f"is over the limit of {MAX_NUMBER}")
        return number

    def sequence(self) -> int | None:
        value = self.doc.get("sequenceNumber")
        return None if value is None else self.number("sequenceNumber", value)

    def track(self, name: str, value: Any) -> Track:
        track = _TRACK_NAMES.get(value) if type(value) is str else None
        if track is None:
            raise self.fail(name, "must be 'inbound' or 'outbound'")
        return track


def _bounded(value: Any, event: str, name: str, limit: int) -> str:
    if not isinstance(value, str):
        msg = f"'{event}' message: {name} must be a string"
        raise StreamProtocolError(msg)
    if len(value) > limit:
        msg = f"'{event}' message: {name} is longer than {limit} characters"
        raise StreamProtocolError(msg)
    return value


def _connected(f: _Fields) -> Connected:
    protocol, version = f.doc.get("protocol"), f.doc.get("version")
    return Connected(
        None if protocol is None else _bounded(protocol, "connected", "protocol", 64),
        None if version is None else _bounded(version, "connected", "version", 64),
    )


def _start(f: _Fields) -> Start:
    body = f.table("start")
    stream_sid = f.sid("start.streamSid", body.get("streamSid"))
    outer = f.doc.get("streamSid")
    if outer is not None and outer != stream_sid:
        raise f.fail("streamSid", "differs from start.streamSid")
    names = body.get("tracks")
    if not isinstance(names, list) or not 1 <= len(names) <= len(Track):
        raise f.fail("start.tracks", "must be a list of one or two tracks")
    tracks = tuple(f.track("start.tracks", n) for n in names)
    if len(set(tracks)) != len(tracks):
        raise f.fail("start.tracks", "names a track twice")
    fmt = body.get("mediaFormat")
    if not isinstance(fmt, dict):
        raise f.fail("start.mediaFormat", "must be an object")
    codec = next((c for c in Codec if c.value == fmt.get("encoding")), None)
    if codec is None:
        raise f.fail("start.mediaFormat.encoding", "must be audio/x-mulaw or audio/x-alaw")
    # Only 8 kHz mono G.711 is recorded as it arrives; anything else would need resampling.
    if fmt.get("sampleRate") != 8000 or isinstance(fmt.get("sampleRate"), bool):
        raise f.fail("start.mediaFormat.sampleRate", "must be 8000")
    if fmt.get("channels") != 1 or isinstance(fmt.get("channels"), bool):
        raise f.fail("start.mediaFormat.channels", "must be 1")
    return Start(
        f.sequence(),
        stream_sid,
        f.sid("start.callSid", body.get("callSid")),
        f.sid("start.accountSid", body.get("accountSid")),
        tracks,
        codec,
        8000,
        1,
        _custom_parameters(f, body.get("customParameters")),
    )


def _custom_parameters(f: _Fields, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise f.fail("start.customParameters", "must be an object")
    if len(value) > MAX_CUSTOM_PARAMETERS:
        raise f.fail("start.customParameters", f"has more than {MAX_CUSTOM_PARAMETERS} entries")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not key or len(key) > MAX_PARAMETER_NAME_CHARS:
            raise f.fail("start.customParameters", "has an empty or over-long name")
        # Values are the TwiML's strings; say which name is wrong, never the value.
        name = f"start.customParameters[{key!r}]"
        if not isinstance(item, str):
            raise f.fail(name, "must be a string")
        if len(item) > MAX_PARAMETER_VALUE_CHARS:
            raise f.fail(name, f"is longer than {MAX_PARAMETER_VALUE_CHARS} characters")
        out[key] = item
    return out


def _media(f: _Fields) -> Media:
    body = f.table("media")
    payload = body.get("payload")
    if not isinstance(payload, str) or not payload:
        raise f.fail("media.payload", "must be a non-empty base64 string")
    if len(payload) > (MAX_PAYLOAD_BYTES + 2) // 3 * 4:
        raise f.fail("media.payload", f"is over the limit of {MAX_PAYLOAD_BYTES} bytes")
    try:
        # validate=True: refuse characters outside the alphabet instead of skipping them.
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        msg = f"'{f.event}' message: media.payload is not valid base64"
        raise StreamProtocolError(msg, _CLOSE_INVALID_DATA) from None
    if len(audio) > MAX_PAYLOAD_BYTES:
        raise f.fail("media.payload", f"is over the limit of {MAX_PAYLOAD_BYTES} bytes")
    return Media(
        f.sequence(),
        f.sid("streamSid"),
        f.track("media.track", body.get("track")),
        f.number("media.chunk", body.get("chunk")),
        f.number("media.timestamp", body.get("timestamp")),
        audio,
    )


def _dtmf(f: _Fields) -> Dtmf:
    body = f.table("dtmf")
    digit = body.get("digit")
    if not isinstance(digit, str) or len(digit) != 1 or digit not in _DTMF_DIGITS:
        raise f.fail("dtmf.digit", "must be one of 0-9, *, #, A-D")
    track = body.get("track", "inbound_track")
    return Dtmf(f.sequence(), f.sid("streamSid"), f.track("dtmf.track", track), digit.upper())


def _mark(f: _Fields) -> Mark:
    body = f.table("mark")
    name = _bounded(body.get("name"), "mark", "mark.name", MAX_MARK_NAME_CHARS)
    return Mark(f.sequence(), f.sid("streamSid"), name)


def _stop(f: _Fields) -> Stop:
    f.table("stop", required=False)
    return Stop(f.sequence(), f.sid("streamSid"))


_PARSERS: Final[dict[str, Callable[[_Fields], Message]]] = {
    "connected": _connected,
    "start": _start,
    "media": _media,
    "dtmf": _dtmf,
    "mark": _mark,
    "stop": _stop,
}
