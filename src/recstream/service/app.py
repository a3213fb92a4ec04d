"""Assemble the aiohttp application and run it (plain HTTP on loopback, or TLS).

:func:`build_app` wires a checked :class:`ServiceConfig` and any
:class:`KeyRing` into an application; :func:`start_server` listens and returns
a :class:`RunningServer`.  The CLI (``recstream serve``) and the tests use the
same two functions; only the CLI opens the keystore and picks uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from recstream.aio.accept import TlsListener, bind
from recstream.envelope import KeyRing
from recstream.errors import StorageError
from recstream.service import decrypt, interactions, ops, player, proxy, tickets, tokens
from recstream.service.archive import Archive
from recstream.service.audit import AuditLog
from recstream.service.auth import Authenticator, TokenStore
from recstream.service.config import IPNetwork, ServiceConfig
from recstream.service.context import CONTEXT, ServiceContext
from recstream.service.errors import ServiceConfigError
from recstream.service.http import (
    SECURITY_HEADERS,
    add_security_headers,
    error_middleware,
    json_response,
    origin_middleware,
)
from recstream.service.index import HeaderIndex
from recstream.service.listener import (
    ConnectionLimiter,
    GuardedHandler,
    RefusalLog,
    descriptor_budget,
)
from recstream.service.metrics import CONTENT_TYPE, Metrics
from recstream.service.objects import StoreArchive, StoreIndex, open_store
from recstream.service.ratelimit import FailureLimiter
from recstream.service.signatures import verify_pending
from recstream.service.store import SettingsStore
from recstream.tomlconfig import server_tls_context

__all__ = ["RunningServer", "build_app", "start_server", "tls_context"]

log = logging.getLogger("recstream.service")

MAX_LINE_BYTES: Final = 8190  # request line and each header line (nginx's default is 8 KiB)
MAX_HEADERS: Final = 64
SHUTDOWN_GRACE: Final = 5.0
# Signed recordings verified per index pass in the background: each is a read of the
# whole file, so a large new archive is worked through over several passes.
SIGNATURES_PER_PASS: Final = 32


def build_app(config: ServiceConfig, keyring: KeyRing | None) -> web.Application:
    """The application for ``config``.

    Args:
        keyring: the private keys (an RCS); must be None for a proxy.

    Raises:
        ServiceConfigError: an RCS without a keyring, or a proxy with one; the
            settings database cannot be opened.
    """
    if (config.proxy is None) != (keyring is not None):
        msg = "an RCS needs its keystore, and a decryption proxy must hold no keys"
        raise ServiceConfigError(msg)
    store = SettingsStore.open(config.settings_db)
    metrics = Metrics()
    limiter = FailureLimiter(config.auth.max_failures, config.auth.failure_window)
    auth = Authenticator(
        store, limiter, TokenStore(config.auth.token_ttl), metrics, proxies=config.auth.proxies
    )
    archive: Archive | StoreArchive | None = None
    index: HeaderIndex | None = None
    if config.recordings_url is not None:  # issue 18: recordings on S3 or WebDAV
        archive = open_store(config.recordings_url)
        index = StoreIndex(archive)
    elif config.recordings_root is not None:
        archive = Archive(config.recordings_root)
        index = HeaderIndex(archive)
    ctx = ServiceContext(
        config, store, auth, AuditLog(config.audit_log), metrics, keyring, archive, index
    )
    app = web.Application(
        middlewares=[error_middleware(metrics, ctx.audit_refusal), origin_middleware],
        client_max_size=config.server.max_json_bytes,
    )
    app[CONTEXT] = ctx
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    player.add_routes(app)
    ops.add_routes(app)
    tokens.add_routes(app)  # a proxy issues its own: it authenticates its users itself
    if config.proxy is None:
        decrypt.add_routes(app)
        interactions.add_routes(app)
        tickets.add_routes(app)
    else:
        proxy.add_routes(app)
        tickets.add_routes(app)  # its own tickets, played through its forwarder
    app.on_response_prepare.append(add_security_headers)
    if ctx.index is not None:
        app.cleanup_ctx.append(_indexer)
    app.on_cleanup.append(_close)
    return app


async def _indexer(app: web.Application) -> AsyncIterator[None]:
    """Build the header index in the background, then keep it up to date."""
    ctx = app[CONTEXT]
    index = ctx.index
    assert index is not None

    async def keep_up() -> None:
        pending = True  # signed recordings may await their background verification
        while True:
            changed = 0
            try:
                changed = await asyncio.to_thread(index.refresh)
            except StorageError as exc:  # said once per rescan, no traceback
                log.warning("refreshing the recordings index failed: %s", exc)
            except Exception:  # a bad moment on disk must not stop the updates
                log.exception("refreshing the recordings index failed")
            ctx.index_ready.set()
            if ctx.config.policy.checks_any and (changed or pending):
                pending = await asyncio.to_thread(_verify_signatures, ctx)
            await asyncio.sleep(ctx.config.rescan_interval)

    task = asyncio.create_task(keep_up())
    yield
    index.close()  # a refresh running in its thread stops at the next file
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _verify_signatures(ctx: ServiceContext) -> bool:
    """Verify new signed recordings in the background, a few per pass (issue 16).

    Returns whether more may be waiting (this pass used its whole budget).
    """
    index, archive = ctx.index, ctx.archive
    assert index is not None and archive is not None
    ctx.signatures.retain(index.names())
    try:
        done = verify_pending(
            index.signed(),
            ctx.signatures,
            ctx.config.policy,
            archive.open_recording,
            limit=SIGNATURES_PER_PASS,
            stop=index.closed,
        )
    except Exception:  # the playback path verifies anyway; never stop the updates
        log.exception("verifying recordings' signatures failed")
        return False
    return done >= SIGNATURES_PER_PASS


async def _close(app: web.Application) -> None:
    ctx = app[CONTEXT]
    ctx.auth.close()
    ctx.audit.close()
    ctx.store.close()


async def handle_health(request: web.Request) -> web.StreamResponse:
    """``{"status": "ok", "mode": "rcs"|"proxy"}``, or 503 when the database or archive fails."""
    ctx = request.app[CONTEXT]
    mode = "rcs" if ctx.config.proxy is None else "proxy"
    try:
        await asyncio.to_thread(ctx.store.count_users)
        if ctx.archive is not None:
            async with asyncio.timeout(ctx.config.store_timeout):
                await asyncio.to_thread(ctx.archive.check)
    except Exception:  # any failure is "unhealthy"
        return json_response({"status": "unavailable", "mode": mode}, status=503)
    return json_response({"status": "ok", "mode": mode})


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus metrics: to the ops role (default) or anyone (``[server] metrics = "public"``)."""
    ctx = request.app[CONTEXT]
    if ctx.config.server.metrics != "public":
        await ctx.require_ops(request)
    text = ctx.metrics.render()
    if isinstance(ctx.archive, StoreArchive):
        text += "\n".join(ctx.archive.stats.render()) + "\n"
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def tls_context(config: ServiceConfig) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2+), or None without ``tls_cert``.

    Raises:
        ServiceConfigError: the certificate or key cannot be loaded.
    """
    server = config.server
    return server_tls_context(server.tls_cert, server.tls_key, error=ServiceConfigError)


@dataclass(slots=True)
class RunningServer:
    """A listening server.  ``url`` is its base URL (``https://127.0.0.1:PORT``)."""

    runner: web.AppRunner
    host: str
    port: int
    tls: bool
    listener: asyncio.Server | TlsListener | None = None
    limiter: ConnectionLimiter | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await self.runner.cleanup()


async def start_server(config: ServiceConfig, keyring: KeyRing | None) -> RunningServer:
    """Build the app and listen on ``[server] listen`` (see :mod:`recstream.service.listener`).

    Raises:
        ServiceConfigError: bad TLS material, or the address cannot be bound.
    """
    server = config.server
    tls = tls_context(config)
    app = build_app(config, keyring)
    handler_args: dict[str, Any] = {
        "keepalive_timeout": server.idle_timeout,  # also bounds a slow request head
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_LINE_BYTES,
        "max_headers": MAX_HEADERS,
    }
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE, **handler_args
    )
    await runner.setup()
    ctx = app[CONTEXT]
    limiter = ConnectionLimiter(
        server.max_connections_per_address,
        descriptor_budget(server.connection_reserve),
        RefusalLog(lambda addr, reason, n: _audit_refused_connection(ctx, addr, reason, n)),
        exempt=lambda addr: _is_trusted(addr, server.trusted_proxies),
    )
    manager = runner.server
    assert manager is not None
    loop = asyncio.get_running_loop()

    def handler(admitted: str | None = None) -> GuardedHandler:
        return GuardedHandler(
            manager,
            loop=loop,
            limiter=limiter,
            headers=SECURITY_HEADERS,
            access_log=None,
            admitted=admitted,
            **handler_args,
        )

    listener: asyncio.Server | TlsListener
    try:
        if tls is None:
            listener = await loop.create_server(
                handler, server.host, server.port, reuse_address=True
            )
        else:
            # Admitted (or refused) at the accept, before the handshake: a listener
            # with ssl= would count a connection only once its handshake was done.
            listener = TlsListener(
                bind(server.host, server.port),
                tls,
                lambda address: lambda: handler(address),
                admit=limiter.admit,
                release=limiter.release,
                handshake_timeout=server.idle_timeout,
            )
    except OSError as exc:
        await runner.cleanup()
        msg = f"[server] listen {server.host}:{server.port}: {exc.strerror or exc}"
        raise ServiceConfigError(msg) from None
    port = listener.sockets[0].getsockname()[1] if listener.sockets else server.port
    return RunningServer(runner, server.host, int(port), tls is not None, listener, limiter)


def _is_trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def _audit_refused_connection(ctx: ServiceContext, address: str, reason: str, n: int) -> None:
    ctx.metrics.connections_refused.inc(reason=reason)
    ctx.audit.write_limited(
        "connection_refused", f"client:{address}", client=address, reason=reason, open=n
    )
