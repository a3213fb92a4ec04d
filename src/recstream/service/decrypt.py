"""RCS routes: ``POST /rcs/decrypt`` (streaming) and ``GET /rcs/recordings[/{name}]`` (Range).

**Tamper and truncation signalling** (``POST /rcs/decrypt``): the response
starts only with the first *authenticated* plaintext, so every failure found
before then — not an envelope, no key, another tenant, header MAC, key
commitment, a body shorter than a complete recording (by ``Content-Length``),
a first segment that fails — is an ordinary JSON 4xx with nothing decrypted
sent.  A failure after plaintext has started (a later segment fails, the body
ends without its final segment) **aborts the response**: the connection is
closed short of its ``Content-Length`` (sent whenever the request had one)
or without the final chunk, which every HTTP client reports as an incomplete
body (curl exits 18, aiohttp raises ``ClientPayloadError``, ``http.client``
``IncompleteRead``).  A clean end is the only success; like ``recstream
decrypt``, a client keeps the plaintext only once the body ended cleanly.
Memory stays bounded: one read chunk and one segment per stream.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from aiohttp import web

from recstream.envelope import EnvelopeDecryptor
from recstream.errors import (
    RecstreamError,
    StorageError,
    TruncatedStreamError,
    UnsignedRecordingError,
)
from recstream.format import MAX_HEADER_BYTES, BodyLayout, Header, parse_header
from recstream.parallel import pool_for
from recstream.reader import SegmentReader
from recstream.service.archive import Opened, missing_message
from recstream.service.auth import Principal
from recstream.service.context import AUDITED, CONTEXT, ServiceContext, TracingKeyRing
from recstream.service.errors import (
    NotFoundError,
    PermissionDeniedError,
    RequestError,
    StoreTimeoutError,
)
from recstream.service.http import (
    BodyReader,
    abort_response,
    status_for,
    write_with_timeout,
)
from recstream.service.index import DEFAULT_PAGE, MAX_PAGE, Entry, page_body
from recstream.service.ranges import parse_range
from recstream.service.wavwrap import WAV_TYPE, wav_prefix
from recstream.signing import VerifiedBody, require_valid

__all__ = ["add_routes", "play_recording"]

READ_CHUNK: Final = 256 * 1024  # request body read size: 16 segments
PLAY_CHUNK: Final = 16 * 16 * 1024  # plaintext per read_at on playback: 16 segments
_T = TypeVar("_T")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/rcs/decrypt", handle_decrypt)
    app.router.add_get("/rcs/recordings", handle_list)
    app.router.add_get("/rcs/recordings/{name:.+}", handle_playback)


@dataclass(slots=True)
class _Audit:
    """One decryption's audit record and metrics, written exactly once."""

    ctx: ServiceContext
    endpoint: str
    fields: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    sent: int = 0
    done: bool = False
    resp: web.StreamResponse | None = None  # once streaming may have started

    def header(self, header: Header, who: Principal, hidden: str | None = None) -> None:
        """Check the caller's tenants against ``header``.

        Args:
            hidden: for playback, the archive name: another tenant's recording is
                answered exactly as a missing one (404), so probing names reveals
                nothing; a decrypt caller sent the envelope and gets a 403.
        """
        meta = header.metadata
        self.fields.update(recording=meta.recording_id, tenant=meta.tenant)
        if who.user.may_decrypt(meta.tenant):
            return
        if hidden is not None:
            raise NotFoundError(missing_message(hidden), hidden_reason="other_tenant")
        msg = f"user {who.name!r} may not decrypt recordings of tenant {meta.tenant!r}"
        raise PermissionDeniedError(msg)

    def finish(self, result: str, **extra: Any) -> None:
        if self.done:
            return
        self.done = True
        elapsed = time.perf_counter() - self.started
        m = self.ctx.metrics
        m.decryptions.inc(endpoint=self.endpoint, result=result)
        m.decrypted_bytes.inc(self.sent, endpoint=self.endpoint)
        m.decrypt_seconds.observe(elapsed, endpoint=self.endpoint)
        record = {**self.fields, **extra, "bytes": self.sent, "result": result}
        record["ms"] = round(elapsed * 1000, 1)
        # a signature verdict is written whatever it is: a refused forgery is evidence
        if result == "ok" or self.sent or "cert_id" in self.fields or "signature" in self.fields:
            self.ctx.audit.write(self.endpoint, **record)  # a decryption: always written
        else:  # refused before any key was used: anyone can cause these at will
            self.ctx.audit.write_limited(self.endpoint, f"client:{record['client']}", **record)


def _result(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "client_timeout"
    if isinstance(exc, ConnectionError):
        return "client_disconnected"
    return status_for(exc)[1]


async def handle_decrypt(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    who = await ctx.authenticate(request)
    audit = _Audit(ctx, "decrypt", ctx.audit_base(request, who))
    ctx.metrics.in_flight.inc()
    try:
        resp = await _decrypt(request, ctx, who, audit)
    except (RecstreamError, TimeoutError, ConnectionError) as exc:
        return await _failed(request, audit, exc)
    finally:
        ctx.metrics.in_flight.dec()
    audit.finish("ok")
    return resp


async def _failed(request: web.Request, audit: _Audit, exc: BaseException) -> web.StreamResponse:
    """Audit a failure; re-raise it if nothing was sent yet, else abort the response."""
    hidden = getattr(exc, "hidden_reason", None)
    if isinstance(exc, StorageError):
        hidden = status_for(exc)[1]  # the store's failure, not the client's (audited)
    audit.finish(_result(exc), **({"reason": hidden} if hidden else {}))
    request[AUDITED] = True
    if audit.resp is None or not audit.resp.prepared:
        raise exc
    await abort_response(request, audit.ctx.config.server.write_timeout)
    return audit.resp  # aiohttp's write_eof on the aborted connection is a no-op


async def _decrypt(
    request: web.Request, ctx: ServiceContext, who: Principal, audit: _Audit
) -> web.StreamResponse:
    server = ctx.config.server
    declared = request.content_length
    body = BodyReader(request, server.max_body_bytes, server.read_timeout, server.min_body_rate)
    head = bytearray()
    while True:
        chunk = await body.read(READ_CHUNK)
        if not chunk:
            raise TruncatedStreamError(0, "the request body ends inside the envelope header")
        head += chunk
        parsed = parse_header(bytes(head[:MAX_HEADER_BYTES]))
        if isinstance(parsed, Header):
            break
    audit.header(parsed, who)
    if ctx.config.policy.for_tenant(parsed.metadata.tenant).require_signature:
        # A streamed decryption cannot hold its plaintext back until the trailer has
        # been checked, so a tenant that requires signatures is played from the archive
        # only (the header's tenant is the one the unwrapped key must belong to).
        audit.fields["signature"] = "not_checked"
        msg = (
            f"tenant {parsed.metadata.tenant[:100]!r} requires signed recordings: POST "
            "/rcs/decrypt cannot check a signature before it streams; play the recording "
            "from the archive (GET /rcs/recordings/NAME)"
        )
        raise UnsignedRecordingError(msg)
    expected: int | None = None
    if declared is not None:
        layout = BodyLayout(parsed.body_length(declared))
        if not layout.complete:
            msg = "the request body is shorter than a complete recording"
            raise TruncatedStreamError(layout.full_segments, msg)
        expected = layout.plaintext_length
    assert ctx.keyring is not None
    keys = TracingKeyRing(ctx.keyring)
    dec = EnvelopeDecryptor(keys, pool=pool_for(declared))  # large bodies: every core
    # The first update unwraps the data key (RSA): off the event loop.
    out = await asyncio.to_thread(dec.update, bytes(head))
    audit.fields["cert_id"] = keys.cert_id
    keys.check_tenant(parsed.metadata.tenant)
    stream = _Stream(request, audit, expected, ctx.config.server.write_timeout)
    stream.resp.content_type = safe_media_type(parsed.metadata.media_type)
    stream.resp.headers.update(DECRYPTED_HEADERS)
    while True:
        if out:
            await stream.send(out)
        chunk = await body.read(READ_CHUNK)
        if not chunk:
            break
        out = dec.update(chunk)  # ~0.1 ms per 256 KiB: cheaper than a thread hop
    out = dec.finalize()
    if out:
        await stream.send(out)
    return await stream.finish()


# Decrypted media is served as media only: a recording's MIME type comes from its
# header, which anyone holding a tenant's (public) certificate can write, so
# text/html or javascript would be stored XSS against the player's origin.
_MEDIA_PREFIXES: Final = ("audio/", "video/")
DECRYPTED_HEADERS: Final = {
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "X-Content-Type-Options": "nosniff",
}


def safe_media_type(media_type: str) -> str:
    """The header's MIME type if it is audio or video, else application/octet-stream."""
    return (
        media_type
        if media_type.lower().startswith(_MEDIA_PREFIXES)
        else ("application/octet-stream")
    )


class _Stream:
    """The decrypt response, started lazily with the first authenticated plaintext."""

    def __init__(
        self, request: web.Request, audit: _Audit, length: int | None, timeout: float
    ) -> None:
        self.request = request
        self.audit = audit
        self.resp = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"}
        )
        if length is not None:
            self.resp.content_length = length
        self.timeout = timeout
        audit.resp = self.resp

    async def send(self, data: bytes) -> None:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        await write_with_timeout(self.resp, data, self.timeout)
        self.audit.sent += len(data)

    async def finish(self) -> web.StreamResponse:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        async with asyncio.timeout(self.timeout):
            await self.resp.write_eof()
        return self.resp


async def handle_list(request: web.Request) -> web.StreamResponse:
    """``GET /rcs/recordings?limit=N&after=CURSOR``: a page of the caller's tenants' recordings.

    From the header index only (no file is opened); newest first; ``next`` is the
    cursor of the following page, or null.
    """
    ctx = request.app[CONTEXT]
    who = await ctx.authenticate(request)
    assert ctx.index is not None
    limit = _page_limit(request.query.get("limit"))
    after = request.query.get("after") or None
    await ctx.index_ready.wait()
    failure = getattr(ctx.index, "failure", None)
    if failure is not None:  # a store index whose last refresh failed: say so, not []
        raise failure
    page = ctx.index.page(who.user.tenants, limit, after)
    signature = _signature_field(ctx)
    ctx.audit.write_limited(
        "list",
        f"user:{who.name}",
        **ctx.audit_base(request, who),
        count=len(page.entries),
        after=after is not None,
    )
    return web.Response(
        body=page_body(page, signature), content_type="application/json", charset="utf-8"
    )


_UNSIGNED: Final = b'{"status":"unsigned","signer":null,"cert_id":null}'


def _signature_field(ctx: ServiceContext) -> Callable[[Entry], bytes]:
    """Each listed recording's ``"signature"`` (service/signatures.py says what it means)."""
    policy, cache = ctx.config.policy, ctx.signatures

    def field_for(entry: Entry) -> bytes:
        if not entry.signed:
            return _UNSIGNED
        rule = policy.for_tenant(entry.tenant)
        if rule.signer_ca is not None:
            found = cache.summary(entry.name, entry.stamp, rule.ca_digest)
            if found is not None:
                return found.json
        return entry.claim

    return field_for


def _page_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    # ASCII digits only (str.isdigit() takes "²", which int() refuses) and few of them
    # (int() refuses over 4,300 digits): anything else is the client's error, a 400.
    digits = text.isascii() and text.isdigit() and len(text) <= 9
    if not digits or not 1 <= int(text) <= MAX_PAGE:
        msg = f"limit must be an integer from 1 to {MAX_PAGE}"
        raise RequestError(msg)
    return int(text)


async def handle_playback(request: web.Request) -> web.StreamResponse:
    """``GET /rcs/recordings/{name}[?as=wav]`` (``as=wav``: raw G.711 as WAV, for browsers)."""
    ctx = request.app[CONTEXT]
    who = await ctx.authenticate(request)
    shape = request.query.get("as")
    if shape not in (None, "wav"):
        msg = "'as' must be 'wav' (raw G.711 served as WAV) or absent"
        raise RequestError(msg)
    return await play_recording(request, ctx, who, request.match_info["name"], as_wav=bool(shape))


async def play_recording(
    request: web.Request, ctx: ServiceContext, who: Principal, name: str, *, as_wav: bool = False
) -> web.StreamResponse:
    """Play archive recording ``name`` to ``who`` (Range, tenant check, audit): the
    common end of ``GET /rcs/recordings/{name}`` and of a playback ticket.

    Args:
        as_wav: serve raw G.711 as WAV (:mod:`recstream.service.wavwrap`), for browsers.
    """
    audit = _Audit(ctx, "playback", {**ctx.audit_base(request, who), "file": name})
    assert ctx.archive is not None and ctx.keyring is not None
    archive, keyring = ctx.archive, ctx.keyring
    io = _ArchiveIO(ctx)
    ctx.metrics.in_flight.inc()
    try:
        rec = await io.call(archive.open_recording, name)
        try:
            header = await io.call(archive.recording_header, rec)
            audit.header(header, who, hidden=name)
            verified = await _signature_policy(ctx, rec, name, header, audit, io=io)
            keys = TracingKeyRing(keyring)
            reader = await io.call(
                functools.partial(SegmentReader, rec.source, keys, verified=verified)
            )
            # The decisive check: on the header the reader authenticated, not on the
            # (cached, unauthenticated) one above, which may be stale or raced.
            if reader.header.raw != header.raw:
                audit.header(reader.header, who, hidden=name)
                if reader.header.metadata.tenant != header.metadata.tenant:
                    msg = "the recording changed while it was being opened; try again"
                    raise TruncatedStreamError(0, msg)
            audit.fields["cert_id"] = keys.cert_id
            keys.check_tenant(reader.header.metadata.tenant)
            resp = await _play(request, ctx, reader, audit, io=io, rec=rec, as_wav=as_wav)
        finally:
            rec.close()
    except (RecstreamError, TimeoutError, ConnectionError) as exc:
        return await _failed(request, audit, exc)
    finally:
        ctx.metrics.in_flight.dec()
    audit.finish("ok")
    return resp


class _ArchiveIO:
    """Runs archive reads in a thread; a store's are bounded by ``[recordings] store_timeout``.

    A local disk is not timed (a stuck disk is not the client's problem to hear of
    as a 504); a store request past its bound is a :class:`StoreTimeoutError`.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        store = ctx.config.recordings_url is not None
        self.timeout = ctx.config.store_timeout if store else None

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.to_thread(fn, *args)
        except TimeoutError:
            msg = f"the recordings store did not answer within {self.timeout:g} s"
            raise StoreTimeoutError(msg) from None


async def _signature_policy(
    ctx: ServiceContext, rec: Opened, name: str, header: Header, audit: _Audit, *, io: _ArchiveIO
) -> VerifiedBody | None:
    """Apply the tenant's ``[policy]`` (issue 16); return what Range reads are checked against.

    With a signer CA the file's signature is verified (once per file version:
    ``ctx.signatures``) and its status audited; with ``require_signature`` anything
    but a valid signature is refused here, before any key is used.

    Raises:
        UnsignedRecordingError, BadSignatureError, RefusedSignerError: refused by policy.
    """
    rule = ctx.config.policy.for_tenant(header.metadata.tenant)
    if rule.signer_ca is None:
        return None
    # A verified file is the common case: answered from the cache without a thread hop.
    report = ctx.signatures.lookup(rec, rule)
    if report is None:
        report = await io.call(ctx.signatures.check, rec, name, rule)
    audit.fields["signature"] = report.status.value
    if report.cert_id is not None:
        audit.fields["signer_cert_id"] = report.cert_id
    if rule.require_signature:
        require_valid(report)
    return report.verified


async def _play(
    request: web.Request,
    ctx: ServiceContext,
    reader: SegmentReader,
    audit: _Audit,
    *,
    io: _ArchiveIO,
    rec: Opened,
    as_wav: bool = False,
) -> web.StreamResponse:
    media_type = reader.header.metadata.media_type
    prefix = wav_prefix(media_type, reader.size) if as_wav else None
    lead = len(prefix) if prefix is not None else 0  # bytes served before the plaintext
    etag = f'"{reader.header.mac.hex()[:32]}{"-wav" if lead else ""}"'
    size = lead + reader.size
    rng = parse_range(request.headers.get("Range"), size)
    if_range = request.headers.get("If-Range")
    if rng is not None and if_range is not None and if_range != etag:
        rng = None  # the client holds another version: send it all (RFC 9110 §13.1.5)
    start, end = (rng.start, rng.end) if rng is not None else (0, size)
    resp = web.StreamResponse(
        status=206 if rng is not None else 200,
        headers={
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Cache-Control": "no-store",
            "Content-Type": WAV_TYPE if lead else safe_media_type(media_type),
            **DECRYPTED_HEADERS,
        },
    )
    resp.content_length = end - start
    if rng is not None:
        resp.headers["Content-Range"] = rng.content_range()
        audit.fields["range"] = rng.content_range()
    audit.resp = resp
    await resp.prepare(request)
    timeout = ctx.config.server.write_timeout
    chunk = ctx.archive.read_chunk if ctx.archive is not None else PLAY_CHUNK
    pos = start
    if prefix is not None and pos < lead and request.method != "HEAD":
        head = prefix[pos:end]
        await write_with_timeout(resp, head, timeout)
        pos += len(head)
    while pos < end and request.method != "HEAD":
        data = await io.call(reader.read_at, pos - lead, min(chunk, end - pos))
        await write_with_timeout(resp, data, timeout)
        pos += len(data)
        audit.sent += len(data)
    async with asyncio.timeout(timeout):
        await resp.write_eof()
    return resp
