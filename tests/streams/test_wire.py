"""The WebSocket server's own wire handling, against the real ``recstream streams`` process,
with raw sockets (what no well-behaved client library will send): unmasked frames,
fragmented media with pings between the fragments, a close the peer starts, frames
in the same segment as the request head, and HTTP that is not an upgrade.

Each broken stream ends with its recording finalised (incomplete) and the server
goes on; each refusal is a complete HTTP response and one audit line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.streams import wsclient as wc
from tests.streams.helpers import (
    SECRETS,
    Env,
    Server,
    audit_entry,
    decrypt_tracks,
    make_env,
    running,
)
from tests.streams.test_frames import frame

ACME = SECRETS["acme"]
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return make_env(tmp_path_factory.mktemp("wire"))


@pytest.fixture(scope="module")
def server(env: Env) -> Iterator[Server]:
    yield from running(env.config(idle_timeout=60), env.root / "server.log")


def upgrade_head(target: str, *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13",
             *extra]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Raw:
    """One raw connection: write bytes, read the response head, then server frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: Server, data: bytes) -> tuple[Raw, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        return cls(reader, writer), head

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame (servers never mask)."""
        b0, b1 = await self.reader.readexactly(2)
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_code(self) -> int:
        """Read until the server's close frame; answer it; return its code."""
        while True:
            opcode, body = await self.frame()
            if opcode == 0x8:
                self.writer.write(frame(0x8, body[:2]))
                await self.reader.read()  # the server then closes the connection
                self.writer.close()
                return int(struct.unpack("!H", body[:2])[0])


def texts(*messages: str) -> bytes:
    return b"".join(frame(0x1, m.encode()) for m in messages)


def recorded(env: Env, c: wc.Call) -> tuple[dict[str, Any], Any]:
    entry = audit_entry(env, c.stream_sid)
    assert entry["file"], entry
    return entry, decrypt_tracks(env, Path(entry["file"]))


def test_frames_in_the_head_segment_fragments_and_pings(env: Env, server: Server) -> None:
    c = wc.Call(tracks=("inbound",))
    data = wc.audio(4, seed=21)
    first, *rest = wc.media_messages(c, data)
    whole = first.encode()
    # The head and the first messages in one write; one media message in three
    # fragments with a ping between them.
    burst = upgrade_head(f"/streams?token={ACME}") + texts(c.connected(), c.start())
    burst += frame(0x1, whole[:50], fin=False) + frame(0x9, b"are you there")
    burst += frame(0x0, whole[50:100], fin=False) + frame(0x0, whole[100:])

    async def go() -> tuple[bytes, tuple[int, bytes], int]:
        raw, head = await Raw.open(server, burst)
        pong = await raw.frame()
        raw.writer.write(texts(*rest, c.stop()))
        return head, pong, await raw.close_code()

    head, pong, code = wc.run(go)
    assert head.startswith(b"HTTP/1.1 101 ") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert pong == (0xA, b"are you there")
    assert code == 1000
    entry, ex = recorded(env, c)
    assert entry["complete"] is True and ex.complete and bytes(ex.tracks[1].audio) == data


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(0x1, b'{"event":"mark"}', masked=False), 1002),
        (frame(0x1, b"\xff\xfe\xfd"), 1007),
        (frame(0x1, b"x", rsv=2), 1002),
        (frame(0x9, b"x" * 126), 1002),
    ],
    ids=["unmasked", "not-utf8", "rsv", "long-ping"],
)
def test_framing_violations_close_that_stream_only(
    env: Env, server: Server, bad: bytes, code: int
) -> None:
    c = wc.Call(tracks=("inbound",))
    data = wc.audio(3, seed=22)

    async def go() -> int:
        raw, _ = await Raw.open(server, upgrade_head(f"/streams?token={ACME}"))
        raw.writer.write(texts(c.start(), *wc.media_messages(c, data)) + bad)
        return await raw.close_code()

    assert wc.run(go) == code
    entry, ex = recorded(env, c)
    assert entry["complete"] is False and entry["close_code"] == code
    assert "WebSocket" in entry["reason"] and bytes(ex.tracks[1].audio) == data
    ok = wc.Call(tracks=("inbound",))
    msgs = [ok.start(), *wc.media_messages(ok, data), ok.stop()]
    assert wc.run(lambda: wc.call(f"{server.url}?token={ACME}", msgs, close=False))[0] == 1000


def test_a_close_the_peer_starts_is_echoed(env: Env, server: Server) -> None:
    c = wc.Call(tracks=("inbound",))
    data = wc.audio(2, seed=23)

    async def go() -> tuple[int, bytes]:
        raw, _ = await Raw.open(server, upgrade_head(f"/streams?token={ACME}"))
        raw.writer.write(texts(c.start(), *wc.media_messages(c, data)))
        raw.writer.write(frame(0x8, struct.pack("!H", 4001) + b"agent hung up"))
        opcode, body = await raw.frame()
        assert await raw.reader.read() == b""  # then the server closes the TCP connection
        return opcode, body

    opcode, body = wc.run(go)
    assert opcode == 0x8 and struct.unpack("!H", body[:2]) == (4001,)
    entry, ex = recorded(env, c)
    assert entry["complete"] is False and "closed without a stop" in entry["reason"]
    assert bytes(ex.tracks[1].audio) == data


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"GET /streams HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400, "control character"),
        (upgrade_head(f"/elsewhere?token={ACME}"), 404, "no such path"),
        (upgrade_head(f"/streams/acme/{ACME}/more"), 404, "no such path"),
        (upgrade_head(f"/streams?token={ACME}").replace(b"GET", b"PUT", 1), 405, "not a GET"),
        (upgrade_head(f"/streams?token={ACME}").replace(b"n: 13", b"n: 8"), 426, "version"),
        (upgrade_head(f"/streams?token={ACME}").replace(KEY.encode(), b"c2hvcnQ="), 400, "Key"),
    ],
    ids=["malformed", "path", "deep-path", "method", "version", "key"],
)
def test_what_is_not_an_upgrade_is_answered_and_audited(
    env: Env, server: Server, data: bytes, status: int, reason: str
) -> None:
    async def go() -> tuple[bytes, bytes]:
        raw, head = await Raw.open(server, data)
        body = await raw.reader.read()  # then the server closes
        raw.writer.close()
        return head, body

    head, body = wc.run(go)
    assert head.startswith(f"HTTP/1.1 {status} ".encode()) and b"Connection: close" in head
    assert ACME.encode() not in head + body
    if status == 426:
        assert b"Sec-WebSocket-Version: 13" in head and b"Upgrade: websocket" in head
    for _ in range(600):  # the audit line is written before the response
        lines = [json.loads(x) for x in env.audit_lines()]
        if any(e["event"] == "stream_refused" and reason in e["reason"] for e in lines):
            break
        asyncio.run(asyncio.sleep(0.05))
    else:
        raise AssertionError(f"no refusal audited for {reason!r}")
    assert ACME not in env.audit.read_text()


def test_pings_alone_do_not_keep_a_stream_open(env: Env) -> None:
    c = wc.Call(tracks=("inbound",))
    data = wc.audio(2, seed=24)
    with contextlib.ExitStack() as stack:
        idle = stack.enter_context(
            contextlib.contextmanager(running)(
                env.config("idle-wire.toml", idle_timeout=1), env.root / "idle-wire.log"
            )
        )

        async def go() -> int:
            raw, _ = await Raw.open(idle, upgrade_head(f"/streams?token={ACME}"))
            raw.writer.write(texts(c.start(), *wc.media_messages(c, data)))
            pinger = asyncio.get_running_loop().create_task(ping_forever(raw))
            try:
                return await raw.close_code()  # pongs are read and skipped
            finally:
                pinger.cancel()

        assert wc.run(go) == 1001
    entry, ex = recorded(env, c)
    assert entry["complete"] is False and "idle" in entry["reason"]
    assert bytes(ex.tracks[1].audio) == data


async def ping_forever(raw: Raw) -> None:
    while True:  # cancelled by the test once the server closes
        raw.writer.write(frame(0x9, b"still here"))
        await asyncio.sleep(0.2)
