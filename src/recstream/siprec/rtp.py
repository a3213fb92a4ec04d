"""One recorded RTP stream, sans-I/O: latching, reordering, loss, SSRC changes, DTMF.

:class:`StreamReceiver` takes datagrams with their source address and arrival
time (``now``, seconds, from the caller's clock) and returns the track
container records (docs/TRACKS.md) they release, as bytes to append to the
call's recording.  It never reads a clock or a socket.

Rules (RFC 3550 §5.1 and A.1, RFC 4733, RFC 3711 through :mod:`.srtp`):

* The stream **latches** onto the source address of its first valid (and, with
  SRTP, authenticated) packet from an allowed host (the SDP's ``c=`` address or
  the SIP peer's); packets from any other address are dropped and counted as
  ``foreign`` (RTP injection).  The offer's *port* is not used: SBCs and SIPp
  send from other ports than they announce.
* Packets are released in sequence-number order through a reorder window
  (``window`` seconds, at least 60 ms): a hole is waited for until the packet
  after it has waited ``window``; then the missing packets are declared
  ``lost`` (a GAP record, silence on extraction).  A packet arriving after its
  place was given up is ``late``; one seen before is a ``duplicate``; one that
  filled a hole in time is ``reordered``.
* A new SSRC (or a sequence jump over MAX_DROPOUT) starts a new timeline that
  continues where the track ended: time on the track never goes back, and never
  runs ahead of the wall clock by more than SLACK seconds, so no sender can make
  a playback write more silence than the call lasted.
* ``telephone-event`` packets become EVENT records, one per digit, never audio.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from recstream.tracks import TrackDecl, TracksEncoder

__all__ = ["MIN_WINDOW", "RtpPacket", "StreamReceiver", "parse_rtp"]

MIN_WINDOW = 0.060  # the floor: at least 60 ms of reordering is absorbed
DEFAULT_WINDOW = 0.080
MAX_DROPOUT = 3000  # RFC 3550 A.1: a larger forward jump is a restart, not a loss
MAX_BUFFERED = 512  # packets held for reordering, whatever the window says
SLACK = 2.0  # seconds the timeline may run ahead of the wall clock (bursty senders)
_RECENT = 1024  # released sequence numbers remembered to tell duplicates from late

_HEADER = struct.Struct(">BBHII")
_SEQ_TS_SSRC = struct.Struct(">HII")
_EVENT = struct.Struct(">BBH")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """An RTP packet (RFC 3550 §5.1), or None when ``data`` is not one."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        return None
    pt = b1 & 0x7F
    if 72 <= pt <= 76:  # RTCP sent to the RTP port (RFC 5761 §4): not media
        return None
    start = 12 + 4 * (b0 & 0x0F)
    end = len(data)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if end < start + 4:
            return None
        start += 4 + 4 * struct.unpack_from(">H", data, start + 2)[0]
    if b0 & 0x20:  # padding: the last byte counts it
        pad = data[-1]
        if pad == 0:
            return None
        end -= pad
    if start >= end:
        return None
    return RtpPacket(bool(b1 & 0x80), pt, seq, ts, ssrc, data[start:end])


@dataclass
class _Held:
    packet: RtpPacket
    arrival: float


@dataclass
class Counters:
    received: int = 0
    lost: int = 0
    late: int = 0
    duplicate: int = 0
    reordered: int = 0
    foreign: int = 0
    ssrc_changes: int = 0
    undecryptable: int = 0
    malformed: int = 0
    bytes: int = 0

    def as_stats(self) -> dict[str, int]:
        d = dict(self.__dict__)
        d.pop("bytes")
        return d


Unprotect = Callable[[bytes], bytes]  # raises ValueError (bad) or LookupError (replay)


@dataclass
class StreamReceiver:
    """The receiving side of one recorded stream, writing one track.

    Args:
        encoder: the call's track encoder (records come back as bytes).
        track: this stream's track number; ``label``/``participant`` describe it.
        payload_type, codec: the negotiated audio payload type and its name.
        telephone_event: the negotiated RFC 4733 payload type, if any.
        unprotect: SRTP decryption (:class:`recstream.siprec.srtp.SrtpReceiver`), or None.
        window: reorder window in seconds (at least :data:`MIN_WINDOW`).
    """

    encoder: TracksEncoder
    track: int
    payload_type: int
    codec: str
    telephone_event: int | None = None
    label: str | None = None
    participant: str | None = None
    unprotect: Unprotect | None = None
    window: float = DEFAULT_WINDOW
    clock_rate: int = 8000
    # Addresses a stream may latch onto (the SDP's c= and the SIP peer's); None: any.
    # An off-path sender on another host cannot take the stream by sending first.
    latch_hosts: frozenset[str] | None = None
    counters: Counters = field(default_factory=Counters)
    source: tuple[str, int] | None = None
    declared: bool = False
    _held: dict[int, _Held] = field(default_factory=dict)
    _next: int | None = None  # next extended sequence number to release
    _highest: int = -1
    _ssrc: int | None = None
    _base_ts: int = 0  # RTP timestamp at position _base_pos of the current timeline
    _base_pos: int = 0
    _end: int = 0  # end of the last MEDIA/GAP on the track
    _start: float = 0.0  # arrival of the first packet (position 0)
    _given_up: set[int] = field(default_factory=set)  # recent sequence numbers declared lost
    _floor: int = 0  # the timeline's first sequence number: anything before it was never seen
    _event: tuple[int, int, int, int, int] | None = None  # ts, pos, event, volume, duration
    _event_pos: int = 0
    _last_arrival: float = 0.0
    _last_samples: int = 160  # duration of the last audio packet, for gaps without timestamps

    def __post_init__(self) -> None:
        if self.window < MIN_WINDOW:
            msg = f"reorder window must be at least {MIN_WINDOW * 1000:.0f} ms"
            raise ValueError(msg)

    # --- input -----------------------------------------------------------------

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> bytes:
        """Take one datagram; return the records it releases (maybe b"")."""
        if (self.source is not None and addr != self.source) or (
            self.source is None and self.latch_hosts is not None and addr[0] not in self.latch_hosts
        ):
            self.counters.foreign += 1
            return b""
        if self.unprotect is not None:
            try:
                data = self.unprotect(data)
            except LookupError:  # SRTP replay protection: seen before
                self.counters.duplicate += 1
                return b""
            except ValueError:
                self.counters.undecryptable += 1
                return b""
        if not self._held and self._next is not None:
            fast = self._in_order(data, now)
            if fast is not None:
                return fast
        packet = parse_rtp(data)
        if packet is None:
            self.counters.malformed += 1
            return b""
        out = b""
        if self.source is None:
            self.source = addr
            self._start = now
            out = self._declare(now)
        self._last_arrival = now
        return out + self._accept(packet, now)

    def _in_order(self, data: bytes, now: float) -> bytes | None:
        """The common case in one step: the next packet, plain header, nothing held.

        Same result as the general path (parse, hold, release); None when any
        condition for it does not hold.
        """
        assert self._next is not None
        if len(data) <= 12 or data[0] != 0x80 or data[1] & 0x7F != self.payload_type:
            return None
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        if ssrc != self._ssrc or seq != self._next & 0xFFFF:
            return None
        delta = (ts - self._base_ts) & 0xFFFFFFFF
        pos = self._base_pos + delta
        if (
            delta >= 0x80000000
            or pos < self._end
            or (pos > (now - self._start + SLACK) * self.clock_rate)
        ):
            return None
        payload = data[12:]
        n = len(payload)
        c = self.counters
        c.received += 1
        c.bytes += n
        self._highest = self._next
        self._next += 1
        self._last_arrival = now
        rec = self.encoder.media(self.track, pos, payload)
        self._end = pos + n
        self._last_samples = n
        return rec

    def _declare(self, now: float) -> bytes:
        self.declared = True
        origin = round(now * 1000)
        return self.encoder.declare(
            TrackDecl(
                self.track,
                self.codec,
                self.clock_rate,
                origin,
                self.payload_type,
                self.label,
                self.participant,
                {"telephone_event": self.telephone_event, "srtp": self.unprotect is not None},
            )
        )

    def _accept(self, p: RtpPacket, now: float) -> bytes:
        out = b""
        if self._ssrc != p.ssrc:
            if self._ssrc is not None:
                self.counters.ssrc_changes += 1
                out += self._drain()
            self._restart(p, now)
        ext = self._extend(p.seq)
        assert self._next is not None
        if ext < self._next:
            if self._next - ext > MAX_DROPOUT:  # the sender restarted its sequence
                return out + self._jump(p, now)
            if ext < self._floor or ext < self._next - _RECENT or ext in self._given_up:
                self.counters.late += 1
            else:
                self.counters.duplicate += 1
            return out
        if ext in self._held:
            self.counters.duplicate += 1
            return out
        if ext - self._next > MAX_DROPOUT:
            return out + self._jump(p, now)
        if ext < self._highest:
            self.counters.reordered += 1
        self._highest = max(self._highest, ext)
        self._held[ext] = _Held(p, now)
        self.counters.received += 1
        self.counters.bytes += len(p.payload)
        return out + self._release(now)

    def _extend(self, seq: int) -> int:
        """The 16-bit sequence number as a 64-bit one, nearest to the next expected."""
        assert self._next is not None
        delta = (seq - self._next) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._next + delta

    def _restart(self, p: RtpPacket, now: float) -> None:
        """A new timeline (first packet, new SSRC, sequence jump) continuing the track."""
        self._ssrc = p.ssrc
        # A fresh range of extended numbers: never collides with the old timeline's.
        self._next = ((self._next or 0) // 0x10000 + 4) * 0x10000 + p.seq
        self._floor = self._next
        self._highest = self._next - 1
        self._held.clear()
        self._given_up.clear()
        self._base_ts = p.timestamp
        self._base_pos = self._bounded(self._end, now)
        self._event = None

    def _jump(self, p: RtpPacket, now: float) -> bytes:
        out = self._drain()
        self._restart(p, now)
        return out + self._accept(p, now)

    def _bounded(self, position: int, now: float) -> int:
        return max(self._end, min(position, round((now - self._start + SLACK) * self.clock_rate)))

    # --- output ----------------------------------------------------------------

    def tick(self, now: float) -> bytes:
        """Release what the window no longer holds back (call now and then)."""
        return self._release(now)

    def _release(self, now: float, *, force: bool = False) -> bytes:
        out = []
        held, nxt = self._held, self._next
        assert nxt is not None
        while held:
            h = held.pop(nxt, None)
            if h is None:
                first = min(held)
                waited = now - held[first].arrival
                if not force and waited < self.window and len(held) < MAX_BUFFERED:
                    break
                out.append(self._lost(nxt, first, held[first].packet, held[first].arrival))
                nxt = first
                continue
            out.append(self._emit(h.packet, h.arrival))
            nxt += 1
        self._next = nxt
        return b"".join(out)

    def _drain(self) -> bytes:
        """Release everything held (end of call, SSRC change), declaring holes lost."""
        return self._release(self._last_arrival, force=True)

    def _forget_old(self) -> None:
        floor = (self._next or 0) - _RECENT
        self._given_up = {s for s in self._given_up if s >= floor}

    def _position(self, p: RtpPacket, arrival: float) -> int:
        delta = (p.timestamp - self._base_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:  # behind the timeline's base: keep it contiguous
            delta = 0
        return self._bounded(self._base_pos + delta, arrival)

    def _lost(self, nxt: int, first: int, after: RtpPacket, arrival: float) -> bytes:
        packets = first - nxt
        self.counters.lost += packets
        self._given_up.update(range(max(nxt, first - _RECENT), first))
        if len(self._given_up) > 4 * _RECENT:
            self._forget_old()
        pos = self._position(after, arrival)
        if pos <= self._end:  # timestamps give no room: assume the last packet's duration
            pos = self._end + packets * self._last_samples
            self._base_ts, self._base_pos = after.timestamp, pos
        gap = self.encoder.gap(self.track, self._end, pos - self._end, packets)
        self._end = pos
        return gap

    def _emit(self, p: RtpPacket, arrival: float) -> bytes:
        if p.payload_type == self.telephone_event:
            return self._dtmf(p, arrival)
        if p.payload_type != self.payload_type:
            # Not negotiated (comfort noise, another codec): it kept its place in the
            # sequence, so it is not a loss, but it is not this track's audio.
            self.counters.received -= 1
            self.counters.malformed += 1
            return b""
        pos = self._position(p, arrival)
        rec = self.encoder.media(self.track, pos, p.payload)
        self._end = pos + len(p.payload)
        self._last_samples = len(p.payload)
        return rec

    def _dtmf(self, p: RtpPacket, arrival: float) -> bytes:
        if len(p.payload) < 4:
            self.counters.malformed += 1
            return b""
        event, flags, duration = _EVENT.unpack_from(p.payload)
        out = b""
        if self._event is not None and self._event[0] != p.timestamp:
            out = self._finish_event()
        if self._event is None:
            pos = max(self._event_pos, self._position(p, arrival))
            self._event = (p.timestamp, pos, event, flags & 0x3F, duration)
        else:
            ts, pos, ev, vol, _ = self._event
            self._event = (ts, pos, ev, vol, max(duration, self._event[4]))
        if flags & 0x80:  # E bit: the event ended (its end packet is sent three times)
            out += self._finish_event()
            self._event = (p.timestamp, -1, 0, 0, 0)  # swallow the retransmitted ends
        return out

    def _finish_event(self) -> bytes:
        ev, self._event = self._event, None
        if ev is None or ev[1] < 0:
            return b""
        _, pos, event, volume, duration = ev
        self._event_pos = pos
        return self.encoder.event(self.track, pos, event, volume, duration)

    def close(self) -> bytes:
        """Release everything and write the track's STATS (declaring it if no packet came)."""
        out = b""
        if not self.declared:
            out += self._declare(self._last_arrival or 0.0)
        if self._next is not None:
            out += self._drain()
        out += self._finish_event()
        return out + self.encoder.stats(self.track, self.counters.as_stats())
