"""A scripted media-stream client for what a simulator cannot do: bad messages, a cut
connection, wrong credentials, signatures.  Messages are built here from the Twilio
documentation's shapes (numbers as strings), independently of recstream's parser.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
FRAME = 160
WS = aiohttp.WSMsgType


def run(make: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
    """Run a coroutine with a hang guard (not a timing assertion)."""

    async def guarded() -> T:
        return await asyncio.wait_for(make(), timeout)

    return asyncio.run(guarded())


class Call:
    """One stream's messages, with Twilio's counters."""

    def __init__(self, tracks: tuple[str, ...] = ("inbound", "outbound")) -> None:
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.account_sid = "AC" + secrets.token_hex(16)
        self.tracks = tracks
        self.seq = 0
        self.chunk = 0

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, params: dict[str, str] | None = None) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": list(self.tracks),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": params or {},
                },
                "streamSid": self.stream_sid,
            }
        )

    def media(self, track: str, timestamp_ms: int, payload: bytes, chunk: int | None = None) -> str:
        if chunk is None:
            self.chunk += 1
            chunk = self.chunk
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "media": {
                    "track": track,
                    "chunk": str(chunk),
                    "timestamp": str(timestamp_ms),
                    "payload": base64.b64encode(payload).decode(),
                },
                "streamSid": self.stream_sid,
            }
        )

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )


async def wait_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the server closes; return its close code and reason."""
    while True:
        msg = await ws.receive()
        if msg.type in (WS.CLOSE, WS.CLOSED, WS.CLOSING):
            return ws.close_code, str(msg.extra or "")
        if msg.type is aiohttp.WSMsgType.ERROR:
            return ws.close_code, str(ws.exception())


async def call(
    url: str,
    messages: list[str],
    *,
    headers: dict[str, str] | None = None,
    close: bool = True,
    tls: ssl.SSLContext | None = None,
) -> tuple[int | None, str]:
    """Open, send ``messages``, then (``close``) close normally or wait for the server to.
    ``tls``: the context that trusts a ``wss://`` server's certificate."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers=headers, ssl=tls if tls is not None else True) as ws,
    ):
        for text in messages:
            await ws.send_str(text)
        if close:
            await ws.close()
            return ws.close_code, ""
        return await wait_closed(ws)


async def refused(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """Try an upgrade that must fail; return the HTTP status and headers."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers):
                pass
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, dict(exc.headers or {})
    raise AssertionError("the upgrade was accepted")


def audio(n_frames: int, seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n_frames * FRAME))


def frames(data: bytes) -> list[bytes]:
    return [data[i : i + FRAME] for i in range(0, len(data), FRAME)]


def media_messages(c: Call, data: bytes, track: str = "inbound") -> list[str]:
    return [c.media(track, i * 20, f) for i, f in enumerate(frames(data))]


def signed_headers(signature: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    return {"X-Twilio-Signature": signature, **(extra or {})}
