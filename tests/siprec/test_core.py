"""The SRS's pure core, without sockets or clocks: SDP, rs-metadata, SIP framing, one RTP
stream's receiver, the user agent's transactions, the config."""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.errors import ConfigError
from recstream.siprec import sdp
from recstream.siprec.config import EXAMPLE, load_config, parse_config
from recstream.siprec.metadata import MetadataError, parse_metadata, split_body
from recstream.siprec.rtp import StreamReceiver, parse_rtp
from recstream.siprec.sipwire import SipParseError, StreamFramer, parse_datagram
from recstream.siprec.uas import (
    CallMedia,
    Dest,
    EndCall,
    MediaChanged,
    Send,
    StartCall,
    UserAgent,
)
from recstream.tracks import TracksEncoder, extract
from tests.siprec.helpers import METADATA, SIPREC_HEADERS, SIPREC_TYPE, request, siprec_body

OFFER = (
    b"v=0\r\no=SRC 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:7\r\n"
    b"a=sendonly\r\nm=audio 4002 RTP/SAVP 0\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
    b"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^31\r\n"
    b"a=label:8\r\nm=video 4004 RTP/AVP 96\r\n"
)


# --- SDP ------------------------------------------------------------------------


def test_sdp_offer_is_read() -> None:
    s = sdp.parse(OFFER)
    a, b, v = s.media
    assert (a.label, a.codec(), a.telephone_event(), a.direction) == (
        "7",
        (8, "PCMA", 8000),
        101,
        "sendonly",
    )
    assert b.crypto[0].tag == 2 and b.crypto[0].key == b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcd"
    assert v.media == "video" and v.codec() is None


def test_sdp_answer_mirrors_the_offer() -> None:
    ans = sdp.answer(
        "127.0.0.1",
        5,
        0,
        [
            sdp.AnswerStream(20000, "RTP/AVP", 8, "PCMA", 101, "7"),
            sdp.AnswerStream(0, "RTP/AVP", 96, media="video"),
        ],
    ).decode()
    assert "m=audio 20000 RTP/AVP 8 101\r\n" in ans and "a=recvonly" in ans
    assert "m=video 0 RTP/AVP 96" in ans and "a=label:7" in ans
    again = sdp.parse(ans.encode())
    assert [m.port for m in again.media] == [20000, 0]


@pytest.mark.parametrize(
    "bad",
    [
        b"v=1\r\no=x\r\n",
        b"o=x\r\n",
        b"v=0\r\no=x\r\nbogus line\r\n",
        b"v=0\r\nm=audio 1 RTP\r\n",
        b"v=0\r\no=x\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\no=x\r\nc=IN IP4 bad host\r\n",
        b"v=0\r\no=x\r\n" + b"a=x\r\n" * 600,
        b"\xff\xfe",
        b"v=0\r\no=x\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:200 X/8000\r\n",
        b"v=0\r\no=x\r\n" + b"m=audio 1 RTP/AVP 0\r\n" * 17,
    ],
)
def test_sdp_malformed_is_refused(bad: bytes) -> None:
    with pytest.raises(sdp.SdpError):
        sdp.parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_sdp_garbage_raises_only_sdp_errors(data: bytes) -> None:
    with contextlib.suppress(sdp.SdpError):
        sdp.parse(b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\n" + data)


# --- body and rs-metadata ----------------------------------------------------------


def test_multipart_body_and_metadata() -> None:
    body = siprec_body([("1", 4000)]).encode()
    sdp_part, md_part = split_body(SIPREC_TYPE, body)
    assert sdp_part is not None and sdp_part.startswith(b"v=0")
    assert md_part is not None
    md = parse_metadata(md_part)
    assert md.session_ids == ("c2Vzc2lvbi1yYXc=",) and md.sip_session_ids == ("raw-1",)
    assert md.participants[0].aors == ("sip:carol@example.org",)
    assert md.sender_of("1") == "cA==" and md.sender_of("9") is None


@pytest.mark.parametrize(
    "doc",
    [
        b"<!DOCTYPE r [<!ENTITY a 'x'>]><recording xmlns='urn:ietf:params:xml:ns:recording:1'/>",
        b"<recording xmlns='urn:other'/>",
        b"<recording",
        b"x" * 70000,
        b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>',
    ],
)
def test_hostile_metadata_is_refused(doc: bytes) -> None:
    with pytest.raises(MetadataError):
        parse_metadata(doc)


def test_metadata_extension_and_limits() -> None:
    many = "".join(f'<participant participant_id="p{i}"/>' for i in range(500))
    doc = (
        f'<recording xmlns="urn:ietf:params:xml:ns:recording:1">{many}'
        '<t xmlns="urn:x:cc">globex</t></recording>'
    ).encode()
    with pytest.raises(MetadataError):
        parse_metadata(doc)  # more elements than any recording has
    doc = (
        b'<recording xmlns="urn:ietf:params:xml:ns:recording:1">'
        b'<t xmlns="urn:x:cc">globex</t></recording>'
    )
    assert parse_metadata(doc).extensions == {"{urn:x:cc}t": "globex"}
    with pytest.raises(MetadataError):
        split_body(
            "multipart/mixed;boundary=z",
            b"--z\r\nContent-Type: application/sdp\r\n\r\n"
            b"v=0\r\n--z\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--z--\r\n",
        )
    with pytest.raises(MetadataError):
        split_body("text/plain", b"hi")
    assert METADATA


# --- SIP framing --------------------------------------------------------------------


OPTIONS = request("OPTIONS", ("127.0.0.1", 5060), ("127.0.0.1", 5070), "c1", branch="z9hG4bK1")


def test_stream_framer_any_split() -> None:
    invite = request(
        "INVITE",
        ("127.0.0.1", 5060),
        ("127.0.0.1", 5070),
        "c2",
        branch="z9hG4bK2",
        body=siprec_body([("1", 4000)]),
        content_type=SIPREC_TYPE,
        headers=SIPREC_HEADERS,
    )
    stream = b"\r\n\r\n" + OPTIONS + invite + OPTIONS
    for step in (1, 7, 100, len(stream)):
        framer, out = StreamFramer(), []
        for i in range(0, len(stream), step):
            out += framer.feed(stream[i : i + step])
        assert out == [OPTIONS, invite, OPTIONS]


def test_stream_framer_limits() -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 3000)
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"INVITE sip:x SIP/2.0\r\nVia: x\r\n\r\n")
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n")


def test_datagram_body_is_cut_at_content_length() -> None:
    parsed = parse_datagram(OPTIONS + b"trailing junk")
    assert parsed is not None and parsed.message.body == b""
    assert parse_datagram(b"\r\n\r\n") is None  # keep-alive
    with pytest.raises(SipParseError):
        parse_datagram(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 10"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, len(OPTIONS)))
def test_sip_garbage_raises_only_parse_errors(data: bytes, cut: int) -> None:
    for candidate in (data, OPTIONS[:cut] + data, data + b"\r\n\r\n"):
        with contextlib.suppress(SipParseError):
            parse_datagram(candidate)
    with contextlib.suppress(SipParseError):
        StreamFramer().feed(OPTIONS[:cut] + data)


# --- one RTP stream -----------------------------------------------------------------


def pkt(
    seq: int, ts: int, payload: bytes, *, ssrc: int = 7, pt: int = 0, marker: bool = False
) -> bytes:
    return (
        struct.pack(
            ">BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc
        )
        + payload
    )


A = ("127.0.0.1", 4000)


def receiver(**kw: object) -> tuple[TracksEncoder, StreamReceiver, list[bytes]]:
    enc = TracksEncoder()
    out = [enc.start("test", 0)]
    rx = StreamReceiver(enc, 1, 0, "PCMU", telephone_event=101, **kw)  # type: ignore[arg-type]
    return enc, rx, out


def finish(enc: TracksEncoder, rx: StreamReceiver, out: list[bytes]) -> bytes:
    out.append(rx.close())
    out.append(enc.end())
    return b"".join(out)


def frames(n: int) -> list[bytes]:
    return [bytes([0x20 + i]) * 160 for i in range(n)]


def test_rtp_reorder_loss_late_duplicate_foreign() -> None:
    enc, rx, out = receiver()
    f = frames(8)
    t = 0.0
    for seq in (0, 1, 3, 2, 5, 1):  # 3 before 2: reordered; 1 again: duplicate
        out.append(rx.receive(pkt(seq, seq * 160, f[seq]), A, t))
        t += 0.02
    out.append(rx.receive(pkt(6, 960, f[6]), ("127.0.0.1", 9999), t))  # foreign
    out.append(rx.tick(t + 1.0))  # 4 is given up: lost
    out.append(rx.receive(pkt(4, 640, f[4]), A, t + 1.1))  # late
    out.append(rx.receive(pkt(7, 1120, f[7]), A, t + 1.2))
    got = extract(finish(enc, rx, out)).tracks[1]
    assert bytes(got.audio) == b"".join(f[:4]) + b"\xff" * 160 + f[5] + b"\xff" * 160 + f[7]
    assert got.stats is not None
    c = got.stats.counts
    assert (c["received"], c["lost"], c["late"], c["duplicate"], c["reordered"], c["foreign"]) == (
        6,
        2,
        1,
        1,
        1,
        1,
    )
    assert [g.packets for g in got.gaps] == [1, 1]


def test_rtp_sequence_wraps_and_ssrc_changes() -> None:
    enc, rx, out = receiver()
    f = frames(6)
    for i, seq in enumerate((65534, 65535, 0)):
        out.append(rx.receive(pkt(seq, 4_294_967_000 + i * 160, f[i]), A, i * 0.02))
    for i, seq in enumerate((100, 101, 102), start=3):  # a new SSRC: a new timeline
        out.append(rx.receive(pkt(seq, 5000 + i * 160, f[i], ssrc=99), A, i * 0.02))
    got = extract(finish(enc, rx, out)).tracks[1]
    assert bytes(got.audio) == b"".join(f)
    assert got.stats is not None and got.stats.counts["ssrc_changes"] == 1
    assert got.stats.counts["lost"] == 0


def test_rtp_timestamp_jump_cannot_outrun_the_clock() -> None:
    enc, rx, out = receiver()
    out.append(rx.receive(pkt(0, 0, b"\x01" * 160), A, 0.0))
    out.append(rx.receive(pkt(1, 2**31 - 1, b"\x02" * 160), A, 0.02))  # a 3-day jump
    got = extract(finish(enc, rx, out)).tracks[1]
    assert len(got.audio) <= 3 * 8000  # at most the slack of silence, not days


def test_rtp_dtmf_is_an_event_not_audio() -> None:
    enc, rx, out = receiver()
    out.append(rx.receive(pkt(0, 0, b"\x01" * 160), A, 0.0))
    for seq, (dur, end) in enumerate(((160, 0), (320, 0), (400, 0x80), (400, 0x80)), start=1):
        out.append(
            rx.receive(pkt(seq, 160, struct.pack(">BBH", 11, end | 7, dur), pt=101), A, seq * 0.02)
        )
    out.append(rx.receive(pkt(5, 560, b"\x02" * 160), A, 0.1))
    got = extract(finish(enc, rx, out)).tracks[1]
    assert [(e.digit, e.duration, e.volume, e.position) for e in got.events] == [("#", 400, 7, 160)]
    assert bytes(got.audio) == b"\x01" * 160 + b"\xff" * 400 + b"\x02" * 160


def test_rtp_malformed_and_unnegotiated() -> None:
    enc, rx, out = receiver()
    for data in (b"short", b"\x40" + b"\x00" * 20, pkt(0, 0, b"")):
        out.append(rx.receive(data, A, 0.0))
    out.append(rx.receive(pkt(0, 0, b"\x03" * 160), A, 0.0))
    out.append(rx.receive(pkt(1, 160, b"\x00", pt=13), A, 0.02))  # comfort noise: no loss
    out.append(rx.receive(pkt(2, 320, b"\x04" * 160), A, 0.04))
    got = extract(finish(enc, rx, out)).tracks[1]
    assert got.stats is not None
    assert (got.stats.counts["malformed"], got.stats.counts["lost"]) == (4, 0)
    assert parse_rtp(pkt(0, 0, b"x")) is not None
    padded = bytearray(pkt(0, 0, b"abcd\x00\x02"))
    padded[0] |= 0x20
    assert (parsed := parse_rtp(bytes(padded))) is not None and parsed.payload == b"abcd"


def test_rtp_window_floor() -> None:
    with pytest.raises(ValueError, match="60 ms"):
        StreamReceiver(TracksEncoder(), 1, 0, "PCMU", window=0.05)


@settings(max_examples=100, deadline=None)
@given(st.permutations(range(12)))
def test_rtp_any_order_within_the_window_is_exact(order: list[int]) -> None:
    enc, rx, out = receiver()
    f = frames(12)
    for k, seq in enumerate([0, *[s for s in order if s]]):  # the first packet latches
        out.append(rx.receive(pkt(seq, seq * 160, f[seq]), A, k * 0.001))
    got = extract(finish(enc, rx, out)).tracks[1]
    assert bytes(got.audio) == b"".join(f)


# --- the user agent -----------------------------------------------------------------


class Ports:
    def __init__(self) -> None:
        self.next, self.released = 30000, []

    def allocate(self) -> int | None:
        self.next += 2
        return self.next

    def release(self, port: int) -> None:
        self.released.append(port)


def _files(directory: Path) -> None:
    """What the common sections check exists: the recordings root, keystore, password."""
    (directory / "r").mkdir(exist_ok=True)
    (directory / "k").write_bytes(b"")
    (directory / "p").write_bytes(b"pw\n")


def ua(tmp_path: Path, **sip: object) -> UserAgent:
    _files(tmp_path)
    doc = {
        "sip": {"listen": "127.0.0.1:5060", **sip},
        "rtp": {"host": "127.0.0.1", "ports": "30000-30999"},
        "recordings": {"root": "r"},
        "keystore": {"path": "k", "password_file": "p"},
        "tenants": {
            "default": "acme",
            "rule": [{"request_uri_user": "globex-rec", "tenant": "globex"}],
        },
    }
    return UserAgent(
        parse_config(doc, tmp_path / "srs.toml"),
        ("127.0.0.1", 5060),
        Ports(),
        random=os.urandom,
        wall_clock=lambda: 1.0,
    )


UDP = Dest("udp", ("127.0.0.1", 5070))


def feed(agent: UserAgent, data: bytes, now: float = 0.0) -> list[object]:
    parsed = parse_datagram(data)
    assert parsed is not None
    return list(agent.handle(parsed, UDP, now))


def invite(call_id: str = "c1", branch: str = "z9hG4bKi", user: str = "srs") -> bytes:
    return request(
        "INVITE",
        ("127.0.0.1", 5060),
        UDP.addr,
        call_id,
        branch=branch,
        body=siprec_body([("1", 4000), ("2", 4002)]),
        content_type=SIPREC_TYPE,
        headers=SIPREC_HEADERS,
    ).replace(b"sip:srs@", f"sip:{user}@".encode(), 1)


def sent(actions: list[object]) -> list[bytes]:
    return [a.data.split(b"\r\n", 1)[0] for a in actions if isinstance(a, Send)]


def answered(agent: UserAgent, now: float = 0.0, **kw: str) -> tuple[object, bytes]:
    actions = feed(agent, invite(**kw), now)
    start = next(a for a in actions if isinstance(a, StartCall))
    out = agent.started(start.call, True, now)
    ok = next(a.data for a in out if isinstance(a, Send))
    assert ok.startswith(b"SIP/2.0 200 OK") and b"Content-Type: application/sdp" in ok
    assert any(isinstance(a, MediaChanged) and len(a.opened) == 2 for a in out)
    return start.call, ok


def test_ua_invite_retransmissions_and_ack(tmp_path: Path) -> None:
    agent = ua(tmp_path)
    call, ok = answered(agent)
    assert feed(agent, invite(), 0.1) and sent(feed(agent, invite(), 0.1)) == [
        b"SIP/2.0 200 OK"
    ]  # a retransmitted INVITE gets the 200 again
    assert sent(agent.tick(0.6)) == [b"SIP/2.0 200 OK"]  # T1
    assert sent(agent.tick(0.9)) == []
    assert sent(agent.tick(1.7)) == [b"SIP/2.0 200 OK"]  # 2*T1
    tag = ok.split(b";tag=")[2].split(b"\r\n")[0].decode()
    feed(agent, request("ACK", ("127.0.0.1", 5060), UDP.addr, "c1", branch="z9hG4bKa", to_tag=tag))
    assert sent(agent.tick(10.0)) == []
    bye = feed(
        agent,
        request("BYE", ("127.0.0.1", 5060), UDP.addr, "c1", branch="z9hG4bKb", cseq=2, to_tag=tag),
    )
    assert sent(bye) == [b"SIP/2.0 200 OK"]
    assert any(isinstance(a, EndCall) and a.reason == "bye" for a in bye)
    media = b"".join(a.data for a in bye if isinstance(a, CallMedia))
    assert media.endswith(b"\x07\x00\x00\x00\x00")  # END
    assert agent.active_count() == 0 and len(agent.ports.released) == 2  # type: ignore[attr-defined]
    del call


def test_ua_no_ack_ends_the_call_with_a_bye(tmp_path: Path) -> None:
    agent = ua(tmp_path, rtp_timeout=100)
    answered(agent)
    actions: list[object] = []
    for t in range(1, 40):
        actions += agent.tick(float(t))
    assert b"BYE sip:src@127.0.0.1:5070 SIP/2.0" in sent(actions)
    assert any(isinstance(a, EndCall) and a.reason == "no_ack" for a in actions)


def test_ua_rtp_timeout_hangs_up(tmp_path: Path) -> None:
    agent = ua(tmp_path, rtp_timeout=5)
    answered(agent)
    assert not [a for a in agent.tick(4.0) if isinstance(a, EndCall)]
    actions = agent.tick(5.5)
    assert any(isinstance(a, EndCall) and a.reason == "rtp_timeout" for a in actions)
    assert any(s.startswith(b"BYE ") for s in sent(actions))


def test_ua_cancel_before_and_after_the_answer(tmp_path: Path) -> None:
    agent = ua(tmp_path)
    actions = feed(agent, invite("c9", "z9hG4bKc9"))
    call = next(a for a in actions if isinstance(a, StartCall)).call
    cancel = request("CANCEL", ("127.0.0.1", 5060), UDP.addr, "c9", branch="z9hG4bKc9")
    out = feed(agent, cancel)
    assert sent(out) == [b"SIP/2.0 200 OK", b"SIP/2.0 487 Request Terminated"]
    assert agent.started(call, True, 0.0) == []  # too late: never answered
    media = b"".join(a.data for a in out if isinstance(a, CallMedia))
    assert extract(media).session is not None  # the recording says it was never answered
    answered(agent, call_id="c10", branch="z9hG4bKc10")
    late = request("CANCEL", ("127.0.0.1", 5060), UDP.addr, "c10", branch="z9hG4bKc10")
    assert sent(feed(agent, late)) == [b"SIP/2.0 200 OK"]


def test_ua_limits_and_policies(tmp_path: Path) -> None:
    agent = ua(tmp_path, max_calls=1)
    call, _ = answered(agent)
    busy = feed(agent, invite("c2", "z9hG4bK2"))
    assert sent(busy) == [b"SIP/2.0 503 Service Unavailable (recorder full)"]
    assert b"Retry-After: 5" in busy[0].data  # type: ignore[attr-defined]
    agent2 = ua(tmp_path)
    start = next(a for a in feed(agent2, invite(user="globex-rec")) if isinstance(a, StartCall))
    assert start.call.tenant == "globex"
    agent2.drain(0.0)
    assert sent(feed(agent2, invite("c3", "z9hG4bK3"))) == [
        b"SIP/2.0 503 Service Unavailable (shutting down)"
    ]
    failed = ua(tmp_path)
    start = next(a for a in feed(failed, invite()) if isinstance(a, StartCall))
    assert sent(failed.started(start.call, False, 0.0)) == [
        b"SIP/2.0 500 Server Internal Error (cannot record)"
    ]
    del call


def test_ua_reinvite_keeps_ports_and_adds_tracks(tmp_path: Path) -> None:
    agent = ua(tmp_path)
    call, ok = answered(agent)
    tag = ok.split(b";tag=")[2].split(b"\r\n")[0].decode()
    feed(agent, request("ACK", ("127.0.0.1", 5060), UDP.addr, "c1", branch="z9hG4bKa", to_tag=tag))
    body = siprec_body([("1", 4000), ("3", 4006)])
    re = request(
        "INVITE",
        ("127.0.0.1", 5060),
        UDP.addr,
        "c1",
        branch="z9hG4bKre",
        cseq=2,
        to_tag=tag,
        body=body,
        content_type=SIPREC_TYPE,
        headers=SIPREC_HEADERS,
    )
    out = feed(agent, re)
    change = next(a for a in out if isinstance(a, MediaChanged))
    assert [s.label for s in change.opened] == ["3"] and len(change.closed) == 1
    assert call.streams["3"].receiver.track == 3  # type: ignore[attr-defined]
    assert sent(out) == [b"SIP/2.0 200 OK"]
    media = b"".join(a.data for a in out if isinstance(a, CallMedia))
    assert media[:1] == b"\x81" and b"sip:carol@example.org" in media  # UPDATE, recorded
    stray = request(
        "INVITE",
        ("127.0.0.1", 5060),
        UDP.addr,
        "zz",
        branch="z9hG4bKzz",
        cseq=2,
        to_tag="nope",
        body=body,
        content_type=SIPREC_TYPE,
    )
    assert sent(feed(agent, stray)) == [b"SIP/2.0 481 Call/Transaction Does Not Exist"]


# --- config -------------------------------------------------------------------------


def test_config_example_and_errors(tmp_path: Path) -> None:
    (tmp_path / "srs.toml").write_text(EXAMPLE)
    (tmp_path / "recordings").mkdir()
    (tmp_path / "keystore.rsk").write_bytes(b"")
    (tmp_path / "keystore.pass").write_bytes(b"pw\n")
    cfg = load_config(tmp_path / "srs.toml")
    assert (cfg.listen_port, cfg.rtp_ports, cfg.default_tenant) == (5060, (20000, 20999), "acme")
    bad = {
        'listen = "localhost:5060"': "IP:PORT",
        'ports = "20000"': "LOW-HIGH",
        'default = "a b"': "tenant name",
        "[sip]\nmax_calls = 0": None,
    }
    for text, words in bad.items():
        key = text.split(" = ")[0].split("\n")[-1]
        lines = [ln for ln in EXAMPLE.splitlines() if not ln.startswith(key + " ")]
        doc = "\n".join(lines).replace("[sip]", text if text.startswith("[sip]") else "[sip]")
        if not text.startswith("[sip]"):
            section = {"listen": "[sip]", "ports": "[rtp]", "default": "[tenants]"}[key]
            doc = doc.replace(section, f"{section}\n{text}")
        (tmp_path / "bad.toml").write_text(doc)
        with pytest.raises(ConfigError, match=words or "max_calls"):
            load_config(tmp_path / "bad.toml")
    (tmp_path / "bad.toml").write_text("[sip\n")
    with pytest.raises(ConfigError, match="TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    # Every problem at once, the shared sections' included.
    (tmp_path / "bad.toml").write_text(
        EXAMPLE.replace("5060", "x")
        .replace('root = "recordings"', 'root = "nowhere"')
        .replace("[tenants]", "[tenant]")
    )
    with pytest.raises(ConfigError) as all_of_them:
        load_config(tmp_path / "bad.toml")
    text = str(all_of_them.value)
    for words in ("listen", "nowhere", "unknown section [tenant]", "[tenants] is missing"):
        assert words in text


def test_srs_command_refuses_bad_setups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recstream.cli import main
    from tests.siprec.helpers import write_config

    cfg = write_config(tmp_path)
    assert main(["srs", "--config", str(cfg), "--check"]) == 0
    assert '"config_ok"' in capsys.readouterr().out
    (tmp_path / "keystore.pass").write_text("wrong password entirely\n")
    assert main(["srs", "--config", str(cfg), "--check"]) == 4  # the keystore refuses it
    cfg.write_text(cfg.read_text().replace('ports = "', 'ports = "x'))
    assert main(["srs", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "[rtp] ports" in err and "Traceback" not in err
    assert main(["srs", "--config", str(tmp_path / "none.toml")]) == 2


def test_rtp_packet_before_the_first_is_late_not_duplicate() -> None:
    enc, rx, out = receiver()
    out.append(rx.receive(pkt(11, 160, b"\x05" * 160), A, 0.0))  # latches on seq 11
    out.append(rx.receive(pkt(10, 0, b"\x04" * 160), A, 0.01))  # older: never seen
    out.append(rx.receive(pkt(11, 160, b"\x05" * 160), A, 0.02))  # seen: duplicate
    got = extract(finish(enc, rx, out)).tracks[1]
    assert got.stats is not None
    assert (got.stats.counts["late"], got.stats.counts["duplicate"]) == (1, 1)


def test_readme_config_is_valid(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### SIPREC recording server", 1)[1]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    assert toml is not None
    (tmp_path / "srs.toml").write_text(toml[1])
    (tmp_path / "recordings").mkdir()
    (tmp_path / "keystore.rsk").write_bytes(b"")
    (tmp_path / "keystore.pass").write_bytes(b"pw\n")
    cfg = load_config(tmp_path / "srs.toml")
    assert cfg.rules[0].tenant == "globex" and cfg.metrics_port == 9464


def test_ua_retransmitted_bye_gets_the_same_200(tmp_path: Path) -> None:
    agent = ua(tmp_path)
    _, ok = answered(agent)
    tag = ok.split(b";tag=")[2].split(b"\r\n")[0].decode()
    bye = request(
        "BYE", ("127.0.0.1", 5060), UDP.addr, "c1", branch="z9hG4bKbye", cseq=2, to_tag=tag
    )
    first = [a.data for a in feed(agent, bye) if isinstance(a, Send)]
    again = [a.data for a in feed(agent, bye) if isinstance(a, Send)]
    assert first == again and first[0].startswith(b"SIP/2.0 200 OK")


def test_ua_siprec_invite_without_metadata_is_recorded(tmp_path: Path) -> None:
    from tests.siprec.helpers import sdp_offer

    agent = ua(tmp_path)
    plain = request(
        "INVITE",
        ("127.0.0.1", 5060),
        UDP.addr,
        "c7",
        branch="z9hG4bK7",
        body=sdp_offer([("1", 4000)]),
        content_type="application/sdp",
        headers=SIPREC_HEADERS,
    )
    start = next(a for a in feed(agent, plain) if isinstance(a, StartCall))
    out = agent.started(start.call, True, 0.0)
    assert sent(out) == [b"SIP/2.0 200 OK"]
    head = b"".join(a.data for a in out if isinstance(a, CallMedia))
    session = extract(head).session
    assert session is not None and session.info["metadata"] is None


def test_rtp_latches_only_onto_an_allowed_host() -> None:
    enc = TracksEncoder()
    out = [enc.start("test", 0)]
    rx = StreamReceiver(enc, 1, 0, "PCMU", latch_hosts=frozenset({"10.0.0.1"}))
    out.append(rx.receive(pkt(0, 0, b"\x09" * 160), ("10.6.6.6", 4000), 0.0))  # first, but off-path
    out.append(rx.receive(pkt(0, 0, b"\x01" * 160), ("10.0.0.1", 7000), 0.01))
    out.append(rx.receive(pkt(1, 160, b"\x09" * 160), ("10.0.0.1", 7002), 0.02))  # other port
    got = extract(finish(enc, rx, out)).tracks[1]
    assert bytes(got.audio) == b"\x01" * 160
    assert got.stats is not None and got.stats.counts["foreign"] == 2
