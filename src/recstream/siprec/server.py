"""The SRS's asyncio adapter: sockets and timers around :class:`~.uas.UserAgent`.

It pumps bytes and nothing else (aioquic's ``asyncio/protocol.py`` role): SIP
over UDP and TCP on one port into the user agent, the user agent's actions out
to sockets and to the :class:`~recstream.aio.RecordingHook`, and each RTP
datagram straight into its stream's receiver, whose released records go to the
hook (the hot path: one call into pure code and one ``hook.media`` per packet).

Who closes what: :meth:`SrsServer.aclose` ends every call (a BYE to each),
finalises every recording, closes every socket it opened and the hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from recstream.aio import RecordingHook
from recstream.errors import PipelineError
from recstream.format import MediaKind
from recstream.siprec.admission import sip_tcp_limiter
from recstream.siprec.config import SrsConfig
from recstream.siprec.sipwire import SipParseError, StreamFramer, parse_datagram, parse_message
from recstream.siprec.uas import (
    TICK,
    Action,
    Call,
    CallMedia,
    Dest,
    EndCall,
    MediaChanged,
    Send,
    StartCall,
    Stream,
    UserAgent,
)
from recstream.tracks import MEDIA_TYPE

__all__ = ["PortPool", "SrsServer", "Status"]

Status = Callable[[dict[str, Any]], None]
RTP_RECV_BUFFER = 1 << 20  # per RTP socket: absorbs a scheduling hiccup at 50 packets/s
MAX_DRAIN = 4096  # datagrams read from one stream's socket when its call ends
RANDOM_TRIES = 16  # random picks of an RTP port before scanning from a random start

log = logging.getLogger("recstream.siprec")


class PortPool:
    """Even RTP ports in ``[low, high]``, each bound to a UDP socket when handed out.

    A port is picked at random (not the next in sequence), so nobody can predict
    the port of the next call and send RTP there before its SRC does.
    """

    def __init__(self, host: str, low: int, high: int) -> None:
        self.host = host
        self.low, self.high = low, high
        self.sockets: dict[int, socket.socket] = {}

    def _candidates(self) -> list[int]:
        span = (self.high - self.low) // 2 + 1
        picks = [self.low + 2 * secrets.randbelow(span) for _ in range(RANDOM_TRIES)]
        start = secrets.randbelow(span)  # then every port once, from a random start
        return picks + [self.low + 2 * ((start + i) % span) for i in range(span)]

    def allocate(self) -> int | None:
        for port in self._candidates():
            if port in self.sockets:
                continue
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RTP_RECV_BUFFER)
                sock.bind((self.host, port))
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            self.sockets[port] = sock
            return port
        return None

    def release(self, port: int) -> None:
        sock = self.sockets.pop(port, None)
        if sock is not None:
            sock.close()

    def take(self, port: int) -> socket.socket | None:
        """The bound socket of ``port`` for an endpoint (the transport now owns it)."""
        return self.sockets.get(port)


class _RtpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("_allowed", "_live", "_receive", "_server", "_time", "transport")

    def __init__(self, server: SrsServer, call: _Live, stream: Stream) -> None:
        self._receive = stream.receiver.receive
        self._time = asyncio.get_running_loop().time
        self._server, self._live = server, call
        self._allowed = ""  # the last source found in [sip] allow (the hot path's check)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self._allowed:
            if not self._server.config.allows(addr[0]):
                self._server.totals.rtp_refused += 1
                return  # outside [sip] allow: never latched onto, never recorded
            self._allowed = addr[0]
        try:
            out = self._receive(data, addr[:2], self._time())
            if out:
                self._server._media(self._live, out)
        except Exception as exc:  # a bug: counted, one log line a minute, no traceback per packet
            self._server._internal_error(exc, None, None)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        pass


class _SipUdp(asyncio.DatagramProtocol):
    def __init__(self, server: SrsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.server.config.allows(addr[0]):
            self.server.totals.sip_refused += 1
            return  # UDP from outside [sip] allow: dropped unanswered (no reflection)
        dest = Dest("udp", addr[:2])
        try:
            parsed = parse_datagram(data)
        except SipParseError as exc:
            self.server._malformed(exc, dest)
            return
        except Exception as exc:  # a bug: counted and logged; the server goes on
            self.server._internal_error(exc, None, dest)
            return
        if parsed is not None:
            self.server._handle(parsed, dest)

    def error_received(self, exc: Exception) -> None:
        pass


class _SipTcp(asyncio.Protocol):
    """One SIP/TCP connection: admitted by the limiter, closed when idle.

    A connection that has carried no complete message for ``[sip] tcp_idle_timeout``
    seconds and carries no call is closed (an SRC reconnects for its next call).
    """

    def __init__(self, server: SrsServer) -> None:
        self.server = server
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.dest: Dest | None = None
        self.address: str | None = None  # set once admitted
        self.last_message = 0.0
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.server._admit(address):
            transport.close()
            return
        self.address = address
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.dest = Dest("tcp", peer[:2], self.transport)
        self.server._connections.add(self.transport)
        self.last_message = loop.time()
        self._idle = loop.call_at(self.last_message + self.server.config.tcp_idle_timeout,
                                  self._check_idle)  # fmt: skip

    def _check_idle(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        timeout = self.server.config.tcp_idle_timeout
        due = self.last_message + timeout
        if loop.time() >= due and not self.server._carries_call(self.transport):
            self.server.totals.idle_closed += 1
            self.transport.close()
            return
        self._idle = loop.call_at(max(due, loop.time() + timeout / 4), self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.address is None:
            return  # refused and closing: nothing it sends is read
        assert self.dest is not None and self.transport is not None
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:  # the stream cannot be resynchronised
            self.server._malformed(exc, self.dest)
            self.transport.close()
            return
        except Exception as exc:  # a bug in framing: counted and logged, and no resync either
            self.server._internal_error(exc, None, self.dest)
            self.transport.close()
            return
        if messages:
            self.last_message = asyncio.get_running_loop().time()
        for raw in messages:
            try:
                parsed = parse_message(raw)
            except SipParseError as exc:
                self.server._malformed(exc, self.dest)
                continue
            except Exception as exc:  # a bug: counted, logged; the connection goes on
                self.server._internal_error(exc, None, self.dest)
                continue
            self.server._handle(parsed, self.dest)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self.address is not None:
            self.server._release(self.address)
            self.address = None
        if self.transport is not None:
            self.server._connections.discard(self.transport)


@dataclass
class _Live:
    """The adapter's side of a call: its recording and its RTP transports."""

    call: Call
    start: asyncio.Task[bool] | None = None
    recording: bool = False
    failed: bool = False
    transports: dict[int, asyncio.DatagramTransport] = field(default_factory=dict)
    bytes_in: int = 0
    announced: bool = False  # call_start was reported
    socks: dict[int, socket.socket] = field(default_factory=dict)  # for draining at the end


@dataclass
class Totals:
    """Counters for the metrics (calls ended are added here; live ones are summed)."""

    streams: int = 0
    bytes_encrypted: int = 0
    malformed_sip: int = 0
    recording_failures: int = 0
    internal_errors: int = 0  # messages whose handling raised an unexpected exception
    sip_refused: int = 0  # SIP messages from outside [sip] allow
    rtp_refused: int = 0  # RTP datagrams from outside [sip] allow
    idle_closed: int = 0  # TCP connections closed by tcp_idle_timeout
    ended: dict[str, int] = field(default_factory=dict)
    packets: dict[str, int] = field(default_factory=dict)  # of calls that ended


class SrsServer:
    """One SRS process: SIP (UDP+TCP) on one port, RTP on the configured range.

    Args:
        config: the checked ``srs.toml``.
        hook: the recording hook (``recstream.frontdoor.recorder.open_hook``), not yet
            entered; the server enters and closes it.
        on_status: receives one JSON-ready dict per call start and end (no personal data).
        port_range: override the RTP range (one slice per process with SO_REUSEPORT).
    """

    def __init__(
        self,
        config: SrsConfig,
        hook: RecordingHook,
        *,
        on_status: Status | None = None,
        port_range: tuple[int, int] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self._status = on_status or (lambda doc: None)
        low, high = port_range or config.rtp_ports
        self.ports = PortPool(config.rtp_host, low, high)
        self.hook = hook
        self._reuse_port = reuse_port
        self.ua: UserAgent | None = None
        self.live: dict[str, _Live] = {}  # recording ID -> call
        self.totals = Totals()
        self._connections: set[asyncio.Transport] = set()
        self.limiter = sip_tcp_limiter(
            config.max_connections_per_address,
            config.connection_reserve,
            in_use=self._descriptors_in_use,
            now=lambda: asyncio.get_running_loop().time(),
        )
        self._error_logged = -60.0  # loop time of the last internal-error log line
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.address: tuple[str, int] = (config.listen_host, config.listen_port)

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        """Bind SIP on UDP and TCP (the same port; port 0 picks one); return the address."""
        loop = asyncio.get_running_loop()
        await self.hook.__aenter__()
        host, port = self.config.listen_host, self.config.listen_port
        for _ in range(20):  # port 0: the UDP port chosen must be free on TCP as well
            udp_sock = self._socket(socket.SOCK_DGRAM, host, port)
            bound = udp_sock.getsockname()[1]
            try:
                tcp_sock = self._socket(socket.SOCK_STREAM, host, bound)
            except OSError:
                udp_sock.close()
                if port:
                    raise
                continue
            break
        else:
            msg = "no port free for both UDP and TCP"
            raise OSError(msg)
        self.address = (host, bound)
        self.ua = UserAgent(self.config, self.address, self.ports, random=os.urandom)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _SipUdp(self), sock=udp_sock)
        tcp_sock.listen(128)
        self._tcp = await loop.create_server(lambda: _SipTcp(self), sock=tcp_sock)
        self._ticker = loop.create_task(self._tick_forever(), name="srs-tick")
        return self.address

    def _socket(self, kind: int, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if kind == socket.SOCK_DGRAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK)
            assert self.ua is not None
            try:
                self._run(self.ua.tick(loop.time()))
            except Exception as exc:  # a bug: reported, and the server keeps recording
                self._status(
                    {"event": "internal_error", "time": _now_iso(), "error": type(exc).__name__}
                )

    async def aclose(self) -> None:
        """SIGTERM: refuse new calls, BYE and finalise every call, close everything."""
        loop = asyncio.get_running_loop()
        for live in list(self.live.values()):
            self._drain(live)
        if self.ua is not None:
            self._run(self.ua.drain(loop.time()))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.hook.aclose()
        for port in list(self.ports.sockets):
            self.ports.release(port)
        for t in list(self._connections):
            t.close()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    # --- SIP in --------------------------------------------------------------

    def _descriptors_in_use(self) -> int:
        """Descriptors the calls hold (RTP sockets and their transports)."""
        return len(self.ports.sockets) + sum(len(v.transports) for v in self.live.values())

    def _admit(self, address: str) -> bool:
        """May a TCP connection from ``address`` be held (see :mod:`.admission`)?"""
        return self.limiter.admit(address)

    def _release(self, address: str) -> None:
        self.limiter.release(address)

    def _carries_call(self, conn: asyncio.Transport) -> bool:
        if self.ua is None:
            return False
        return any(c.dest.conn is conn for c in self.ua.calls.values())

    def _handle(self, parsed: Any, dest: Dest) -> None:
        try:
            self._handle_checked(parsed, dest)
        except Exception as exc:  # the last resort: one message fails, nothing else does
            request = parsed.message if hasattr(parsed.message, "method") else None
            self._internal_error(exc, request, dest)

    def _internal_error(self, exc: Exception, request: Any, dest: Dest | None) -> None:
        """Count and log (the type only: no personal data) a bug; answer 500 if possible."""
        self.totals.internal_errors += 1
        what = getattr(request, "method", None) or ("RTP packet" if dest is None else "message")
        now = asyncio.get_running_loop().time()
        if now - self._error_logged >= 60.0:  # at most one line a minute
            self._error_logged = now
            log.error(
                "SRS: internal error handling a %s (%s); %d so far",
                what,
                type(exc).__name__,
                self.totals.internal_errors,
            )
        if request is not None and dest is not None and request.method != "ACK" and self.ua:
            with contextlib.suppress(Exception):
                self._send(self.ua.error_response(request, dest))

    def _handle_checked(self, parsed: Any, dest: Dest) -> None:
        assert self.ua is not None
        if dest.transport == "tcp" and not self.config.allows(dest.addr[0]):
            self.totals.sip_refused += 1  # UDP ones never get here
            request = parsed.message if hasattr(parsed.message, "method") else None
            if request is not None and request.method != "ACK":
                self._run(self.ua.forbidden(request, dest))
            return
        if getattr(parsed.message, "method", None) == "BYE":
            self._drain_before_bye(parsed)
        try:
            actions = self.ua.handle(parsed, dest, asyncio.get_running_loop().time())
        except (ValueError, KeyError, IndexError, TypeError):
            # A header the first checks let through but a later one cannot read.
            self.totals.malformed_sip += 1
            request = parsed.message if hasattr(parsed.message, "method") else None
            if request is not None and request.method != "ACK":
                with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                    self._run(self.ua.bad_request(request, dest))
            return
        self._run(actions)

    def _drain_before_bye(self, parsed: Any) -> None:
        """Read what already waits on the call's RTP sockets: it was sent before the BYE."""
        assert self.ua is not None
        try:
            call = self.ua._find(parsed)
        except (ValueError, KeyError, IndexError, TypeError):
            return
        live = self.live.get(call.recording_id) if call is not None else None
        if live is not None:
            self._drain(live)

    def _drain(self, live: _Live) -> None:
        now = asyncio.get_running_loop().time()
        for stream in list(live.call.streams.values()):
            sock = live.socks.get(stream.port) or self.ports.sockets.get(stream.port)
            for _ in range(MAX_DRAIN):
                try:
                    data, addr = sock.recvfrom(65535) if sock is not None else (b"", None)
                except (BlockingIOError, OSError):
                    break
                if addr is None:
                    break
                out = stream.receiver.receive(data, addr[:2], now)
                if out:
                    self._media(live, out)

    def _malformed(self, exc: SipParseError, dest: Dest) -> None:
        self.totals.malformed_sip += 1
        if exc.request is not None and self.ua is not None:
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                self._run(self.ua.bad_request(exc.request, dest))

    # --- actions out ------------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        if self.ua is not None and self.ua.rejected:
            for status, phrase in self.ua.rejected:  # no personal data: status and reason
                self._status(
                    {
                        "event": "call_rejected",
                        "time": _now_iso(),
                        "status": status,
                        "reason": phrase,
                    }
                )
            self.ua.rejected.clear()
        for action in actions:
            if isinstance(action, Send):
                self._send(action)
            elif isinstance(action, CallMedia):
                live = self.live.get(action.call.recording_id)
                if live is not None:
                    self._media(live, action.data)
            elif isinstance(action, StartCall):
                self._start(action.call)
            elif isinstance(action, MediaChanged):
                self._media_changed(action)
            elif isinstance(action, EndCall):
                self._end(action.call, action.reason)

    def _send(self, action: Send) -> None:
        dest = action.dest
        if dest.transport == "udp":
            if self._udp is not None:
                self._udp.sendto(action.data, dest.addr)
        elif dest.conn is not None and not dest.conn.is_closing():
            dest.conn.write(action.data)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start(self, call: Call) -> None:
        live = self.live[call.recording_id] = _Live(call)
        live.start = self._spawn(self._open_recording(live))

    async def _open_recording(self, live: _Live) -> bool:
        call = live.call
        await self.hook.start(
            call.recording_id,
            tenant=call.tenant,
            kinds=[MediaKind.VOICE],
            media_types={MediaKind.VOICE: MEDIA_TYPE},
            created_ms={MediaKind.VOICE: call.started_ms},
        )
        ok = (call.recording_id, MediaKind.VOICE) not in self.hook.errors
        live.recording = ok
        assert self.ua is not None
        self._run(self.ua.started(call, ok, asyncio.get_running_loop().time()))
        if ok and call.state != "ended":
            self.totals.streams += len(call.streams)
            self._status(
                {
                    "event": "call_start",
                    "time": _now_iso(),
                    "recording_id": call.recording_id,
                    "tenant": call.tenant,
                    "transport": call.dest.transport,
                    "streams": len(call.streams),
                    "rtp": _rtp(call),
                    "srtp": any(s.plan.srtp_key is not None for s in call.streams.values()),
                    "metadata": call.metadata is not None,
                }
            )
            live.announced = True
        return ok

    def _media(self, live: _Live, data: bytes) -> None:
        if not live.recording or live.failed:
            return
        try:
            self.hook.media(live.call.recording_id, data)
        except (PipelineError, KeyError):
            live.failed = True
            self.totals.recording_failures += 1
            # Never take media we cannot encrypt: the SRC is told the recording stopped.
            assert self.ua is not None
            self._run(
                self.ua.hang_up(live.call, "recording_failed", asyncio.get_running_loop().time())
            )
            return
        live.bytes_in += len(data)
        self.totals.bytes_encrypted += len(data)

    def _media_changed(self, action: MediaChanged) -> None:
        live = self.live.get(action.call.recording_id)
        if live is None:
            return
        for port in action.closed:
            transport = live.transports.pop(port, None)
            if transport is not None:
                transport.close()
            self.ports.release(port)
        for stream in action.opened:
            self._spawn(self._open_rtp(live, stream))
        call = action.call
        if live.announced and call.state != "ended":  # a re-INVITE changed the streams
            self._status(
                {
                    "event": "call_update",
                    "time": _now_iso(),
                    "recording_id": call.recording_id,
                    "streams": len(call.streams),
                    "rtp": _rtp(call),
                }
            )

    async def _open_rtp(self, live: _Live, stream: Stream) -> None:
        sock = self.ports.take(stream.port)
        if sock is None or live.call.state == "ended":
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(self, live, stream), sock=sock
        )
        if stream.port not in self.ports.sockets or live.call.state == "ended":
            transport.close()  # the stream closed while the endpoint was opening
            return
        live.transports[stream.port] = transport
        live.socks[stream.port] = sock
        del self.ports.sockets[stream.port]  # the transport owns the socket now

    def _end(self, call: Call, reason: str) -> None:
        live = self.live.get(call.recording_id)
        if live is None:
            return
        for transport in live.transports.values():
            transport.close()
        live.transports.clear()
        self._spawn(self._finish(live, reason))

    async def _finish(self, live: _Live, reason: str) -> None:
        call = live.call
        if live.start is not None:
            await asyncio.shield(live.start)
        done: dict[MediaKind, Any] = {}
        if live.recording:
            done = await self.hook.stop(call.recording_id)
        self.live.pop(call.recording_id, None)
        for row in call.stream_stats():
            for k, v in row.items():
                if k != "track":
                    self.totals.packets[k] = self.totals.packets.get(k, 0) + v
        self.totals.ended[reason] = self.totals.ended.get(reason, 0) + 1
        if live.recording:
            self._status(
                {
                    "event": "call_end",
                    "time": _now_iso(),
                    "recording_id": call.recording_id,
                    "tenant": call.tenant,
                    "reason": reason,
                    "duration_s": round(asyncio.get_running_loop().time() - call.created, 3),
                    "complete": MediaKind.VOICE in done and not live.failed,
                    "bytes": live.bytes_in,
                    "streams": call.stream_stats(),
                }
            )

    def recording_error(self, call_id: str, kind: MediaKind, exc: BaseException) -> None:
        """The hook's ``on_error``: a status line with the error's type only."""
        self._status(
            {
                "event": "recording_error",
                "time": _now_iso(),
                "recording_id": call_id,
                "error": type(exc).__name__,
            }
        )


def _rtp(call: Call) -> list[dict[str, Any]]:
    """Each stream's label, RTP port and codec (no personal data: the SRS's own ports)."""
    return [
        {"label": s.label, "port": s.port, "codec": s.plan.codec} for s in call.streams.values()
    ]


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
