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
    "abort_response",
    "add_security_headers",
    "client_address",
    "error_middleware",
    "json_response",
    "read_json",
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
    se.PermissionDeniedError: (403, "forbidden"),
    se.NotFoundError: (404, "not_found"),
    se.ConflictError: (409, "conflict"),
    se.UpstreamError: (502, "bad_gateway"),
    se.ConfigError: (500, "server_misconfigured"),
    e.NotAnEnvelopeError: (422, "not_an_envelope"),
    e.EnvelopeFormatError: (422, "malformed_envelope"),
    e.TruncatedStreamError: (422, "truncated"),
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
    if isinstance(exc, e.KeystoreError | se.ConfigError) or not isinstance(exc, e.RecstreamError):
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
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            log.exception("internal error on %s %s", request.method, request.path)
            resp = error_response(exc)
        metrics.responses.inc(code=f"{resp.status // 100}xx")
        return resp

    return middleware


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


async def read_json(request: web.Request, limit: int, timeout: float) -> Any:
    """Read a JSON request body of at most ``limit`` bytes.

    Raises:
        PayloadTooLargeError: the body is over ``limit``.
        RequestTimeoutError: the client took longer than ``timeout`` seconds.
        RequestError: it is not UTF-8 JSON.
    """
    if request.content_length is not None and request.content_length > limit:
        raise se.PayloadTooLargeError(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    raise se.PayloadTooLargeError(limit)
    except TimeoutError:
        msg = f"the request body did not arrive within {timeout:g} s"
        raise se.RequestTimeoutError(msg) from None
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
    reset that can destroy the data and the clean end-of-stream in flight.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    if transport.can_write_eof():
        transport.write_eof()
        try:
            async with asyncio.timeout(grace):
                while await request.content.readany():
                    pass
        except Exception:  # noqa: S110 - best effort: the connection is being dropped anyway
            pass
    transport.close()
    asyncio.get_running_loop().call_later(grace, transport.abort)
