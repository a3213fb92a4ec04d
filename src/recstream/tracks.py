"""The multi-track plaintext container (docs/TRACKS.md, the contract): pure, no I/O.

A front door (SIPREC, media streams) turns a call into one stream of bytes with
:class:`TracksEncoder` and writes them into one live envelope; playback decodes
the decrypted plaintext with :class:`TracksDecoder` (input in any split, h11's
``receive_data``/``next_record`` pull shape) and :func:`extract` rebuilds each
track's audio, silence-filled where packets were lost.

Errors are sticky: after a :class:`~recstream.errors.TracksFormatError` the
decoder raises it again on every call, and an encoder misused once raises
:class:`~recstream.errors.StreamStateError` from then on.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from recstream.errors import StreamStateError, TracksFormatError

__all__ = [
    "MAGIC",
    "MEDIA_TYPE",
    "NEED_DATA",
    "STAT_NAMES",
    "VERSION",
    "Close",
    "End",
    "Event",
    "Extraction",
    "Gap",
    "Media",
    "RecordType",
    "Session",
    "Stats",
    "TrackAudio",
    "TrackDecl",
    "TracksDecoder",
    "TracksEncoder",
    "Update",
    "digit_name",
    "extract",
]

MAGIC: Final = b"RSTRACKS"
VERSION: Final = 1
MEDIA_TYPE: Final = "application/vnd.recstream.tracks"
PREAMBLE_SIZE: Final = len(MAGIC) + 1

MAX_SESSION_BYTES: Final = 1 << 20  # TRACKS.md §3
MAX_TRACK_BYTES: Final = 64 * 1024
MAX_PAYLOAD_BYTES: Final = 65_535  # one RTP payload at most
MAX_ANCILLARY_BYTES: Final = 1 << 20
MAX_TRACKS: Final = 1024  # TRACKS.md §7
MAX_FILL_SECONDS: Final = 3600  # one silence fill at most: an hour (TRACKS.md §7)
MAX_TRACK_SECONDS: Final = 24 * 3600  # a G.711 track's whole extracted audio (TRACKS.md §7)
MAX_TOTAL_SECONDS: Final = 4 * MAX_TRACK_SECONDS  # summed over a container's tracks (§7)
MAX_CLOCK_RATE: Final = 1_000_000
G711_CLOCK_RATE: Final = 8000  # RFC 3551 §4.5.14: PCMU and PCMA are 8-bit samples at 8 kHz

# Codecs with one byte per sample and a byte that means silence (G.711, TRACKS.md §6).
SILENCE: Final[Mapping[str, int]] = {"PCMU": 0xFF, "PCMA": 0xD5}

STAT_NAMES: Final = (
    "received",
    "lost",
    "late",
    "duplicate",
    "reordered",
    "foreign",
    "ssrc_changes",
    "undecryptable",
    "malformed",
)

_RECORD = struct.Struct(">BI")
_MEDIA = struct.Struct(">BIHQ")  # record header + track + position, packed at once
_TRACK_POS = struct.Struct(">HQ")
_GAP = struct.Struct(">HQII")
_EVENT = struct.Struct(">HQBBI")
_STATS_HEAD = struct.Struct(">HB")
_U64 = struct.Struct(">Q")


class RecordType(IntEnum):
    """Record types (TRACKS.md §3)."""

    SESSION = 0x01
    TRACK = 0x02
    MEDIA = 0x03
    GAP = 0x04
    EVENT = 0x05
    STATS = 0x06
    END = 0x07
    CLOSE = 0x80  # ancillary range: a decoder may skip it (TRACKS.md §4.4)
    UPDATE = 0x81  # session metadata that changed mid-call (TRACKS.md §4.5)


_LIMITS: Final = {
    RecordType.SESSION: MAX_SESSION_BYTES,
    RecordType.TRACK: MAX_TRACK_BYTES,
    RecordType.MEDIA: _TRACK_POS.size + MAX_PAYLOAD_BYTES,
    RecordType.GAP: _GAP.size,
    RecordType.EVENT: _EVENT.size,
    RecordType.STATS: _STATS_HEAD.size + 255 * 8,
    RecordType.END: 0,
    RecordType.CLOSE: 64 * 1024,
    RecordType.UPDATE: MAX_SESSION_BYTES,
}
_EXACT: Final = {RecordType.GAP, RecordType.EVENT, RecordType.END}

_DIGITS: Final = "0123456789*#ABCD"


def digit_name(event: int) -> str:
    """The RFC 4733 §3.2 name of a telephone-event code (``"5"``, ``"#"``, ``"flash"``)."""
    if event < len(_DIGITS):
        return _DIGITS[event]
    return "flash" if event == 16 else str(event)


# --- records -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """Session metadata (TRACKS.md §4.1); ``info`` is the whole JSON object."""

    source: str
    started_ms: int
    info: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TrackDecl:
    """A track declaration (TRACKS.md §4.2); ``info`` is the whole JSON object."""

    track: int
    codec: str
    clock_rate: int
    origin_ms: int
    payload_type: int | None = None
    label: str | None = None
    participant: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.info)
        doc.update(
            track=self.track,
            codec=self.codec,
            clock_rate=self.clock_rate,
            origin_ms=self.origin_ms,
            payload_type=self.payload_type,
            label=self.label,
            participant=self.participant,
        )
        return doc


@dataclass(frozen=True, slots=True)
class Media:
    track: int
    position: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Gap:
    track: int
    position: int
    samples: int
    packets: int


@dataclass(frozen=True, slots=True)
class Event:
    """A telephone-event (RFC 4733): ``event`` code, ``volume``, ``duration`` in samples."""

    track: int
    position: int
    event: int
    volume: int
    duration: int

    @property
    def digit(self) -> str:
        return digit_name(self.event)


@dataclass(frozen=True, slots=True)
class Stats:
    """Per-track counters (TRACKS.md §4.3); ``extra`` holds counters this version cannot name."""

    track: int
    counts: Mapping[str, int]
    extra: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class End:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    """Why the recording ended (TRACKS.md §4.4)."""

    reason: str
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Update:
    """Session metadata that changed mid-call (TRACKS.md §4.5)."""

    info: Mapping[str, Any]


Record = Session | TrackDecl | Media | Gap | Event | Stats | End | Close | Update


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


# --- shared validation ---------------------------------------------------------


class _Timelines:
    """Per-track ordering rules shared by the encoder and the decoder (TRACKS.md §3.1)."""

    def __init__(self) -> None:
        self.decls: dict[int, TrackDecl] = {}
        self.ends: dict[int, int] = {}
        self.unit: dict[int, bool] = {}  # True: one byte per sample
        self.event_pos: dict[int, int] = {}
        self.stats: set[int] = set()

    def declare(self, decl: TrackDecl) -> str | None:
        if decl.track in self.decls:
            return f"track {decl.track} is declared twice"
        if len(self.decls) >= MAX_TRACKS:
            return f"more than {MAX_TRACKS} tracks"
        self.decls[decl.track] = decl
        self.ends[decl.track] = 0
        self.unit[decl.track] = decl.codec in SILENCE
        self.event_pos[decl.track] = 0
        return None

    def place(self, track: int, position: int, length: int) -> str | None:
        """Check and advance a MEDIA (length = payload bytes) or GAP (length < 0: -samples)."""
        end = self.ends.get(track)
        if end is None:
            return f"track {track} is used before it is declared"
        if position < end:
            return f"track {track} goes back in time (position {position} < end {end})"
        if length < 0:
            self.ends[track] = position - length
        else:
            self.ends[track] = position + (length if self.unit[track] else 1)
        return None

    def event(self, track: int, position: int) -> str | None:
        last = self.event_pos.get(track)
        if last is None:
            return f"track {track} is used before it is declared"
        if position < last:
            return f"track {track} events go back in time"
        self.event_pos[track] = position
        return None

    def stat(self, track: int) -> str | None:
        if track not in self.decls:
            return f"track {track} is used before it is declared"
        if track in self.stats:
            return f"track {track} has two STATS records"
        self.stats.add(track)
        return None


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            msg = f"duplicate JSON key {key!r}"
            raise ValueError(msg)
        doc[key] = value
    return doc


def _load(body: bytes) -> dict[str, Any]:
    doc = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(doc, dict):
        msg = "not a JSON object"
        raise ValueError(msg)
    return doc


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        msg = f"{key} must be a string or null"
        raise ValueError(msg)
    return value


def _session_from(doc: dict[str, Any]) -> Session:
    if not isinstance(doc.get("source"), str) or not _is_int(doc.get("started_ms"), 0, 2**63):
        msg = "SESSION needs a string 'source' and an integer 'started_ms'"
        raise ValueError(msg)
    return Session(doc["source"], doc["started_ms"], doc)


def _decl_from(doc: dict[str, Any]) -> TrackDecl:
    track, codec, rate = doc.get("track"), doc.get("codec"), doc.get("clock_rate")
    origin, pt = doc.get("origin_ms"), doc.get("payload_type")
    if not _is_int(track, 1, 65535):
        msg = "TRACK 'track' must be an integer 1-65535"
        raise ValueError(msg)
    if not isinstance(codec, str) or not codec or codec != codec.upper():
        msg = "TRACK 'codec' must be a non-empty upper-case string"
        raise ValueError(msg)
    if not _is_int(rate, 1, MAX_CLOCK_RATE) or not _is_int(origin, 0, 2**63):
        msg = "TRACK needs integer 'clock_rate' (1-1000000) and 'origin_ms'"
        raise ValueError(msg)
    if codec in SILENCE and rate != G711_CLOCK_RATE:
        msg = f"TRACK 'clock_rate' must be {G711_CLOCK_RATE} for {codec} (G.711)"
        raise ValueError(msg)
    if pt is not None and not _is_int(pt, 0, 127):
        msg = "TRACK 'payload_type' must be 0-127 or null"
        raise ValueError(msg)
    return TrackDecl(
        doc["track"],
        codec,
        doc["clock_rate"],
        doc["origin_ms"],
        pt,
        _opt_str(doc, "label"),
        _opt_str(doc, "participant"),
        doc,
    )


# --- encoder -------------------------------------------------------------------


class TracksEncoder:
    """Bytes out for each record (TRACKS.md), checking the contract as it goes.

    ``preamble()`` + the session's bytes come from :meth:`start`; every other
    method returns the bytes of one record, to be appended in call order.

    Raises:
        ValueError: a record that breaks the contract (the encoder is then poisoned).
        StreamStateError: any call after a failure or after :meth:`end`.
    """

    def __init__(self) -> None:
        self._lines = _Timelines()
        self._started = False
        self._ended = False
        self._failed = False
        self._closed = False

    def _check(self, problem: str | None = None, *, need_start: bool = True) -> None:
        if self._failed or self._ended:
            msg = "track encoder used after end() or after a failure"
            raise StreamStateError(msg)
        if need_start and not self._started:
            problem = problem or "start() must come first"
        if problem is not None:
            self._failed = True
            raise ValueError(problem)

    def start(self, source: str, started_ms: int, info: Mapping[str, Any] | None = None) -> bytes:
        """The preamble and the SESSION record."""
        self._check("start() called twice" if self._started else None, need_start=False)
        doc = {**(info or {}), "source": source, "started_ms": started_ms}
        try:
            _session_from(doc)
        except ValueError as exc:
            self._check(str(exc), need_start=False)
        body = _dump(doc)
        if len(body) > MAX_SESSION_BYTES:
            self._check("SESSION metadata over 1 MiB", need_start=False)
        self._started = True
        return MAGIC + bytes([VERSION]) + _RECORD.pack(RecordType.SESSION, len(body)) + body

    def declare(self, decl: TrackDecl) -> bytes:
        """A TRACK record."""
        self._check()
        doc = decl.to_json()
        try:
            _decl_from(doc)
        except ValueError as exc:
            self._check(str(exc))
        body = _dump(doc)
        if len(body) > MAX_TRACK_BYTES:
            self._check("TRACK declaration over 64 KiB")
        self._check(self._lines.declare(decl))
        return _RECORD.pack(RecordType.TRACK, len(body)) + body

    def media(self, track: int, position: int, payload: bytes) -> bytes:
        """A MEDIA record: ``payload`` at ``position`` on ``track``'s timeline."""
        n = len(payload)
        if not 0 < n <= MAX_PAYLOAD_BYTES:
            self._check("MEDIA payload must be 1-65535 bytes")
        elif self._failed or self._ended or not self._started:
            self._check()
        problem = self._lines.place(track, position, n)
        if problem is not None:
            self._check(problem)
        return _MEDIA.pack(RecordType.MEDIA, _TRACK_POS.size + n, track, position) + payload

    def media_at_end(self, track: int, position: int, payload: bytes) -> bytes:
        """:meth:`media` for a chunk at exactly ``track``'s end, with fewer steps.

        A live front door that keeps each track contiguous places every chunk where
        the previous one ended: then the order rule is one comparison.  Anything
        else (another position, a wrong length, a bad state, an undeclared or
        non-G.711 track) is handed to :meth:`media`, which raises or places it.
        """
        n = len(payload)
        lines = self._lines
        if (
            lines.ends.get(track) != position
            or not 0 < n <= MAX_PAYLOAD_BYTES
            or self._failed or self._ended or not self._started
            or not lines.unit[track]
        ):  # fmt: skip
            return self.media(track, position, payload)
        lines.ends[track] = position + n
        return _MEDIA.pack(RecordType.MEDIA, _TRACK_POS.size + n, track, position) + payload

    def gap(self, track: int, position: int, samples: int, packets: int) -> bytes:
        """A GAP record: ``packets`` lost, ``samples`` long, at ``position``."""
        self._check(None if samples >= 1 and packets >= 1 else "GAP needs samples and packets >= 1")
        self._check(self._lines.place(track, position, -samples))
        body = _GAP.pack(track, position, samples, packets)
        return _RECORD.pack(RecordType.GAP, len(body)) + body

    def event(self, track: int, position: int, event: int, volume: int, duration: int) -> bytes:
        """An EVENT record (RFC 4733 telephone-event)."""
        ok = 0 <= event <= 255 and 0 <= volume <= 63 and 0 <= duration < 2**32
        self._check(None if ok else "EVENT fields out of range")
        self._check(self._lines.event(track, position))
        body = _EVENT.pack(track, position, event, volume, duration)
        return _RECORD.pack(RecordType.EVENT, len(body)) + body

    def stats(self, track: int, counts: Mapping[str, int]) -> bytes:
        """A STATS record; counters missing from ``counts`` are written as 0."""
        unknown = set(counts) - set(STAT_NAMES)
        self._check(f"unknown counters {sorted(unknown)}" if unknown else None)
        self._check(self._lines.stat(track))
        values = [int(counts.get(name, 0)) for name in STAT_NAMES]
        body = _STATS_HEAD.pack(track, len(values)) + b"".join(_U64.pack(v) for v in values)
        return _RECORD.pack(RecordType.STATS, len(body)) + body

    def close(self, reason: str, *, complete: bool = True) -> bytes:
        """A CLOSE record: why the recording ended (at most once, before :meth:`end`)."""
        bad = not reason or len(reason) > 200 or self._closed
        self._check("CLOSE needs a short reason, once" if bad else None)
        self._closed = True
        body = _dump({"reason": reason, "complete": complete})
        return _RECORD.pack(RecordType.CLOSE, len(body)) + body

    def update(self, info: Mapping[str, Any]) -> bytes:
        """An UPDATE record: session metadata that changed mid-call."""
        self._check()
        body = _dump(info)
        if len(body) > MAX_SESSION_BYTES:
            self._check("UPDATE metadata over 1 MiB")
        return _RECORD.pack(RecordType.UPDATE, len(body)) + body

    def end(self) -> bytes:
        """The END record; the encoder accepts nothing after it."""
        self._check()
        self._ended = True
        return _RECORD.pack(RecordType.END, 0)

    @property
    def tracks(self) -> Mapping[int, TrackDecl]:
        return self._lines.decls

    def stats_written(self, track: int) -> bool:
        return track in self._lines.stats


# --- decoder -------------------------------------------------------------------


class TracksDecoder:
    """Records out of container bytes given in any split (TRACKS.md).

    ``receive_data(data)`` buffers; ``next_record()`` returns a record or
    :data:`NEED_DATA`; ``receive_data(b"")`` marks the end of input, after which
    ``next_record()`` returns ``None`` once everything whole has been returned.
    :attr:`complete` then says whether END was seen (a recovered recording's
    container is cut short and is not an error: TRACKS.md §5).

    Raises:
        TracksFormatError: malformed input (sticky: raised again on every call).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # read offset into _buf
        self._offset = 0  # container offset of _buf[0]
        self._eof = False
        self._preamble = False
        self._session = False
        self._ended = False
        self._close_seen = False
        self._error: TracksFormatError | None = None
        self._lines = _Timelines()
        self.records = 0

    def receive_data(self, data: bytes) -> None:
        """Buffer ``data``; ``b""`` means end of input.

        Raises:
            RuntimeError: data after end of input.
        """
        if self._eof:
            msg = "data received after end of input"
            raise RuntimeError(msg)
        if not data:
            self._eof = True
            return
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            # Amortised O(1): compact only when the consumed prefix dominates.
            del self._buf[: self._pos]
            self._offset += self._pos
            self._pos = 0
        self._buf += data

    @property
    def complete(self) -> bool:
        """True once END has been decoded."""
        return self._ended

    def _fail(self, message: str, at: int | None = None) -> TracksFormatError:
        self._error = TracksFormatError(message, self._offset + (self._pos if at is None else at))
        return self._error

    def next_record(self) -> Record | _NeedData | None:
        """The next whole record, :data:`NEED_DATA`, or ``None`` at end of input."""
        if self._error is not None:
            raise self._error
        # A loop, not recursion: skipped ancillary records are attacker-chosen in number.
        while True:
            avail = len(self._buf) - self._pos
            if not self._preamble:
                if avail < PREAMBLE_SIZE:
                    return self._short(avail, "the preamble")
                if self._buf[self._pos : self._pos + len(MAGIC)] != MAGIC:
                    raise self._fail("not a recstream track container (bad magic)")
                version = self._buf[self._pos + len(MAGIC)]
                if version != VERSION:
                    msg = f"unsupported track container version {version}"
                    raise self._fail(msg)
                self._preamble = True
                self._pos += PREAMBLE_SIZE
                avail -= PREAMBLE_SIZE
            if avail == 0 and self._eof:
                return None
            if self._ended and avail:
                raise self._fail("data after the END record")
            if avail < _RECORD.size:
                return self._short(avail, "a record header")
            kind, length = _RECORD.unpack_from(self._buf, self._pos)
            self._check_length(kind, length)
            if avail < _RECORD.size + length:
                return self._short(avail, "a record")
            start = self._pos + _RECORD.size
            body = bytes(self._buf[start : start + length])
            record = self._parse(kind, body)
            self._pos = start + length
            if record is not None:  # None: an ancillary record, skipped
                self.records += 1
                return record

    def _short(self, avail: int, what: str) -> _NeedData | None:
        if not self._eof:
            return NEED_DATA
        if not self._preamble and avail < PREAMBLE_SIZE and self._buf[:avail] != MAGIC[:avail]:
            raise self._fail("not a recstream track container (bad magic)")
        # A cut-short container (recovered recording): incomplete, not an error.
        return None

    def _check_length(self, kind: int, length: int) -> None:
        if kind in _LIMITS:
            limit = _LIMITS[RecordType(kind)]
        elif kind >= 0x80:
            limit = MAX_ANCILLARY_BYTES
        else:
            msg = f"unknown record type 0x{kind:02x}"
            raise self._fail(msg)
        if length > limit or (kind in _EXACT and length != limit):
            msg = f"record type 0x{kind:02x} has length {length} (limit {limit})"
            raise self._fail(msg)
        if kind == RecordType.STATS and (length < 3 or (length - 3) % 8):
            msg = f"STATS record length {length} is not 3 + 8n"
            raise self._fail(msg)
        if kind == RecordType.MEDIA and length <= _TRACK_POS.size:
            raise self._fail("MEDIA record with an empty payload")
        first = kind == RecordType.SESSION
        if first == self._session:
            raise self._fail("SESSION must be the first record, and only once")

    def _parse(self, kind: int, body: bytes) -> Record | None:
        problem: str | None
        if kind == RecordType.MEDIA:
            track, position = _TRACK_POS.unpack_from(body)
            problem = self._lines.place(track, position, len(body) - _TRACK_POS.size)
            record: Record | None = Media(track, position, body[_TRACK_POS.size :])
        elif kind == RecordType.GAP:
            track, position, samples, packets = _GAP.unpack(body)
            if samples < 1 or packets < 1:
                raise self._fail("GAP with zero samples or packets")
            problem = self._lines.place(track, position, -samples)
            record = Gap(track, position, samples, packets)
        elif kind == RecordType.EVENT:
            track, position, event, volume, duration = _EVENT.unpack(body)
            if volume > 63:
                raise self._fail("EVENT volume over 63")
            problem = self._lines.event(track, position)
            record = Event(track, position, event, volume, duration)
        elif kind == RecordType.STATS:
            track, n = _STATS_HEAD.unpack_from(body)
            if len(body) != _STATS_HEAD.size + 8 * n:
                raise self._fail("STATS count does not match its length")
            values = [_U64.unpack_from(body, 3 + 8 * i)[0] for i in range(n)]
            problem = self._lines.stat(track)
            record = Stats(
                track, dict(zip(STAT_NAMES, values, strict=False)), tuple(values[len(STAT_NAMES) :])
            )
        elif kind == RecordType.END:
            self._ended, problem, record = True, None, End()
        elif kind in (RecordType.SESSION, RecordType.TRACK):
            record, problem = self._parse_json(kind, body)
        elif kind == RecordType.CLOSE:
            record, problem = self._parse_close(body), None
        elif kind == RecordType.UPDATE:
            try:
                record, problem = Update(_load(body)), None
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                msg = f"bad UPDATE record: {exc}"
                raise self._fail(msg) from None
        else:
            return None
        if problem is not None:
            raise self._fail(problem)
        return record

    def _parse_close(self, body: bytes) -> Close:
        if self._close_seen:
            msg = "two CLOSE records"
            raise self._fail(msg)
        self._close_seen = True
        try:
            doc = _load(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            msg = f"bad CLOSE record: {exc}"
            raise self._fail(msg) from None
        reason, complete = doc.get("reason"), doc.get("complete", True)
        if not isinstance(reason, str) or not isinstance(complete, bool):
            msg = "CLOSE needs a string 'reason' and a boolean 'complete'"
            raise self._fail(msg)
        return Close(reason, complete)

    def _parse_json(self, kind: int, body: bytes) -> tuple[Record, str | None]:
        try:
            doc = _load(body)
            if kind == RecordType.SESSION:
                self._session = True
                return _session_from(doc), None
            decl = _decl_from(doc)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            msg = f"bad {RecordType(kind).name} record: {exc}"
            raise self._fail(msg) from None
        return decl, self._lines.declare(decl)

    def __iter__(self) -> Iterator[Record]:
        """Every whole record buffered so far (use after ``receive_data(b"")``)."""
        while True:
            record = self.next_record()
            if record is None or record is NEED_DATA:
                return
            assert not isinstance(record, _NeedData)
            yield record


# --- extraction ----------------------------------------------------------------


@dataclass
class TrackAudio:
    """One track's extraction: ``audio`` (payloads, silence-filled for G.711)."""

    decl: TrackDecl
    audio: bytearray = field(default_factory=bytearray)
    gaps: list[Gap] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    stats: Stats | None = None
    packets: int = 0
    _end: int = 0

    def sha256(self) -> str:
        return hashlib.sha256(self.audio).hexdigest()


@dataclass
class Extraction:
    """Everything a container holds, per track (TRACKS.md §6)."""

    session: Session | None
    tracks: dict[int, TrackAudio]
    complete: bool
    records: int
    close: Close | None = None
    updates: list[Mapping[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the session's metadata included: personal data)."""
        return {
            "complete": self.complete,
            "records": self.records,
            "close": {"reason": self.close.reason, "complete": self.close.complete}
            if self.close
            else None,
            "updates": [dict(u) for u in self.updates],
            "session": dict(self.session.info) if self.session else None,
            "tracks": [
                {
                    **t.decl.to_json(),
                    "bytes": len(t.audio),
                    "packets": t.packets,
                    "sha256": t.sha256(),
                    "gaps": [
                        {"position": g.position, "samples": g.samples, "packets": g.packets}
                        for g in t.gaps
                    ],
                    "events": [
                        {
                            "position": e.position,
                            "digit": e.digit,
                            "event": e.event,
                            "volume": e.volume,
                            "duration": e.duration,
                        }
                        for e in t.events
                    ],
                    "stats": dict(t.stats.counts) if t.stats else None,
                }
                for _, t in sorted(self.tracks.items())
            ],
        }


class _Budget:
    """The extraction limits (TRACKS.md §7), checked before any byte is written."""

    def __init__(self, track_samples: int, total_samples: int) -> None:
        self.track_samples = track_samples
        self.total_left = total_samples

    def grow(self, track: TrackAudio, upto: int, payload: bytes, offset: int) -> None:
        """Silence-fill ``track`` up to position ``upto``, then append ``payload``."""
        silence = SILENCE.get(track.decl.codec)
        if silence is None:  # no fill: the audio is the payloads, as long as the input
            track.audio += payload
            return
        n = upto - track._end
        number = track.decl.track
        if n > MAX_FILL_SECONDS * G711_CLOCK_RATE:
            msg = f"track {number} asks for {n} samples of silence (over an hour)"
            raise TracksFormatError(msg, offset)
        grown = n + len(payload)
        if len(track.audio) + grown > self.track_samples:
            msg = f"track {number} is longer than {self.track_samples} samples"
            raise TracksFormatError(msg, offset)
        if grown > self.total_left:
            msg = "the tracks together are longer than the extraction limit"
            raise TracksFormatError(msg, offset)
        self.total_left -= grown
        track.audio += bytes([silence]) * n
        track.audio += payload


def extract(
    chunks: bytes | Sequence[bytes],
    *,
    max_track_seconds: int = MAX_TRACK_SECONDS,
    max_total_seconds: int = MAX_TOTAL_SECONDS,
) -> Extraction:
    """Decode a whole container and rebuild each track (TRACKS.md §6).

    ``max_track_seconds`` bounds each G.711 track's extracted audio and
    ``max_total_seconds`` their sum (TRACKS.md §7): the silence fill makes a few
    bytes of container into many of audio, so the bound is on the output.

    Raises:
        TracksFormatError: the container is malformed or over a limit.
    """
    budget = _Budget(max_track_seconds * G711_CLOCK_RATE, max_total_seconds * G711_CLOCK_RATE)
    dec = TracksDecoder()
    for chunk in [chunks] if isinstance(chunks, bytes | bytearray) else chunks:
        if chunk:
            dec.receive_data(bytes(chunk))
    dec.receive_data(b"")
    session: Session | None = None
    close: Close | None = None
    updates: list[Mapping[str, Any]] = []
    tracks: dict[int, TrackAudio] = {}
    for rec in dec:
        if isinstance(rec, Session):
            session = rec
        elif isinstance(rec, TrackDecl):
            tracks[rec.track] = TrackAudio(rec)
        elif isinstance(rec, Media):
            t = tracks[rec.track]
            budget.grow(t, rec.position, rec.payload, dec.records)
            t.packets += 1
            t._end = rec.position + (len(rec.payload) if t.decl.codec in SILENCE else 1)
        elif isinstance(rec, Gap):
            t = tracks[rec.track]
            t.gaps.append(rec)
            budget.grow(t, rec.position + rec.samples, b"", dec.records)
            t._end = rec.position + rec.samples
        elif isinstance(rec, Event):
            tracks[rec.track].events.append(rec)
        elif isinstance(rec, Stats):
            tracks[rec.track].stats = rec
        elif isinstance(rec, Close):
            close = rec
        elif isinstance(rec, Update):
            updates.append(rec.info)
    return Extraction(session, tracks, dec.complete, dec.records, close, updates)
