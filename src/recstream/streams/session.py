"""One media stream as a state machine, sans I/O: messages in, container bytes out.

:class:`StreamSession` takes the parsed messages of one WebSocket
(:mod:`recstream.streams.protocol`) in order and returns the bytes of the
multi-track container (docs/TRACKS.md) to append to the call's recording:

* ``connected`` (optional, once) then ``start`` (once) open the container:
  SESSION (stream, call and account SIDs, tenant, custom parameters -- personal
  data, which is why it lives only inside the envelope) and a TRACK per track
  (1 ``inbound``, 2 ``outbound``);
* ``media`` becomes GAP and MEDIA records placed by its timestamp
  (:mod:`recstream.streams.timeline`); ``dtmf`` an EVENT; ``mark`` is counted;
* ``stop`` ends it: STATS per track, CLOSE ("stopped"), then END.

:meth:`StreamSession.finish` ends a stream that stopped any other way
(disconnect, idle timeout, a malformed message): STATS, CLOSE with the reason
and no END, so the recording is finalised and decodes as incomplete and says
why (TRACKS.md §4.4, §5).

Transitions are a table: any message the state does not allow raises
:class:`~recstream.errors.StreamProtocolError`, and the session is then failed
(only :meth:`finish` is left).  Time comes in as an argument.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from recstream import tracks
from recstream.errors import StreamProtocolError, StreamStateError
from recstream.streams.protocol import (
    Codec,
    Connected,
    Dtmf,
    Mark,
    Media,
    Message,
    Start,
    Stop,
    Track,
    Unknown,
)
from recstream.streams.timeline import SAMPLES_PER_MS, SLACK_SECONDS, TrackTimeline

__all__ = ["SOURCE", "TRACK_NUMBERS", "SessionStatistics", "State", "StreamSession"]

SOURCE: Final = "media-stream"
TRACK_NUMBERS: Final = {Track.INBOUND: 1, Track.OUTBOUND: 2}
_PAYLOAD_TYPES: Final = {Codec.PCMU: 0, Codec.PCMA: 8}  # RFC 3551 static payload types
MAX_REASON_CHARS: Final = 200  # TRACKS.md §4.4
_DTMF_EVENTS: Final = {d: i for i, d in enumerate("0123456789*#ABCD")}  # RFC 4733 §3.2


class State(enum.Enum):
    NEW = "new"  # nothing yet
    CONNECTED = "connected"  # `connected` seen
    RECORDING = "recording"  # `start` seen
    STOPPED = "stopped"  # `stop` seen: complete
    FAILED = "failed"  # a protocol error: only finish() is left
    FINISHED = "finished"  # ended some other way: incomplete


# Per message, a module global: an Enum member read through its class costs ~0.1 us
# on CPython 3.11 (a descriptor call), a global ~0.02.
_RECORDING: Final = State.RECORDING

_ALLOWED: Final = {
    State.NEW: {Connected, Start, Unknown},
    State.CONNECTED: {Start, Unknown},
    State.RECORDING: {Media, Dtmf, Mark, Stop, Unknown},
}


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """Counters for the audit log (no personal data)."""

    state: str
    tracks: Mapping[str, Mapping[str, int]]
    gap_ms: Mapping[str, int]
    ahead: Mapping[str, int]  # chunks dropped: timestamped past the time since start + slack
    dtmf: int
    marks: int
    ignored: int


class StreamSession:
    """One stream's recording, as container bytes.

    Args:
        max_call_seconds: the longest timeline a track may have.
        clock: monotonic seconds (a seam for tests): a chunk timestamped more than
            SLACK_SECONDS past the time since ``start`` arrived is dropped and counted.
    """

    def __init__(
        self, *, max_call_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.state = State.NEW
        self.start: Start | None = None
        self._clock = clock
        self._started_at = 0.0
        self._max_samples = int(max_call_seconds * 8000)
        self._connected: Connected | None = None
        self._enc = tracks.TracksEncoder()
        self._lines: dict[Track, TrackTimeline] = {}
        self._by_name: dict[str, tuple[TrackTimeline, int]] = {}  # media_in_order's lookup
        self._dtmf = 0
        self._marks = 0
        self._ignored = 0

    def receive(self, message: Message) -> bytes:
        """Take the next message; return the container bytes it adds (maybe none).

        ``start`` returns nothing: the caller decides the tenant and then calls
        :meth:`open`.

        Raises:
            StreamProtocolError: a message out of order, for another stream, or
                for a track the stream did not announce.  The session is failed.
        """
        if type(message) is Media and self.state is _RECORDING:  # 99% of messages
            try:
                return self._media(message)
            except StreamProtocolError:
                self.state = State.FAILED
                raise
        allowed = _ALLOWED.get(self.state, set())
        if type(message) not in allowed:
            problem = _order_problem(message, self.state)
            self.state = State.FAILED if self.state in _ALLOWED else self.state
            raise StreamProtocolError(problem)
        try:
            return self._handle(message)
        except StreamProtocolError:
            self.state = State.FAILED
            raise

    def media_in_order(
        self, track: str, chunk: int, timestamp_ms: int, payload: bytes
    ) -> bytes | None:
        """:meth:`receive` of a media message in the common case, or None (nothing changed).

        The common case: recording, the track announced, the chunk number new, the
        timestamp within the tolerance of the track's end, inside the horizon and the
        call length limit -- one MEDIA record at the track's end, what :meth:`receive`
        returns for it.  Anything else (a gap, a duplicate, a late or early chunk, an
        error) returns None having changed nothing: call :meth:`receive` with the Media.
        ``track`` is the message's ``"inbound"`` or ``"outbound"``.
        """
        found = self._by_name.get(track)
        if found is None or self.state is not _RECORDING:
            return None
        line, number = found
        end = line.end
        position = timestamp_ms * SAMPLES_PER_MS
        n = len(payload)
        if (
            chunk <= line.last_chunk
            or not -line.tolerance <= position - end <= line.tolerance
            or position + n > line.max_samples
        ):
            return None
        if position > end:
            horizon = int((self._clock() - self._started_at + SLACK_SECONDS) * 1000)
            if position > horizon * SAMPLES_PER_MS:
                return None
        record = self._enc.media_at_end(number, end, payload)
        line.last_chunk = chunk
        line.end = end + n
        line.received += 1
        line.typical_chunk = n
        return record

    def _handle(self, message: Message) -> bytes:
        if isinstance(message, Unknown):
            self._ignored += 1
            return b""
        if isinstance(message, Connected):
            self._connected = message
            self.state = State.CONNECTED
            return b""
        if isinstance(message, Start):
            self._started_at = self._clock()
            self.start = message
            self.state = State.RECORDING
            return b""
        assert self.start is not None
        if message.stream_sid != self.start.stream_sid:
            msg = f"'{_event(message)}' message for another stream than this socket's"
            raise StreamProtocolError(msg)
        if isinstance(message, Media):
            return self._media(message)
        if isinstance(message, Dtmf):
            return self._event(message)
        if isinstance(message, Mark):
            self._marks += 1
            return b""
        assert isinstance(message, Stop)
        out = self._close("stopped", complete=True)
        self.state = State.STOPPED
        return out

    def open(self, *, tenant: str, now_ms: int) -> bytes:
        """The container's first bytes: preamble, SESSION and TRACKs.  Call after ``start``."""
        start = self.start
        if start is None or self._lines:
            msg = "open() needs a start message, once"
            raise StreamStateError(msg)
        info: dict[str, Any] = {
            "protocol": "twilio-media-streams",
            "stream_sid": start.stream_sid,
            "call_sid": start.call_sid,
            "account_sid": start.account_sid,
            "tenant": tenant,
            # TwiML <Parameter> values: often the caller's number. Personal data, kept
            # here inside the envelope and nowhere else.
            "custom_parameters": dict(start.custom_parameters),
        }
        if self._connected is not None:
            info["connected"] = {
                "protocol": self._connected.protocol,
                "version": self._connected.version,
            }
        out = [self._enc.start(SOURCE, now_ms, info)]
        for track in sorted(start.tracks, key=TRACK_NUMBERS.__getitem__):
            self._lines[track] = TrackTimeline(self._max_samples)
            self._by_name[track.value] = (self._lines[track], TRACK_NUMBERS[track])
            decl = tracks.TrackDecl(
                track=TRACK_NUMBERS[track],
                codec=start.codec.name,
                clock_rate=start.sample_rate,
                origin_ms=now_ms,
                payload_type=_PAYLOAD_TYPES[start.codec],
                label=track.value,
            )
            out.append(self._enc.declare(decl))
        return b"".join(out)

    def _line(self, track: Track, event: str) -> TrackTimeline:
        line = self._lines.get(track)
        if line is None:
            if not self._lines:
                msg = "open() must follow start before media"
                raise StreamStateError(msg)
            msg = f"'{event}' message on track {track.value}, which 'start' did not announce"
            raise StreamProtocolError(msg)
        return line

    def _media(self, media: Media) -> bytes:
        assert self.start is not None
        if media.stream_sid != self.start.stream_sid:
            msg = "'media' message for another stream than this socket's"
            raise StreamProtocolError(msg)
        line = self._lines.get(media.track) or self._line(media.track, "media")
        elapsed = self._clock() - self._started_at
        horizon = int((elapsed + SLACK_SECONDS) * 1000) * SAMPLES_PER_MS
        gaps, position, payload = line.place(
            media.chunk, media.timestamp_ms, media.payload, horizon
        )
        number = TRACK_NUMBERS[media.track]
        if not gaps:  # the common case: one MEDIA record, or nothing (a duplicate)
            return self._enc.media(number, position, payload) if payload else b""
        out = [self._enc.gap(number, pos, n, packets) for pos, n, packets in gaps]
        if payload:
            out.append(self._enc.media(number, position, payload))
        return b"".join(out)

    def _event(self, dtmf: Dtmf) -> bytes:
        line = self._line(dtmf.track, "dtmf")
        self._dtmf += 1
        # Twilio's dtmf carries no timestamp or duration: the digit is placed
        # where the track has reached, with duration 0 (unknown).
        return self._enc.event(TRACK_NUMBERS[dtmf.track], line.end, _DTMF_EVENTS[dtmf.digit], 0, 0)

    def _close(self, reason: str, *, complete: bool) -> bytes:
        out = [
            self._enc.stats(TRACK_NUMBERS[track], line.counts)
            for track, line in sorted(self._lines.items(), key=lambda i: TRACK_NUMBERS[i[0]])
        ]
        # TRACKS.md §4.4: why it ended, in the recording itself (our words, never the peer's).
        out.append(self._enc.close(reason[:MAX_REASON_CHARS] or "ended", complete=complete))
        if complete:
            out.append(self._enc.end())
        return b"".join(out)

    def finish(self, reason: str) -> bytes:
        """End a stream that did not ``stop``: STATS, CLOSE with ``reason``, no END (incomplete).

        Returns b"" when the stream already stopped, or never opened.
        """
        if self.state in (State.STOPPED, State.FINISHED) or not self._lines:
            if self.state is not State.STOPPED:
                self.state = State.FINISHED
            return b""
        self.state = State.FINISHED
        return self._close(reason, complete=False)

    @property
    def complete(self) -> bool:
        return self.state is State.STOPPED

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            state=self.state.value,
            tracks={t.value: dict(line.counts) for t, line in self._lines.items()},
            gap_ms={t.value: line.gap_samples // SAMPLES_PER_MS for t, line in self._lines.items()},
            ahead={t.value: line.ahead for t, line in self._lines.items()},
            dtmf=self._dtmf,
            marks=self._marks,
            ignored=self._ignored,
        )


def _event(message: Message) -> str:
    return type(message).__name__.lower()


def _order_problem(message: Message, state: State) -> str:
    name = _event(message)
    if state is State.CONNECTED and isinstance(message, Connected):
        return "a second 'connected' message"
    if state in (State.NEW, State.CONNECTED):
        return f"'{name}' message before 'start'"
    if state is State.RECORDING:
        return "a second 'start' message" if name == "start" else f"'{name}' after 'start'"
    return f"'{name}' message after the stream ended ({state.value})"
