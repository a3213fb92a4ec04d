"""The media-streams WebSocket endpoint: the upgrade policy, listening, shutdown.

An asyncio server (uvloop in production) whose connections speak HTTP/1.1
until their upgrade (:mod:`recstream.streams.handshake`) and RFC 6455 after it
(:mod:`recstream.streams.frames`), both sans I/O.  It replaced aiohttp's
WebSocket server here because at 100 messages a second per stream the per-message
cost is the product: aiohttp's reader, a future per ``receive()`` and a message
object per frame came to about half the server's CPU.

``GET {path}``, ``{path}/{tenant}`` and ``{path}/{tenant}/{secret}`` upgrade to
a WebSocket when, in this order (after a well-formed request head: else **400**,
431, 414; a known path: else **404**; ``GET``: else **405**):

1. fewer than ``max_streams`` streams are open -- else **503** (with
   ``Retry-After``), before any other work;
2. the credentials fit a configured tenant (:mod:`recstream.streams.auth`) --
   else **401**, the same body whatever was wrong (no oracle);
3. it is a WebSocket upgrade -- else **426** (400 for a malformed key).

Every refusal is one audit line: the client's address, the status and the
precise reason, never the URL (it may hold the secret) or any header value.
The request head must arrive within :data:`HANDSHAKE_TIMEOUT` (slowloris).

A stream's slot is taken before the upgrade and given back when its recording
is finalised, so ``max_streams`` bounds open files and memory, not only sockets.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast
from urllib.parse import parse_qs, unquote

from recstream.admission import capacity_within_limit, descriptor_limit
from recstream.aio import RecordingHook
from recstream.aio.accept import TlsListener, bind
from recstream.aio.batching import ReadBatcher
from recstream.errors import ConfigError, UpgradeRequestError
from recstream.service.audit import AuditLog
from recstream.streams.auth import AuthRefused, Credentials, TenantCredentials, authenticate
from recstream.streams.config import ServerConfig
from recstream.streams.connection import StreamConnection
from recstream.streams.handshake import (
    UpgradeRequest,
    accept_response,
    head_length,
    parse_request,
    refusal,
    websocket_key,
)
from recstream.tomlconfig import server_tls_context

log = logging.getLogger("recstream.streams")

__all__ = [
    "DESCRIPTOR_RESERVE",
    "RunningStreams",
    "StreamsServer",
    "start_streams_server",
    "streams_descriptors",
]

HANDSHAKE_TIMEOUT: Final = 10.0  # the request head must arrive by then (slowloris)
# Descriptors kept free of connections and recordings: the listener, the audit log, the
# keystore, the event loop's own, the flusher's threads, a worker's pipes.
DESCRIPTOR_RESERVE: Final = 64
SHUTDOWN_GRACE: Final = 10.0  # for streams to finalise after they were told to go away
_UNAUTHORIZED: Final = "authentication failed\n"
_AT_LIMIT: Final = "at the descriptor limit"  # a connection refused for the budget


class _Peer(asyncio.Protocol):
    """One TCP (or TLS) connection: its request head, then its stream's bytes."""

    def __init__(self, server: StreamsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.head = b""
        self.conn: StreamConnection | None = None
        self.answered = False  # a refusal was written: the rest is ignored
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        # Over TLS the connection was admitted at its accept, before the handshake
        # (recstream.aio.accept); in the clear, here.
        if not self.server.tls and not self.server.admit():
            # Each connection is a descriptor and each stream's recording another: past
            # the budget, a new connection would make some recording's file open fail.
            self.answered = True
            self.transport.write(self.server.refusal(self.remote, 503, _AT_LIMIT, None))
            self.transport.close()
            return
        self.timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._too_slow)
        self.server.peers.add(self)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is not None:
            conn.data_received(data)
            return
        if self.answered:
            return
        self.head += data
        try:
            n = head_length(self.head)
            if n is None:
                return
            request = parse_request(self.head[:n])
        except UpgradeRequestError as exc:
            self.refuse(exc.status, str(exc), None)
            return
        rest, self.head = self.head[n:], b""
        if self.timer is not None:
            self.timer.cancel()
        self.server.upgrade(self, request)
        if self.conn is not None and rest:
            self.conn.data_received(rest)

    def refuse(self, status: int, reason: str, tenant: str | None) -> None:
        assert self.transport is not None
        self.answered = True
        if self.timer is not None:
            self.timer.cancel()
        self.transport.write(self.server.refusal(self.remote, status, reason, tenant))
        self.transport.close()

    def _too_slow(self) -> None:
        if self.conn is None and not self.answered and self.transport is not None:
            self.server.count_refusal(self.remote, 408, "no request head in time", None)
            self.answered = True
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.server.peers.discard(self)
        if self.conn is not None:
            self.conn.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_writing()

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_writing()


class StreamsServer:
    """The upgrade policy and the set of open streams.

    Args:
        on_sealed: bench instrumentation, passed to each :class:`StreamConnection`.
    """

    def __init__(
        self,
        config: ServerConfig,
        tenants: tuple[TenantCredentials, ...],
        hook: RecordingHook,
        audit: AuditLog,
        *,
        tls_context: ssl.SSLContext | None = None,
        on_sealed: Callable[[float, float], None] | None = None,
        worker: int = 0,
    ) -> None:
        self.config = config
        self.tenants = tenants
        self.hook = hook
        self.audit = audit
        self.tls_context = tls_context  # from [server] tls_cert/tls_key at the start
        # TLS connections admitted, their handshake not done (the TLS listener's count)
        self.handshaking: Callable[[], int] = lambda: 0
        self.on_sealed = on_sealed
        self.worker = worker  # which of the SO_REUSEPORT processes this is (audit lines say)
        self.active: set[StreamConnection] = set()
        self.peers: set[_Peer] = set()  # every open TCP connection, upgraded or not
        self._reserved = 0
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self.accepted = 0
        self.refused = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.on_stream_opened: Callable[[], None] | None = None  # read batching's check

    @property
    def tls(self) -> bool:
        return self.tls_context is not None

    def protocol(self) -> asyncio.Protocol:
        return _Peer(self)

    def admit(self) -> bool:
        """Room for one more connection: every open connection (TLS ones from their
        accept, handshake included) and every recording not yet finalised holds a
        descriptor, and :data:`DESCRIPTOR_RESERVE` stay free."""
        open_now = len(self.peers) + self.handshaking() + self._reserved
        return open_now < descriptor_limit() - DESCRIPTOR_RESERVE

    @property
    def open_streams(self) -> int:
        return self._reserved

    def refuse_connection(self, remote: str) -> bool:
        """Audit a connection refused at the accept for the descriptor budget; False."""
        self.count_refusal(remote, 503, _AT_LIMIT, None)
        return False

    def count_refusal(self, remote: str, status: int, reason: str, tenant: str | None) -> None:
        self.refused += 1
        known = any(t.tenant == tenant for t in self.tenants)
        # Anyone can cause a refusal at will: rate-limited per client address and for the
        # whole process, as the RCS does (what is dropped is counted in audit_suppressed).
        self.audit.write_limited(
            "stream_refused",
            f"client:{remote}",
            remote=remote,
            status=status,
            reason=reason,
            tenant=tenant if known else None,
            worker=self.worker,
        )

    def refusal(self, remote: str, status: int, reason: str, tenant: str | None) -> bytes:
        """Count and audit one refusal; return the response to send."""
        self.count_refusal(remote, status, reason, tenant)
        if status == 503:
            return refusal(503, "too many streams\n", {"Retry-After": "5"})
        if status == 401:
            return refusal(401, _UNAUTHORIZED)
        if status == 426:  # RFC 9110 §15.5.22 and RFC 6455 §4.4: say what to upgrade to
            return refusal(
                426, f"{reason}\n", {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
            )
        return refusal(status, f"{reason}\n")

    def _route(self, request: UpgradeRequest) -> dict[str, str] | None:
        """``{path}``, ``{path}/{tenant}``, ``{path}/{tenant}/{secret}`` (decoded), or None."""
        base, path = self.config.path, request.path
        if path == base:
            return {}
        if not path.startswith(base + "/"):
            return None
        parts = path[len(base) + 1 :].split("/")
        if len(parts) > 2 or not all(parts):
            return None
        try:
            values = [unquote(p, errors="strict") for p in parts]
        except UnicodeDecodeError:
            return None
        return dict(zip(("tenant", "secret"), values, strict=False))

    def _credentials(self, request: UpgradeRequest, match: dict[str, str]) -> Credentials:
        sources = []
        bearer = request.headers.get("authorization", "")
        if bearer[:7].lower() == "bearer ":
            sources.append(bearer[7:].strip())
        if "secret" in match:
            sources.append(match["secret"])
        try:
            query = parse_qs(request.query, keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise AuthRefused("a query string that does not decode") from None
        sources.extend(query.get("token", []))
        if len(sources) > 1:
            raise AuthRefused("a secret in more than one place")
        host = request.headers.get("host", "")
        base = self.config.public_url or f"{'wss' if self.tls else 'ws'}://{host}"
        return Credentials(
            url=base + request.target,
            token=sources[0] if sources else None,
            signature=request.headers.get("x-twilio-signature"),
        )

    def upgrade(self, peer: _Peer, request: UpgradeRequest) -> None:
        """The upgrade: route, capacity, then credentials, then the WebSocket."""
        match = self._route(request)
        tenant = None if match is None else match.get("tenant")
        if match is None:
            peer.refuse(404, "no such path", None)
            return
        if request.method != "GET":
            peer.refuse(405, "not a GET request", tenant)
            return
        if self._reserved >= self.config.max_streams:
            peer.refuse(503, f"at the limit of {self.config.max_streams} streams", tenant)
            return
        try:
            allowed = authenticate(self.tenants, self._credentials(request, match), only=tenant)
        except AuthRefused as exc:
            peer.refuse(401, exc.reason, tenant)
            return
        try:
            key = websocket_key(request)
        except UpgradeRequestError as exc:
            peer.refuse(exc.status, str(exc), tenant)
            return
        assert peer.transport is not None
        self._reserved += 1
        self._no_streams.clear()
        released = False

        def release() -> None:
            # Once the recording is finalised (before the socket's close handshake, which
            # a slow peer can drag out) and exactly once.
            nonlocal released
            if not released:
                released = True
                self._reserved -= 1
                if self._reserved == 0:
                    self._no_streams.set()

        peer.transport.write(accept_response(key))
        conn = StreamConnection(
            peer.transport,
            self.hook,
            self.audit,
            allowed=allowed,
            remote=peer.remote,
            idle_timeout=self.config.idle_timeout,
            max_call_seconds=self.config.max_call_seconds,
            tenant_parameter=self.config.tenant_parameter,
            max_message=self.config.max_message_bytes,
            on_sealed=self.on_sealed,
            on_finalised=release,
            worker=self.worker,
        )
        peer.conn = conn
        self.accepted += 1
        self.active.add(conn)
        if self.on_stream_opened is not None:
            self.on_stream_opened()

        def ended(_: object) -> None:
            self.active.discard(conn)
            release()

        conn.done.add_done_callback(ended)

    async def watch_idle(self) -> None:
        """Close streams that sent nothing for ``idle_timeout`` (runs until cancelled).

        One task for every stream instead of a timer per message; a stream is
        closed between ``idle_timeout`` and 1.25 x ``idle_timeout`` after its last bytes.
        """
        idle = self.config.idle_timeout
        while True:
            await asyncio.sleep(idle / 4)
            now = time.monotonic()
            stale = [c for c in self.active if now - c.last_seen > idle and not c.going_away]
            for conn in stale:
                # A task each: closing waits for the peer's close frame.
                task = asyncio.get_running_loop().create_task(conn.go_away(conn.idle_reason))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def close_all(self) -> None:
        """Tell every open stream to go away (1001); each finalises its recording, incomplete."""
        for peer in list(self.peers):
            if peer.conn is None and peer.transport is not None:
                peer.transport.abort()  # still in its handshake: nothing to keep
        await asyncio.gather(*(conn.go_away() for conn in list(self.active)))

    async def wait_no_streams(self) -> None:
        """Wait until no stream is open (every recording finalised)."""
        await self._no_streams.wait()


def streams_descriptors(max_streams: int) -> tuple[int, int]:
    """Raise this process's descriptor limit for ``max_streams`` streams if it may;
    return ``(streams it holds, descriptors they need)``: fewer streams than asked
    when the hard limit is lower (each stream is a socket and a recording).

    Raises:
        ConfigError: the limit cannot hold a single stream.
    """
    return capacity_within_limit(
        max_streams,
        2,
        DESCRIPTOR_RESERVE,
        unit="stream",
        kept=f"the server keeps {DESCRIPTOR_RESERVE} for itself",
    )


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """TLS 1.2+ from ``tls_cert``/``tls_key``, or None.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    return server_tls_context(config.tls_cert, config.tls_key)


class _Listener(Protocol):
    @property
    def sockets(self) -> Sequence[Any]: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class RunningStreams:
    """A listening endpoint.  ``url`` is its WebSocket base (``ws://127.0.0.1:PORT/streams``)."""

    server: StreamsServer
    listener: _Listener
    host: str
    port: int
    watchdog: asyncio.Task[None] | None = None
    batcher: ReadBatcher | None = None
    _batching: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "wss" if self.server.tls else "ws"
        return f"{scheme}://{host}:{self.port}{self.server.config.path}"

    async def stop(self) -> None:
        """Stop accepting, close open streams (finalised incomplete), stop listening."""
        self.listener.close()
        for task in (self.watchdog, self._batching):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # its death must not stop the streams' finalising
                    log.exception("streams server: a background task had failed")
        await self.server.close_all()
        try:
            await asyncio.wait_for(self.server.wait_no_streams(), SHUTDOWN_GRACE)
        finally:
            for peer in list(self.server.peers):
                if peer.transport is not None:
                    peer.transport.abort()


async def start_streams_server(
    server: StreamsServer, *, reuse_port: bool = False
) -> RunningStreams:
    """Listen on ``[server] listen`` (``reuse_port``: one of several processes on one port).

    Raises:
        ConfigError: bad TLS material, or the address cannot be bound.
    """
    cfg = server.config
    batcher = None
    if cfg.read_batch > 0:  # checked before anything is bound (ValueError: a bad setting)
        batcher = ReadBatcher(
            lambda: server.open_streams,
            cycle=cfg.read_batch,
            min_streams=cfg.read_batch_min_streams,
        )
    tls = server.tls_context = tls_context(cfg)
    loop = asyncio.get_running_loop()
    listener: _Listener
    try:
        if tls is None:
            listener = await loop.create_server(
                server.protocol,
                cfg.host,
                cfg.port,
                reuse_address=True,
                reuse_port=reuse_port or None,
                backlog=4096,
            )
        else:
            # Admitted (or refused) at the accept, before the handshake (aio/accept.py).
            tls_listener = TlsListener(
                bind(cfg.host, cfg.port, reuse_port=reuse_port),
                tls,
                lambda _address: server.protocol,
                admit=lambda address: server.admit() or server.refuse_connection(address),
                release=lambda _address: None,  # the budget is counted, not held per slot
                handshake_timeout=HANDSHAKE_TIMEOUT,
            )
            server.handshaking = lambda: tls_listener.pending
            listener = tls_listener
    except OSError as exc:
        msg = f"[server] listen {cfg.host}:{cfg.port}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    port = listener.sockets[0].getsockname()[1] if listener.sockets else cfg.port
    running = RunningStreams(server, listener, cfg.host, int(port))
    running.watchdog = loop.create_task(server.watch_idle())
    if batcher is not None:
        running.batcher = batcher
        running._batching = loop.create_task(batcher.run())
        server.on_stream_opened = batcher.check
    return running
