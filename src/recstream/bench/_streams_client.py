"""The platform side of ``bench streams``: N Twilio-style forks on raw sockets, paced.

The load generator must not be what fails a step, and on loopback every
``send()`` also runs the receiver's TCP input in the sender's time, so the only
cost left to cut is ours: after the upgrade, each stream's tick is one
``socket.send`` of two ready-made masked frames, from a plain loop (no asyncio,
no transport, no per-write formatting or masking).

How a write is ready-made: every stream starts together, so at tick ``k`` every
stream sends the same numbers (``sequenceNumber`` 2+2k and 3+2k, ``chunk``
k+1 on each track, ``timestamp`` 20k ms) and the same payloads (they rotate
over :data:`PAYLOADS`); only the stream SID at the end differs.  So a frame is
a shared prefix (header, masking key, masked JSON up to the SID) computed once
per tick and key, and a per-stream tail (the SID and ``"}``) masked in advance
for each of the four key rotations a prefix length can leave it at.  Masking
keys come from a pool of :data:`KEY_POOL` random keys, one per stream (RFC 6455
§5.3 wants a fresh key per frame against proxy cache poisoning; between this
bench and its own server on loopback there is no proxy, and the server cannot
tell the difference).

This is what a platform sends, message for message: Twilio's field order,
compact JSON, numbers as decimal strings, per-track chunk counters, 20 ms of
8 kHz mu-law per chunk -- two tracks' chunks of one instant in one write, never more.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from recstream.bench.fixtures import BenchError
from recstream.streams.frames import unmask as apply_mask

__all__ = ["FRAME_SECONDS", "PAYLOADS", "Platform", "StreamSource", "TickResult"]

FRAME_SECONDS: Final = 0.020
SAMPLES: Final = 160  # 20 ms of 8 kHz mu-law
PAYLOADS: Final = tuple(os.urandom(SAMPLES) for _ in range(8))  # rotated, tick by tick
KEY_POOL: Final = 64
_KEYS: Final = tuple(os.urandom(4) for _ in range(KEY_POOL))
_ACCOUNT: Final = "AC" + "0" * 32
_SID_CHARS: Final = 34  # "MZ" + 32 hex digits, as Twilio's


def mask_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One masked client frame (RFC 6455 §5.2-5.3)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 0x10000:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return head + key + apply_mask(payload, key)


class _Ticks:
    """Each tick's two shared frame prefixes, per masking key, made on first use.

    ``ticks(k)`` is ``(r_out, r_in, prefixes)``: ``prefixes[key_index]`` the outbound and
    inbound frames up to the stream SID, and ``r_out``/``r_in`` which of a stream's
    four pre-masked tails follows each (the prefix length mod 4; the same for every key).
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[int, int, list[tuple[bytes, bytes]]]] = {}

    def __call__(self, k: int) -> tuple[int, int, list[tuple[bytes, bytes]]]:
        got = self._cache.get(k)
        if got is None:
            texts = [self._text(k, n, track) for n, track in enumerate(("outbound", "inbound"))]
            heads = [
                bytes((0x81, 0xFE)) + (len(t) + _SID_CHARS + 2).to_bytes(2, "big") for t in texts
            ]
            prefixes = [
                (
                    heads[0] + key + apply_mask(texts[0], key),
                    heads[1] + key + apply_mask(texts[1], key),
                )
                for key in _KEYS
            ]
            got = self._cache[k] = (len(texts[0]) % 4, len(texts[1]) % 4, prefixes)
            self._cache.pop(k - 4, None)  # streams of one step are at most a tick apart
        return got

    @staticmethod
    def _text(k: int, n: int, track: str) -> bytes:
        payload = base64.b64encode(PAYLOADS[(k + 3 * n) % len(PAYLOADS)]).decode()
        return (
            f'{{"event":"media","sequenceNumber":"{2 + 2 * k + n}","media":{{"track":'
            f'"{track}","chunk":"{k + 1}","timestamp":"{20 * k}","payload":"{payload}"}},'
            '"streamSid":"'
        ).encode()


@dataclass(slots=True)
class StreamSource:
    """One simulated fork's messages (no socket): the bytes to send, in order."""

    ticks: _Ticks
    sid: str = field(default_factory=lambda: "MZ" + secrets.token_hex(16))
    call: str = field(default_factory=lambda: "CA" + secrets.token_hex(16))
    key_index: int = field(default_factory=lambda: secrets.randbelow(KEY_POOL))
    tails: tuple[bytes, ...] = ()
    k: int = 0  # the next tick

    def __post_init__(self) -> None:
        key = _KEYS[self.key_index]
        tail = (self.sid + '"}').encode()
        self.tails = tuple(apply_mask(tail, key[r:] + key[:r]) for r in range(4))

    @property
    def key(self) -> bytes:
        return _KEYS[self.key_index]

    def frame(self, text: str) -> bytes:
        return mask_frame(0x1, text.encode(), self.key)

    def opening(self) -> bytes:
        """``connected`` and ``start`` (both tracks, mu-law 8 kHz), as Twilio sends them."""
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": _ACCOUNT,
                "streamSid": self.sid,
                "callSid": self.call,
                "tracks": ["inbound", "outbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {},
            },
            "streamSid": self.sid,
        }
        connected = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
        return self.frame(connected) + self.frame(json.dumps(start, separators=(",", ":")))

    def tick(self) -> bytes:
        """The next instant's two media frames (outbound, inbound), one write."""
        ro, ri, prefixes = self.ticks(self.k)
        ho, hi = prefixes[self.key_index]
        self.k += 1
        tails = self.tails
        return b"".join((ho, tails[ro], hi, tails[ri]))

    def closing(self) -> bytes:
        stop = {"event": "stop", "sequenceNumber": str(2 + 2 * self.k), "streamSid": self.sid,
                "stop": {"accountSid": _ACCOUNT, "callSid": self.call}}  # fmt: skip
        return self.frame(json.dumps(stop, separators=(",", ":")))


@dataclass(slots=True)
class TickResult:
    lags: array[float]
    sent: int  # media messages handed to the kernel (or queued behind a full socket)
    user: float  # the generator's CPU over the ticking, seconds
    system: float
    wall: float
    queued: int  # writes that met a full socket buffer


def _rusage_thread() -> tuple[float, float]:
    import resource

    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    r = resource.getrusage(who)
    return r.ru_utime, r.ru_stime


class Platform:
    """N forks to one server: open, tick in real time, stop; all blocking, one thread."""

    def __init__(self, host: str, port: int, target: str) -> None:
        self.host, self.port, self.target = host, port, target
        self.ticks = _Ticks()
        self.socks: list[socket.socket] = []
        self.sources: list[StreamSource] = []

    def open(self, n: int, batch: int = 100, timeout: float = 60.0) -> None:
        """Connect and upgrade ``n`` WebSockets, then send each ``connected`` and ``start``."""
        for i in range(0, n, batch):
            socks = []
            for _ in range(min(batch, n - i)):
                s = socket.create_connection((self.host, self.port), timeout=timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                key = base64.b64encode(os.urandom(16)).decode()
                s.sendall(
                    f"GET {self.target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                socks.append(s)
            for s in socks:
                head = _read_head(s)
                if not head.startswith(b"HTTP/1.1 101 "):
                    for t in socks:
                        t.close()
                    msg = f"upgrade refused: {head[:40]!r}"
                    raise BenchError(msg)
                src = StreamSource(self.ticks)
                s.sendall(src.opening())
                s.setblocking(False)
                self.socks.append(s)
                self.sources.append(src)

    def run(self, duration: float, slots: int, give_up: float, per_write: int = 1) -> TickResult:
        """Tick every stream every 20 ms (in ``slots`` phases) for ``duration`` seconds.

        ``per_write`` > 1 holds each stream's frames back and writes ``per_write``
        ticks' worth at once, every ``per_write`` x 20 ms (what a sender behind Nagle
        or a path that coalesces segments delivers; Twilio writes every 20 ms): the
        same messages, never early, in fewer writes.
        """
        sub = FRAME_SECONDS / slots
        n = len(self.socks)
        src = self.sources
        phases = [
            [(i, self.socks[i].send, src[i].key_index, src[i].tails) for i in range(p, n, slots)]
            for p in range(slots)
        ]
        pending: dict[int, bytes] = {}  # a stream whose socket was full: its bytes, in order
        lags: array[float] = array("d")
        sent = queued = 0
        u0, s0 = _rusage_thread()
        start = time.monotonic()
        stop_by = start + duration + give_up
        ticks = self.ticks
        j = 0
        while (deadline := start + j * sub) < start + duration:
            now = time.monotonic()
            if now > stop_by:
                break
            if deadline > now:
                time.sleep(deadline - now)
                now = time.monotonic()
            lags.append(max(0.0, now - deadline))
            phase = phases[j % slots]
            tick = j // slots
            if (tick + 1) % per_write:
                j += 1  # this tick's frames go with the next write
                continue
            held = [ticks(t) for t in range(tick + 1 - per_write, tick)]
            ro, ri, prefixes = ticks(tick)
            for i, send, key, tails in phase:
                # StreamSource.tick inlined: this loop runs 100,000 times a second.
                ho, hi = prefixes[key]
                data = b"".join((ho, tails[ro], hi, tails[ri]))
                if held:
                    data = b"".join(
                        [b"".join((p[key][0], tails[o], p[key][1], tails[n])) for o, n, p in held]
                        + [data]
                    )
                if pending and i in pending:
                    data = pending.pop(i) + data
                try:
                    done = send(data)
                except BlockingIOError:
                    done = 0
                if done != len(data):
                    pending[i] = data[done:]
                    queued += 1
            sent += 2 * per_write * len(phase)
            j += 1
        wall = time.monotonic() - start
        for p, phase in enumerate(phases):  # the ticks each stream sent: its stop's number
            done_ticks = j // slots + (1 if p < j % slots else 0)
            done_ticks -= done_ticks % per_write  # held frames of an unfinished write: unsent
            for i, _, _, _ in phase:
                src[i].k = done_ticks
        u1, s1 = _rusage_thread()
        self._flush(pending)
        return TickResult(lags, sent, u1 - u0, s1 - s0, wall, queued)

    def _flush(self, pending: dict[int, bytes]) -> None:
        for i, data in pending.items():
            s = self.socks[i]
            s.setblocking(True)
            s.settimeout(60)
            s.sendall(data)
            s.setblocking(False)

    def stop(self, batch: int = 200, timeout: float = 60.0) -> int:
        """Send each ``stop``; count the streams the server closed with 1000 (complete).

        Each batch of ``batch`` streams has ``timeout`` seconds in all to be closed; a
        stream whose close did not come by then is counted as not complete.
        """
        done = 0
        for i in range(0, len(self.socks), batch):
            group = list(zip(self.socks[i : i + batch], self.sources[i : i + batch], strict=True))
            deadline = time.monotonic() + timeout
            for s, src in group:
                s.settimeout(timeout)
                s.sendall(src.closing())
            for s, src in group:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                code = _read_close(s)
                if code is not None:
                    # Answer the close (RFC 6455 §5.5.1), then the server closes TCP.
                    with contextlib.suppress(OSError):
                        s.sendall(mask_frame(0x8, code.to_bytes(2, "big"), src.key))
                done += code == 1000
        return done

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks, self.sources = [], []


def _read_head(s: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            msg = "connection closed during the upgrade"
            raise BenchError(msg)
        buf += chunk
        if len(buf) > 16384:
            msg = "upgrade response too long"
            raise BenchError(msg)
    head, _, rest = buf.partition(b"\r\n\r\n")
    if rest:  # the server sends nothing after its 101 before a close: a broken bench
        msg = "unexpected bytes after the upgrade response"
        raise BenchError(msg)
    return head


def _read_close(s: socket.socket) -> int | None:
    """Read server frames until the close frame; its code (1005 without one), None if cut."""
    buf = b""
    recv: Callable[[int], bytes] = s.recv
    while True:
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = int.from_bytes(buf[2:4], "big"), 4
            if len(buf) < at + n:
                break
            opcode, body, buf = buf[0] & 0x0F, buf[at : at + n], buf[at + n :]
            if opcode == 0x8:
                return int.from_bytes(body[:2], "big") if len(body) >= 2 else 1005
        try:
            chunk = recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
