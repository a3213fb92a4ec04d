"""Decryption-proxy mode: forward ``/rcs/...`` to the RCS the node's location resolves to.

* **Where**: the node is the proxy's own ``[proxy] node_path``, or the
  ``nodePath`` query parameter (a playback service serving several sites); its
  location entry (the settings API) names an RCS, which must also be one of the
  proxy's ``[proxy] upstreams`` (its configuration file): an entry outside that
  list, however it got into the database, is never contacted.  ``https://``
  upstreams are verified against ``[proxy] ca_file`` (or the system's trust
  store); ``http://`` is accepted only to loopback addresses.
* **Who**: the proxy authenticates the caller itself (its own users: Basic or
  a token it issued), and forwards neither the caller's password nor token:
  the RCS gets a delegation (:mod:`recstream.service.delegation`) naming the
  proxy and the user, for that one request at that one RCS, and applies its
  own record of the user (tenants).
* **What**: only ``/rcs/decrypt``, the listing, ``/rcs/interactions`` and
  ``/rcs/recordings/{name}``, the name checked and re-encoded segment by
  segment (no ``..``, no encoded ``/``); only the listing's ``limit`` and
  ``after``, the interactions' own parameters (checked here first) and a
  recording's ``as`` are passed on.  The proxy issues its own playback tickets
  (:mod:`recstream.service.tickets`) and forwards their playback as the
  ticket's user.

Bodies stream in both directions with bounded buffers.  An RCS that cannot be
reached, or no entry for the node, is a 502 saying which; an RCS that aborts a
response (a tampered recording) makes the proxy abort its own.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import quote

import aiohttp
from aiohttp import web
from yarl import URL

from recstream.errors import RecstreamError
from recstream.service import delegation
from recstream.service.archive import check_name, missing_message
from recstream.service.auth import Principal
from recstream.service.config import ProxyConfig
from recstream.service.context import CONTEXT, ServiceContext
from recstream.service.errors import NotFoundError, UpstreamError
from recstream.service.http import BodyReader, abort_response, write_with_timeout
from recstream.service.interactions import PARAMETERS, parse_query
from recstream.service.locations import Resolution, resolve, validate_location

__all__ = ["Forwarder", "add_routes"]

# Never Authorization: the caller's credentials stay here (see the module docstring).
REQUEST_HEADERS: Final = ("Range", "If-Range", "Content-Type", "Accept")
LISTING_PARAMETERS: Final = ("limit", "after")
PASSED_PARAMETERS: Final[dict[str, frozenset[str]]] = {  # by route: what reaches the RCS
    "/rcs/recordings": frozenset(LISTING_PARAMETERS),
    "/rcs/interactions": PARAMETERS,
}
RECORDING_PARAMETERS: Final = frozenset({"as"})
RESPONSE_HEADERS: Final = (
    "Content-Type",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "WWW-Authenticate",
    "Retry-After",
    "Cache-Control",
)
CHUNK: Final = 256 * 1024


def add_routes(app: web.Application) -> None:
    app.router.add_post("/rcs/decrypt", handle_forward)
    app.router.add_get("/rcs/recordings", handle_forward)
    app.router.add_get("/rcs/interactions", handle_interactions)
    app.router.add_get("/rcs/recordings/{name:.+}", handle_forward)
    app.cleanup_ctx.append(_session)


async def _session(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    assert ctx.config.proxy is not None
    fwd = Forwarder(ctx, ctx.config.proxy)
    app[FORWARDER] = fwd
    yield
    await fwd.close()


async def handle_forward(request: web.Request) -> web.StreamResponse:
    fwd: Forwarder = request.app[FORWARDER]
    return await fwd.forward(request)


async def handle_interactions(request: web.Request) -> web.StreamResponse:
    """Forward ``GET /rcs/interactions`` once its parameters pass the RCS's own checks."""
    who = await request.app[CONTEXT].authenticate(request)
    parse_query(request.query, [k for k, _ in request.query.items()])  # a 400 here, not there
    return await request.app[FORWARDER].forward(request, who=who)


class Forwarder:
    """One HTTP client session to the RCSs, shared by every forwarded request."""

    def __init__(self, ctx: ServiceContext, cfg: ProxyConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        tls = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        server = ctx.config.server
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=256),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=cfg.connect_timeout, sock_read=server.read_timeout
            ),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )

    async def close(self) -> None:
        await self.session.close()

    async def route(self, request: web.Request) -> Resolution:
        """Raises RequestError (bad nodePath), UpstreamError (no entry)."""
        node = validate_location(request.query.get("nodePath", self.cfg.node_path))
        entries = await asyncio.to_thread(self.ctx.store.locations, self.cfg.contact_center)
        found = resolve(entries, node)
        if found is None:
            msg = (
                f"no RCS is configured for node {node} of contact center "
                f"{self.cfg.contact_center}: no entry for it, an ancestor or '/'"
            )
            raise UpstreamError(msg)
        if found.value not in self.cfg.upstreams:
            msg = (
                f"the entry {found.location} for node {node} names {found.value[:200]}, "
                "which is not one of this proxy's [proxy] upstreams: not contacted"
            )
            raise UpstreamError(msg)
        return found

    def target(
        self, request: web.Request, found: Resolution, play: tuple[str, str] | None = None
    ) -> URL:
        """The upstream URL: a known route, its name re-encoded segment by segment.

        Args:
            play: (recording name, ``as``) of a ticket's playback, instead of the
                request's own path and query.
        """
        suffix = request.path[len("/rcs") :]
        query = [(k, v) for k, v in request.query.items() if k in self._passed(request)]
        if play is not None or "name" in request.match_info:
            name = play[0] if play is not None else request.match_info["name"]
            raw = request.raw_path.lower()
            if play is None and ("%2f" in raw or "%5c" in raw):  # an encoded '/' or '\\'
                raise NotFoundError(missing_message(name))  # as a missing file
            segments = check_name(name)
            suffix = "/recordings/" + "/".join(quote(seg, safe="") for seg in segments)
            if play is not None:
                query = [("as", play[1])]
        text = found.value + suffix
        url = URL(text, encoded=True)
        return url.with_query(query) if query else url

    @staticmethod
    def _passed(request: web.Request) -> frozenset[str]:
        if "name" in request.match_info:
            return RECORDING_PARAMETERS
        return PASSED_PARAMETERS.get(request.path, frozenset())

    def _delegation(self, who: Principal, method: str, target: URL) -> tuple[str, str]:
        """(Host, Authorization) for ``target``: the RCS sees this proxy vouching for ``who``."""
        host = target.raw_host or ""
        shown = f"[{host}]" if ":" in host else host
        aud = shown if target.is_default_port() else f"{shown}:{target.port}"
        claims = delegation.new_claims(
            self.cfg.identity,
            who.name,
            aud,
            method=method,
            path=target.raw_path_qs,
            now=time.time(),
        )
        return aud, delegation.sign(self.cfg.identity_key, claims)

    async def forward(
        self,
        request: web.Request,
        *,
        who: Principal | None = None,
        play: tuple[str, str] | None = None,
    ) -> web.StreamResponse:
        """Forward ``request`` (or a ticket's ``play``, see :meth:`target`) for ``who``
        (default: whoever the request authenticates as)."""
        started = time.perf_counter()
        if who is None:
            who = await self.ctx.authenticate(request)
        found = await self.route(request)
        try:
            target = self.target(request, found, play)
        except NotFoundError:
            self.ctx.audit.write_limited(
                "forward",
                f"client:{self.ctx.client(request)}",
                **self.ctx.audit_base(request, who),
                method=request.method,
                path=request.raw_path if play is None else "/rcs/play/…",
                result="bad_name",
            )
            raise
        record = {
            **self.ctx.audit_base(request, who),
            "method": request.method,
            "path": request.path if play is None else "/rcs/play/…",  # never the ticket
            "node": found.node_path,
            "location": found.location,
            "target": found.value,
        }
        body = _Upload(request, self.ctx) if request.method == "POST" else None
        sent = 0
        resp: web.StreamResponse | None = None
        try:
            async with self.session.request(
                request.method,
                target,
                headers=self._headers(request, who, target),
                data=body.chunks() if body is not None else None,
                allow_redirects=False,
            ) as up:
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for name in RESPONSE_HEADERS:
                    if name in up.headers:
                        resp.headers[name] = up.headers[name]
                if up.content_length is not None:
                    resp.content_length = up.content_length
                await resp.prepare(request)
                timeout = self.ctx.config.server.write_timeout
                async for chunk in up.content.iter_chunked(CHUNK):
                    await write_with_timeout(resp, chunk, timeout)
                    sent += len(chunk)
                await resp.write_eof()
        except (aiohttp.ClientError, TimeoutError, ConnectionError, RecstreamError) as exc:
            result = _failure(exc, body)
            self._done(record, started, result, sent, None)
            if resp is None or not resp.prepared:
                if body is not None and body.error is not None:
                    raise body.error from None
                if isinstance(exc, RecstreamError):
                    raise
                raise UpstreamError(_unreachable(found, exc), found.value) from None
            await abort_response(
                request, self.ctx.config.server.write_timeout
            )  # RCS broke off: so do we
            return resp
        self._done(record, started, "ok", sent, resp.status)
        return resp

    def _headers(self, request: web.Request, who: Principal, target: URL) -> dict[str, str]:
        headers = {k: request.headers[k] for k in REQUEST_HEADERS if k in request.headers}
        headers["Host"], headers["Authorization"] = self._delegation(who, request.method, target)
        if request.method == "POST" and request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        # One hop: the client as this proxy sees it (the RCS trusts it via
        # [server] trusted_proxies, so its failure limits apply per real client).
        headers["X-Forwarded-For"] = self.ctx.client(request)
        headers["X-Forwarded-Proto"] = request.scheme
        return headers

    def _done(
        self, record: dict[str, object], started: float, result: str, sent: int, status: int | None
    ) -> None:
        self.ctx.metrics.proxy_requests.inc(result=result)
        ms = round((time.perf_counter() - started) * 1000, 1)
        self.ctx.audit.write("forward", **record, status=status, bytes=sent, result=result, ms=ms)


class _Upload:
    """The caller's request body, streamed upstream with the same limits as an RCS."""

    def __init__(self, request: web.Request, ctx: ServiceContext) -> None:
        server = ctx.config.server
        self._body = BodyReader(
            request, server.max_body_bytes, server.read_timeout, server.min_body_rate
        )
        self.error: RecstreamError | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await self._body.read(CHUNK)
            except RecstreamError as exc:
                self.error = exc
                raise
            if not chunk:
                return
            yield chunk


FORWARDER = web.AppKey("recstream_forwarder", Forwarder)


def _failure(exc: BaseException, body: _Upload | None) -> str:
    if body is not None and body.error is not None:
        return "client_error"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "upstream_aborted"
    if isinstance(exc, TimeoutError | ConnectionResetError):
        return "client_gone_or_timeout"
    return "upstream_unreachable"


def _unreachable(found: Resolution, exc: BaseException) -> str:
    reason = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
    detail = getattr(exc, "os_error", None) or getattr(exc, "message", None) or ""
    extra = f" ({detail})" if detail else ""
    return (
        f"the RCS for {found.node_path} (entry {found.location}) at {found.value} "
        f"is unreachable: {reason}{extra}"
    )
