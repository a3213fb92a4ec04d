"""The media-streams WebSocket endpoint on aiohttp: the upgrade policy, listening, shutdown.

``GET {path}``, ``{path}/{tenant}`` and ``{path}/{tenant}/{secret}`` upgrade to
a WebSocket when, in this order:

1. fewer than ``max_streams`` streams are open -- else **503** (with
   ``Retry-After``), before any other work;
2. the credentials fit a configured tenant (:mod:`recstream.streams.auth`) --
   else **401**, the same body whatever was wrong (no oracle);
3. it is a WebSocket upgrade -- else **426**.

Every refusal is one audit line: the client's address, the status and the
precise reason, never the URL (it may hold the secret) or any header value.
The access log is off for the same reason.

A stream's slot is taken before the upgrade and given back when its recording
is finalised, so ``max_streams`` bounds open files and memory, not only sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from recstream.aio import RecordingHook
from recstream.errors import ConfigError
from recstream.service.audit import AuditLog
from recstream.streams.auth import AuthRefused, Credentials, TenantCredentials, authenticate
from recstream.streams.config import ServerConfig
from recstream.streams.connection import StreamConnection
from recstream.tomlconfig import server_tls_context

__all__ = ["RunningStreams", "StreamsServer", "start_streams_server"]

MAX_LINE_BYTES: Final = 8190  # request line and each header line (nginx's default)
MAX_HEADERS: Final = 64
HANDSHAKE_TIMEOUT: Final = 10.0  # the request head must arrive by then (slowloris)
SHUTDOWN_GRACE: Final = 10.0  # for streams to finalise after they were told to go away
_UNAUTHORIZED: Final = "authentication failed\n"


class StreamsServer:
    """The upgrade handler and the set of open streams.

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
        tls: bool = False,
        on_sealed: Callable[[float, float], None] | None = None,
        worker: int = 0,
    ) -> None:
        self.config = config
        self.tenants = tenants
        self.hook = hook
        self.audit = audit
        self.tls = tls
        self.on_sealed = on_sealed
        self.worker = worker  # which of the SO_REUSEPORT processes this is (audit lines say)
        self.active: set[StreamConnection] = set()
        self._reserved = 0
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self.accepted = 0
        self.refused = 0
        self._closing: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application()
        base = self.config.path
        for route in (base, base + "/{tenant}", base + "/{tenant}/{secret}"):
            app.router.add_get(route, self.handle)
        return app

    @property
    def open_streams(self) -> int:
        return self._reserved

    def _refuse(self, request: web.Request, status: int, reason: str) -> web.Response:
        self.refused += 1
        path_tenant = request.match_info.get("tenant")
        known = any(t.tenant == path_tenant for t in self.tenants)
        # Anyone can cause a refusal at will: rate-limited per client address and for the
        # whole process, as the RCS does (what is dropped is counted in audit_suppressed).
        self.audit.write_limited(
            "stream_refused",
            f"client:{request.remote}",
            remote=request.remote,
            status=status,
            reason=reason,
            tenant=path_tenant if known else None,
            worker=self.worker,
        )
        if status == 503:
            return web.Response(status=503, text="too many streams\n", headers={"Retry-After": "5"})
        if status == 401:
            return web.Response(status=401, text=_UNAUTHORIZED)
        if status == 426:  # RFC 9110 §15.5.22: say which protocol to upgrade to
            return web.Response(status=426, text=f"{reason}\n", headers={"Upgrade": "websocket"})
        return web.Response(status=status, text=f"{reason}\n")

    def _credentials(self, request: web.Request) -> Credentials:
        sources = []
        bearer = request.headers.get("Authorization", "")
        if bearer[:7].lower() == "bearer ":
            sources.append(bearer[7:].strip())
        if "secret" in request.match_info:
            sources.append(request.match_info["secret"])
        queried = request.query.getall("token", [])
        sources.extend(queried)
        if len(sources) > 1:
            raise AuthRefused("a secret in more than one place")
        base = self.config.public_url or f"{'wss' if self.tls else 'ws'}://{request.host}"
        return Credentials(
            url=base + request.raw_path,
            token=sources[0] if sources else None,
            signature=request.headers.get("X-Twilio-Signature"),
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The upgrade: capacity, then credentials, then the WebSocket."""
        if self._reserved >= self.config.max_streams:
            return self._refuse(request, 503, f"at the limit of {self.config.max_streams} streams")
        try:
            allowed = authenticate(
                self.tenants, self._credentials(request), only=request.match_info.get("tenant")
            )
        except AuthRefused as exc:
            return self._refuse(request, 401, exc.reason)
        ws = web.WebSocketResponse(
            max_msg_size=self.config.max_message_bytes, autoping=True, heartbeat=None
        )
        if not ws.can_prepare(request).ok:
            return self._refuse(request, 426, "not a WebSocket upgrade")
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

        try:
            await ws.prepare(request)
            conn = StreamConnection(
                ws,
                self.hook,
                self.audit,
                allowed=allowed,
                remote=request.remote or "",
                idle_timeout=self.config.idle_timeout,
                max_call_seconds=self.config.max_call_seconds,
                tenant_parameter=self.config.tenant_parameter,
                on_sealed=self.on_sealed,
                on_finalised=release,
                worker=self.worker,
            )
            self.accepted += 1
            self.active.add(conn)
            try:
                await conn.run()
            finally:
                self.active.discard(conn)
        finally:
            release()
        return ws

    async def watch_idle(self) -> None:
        """Close streams that sent nothing for ``idle_timeout`` (runs until cancelled).

        One task for every stream instead of a timer per message; a stream is
        closed between ``idle_timeout`` and 1.25 x ``idle_timeout`` after its last message.
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
        await asyncio.gather(*(conn.go_away() for conn in list(self.active)))

    async def wait_no_streams(self) -> None:
        """Wait until no stream is open (every recording finalised)."""
        await self._no_streams.wait()


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """TLS 1.2+ from ``tls_cert``/``tls_key``, or None.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    return server_tls_context(config.tls_cert, config.tls_key)


@dataclass(slots=True)
class RunningStreams:
    """A listening endpoint.  ``url`` is its WebSocket base (``ws://127.0.0.1:PORT/streams``)."""

    server: StreamsServer
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "wss" if self.server.tls else "ws"
        return f"{scheme}://{host}:{self.port}{self.server.config.path}"

    watchdog: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """Stop accepting, close open streams (finalised incomplete), stop listening."""
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
        await self.server.close_all()
        try:
            await asyncio.wait_for(self.server.wait_no_streams(), SHUTDOWN_GRACE)
        finally:
            await self.runner.cleanup()


async def start_streams_server(
    server: StreamsServer, *, reuse_port: bool = False
) -> RunningStreams:
    """Listen on ``[server] listen`` (``reuse_port``: one of several processes on one port).

    Raises:
        ConfigError: bad TLS material, or the address cannot be bound.
    """
    cfg = server.config
    tls = tls_context(cfg)
    server.tls = tls is not None
    runner = web.AppRunner(
        server.app(),
        access_log=None,  # request lines hold the secret: never logged
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE,
        keepalive_timeout=HANDSHAKE_TIMEOUT,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_LINE_BYTES,
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        cfg.host,
        cfg.port,
        ssl_context=tls,
        reuse_address=True,
        reuse_port=reuse_port or None,
        backlog=4096,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        msg = f"[server] listen {cfg.host}:{cfg.port}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    port = runner.addresses[0][1] if runner.addresses else cfg.port
    running = RunningStreams(server, runner, cfg.host, int(port))
    running.watchdog = asyncio.get_running_loop().create_task(server.watch_idle())
    return running
