"""Where each chunk of one track goes on the track's timeline, sans I/O.

A media-stream chunk carries ``timestamp`` (milliseconds of presentation time
from the start of the stream) and ``chunk`` (a counter).  The timestamp places
the chunk; the counter finds duplicates.  The rules, per track:

* a chunk number at or below the last one accepted on the track is a
  **duplicate** (a sender that re-sent): dropped and counted;
* a chunk whose position (timestamp x 8 samples/ms) lies within
  ``tolerance`` samples of the track's end is placed **at** the end, so the
  1 ms rounding of millisecond timestamps never adds or loses a sample;
* further ahead, the distance to it is a **gap**: lost audio, recorded as a
  GAP (silence on extraction, docs/TRACKS.md §6), counted in packets of the
  track's usual chunk length;
* further behind, the part already covered is **late**: trimmed (or the whole
  chunk dropped) and counted, because a timeline never goes back.

* a chunk placed past the **horizon** (the time since the stream's ``start``
  arrived plus :data:`SLACK_SECONDS`) is **ahead** of the wall clock: dropped
  and counted, never placed, so no sender can make the recording hold more
  silence than the call lasted (plus the slack).  A real sender's timestamps
  count from the same start and cannot outrun the clock by more than its
  ``start`` message was delayed.

Gaps longer than an hour are written as several GAP records: TRACKS.md §7 lets
a decoder refuse one silence fill over an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

from recstream.errors import StreamProtocolError

__all__ = ["DEFAULT_TOLERANCE_SAMPLES", "SLACK_SECONDS", "Placement", "TrackTimeline"]

SAMPLES_PER_MS: Final = 8  # 8000 Hz G.711: one byte is one sample
# Half a millisecond either way would do for exact senders; 5 ms absorbs the
# rounding and small clock wobble of real platforms without hiding a lost 20 ms chunk.
DEFAULT_TOLERANCE_SAMPLES: Final = 40
MAX_GAP_RECORD_SAMPLES: Final = 3600 * 8000  # TRACKS.md §7: one fill at most an hour
# How far a chunk may lie ahead of the time since ``start`` arrived.  Real senders pace
# in real time and lag rather than lead; 10 s absorbs a delayed ``start`` and a burst
# of buffered audio, and bounds the silence one message can add to 80 KB a track.
SLACK_SECONDS: Final = 10.0


class Placement(NamedTuple):
    """What to write for one chunk: gaps first (position, samples, packets), then the media.

    A NamedTuple, not a frozen dataclass: one is made per chunk, and it is 2-3x cheaper.
    """

    gaps: tuple[tuple[int, int, int], ...]
    position: int
    payload: bytes  # empty: nothing to write (duplicate or wholly late)


@dataclass(slots=True)
class TrackTimeline:
    """One track's end, last chunk number and counters.

    Args:
        max_samples: the furthest position allowed (the call length limit).
        tolerance: samples either side of the end that still count as "at the end".
    """

    max_samples: int
    tolerance: int = DEFAULT_TOLERANCE_SAMPLES
    end: int = 0
    last_chunk: int = -1
    typical_chunk: int = 160
    # The STATS counters, plain ints (one is bumped per chunk); :attr:`counts` as a dict.
    received: int = 0
    lost: int = 0
    late: int = 0
    duplicate: int = 0
    gap_samples: int = 0
    ahead: int = 0  # chunks dropped past the horizon (not a STATS counter: TRACKS.md §4.3)

    @property
    def counts(self) -> dict[str, int]:
        """The STATS counters (TRACKS.md §4.3), by name."""
        return {
            "received": self.received,
            "lost": self.lost,
            "late": self.late,
            "duplicate": self.duplicate,
        }

    def place(
        self, chunk: int, timestamp_ms: int, payload: bytes, horizon: int | None = None
    ) -> Placement:
        """Place one chunk; ``horizon``: the furthest position it may start at now.

        Raises:
            StreamProtocolError: the chunk would end past ``max_samples``.
        """
        end = self.end  # read once: this runs for every chunk (100 a second per stream)
        if chunk <= self.last_chunk:
            self.duplicate += 1
            return Placement((), end, b"")
        position = timestamp_ms * SAMPLES_PER_MS
        n = len(payload)
        if position + n > self.max_samples:
            msg = (
                f"media.timestamp {timestamp_ms} ms is past the call length limit of "
                f"{self.max_samples // (SAMPLES_PER_MS * 1000)} s"
            )
            raise StreamProtocolError(msg)
        if horizon is not None and position > horizon and position > end:
            self.ahead += 1  # ahead of the wall clock: dropped, nothing placed
            return Placement((), end, b"")
        self.last_chunk = chunk
        gaps: tuple[tuple[int, int, int], ...] = ()
        if position - end > self.tolerance:
            gaps = self._gap(position)
            end = self.end
        elif end - position > self.tolerance:
            covered = end - position
            self.late += 1
            if covered >= n:
                return Placement((), end, b"")
            payload = payload[covered:]
            n -= covered
        self.end = end + n
        self.received += 1
        self.typical_chunk = n
        return Placement(gaps, end, payload)

    def _gap(self, position: int) -> tuple[tuple[int, int, int], ...]:
        samples = position - self.end
        packets = max(1, round(samples / max(1, self.typical_chunk)))
        self.lost += packets
        self.gap_samples += samples
        out = []
        start = self.end
        while samples > 0:
            n = min(samples, MAX_GAP_RECORD_SAMPLES)
            share = max(1, round(packets * n / (position - self.end)))
            out.append((start, n, share))
            start += n
            samples -= n
        self.end = position
        return tuple(out)
