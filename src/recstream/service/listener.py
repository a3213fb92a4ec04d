"""The listening socket: a connection cap per client address, and quiet answers to bad requests.

**Connection cap.**  Each connection holds a file descriptor.  Before, 1,100
idle connections from one client exhausted a 1,024-descriptor limit: every
other request failed (including the server's own file and database opens) and
nothing was logged.  Now a connection is admitted only while

* its address has fewer than ``[server] max_connections_per_address`` open (not
  counted for ``trusted_proxies``, which carry many clients), and
* the server has fewer than ``RLIMIT_NOFILE - [server] connection_reserve``
  open: the reserve keeps descriptors for recordings, the settings database,
  the audit log and a proxy's upstream connections, whatever clients do.

A refused connection gets a short ``503`` with ``Retry-After`` and is closed;
each refusal is logged (a WARNING at most once a minute per address) and
audited (rate-limited).  A TLS handshake must finish within ``idle_timeout``.

**Malformed requests** (a bad request line, header or chunk) get one JSON
``400`` with the security headers and ``Server: recstream``: no echo of the
request, no framework version, and no traceback in the log (a DEBUG line).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from recstream.admission import ConnectionLimiter, Throttle, descriptor_limit

__all__ = ["ConnectionLimiter", "GuardedHandler", "descriptor_budget"]

log = logging.getLogger("recstream.service")

WARN_EVERY_SECONDS: Final = 60.0
RETRY_AFTER_SECONDS: Final = 5

_BUSY_BODY: Final = json.dumps(
    {"error": "too_many_connections", "message": "too many open connections; retry later"}
).encode()
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: %d\r\nConnection: close\r\nServer: recstream\r\n\r\n%s"
    % (len(_BUSY_BODY), RETRY_AFTER_SECONDS, _BUSY_BODY)
)


def descriptor_budget(reserve: int) -> int:
    """Connections the server may hold: the soft descriptor limit less ``reserve``."""
    return max(1, descriptor_limit() - reserve)


class RefusalLog:
    """Logs refusals at most once per :data:`WARN_EVERY_SECONDS` per address; audits each."""

    def __init__(self, audit: Callable[[str, str, int], None]) -> None:
        self._warn = Throttle(WARN_EVERY_SECONDS)
        self._audit = audit

    def __call__(self, address: str, reason: str, open_now: int) -> None:
        if self._warn(address, time.monotonic()):
            log.warning(
                "refusing connections from %s (%s limit; %d open from it)",
                address,
                "per-address" if reason == "per_address" else "total",
                open_now,
            )
        self._audit(address, reason, open_now)


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler, with admission control and a quiet ``400``."""

    def __init__(
        self,
        manager: web.Server,
        *,
        limiter: ConnectionLimiter,
        headers: dict[str, str],
        admitted: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._limiter = limiter
        self._headers = headers
        self._address: str | None = None
        # Over TLS the connection was admitted at its accept, before the handshake
        # (recstream.aio.accept): its slot is this handler's from connection_made on.
        self._admitted = admitted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted is not None:
            self._address = self._admitted
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._limiter.admit(address):
            cast(asyncio.WriteTransport, transport).write(_BUSY)
            transport.close()
            return
        self._address = address
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._address is None:
            return  # refused and closing: nothing it sends is read
        super().data_received(data)

    def eof_received(self) -> None:
        if self._address is not None:
            super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is None:
            return  # refused: never handed to aiohttp
        self._limiter.release(self._address)
        self._address = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        else:
            log.debug("malformed request from %s: %s", request.remote, message or exc)
        if request.writer.output_size > 0:
            msg = "a response was sent already; the connection is broken"
            raise ConnectionError(msg)
        code, text = {
            400: ("bad_request", "malformed HTTP request"),
            413: ("payload_too_large", "request head too large"),
            504: ("gateway_timeout", "the request took too long"),
        }.get(status, ("internal_error", "the server cannot complete this request; see its log"))
        body = json.dumps({"error": code, "message": text}) + "\n"
        resp = web.Response(status=status, text=body, content_type="application/json")
        resp.headers.update(self._headers)
        resp.headers["Server"] = "recstream"
        resp.force_close()
        return resp
