"""The HTTP edge: the one table from recstream errors to statuses, and request/response helpers.

:data:`HTTP_STATUS` is looked up along the exception's MRO, like the CLI's
exit-code table.  Error bodies are JSON ``{"error": CODE, "message": TEXT}``
with texts that name what happened, never key material, credentials or
plaintext (:func:`public_message`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from aiohttp import web

from recstream import errors as e
from recstream.service import errors as se
from recstream.service.auth import challenge_headers
from recstream.service.config import IPNetwork
from recstream.service.metrics import Metrics

__all__ = [
    "HTTP_STATUS",
    "BodyReader",
    "abort_response",
    "add_security_headers",
    "check_origin",
    "client_address",
    "error_middleware",
    "json_response",
    "origin_middleware",
    "read_json",
    "refuse_body",
    "status_for",
    "write_with_timeout",
]

log = logging.getLogger("recstream.service")

HTTP_STATUS: Final[dict[type[BaseException], tuple[int, str]]] = {
    se.PayloadTooLargeError: (413, "payload_too_large"),
    se.RangeNotSatisfiableError: (416, "range_not_satisfiable"),
    se.RequestTimeoutError: (408, "request_timeout"),
    se.UnsupportedMediaTypeError: (415, "unsupported_media_type"),
    se.RequestError: (400, "bad_request"),
    se.InvalidTokenError: (401, "invalid_token"),
    se.AuthenticationError: (401, "unauthorized"),
    se.RateLimitedError: (429, "too_many_failed_attempts"),
    se.ForbiddenOriginError: (403, "forbidden_origin"),
    se.TicketError: (403, "invalid_ticket"),
    se.PermissionDeniedError: (403, "forbidden"),
    se.NotFoundError: (404, "not_found"),
    se.ConflictError: (409, "conflict"),
    se.UpstreamError: (502, "bad_gateway"),
    se.StoreTimeoutError: (504, "store_timeout"),
    e.StoreRefusedError: (502, "store_refused"),
    e.StorageError: (502, "store_unavailable"),
    se.TenantMismatchError: (422, "tenant_mismatch"),
    se.ServiceConfigError: (500, "server_misconfigured"),
    e.NotAnEnvelopeError: (422, "not_an_envelope"),
    e.EnvelopeFormatError: (422, "malformed_envelope"),
    e.TruncatedStreamError: (422, "truncated"),
    # issue 16: a tenant's [policy] require_signature refused the recording
    e.UnsignedRecordingError: (403, "signature_required"),
    e.RefusedSignerError: (403, "signer_refused"),
    e.BadSignatureError: (422, "bad_signature"),
    e.IntegrityError: (422, "integrity_failure"),
    e.NoMatchingKeyError: (422, "no_matching_key"),
    e.KeyAccessError: (422, "key_failure"),
    e.KeystoreError: (503, "keystore_unavailable"),
    e.RecstreamError: (500, "internal_error"),
}


def status_for(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, error code) for ``exc`` from :data:`HTTP_STATUS`, along its MRO."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500, "internal_error"


def public_message(exc: BaseException) -> str:
    """What a client may read about ``exc``."""
    if isinstance(exc, e.NoMatchingKeyError):
        # Not the key IDs this server holds: only what the client sent us.
        ids = ", ".join(exc.cert_ids)
        return f"this server holds no key for the certificate(s) of this recording: {ids}"
    internal = e.KeystoreError | se.ServiceConfigError
    if isinstance(exc, internal) or not isinstance(exc, e.RecstreamError):
        return "the server cannot complete this request; see its log"
    return str(exc)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return web.Response(
        text=text + "\n", status=status, content_type="application/json", headers=headers
    )


def error_response(exc: BaseException) -> web.Response:
    status, code = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, se.AuthenticationError):
        headers.update(challenge_headers(isinstance(exc, se.InvalidTokenError)))
    if isinstance(exc, se.RateLimitedError):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, se.RangeNotSatisfiableError):
        headers["Content-Range"] = f"bytes */{exc.size}"
    return json_response({"error": code, "message": public_message(exc)}, status, headers)


SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; media-src 'self'; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
}


async def add_security_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """``on_response_prepare``: on every response, streamed ones included."""
    for k, v in SECURITY_HEADERS.items():
        resp.headers.setdefault(k, v)
    resp.headers["Server"] = "recstream"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


RefusalHook = Callable[[web.Request, BaseException, int], None]


def error_middleware(metrics: Metrics, on_error: RefusalHook | None = None) -> Any:
    """Map errors to JSON responses through :data:`HTTP_STATUS`.

    Args:
        on_error: called with (request, error, status) for every recstream error
            answered (the audit of refusals).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = json_response(
                {"error": exc.reason.lower().replace(" ", "_"), "message": exc.text or exc.reason},
                exc.status,
                {k: v for k, v in exc.headers.items() if k.lower() == "allow"},
            )
        except e.RecstreamError as exc:
            resp = error_response(exc)
            if on_error is not None:
                on_error(request, exc, resp.status)
            if isinstance(exc, se.PayloadTooLargeError):
                await refuse_body(request, resp)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            path = "/rcs/play/…" if request.path.startswith("/rcs/play/") else request.path
            log.exception("internal error on %s %s", request.method, path)  # never a ticket
            resp = error_response(exc)
        metrics.responses.inc(code=f"{resp.status // 100}xx")
        return resp

    return middleware


SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE_FETCHES: Final = frozenset({"same-origin", "none"})  # "none": typed or bookmarked


def check_origin(request: web.Request) -> None:
    """Refuse a state-changing request that a page of another origin made the browser send.

    Browsers send ``Sec-Fetch-Site`` (Fetch Metadata) and ``Origin`` on such
    requests; tools (curl, a proxy, the CLI) send neither and are not affected.

    Raises:
        ForbiddenOriginError: ``Sec-Fetch-Site`` is cross-site or same-site, or
            ``Origin`` is not this server's own.
    """
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in SAME_SITE_FETCHES:
        msg = f"refused: a {site[:20]!r} request from another site may not change anything here"
        raise se.ForbiddenOriginError(msg)
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != f"{request.scheme}://{request.host}".lower():
        msg = "refused: the request comes from a page of another origin"
        raise se.ForbiddenOriginError(msg)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """:func:`check_origin` before every handler (inside :func:`error_middleware`)."""
    check_origin(request)
    return await handler(request)


def client_address(request: web.Request, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer's, or the last ``X-Forwarded-For`` hop if the
    peer is a trusted proxy (one hop: the proxy appends the address it saw)."""
    peer = request.remote or "unknown"
    if not trusted:
        return peer
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(addr in net for net in trusted):
        return peer
    forwarded = request.headers.get("X-Forwarded-For", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


class BodyReader:
    """A request body read in chunks, with an idle timeout *and* a total deadline.

    The idle timeout (``read_timeout``) alone lets a client send one byte every
    few seconds forever, holding a connection and a decryption.  So the whole
    body must also arrive by ``start + read_timeout + received / min_rate``: a
    deadline that grows with what was sent, so an honest slow link is fine and
    a trickle is cut off.

    Raises (from :meth:`read`):
        RequestTimeoutError: a pause over the idle timeout, or the body is late.
        PayloadTooLargeError: over ``limit`` bytes.
    """

    def __init__(
        self, request: web.Request, limit: int, idle_timeout: float, min_rate: float
    ) -> None:
        if request.content_length is not None and request.content_length > limit:
            raise se.PayloadTooLargeError(limit)
        self._content = request.content
        self._limit = limit
        self._idle = idle_timeout
        self._min_rate = min_rate
        self._start = asyncio.get_running_loop().time()
        self.received = 0

    def _left(self) -> float:
        due = self._start + self._idle + self.received / self._min_rate
        return due - asyncio.get_running_loop().time()

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" at the end of the body."""
        left = self._left()
        try:
            async with asyncio.timeout(max(0.0, min(self._idle, left))):
                chunk = await self._content.read(n)
        except TimeoutError:
            if left <= self._idle:
                msg = (
                    f"the request body arrived slower than {self._min_rate:g} bytes/s "
                    "on average; giving up"
                )
            else:
                msg = f"the client sent nothing for {self._idle:g} s"
            raise se.RequestTimeoutError(msg) from None
        self.received += len(chunk)
        if self.received > self._limit:
            raise se.PayloadTooLargeError(self._limit)
        return chunk


async def read_json(
    request: web.Request, limit: int, timeout: float, min_rate: float = 16 * 1024
) -> Any:
    """Read a JSON request body of at most ``limit`` bytes.

    Raises:
        PayloadTooLargeError: the body is over ``limit``.
        RequestTimeoutError: a pause over ``timeout`` seconds, or a trickle (see
            :class:`BodyReader`).
        RequestError: it is not UTF-8 JSON, or nests too deep, or has a number
            too long to convert.
    """
    reader = BodyReader(request, limit, timeout, min_rate)
    body = bytearray()
    while chunk := await reader.read(limit + 1 - len(body)):
        body += chunk
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"the request body is not valid JSON: {exc}"
        raise se.RequestError(msg) from None
    except RecursionError:
        msg = "the request body is not acceptable JSON: nested too deeply"
        raise se.RequestError(msg) from None
    except ValueError:  # an integer of more digits than Python converts (4,300)
        msg = "the request body is not acceptable JSON: a number is too long"
        raise se.RequestError(msg) from None


async def write_with_timeout(resp: web.StreamResponse, data: bytes, timeout: float) -> None:
    """Write ``data``, waiting at most ``timeout`` seconds for a slow client to take it.

    Raises:
        TimeoutError: the client did not read in time.
        ConnectionResetError: the client went away.
    """
    async with asyncio.timeout(timeout):
        await resp.write(data)


async def abort_response(request: web.Request, grace: float = 5.0) -> None:
    """End a response that has started, so that the client sees it is incomplete.

    The connection is closed without the final chunk (chunked encoding) and
    short of Content-Length: every HTTP client reports an incomplete body.
    What was already queued is sent first (it had authenticated), then a FIN;
    the rest of the request body is read and dropped for at most ``grace``
    seconds, because closing with unread input would make the kernel send a
    reset that can destroy the data and the clean end-of-stream in flight
    (RFC 9112 §9.6).
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    if transport.can_write_eof():
        transport.write_eof()
        await _drain(request, grace)
    _close(request, transport, grace)


async def _drain(request: web.Request, grace: float, limit: int | None = None) -> None:
    """Read and drop the rest of the request body: at most ``grace`` s and ``limit`` bytes."""
    try:
        async with asyncio.timeout(grace):
            drained = 0
            while chunk := await request.content.readany():
                drained += len(chunk)
                if limit is not None and drained > limit:
                    return
    except Exception:  # noqa: S110 - best effort: the connection is being dropped anyway
        pass


def _close(request: web.Request, transport: asyncio.Transport, grace: float) -> None:
    transport.close()
    asyncio.get_running_loop().call_later(grace, transport.abort)
    # The connection is finished: without this, aiohttp would go on after the handler
    # reading what is left of the body for up to its lingering time (10 s), even for a
    # response that declined keep-alive (aiohttp issue #1800), and a connection lost
    # meanwhile does not wake that read, so the server's shutdown waited its grace.
    request.protocol.force_close()


# A refused body (413) is not read: after the response, what the client had in flight
# is drained for at most this long and this much (so that a reset does not destroy
# the response), then the connection is closed.
REFUSED_BODY_GRACE: Final = 5.0  # seconds
REFUSED_BODY_DRAIN_BYTES: Final = 8 << 20


async def refuse_body(request: web.Request, resp: web.Response) -> None:
    """Send ``resp`` (a 413) with ``Connection: close`` and close the connection.

    The connection cannot be kept: its request body was not read, and reading a body
    refused for its size is what the refusal avoids.  The response is sent whole
    (and followed by a FIN where the transport can half-close: not over TLS), the
    input already on its way is drained within :data:`REFUSED_BODY_GRACE` and
    :data:`REFUSED_BODY_DRAIN_BYTES` so that a reset does not destroy the response,
    and the connection is closed.
    """
    resp.force_close()
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except ConnectionError:  # the client is gone: nothing to send it
        request.protocol.force_close()
        return
    transport = request.transport
    if transport is None or transport.is_closing():
        request.protocol.force_close()
        return
    if transport.can_write_eof():
        transport.write_eof()
    await _drain(request, REFUSED_BODY_GRACE, REFUSED_BODY_DRAIN_BYTES)
    _close(request, transport, REFUSED_BODY_GRACE)
