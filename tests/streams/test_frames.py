"""The RFC 6455 frame reader (recstream.streams.frames), sans I/O.

Valid streams: any mix of text and binary messages, fragmented anywhere, with
control frames between fragments, masked with any key, fed in any split, read
back exactly -- and read the same by a second implementation nobody here wrote
(the ``websockets`` library's sans-I/O server).  Invalid ones: every rule, one
test each, the close code it earns, the messages before it kept.  Mutated
streams: never anything but messages and at most one OP_ERROR, last.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.errors import StreamProtocolError, StreamStateError
from recstream.streams.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_ERROR,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    close_frame,
    encode_frame,
    unmask,
    unmask_reference,
)

LIMIT = 4096


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    key: bytes = b"\x11\x22\x33\x44",
    masked: bool = True,
    rsv: int = 0,
    length_bytes: int | None = None,
) -> bytes:
    """A client frame, built here independently of the reader (RFC 6455 §5.2)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    size = length_bytes if length_bytes is not None else (0 if n < 126 else 2 if n < 65536 else 8)
    if size == 0:
        head = bytes((b0, n | (0x80 if masked else 0)))
    elif size == 2:
        head = bytes((b0, 126 | (0x80 if masked else 0))) + struct.pack("!H", n)
    else:
        head = bytes((b0, 127 | (0x80 if masked else 0))) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    masked_payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked_payload


def read_all(
    data: bytes, splits: Iterable[int] = (), limit: int = LIMIT
) -> list[tuple[int, object]]:
    reader = FrameReader(limit)
    out: list[tuple[int, object]] = []
    last = 0
    for cut in [*sorted(c for c in set(splits) if 0 < c < len(data)), len(data)]:
        if cut > last or cut == len(data):
            out += reader.feed(data[last:cut])
            last = cut
            if out and out[-1][0] == OP_ERROR:  # the reader is failed: nothing more
                break
    return out


def error_of(events: list[tuple[int, object]]) -> StreamProtocolError:
    assert events and events[-1][0] == OP_ERROR, events
    exc = events[-1][1]
    assert isinstance(exc, StreamProtocolError)
    return exc


# --- valid streams ---------------------------------------------------------------


message = st.one_of(
    st.text(max_size=300).map(lambda t: (OP_TEXT, t)),
    st.binary(max_size=300).map(lambda b: (OP_BINARY, b)),
)


@st.composite
def valid_stream(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, object]]]:
    """Frames for some messages (fragmented at random, pings between) and what they mean."""
    data, expected = b"", []
    for opcode, value in draw(st.lists(message, max_size=6)):
        raw = value.encode() if isinstance(value, str) else value
        cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=3)))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        for i, piece in enumerate(pieces):
            key = draw(st.binary(min_size=4, max_size=4))
            op = opcode if i == 0 else OP_CONT
            data += frame(op, piece, fin=i == len(pieces) - 1, key=key)
            if draw(st.booleans()) and i < len(pieces) - 1:  # a ping between fragments
                ping = draw(st.binary(max_size=125))
                data += frame(OP_PING, ping, key=key)
                expected.append((OP_PING, ping))
        expected.append((opcode, value))
    if draw(st.booleans()):
        data += frame(OP_CLOSE, struct.pack("!H", 1000) + "bye é".encode())
        expected.append((OP_CLOSE, (1000, "bye é")))
    return data, expected


@settings(max_examples=200, deadline=None)
@given(valid_stream(), st.lists(st.integers(0, 4000), max_size=8))
def test_valid_streams_read_back_in_any_split(
    stream: tuple[bytes, list[tuple[int, object]]], splits: list[int]
) -> None:
    data, expected = stream
    assert read_all(data) == expected
    assert read_all(data, splits) == expected


def test_one_byte_at_a_time() -> None:
    data = frame(OP_TEXT, b"hello ") + frame(OP_PING, b"p") + frame(OP_BINARY, b"\x00" * 200)
    data += frame(OP_TEXT, b"x" * 70000, length_bytes=8)
    expected = [(OP_TEXT, "hello "), (OP_PING, b"p"), (OP_BINARY, b"\x00" * 200)]
    expected.append((OP_TEXT, "x" * 70000))
    assert read_all(data, range(len(data)), limit=1 << 17) == expected


@settings(max_examples=100, deadline=None)
@given(valid_stream())
def test_websockets_reads_the_same_messages(stream: tuple[bytes, list[tuple[int, object]]]) -> None:
    """A second implementation nobody here wrote agrees on every valid stream."""
    from websockets.frames import Opcode
    from websockets.server import ServerProtocol

    data, expected = stream
    proto = ServerProtocol(max_size=LIMIT)
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    head = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    proto.receive_data(head)
    proto.send_response(proto.accept(proto.events_received()[0]))
    proto.receive_data(data)
    theirs: list[tuple[int, object]] = []
    parts: list[bytes] = []
    first = Opcode.CONT
    for f in proto.events_received():
        if f.opcode in (Opcode.PING, Opcode.PONG):
            theirs.append((int(f.opcode), bytes(f.data)))
        elif f.opcode is Opcode.CLOSE:
            code = struct.unpack("!H", f.data[:2])[0]
            theirs.append((OP_CLOSE, (code, bytes(f.data[2:]).decode())))
        else:
            first = f.opcode if f.opcode is not Opcode.CONT else first
            parts.append(bytes(f.data))
            if f.fin:
                whole = b"".join(parts)
                parts = []
                text = first is Opcode.TEXT
                theirs.append((OP_TEXT, whole.decode()) if text else (OP_BINARY, whole))
    assert theirs == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.binary(min_size=4, max_size=4))
def test_fast_unmask_is_the_reference_xor(data: bytes, key: bytes) -> None:
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert unmask(data, key) == unmask_reference(data, key) == expected


# --- violations, one rule each ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (frame(OP_TEXT, b"hi", masked=False), 1002, "not masked"),
        (frame(OP_TEXT, b"hi", rsv=4), 1002, "RSV"),
        (frame(OP_TEXT, b"hi", rsv=1), 1002, "RSV"),
        (frame(0x3, b"hi"), 1002, "unknown opcode"),
        (frame(0xB, b"hi"), 1002, "unknown opcode"),
        (frame(OP_PING, b"x" * 126), 1002, "control frame"),
        (frame(OP_PING, b"x", fin=False), 1002, "control frame"),
        (frame(OP_CLOSE, b"\x03\xe8", fin=False), 1002, "control frame"),
        (frame(OP_CONT, b"x"), 1002, "continuation frame outside"),
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002, "inside a fragmented"),
        (frame(OP_TEXT, b"a" * 10, length_bytes=2), 1002, "minimal"),
        (frame(OP_TEXT, b"a" * 200, length_bytes=8), 1002, "minimal"),
        (b"\x81\xff" + struct.pack("!Q", 1 << 63) + b"kkkk", 1002, "minimal"),
        (frame(OP_TEXT, b"a" * (LIMIT + 1)), 1009, "over the limit"),
        (frame(OP_BINARY, b"a" * 3000, fin=False) + frame(OP_CONT, b"a" * 3000), 1009, "limit"),
        (frame(OP_TEXT, b"\xff\xfe"), 1007, "not UTF-8"),
        (frame(OP_TEXT, b"\xe2\x82", fin=False) + frame(OP_CONT, b"\xac\xff"), 1007, "UTF-8"),
        (frame(OP_CLOSE, b"\x03"), 1002, "1-byte"),
        (frame(OP_CLOSE, struct.pack("!H", 1005)), 1002, "1005"),
        (frame(OP_CLOSE, struct.pack("!H", 1006)), 1002, "1006"),
        (frame(OP_CLOSE, struct.pack("!H", 999)), 1002, "999"),
        (frame(OP_CLOSE, struct.pack("!H", 5000)), 1002, "5000"),
        (frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xc0"), 1007, "UTF-8"),
        (frame(OP_CLOSE, b"") + frame(OP_TEXT, b"late"), 1002, "after a close"),
    ],
)
def test_each_violation_earns_its_close_code(data: bytes, code: int, words: str) -> None:
    good = frame(OP_TEXT, b"before")
    events = read_all(good + data)
    assert events[0] == (OP_TEXT, "before")  # what came before the violation is kept
    exc = error_of(events)
    assert exc.close_code == code and words in str(exc)
    assert "before" not in str(exc)  # never the peer's data


def test_too_big_is_refused_from_the_length_alone() -> None:
    reader = FrameReader(LIMIT)
    head = b"\x81\xfe" + struct.pack("!H", LIMIT + 1)  # no mask key or payload yet
    assert error_of(reader.feed(head)).close_code == 1009
    with pytest.raises(StreamStateError):
        reader.feed(b"more")  # failed: nothing more is read


def test_close_codes_a_peer_may_send() -> None:
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999):
        events = read_all(frame(OP_CLOSE, struct.pack("!H", code) + b"why"))
        assert events == [(OP_CLOSE, (code, "why"))]
    assert read_all(frame(OP_CLOSE, b"")) == [(OP_CLOSE, (1005, ""))]


def test_pong_and_empty_messages() -> None:
    data = frame(OP_PONG, b"") + frame(OP_TEXT, b"") + frame(OP_BINARY, b"", fin=False)
    data += frame(OP_CONT, b"")
    assert read_all(data) == [(OP_PONG, b""), (OP_TEXT, ""), (OP_BINARY, b"")]


@settings(max_examples=300, deadline=None)
@given(valid_stream(), st.data())
def test_mutated_streams_give_messages_then_at_most_one_error(
    stream: tuple[bytes, list[tuple[int, object]]], data: st.DataObject
) -> None:
    raw = bytearray(stream[0] or frame(OP_TEXT, b"x"))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    events = read_all(bytes(raw), data.draw(st.lists(st.integers(0, len(raw)), max_size=4)))
    ops = [op for op, _ in events]
    assert OP_ERROR not in ops[:-1]
    for op, value in events:
        if op == OP_ERROR:
            assert isinstance(value, StreamProtocolError) and value.close_code in (1002, 1007, 1009)
        elif op == OP_TEXT:
            assert isinstance(value, str)
        else:
            assert op in (OP_BINARY, OP_PING, OP_PONG, OP_CLOSE)


# --- server frames ------------------------------------------------------------------


def test_server_frames_are_unmasked_and_minimal() -> None:
    assert encode_frame(OP_PONG, b"abc") == b"\x8a\x03abc"
    assert encode_frame(OP_TEXT, b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert encode_frame(OP_BINARY, b"x" * 70000)[:10] == b"\x82\x7f" + struct.pack("!Q", 70000)
    with pytest.raises(ValueError, match="125"):
        encode_frame(OP_PING, b"x" * 126)


def test_close_frame_cuts_its_reason_at_a_character() -> None:
    f = close_frame(1008, "é" * 100)  # 200 bytes of UTF-8: cut to 122, whole characters
    assert f[0] == 0x88 and f[1] <= 125 and struct.unpack("!H", f[2:4]) == (1008,)
    assert f[4:].decode("utf-8") == "é" * 61


def test_limit_below_a_control_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="125"):
        FrameReader(100)


def test_random_key_round_trip() -> None:
    key = os.urandom(4)
    assert read_all(frame(OP_TEXT, ("ü" * 50).encode(), key=key)) == [(OP_TEXT, "ü" * 50)]
