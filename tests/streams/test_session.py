"""A stream's state machine and its tracks' timelines, without sockets: messages in,
container bytes out, decoded back with recstream.tracks."""

from __future__ import annotations

import json

import pytest

from recstream import tracks
from recstream.errors import StreamProtocolError, StreamStateError
from recstream.streams.protocol import parse_message
from recstream.streams.session import State, StreamSession
from recstream.streams.timeline import SLACK_SECONDS, TrackTimeline
from tests.streams.wsclient import Call

F = bytes(range(160))


def feed(session: StreamSession, *texts: str) -> bytes:
    out = b""
    for text in texts:
        message = parse_message(text)
        out += session.receive(message)
        if session.state is State.RECORDING and not out:
            out += session.open(tenant="acme", now_ms=1_700_000_000_000)
    return out


def test_timeline_rules() -> None:
    line = TrackTimeline(max_samples=8000 * 60)
    assert line.place(1, 0, F).position == 0
    p = line.place(2, 20, F)  # exactly at the end
    assert (p.gaps, p.position) == ((), 160)
    p = line.place(3, 45, F)  # 5 ms late is rounding (40 samples): placed at the end
    assert (p.gaps, p.position) == ((), 320)
    p = line.place(4, 100, F)  # 800 - 480 = 320 samples ahead: a gap of 2 packets
    assert (p.gaps, p.position) == (((480, 320, 2),), 800)
    assert line.place(4, 120, F).payload == b""  # chunk 4 again: a duplicate
    p = line.place(5, 115, F)  # 920 < end 960 by 40: tolerance, placed at 960
    assert p.position == 960 and p.payload == F
    p = line.place(6, 130, F)  # 1040: 80 samples behind the end 1120 -> the rest kept
    assert (p.position, p.payload) == (1120, F[80:])
    assert line.place(7, 0, F).payload == b""  # wholly behind: late, dropped
    assert line.counts == {"received": 6, "lost": 2, "late": 2, "duplicate": 1}
    with pytest.raises(StreamProtocolError, match="call length limit"):
        line.place(8, 60_000, F)


class FakeClock:
    """Monotonic seconds that a test moves on (the session's clock seam)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hours_long_gap_is_split_for_the_decoder() -> None:
    c = Call(tracks=("inbound",))
    clock = FakeClock()
    s = StreamSession(max_call_seconds=4 * 3600, clock=clock)
    data = feed(s, c.start(), c.media("inbound", 0, F))
    clock.now += 2 * 3600 + 1  # the call really went on for two hours
    data += feed(
        s,
        c.media("inbound", 2 * 3600 * 1000 + 500, F),  # two hours and a bit later
        c.stop(),
    )
    ex = tracks.extract(data)
    t = ex.tracks[1]
    assert ex.complete and len(t.gaps) == 3
    assert all(g.samples <= 3600 * 8000 for g in t.gaps)
    assert len(t.audio) == (2 * 3600 * 1000 + 500) * 8 + 160
    assert t.audio[:160] == F and t.audio[-160:] == F


def test_session_writes_a_complete_container() -> None:
    c = Call()
    s = StreamSession(max_call_seconds=60)
    data = feed(
        s,
        c.connected(),
        c.start({"From": "+14155550123"}),
        c.media("inbound", 0, F),
        c.media("outbound", 0, F[::-1]),
        c.dtmf("9"),
        json.dumps({"event": "mark", "streamSid": c.stream_sid, "mark": {"name": "m"}}),
        '{"event": "futureThing", "streamSid": "x"}',
        c.stop(),
    )
    assert s.complete and s.finish("late") == b""
    ex = tracks.extract(data)
    assert ex.complete and ex.session is not None
    assert ex.close == tracks.Close("stopped", complete=True)
    assert ex.session.source == "media-stream"
    assert ex.session.info["custom_parameters"] == {"From": "+14155550123"}
    assert ex.session.info["connected"] == {"protocol": "Call", "version": "1.0.0"}
    assert bytes(ex.tracks[1].audio) == F and bytes(ex.tracks[2].audio) == F[::-1]
    assert [e.digit for e in ex.tracks[1].events] == ["9"]
    stats = s.statistics()
    assert (stats.dtmf, stats.marks, stats.ignored) == (1, 1, 1)


def test_finish_without_stop_is_incomplete() -> None:
    c = Call(tracks=("outbound",))
    s = StreamSession(max_call_seconds=60)
    data = feed(s, c.start(), c.media("outbound", 0, F), c.media("outbound", 40, F))
    data += s.finish("idle for 10 s")
    assert s.state is State.FINISHED and not s.complete
    ex = tracks.extract(data)
    assert not ex.complete
    assert ex.close == tracks.Close("idle for 10 s", complete=False)
    t = ex.tracks[2]
    assert bytes(t.audio) == F + b"\xff" * 160 + F
    assert t.stats is not None and t.stats.counts["lost"] == 1
    assert s.finish("again") == b""  # once


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        (["media"], "before 'start'"),
        (["start", "start"], "a second 'start'"),
        (["start", "connected"], "'connected' after 'start'"),
        (["connected", "connected"], "a second 'connected'"),
        (["start", "stop", "media"], "after the stream ended"),
        (["start", "foreign"], "another stream"),
        (["start", "outbound"], "did not announce"),
        (["start", "dtmf-out"], "did not announce"),
    ],
)
def test_order_and_identity_rules(script: list[str], problem: str) -> None:
    c = Call(tracks=("inbound",))
    other = Call()
    msgs = {
        "start": c.start(),
        "connected": c.connected(),
        "media": c.media("inbound", 0, F),
        "stop": c.stop(),
        "foreign": other.media("inbound", 0, F),
        "outbound": c.media("outbound", 0, F),
        "dtmf-out": c.dtmf("1").replace("inbound_track", "outbound_track"),
    }
    s = StreamSession(max_call_seconds=60)
    with pytest.raises(StreamProtocolError, match=problem):
        feed(s, *(msgs[name] for name in script))
    if s.state is not State.STOPPED:
        assert s.state is State.FAILED
        with pytest.raises(StreamProtocolError):  # sticky: nothing more is taken
            s.receive(parse_message(c.stop()))


def test_open_needs_start() -> None:
    s = StreamSession(max_call_seconds=60)
    with pytest.raises(StreamStateError):
        s.open(tenant="acme", now_ms=0)
    assert s.finish("x") == b"" and s.state is State.FINISHED


def test_a_chunk_ahead_of_the_wall_clock_is_dropped_and_counted() -> None:
    # One message timestamped near the call length limit, right after start: without
    # the horizon it asked for hours of silence (115 MB at 4 h) from a call of seconds.
    c = Call(tracks=("inbound",))
    clock = FakeClock()
    s = StreamSession(max_call_seconds=4 * 3600, clock=clock)
    data = feed(s, c.start(), c.media("inbound", 0, F))
    assert s.receive(parse_message(c.media("inbound", 4 * 3600 * 1000 - 1000, F))) == b""
    assert s.statistics().ahead == {"inbound": 1}
    # Within the slack of the time since start: placed (a real burst, a late start).
    clock.now += 5
    edge_ms = int((5 + SLACK_SECONDS) * 1000)
    data += s.receive(parse_message(c.media("inbound", edge_ms, F)))
    late = c.media("inbound", edge_ms + 1000, F)  # 1 s past the horizon
    assert s.receive(parse_message(late)) == b""
    assert s.statistics().ahead == {"inbound": 2}
    data += s.receive(parse_message(c.stop()))
    ex = tracks.extract(data)
    t = ex.tracks[1]
    assert ex.complete and len(t.audio) == edge_ms * 8 + 160
    assert t.audio[:160] == F and t.audio[-160:] == F
    assert t.stats is not None and t.stats.counts["received"] == 2


def test_timeline_horizon() -> None:
    line = TrackTimeline(max_samples=8000 * 60)
    assert line.place(1, 0, F, horizon=0).payload == F  # at the end: no silence, placed
    assert line.place(2, 20, F, horizon=100).position == 160  # at the end (160) too
    assert line.place(3, 60, F, horizon=400).payload == b""  # 480 > 400: ahead
    assert (line.ahead, line.last_chunk, line.end) == (1, 2, 320)  # nothing else moved
    p = line.place(3, 60, F, horizon=480)  # the same chunk, in time: a 160-sample gap
    assert (p.gaps, p.position) == (((320, 160, 1),), 480)
    assert line.counts == {"received": 3, "lost": 1, "late": 0, "duplicate": 0}
