"""The ops settings API for the decryption proxy (the vendor's URL and request bodies).

``/api/v2/ops/contact-centers/{id}/settings/screen-recording``:

=======  ==================================================================
POST     create an entry: ``{"location": "/US", "value": "https://h:8443/rcs"}`` (201)
GET      list the entries: ``{"settings": [{"location": ..., "value": ...}, ...]}``
PUT      change the value of an existing location: same body as POST
DELETE   remove an entry: ``{"location": "/US"}`` or ``?location=/US`` (204)
=======  ==================================================================

and ``GET .../screen-recording/resolve?nodePath=/US/AK`` says which entry a
node uses.  Only the ops role may call any of them; every change is audited,
and reads too (rate-limited).

* A value must be one of the proxy's ``[proxy] upstreams`` (its config file,
  not this API, decides where credentials and recordings may go); a server
  without ``[proxy]`` accepts none.
* Changes (POST, PUT, DELETE) are refused unless sent as ``application/json``
  (a body) with a bearer token: a browser attaches cached Basic credentials to
  any cross-site form post, never a token, and a cross-site page cannot send
  JSON without a CORS preflight this server never approves.  The origin check
  itself is :func:`recstream.service.http.origin_middleware`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from recstream.service.context import CONTEXT, ServiceContext
from recstream.service.errors import (
    NotFoundError,
    PermissionDeniedError,
    RequestError,
    UnsupportedMediaTypeError,
)
from recstream.service.http import json_response, read_json
from recstream.service.locations import (
    normalize_upstream,
    resolve,
    validate_contact_center,
    validate_location,
)

__all__ = ["add_routes"]

BASE = "/api/v2/ops/contact-centers/{cc}/settings/screen-recording"


def add_routes(app: web.Application) -> None:
    app.router.add_get(BASE + "/resolve", handle_resolve)
    app.router.add_get(BASE, handle_list)
    app.router.add_post(BASE, handle_create)
    app.router.add_put(BASE, handle_update)
    app.router.add_delete(BASE, handle_delete)


def _entry_body(
    data: Any, *, need_value: bool, upstreams: tuple[str, ...] = ()
) -> tuple[str, str | None]:
    if not isinstance(data, dict):
        msg = 'the body must be a JSON object such as {"location": "/US", "value": ".../rcs"}'
        raise RequestError(msg)
    allowed = {"location", "value"} if need_value else {"location"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        msg = f"unknown field(s) {', '.join(map(repr, unknown))}; expected {sorted(allowed)}"
        raise RequestError(msg)
    if "location" not in data:
        msg = "field 'location' is required"
        raise RequestError(msg)
    location = validate_location(data["location"])
    if not need_value:
        return location, None
    if "value" not in data:
        msg = "field 'value' is required"
        raise RequestError(msg)
    value = normalize_upstream(data["value"])
    if value not in upstreams:
        msg = (
            f"value {value[:200]!r} is not one of this proxy's [proxy] upstreams; "
            "an RCS is added to that list in the proxy's configuration file"
            if upstreams
            else "this server is not a decryption proxy (no [proxy] upstreams): "
            "its settings would never be used"
        )
        raise RequestError(msg)
    return location, value


async def _prepare(request: web.Request) -> tuple[ServiceContext, str, dict[str, Any]]:
    ctx = request.app[CONTEXT]
    who = await ctx.require_ops(request)
    if request.method not in ("GET", "HEAD") and who.method == "basic":
        msg = (
            "settings are changed with a bearer token (POST /rcs/tokens with your user name "
            "and password), not with HTTP Basic, which a browser sends for any page"
        )
        raise PermissionDeniedError(msg)
    cc = validate_contact_center(request.match_info["cc"])
    return ctx, cc, {**ctx.audit_base(request, who), "contact_center": cc}


def _upstreams(ctx: ServiceContext) -> tuple[str, ...]:
    return ctx.config.proxy.upstreams if ctx.config.proxy is not None else ()


async def _body(ctx: ServiceContext, request: web.Request) -> Any:
    if request.content_type != "application/json":
        msg = "settings changes must be sent as Content-Type: application/json"
        raise UnsupportedMediaTypeError(msg)
    server = ctx.config.server
    return await read_json(
        request, server.max_json_bytes, server.read_timeout, server.min_body_rate
    )


async def handle_list(request: web.Request) -> web.StreamResponse:
    ctx, cc, audit = await _prepare(request)
    entries = await asyncio.to_thread(ctx.store.locations, cc)
    ctx.audit.write_limited("settings_read", f"user:{audit['user']}", **audit, count=len(entries))
    settings = [{"location": loc, "value": val} for loc, val in entries.items()]
    return json_response({"settings": settings})


async def handle_create(request: web.Request) -> web.StreamResponse:
    ctx, cc, audit = await _prepare(request)
    body = await _body(ctx, request)
    location, value = _entry_body(body, need_value=True, upstreams=_upstreams(ctx))
    assert value is not None
    await asyncio.to_thread(ctx.store.add_location, cc, location, value)
    ctx.audit.write("setting_created", **audit, location=location, value=value)
    return json_response({"location": location, "value": value}, status=201)


async def handle_update(request: web.Request) -> web.StreamResponse:
    ctx, cc, audit = await _prepare(request)
    body = await _body(ctx, request)
    location, value = _entry_body(body, need_value=True, upstreams=_upstreams(ctx))
    assert value is not None
    await asyncio.to_thread(ctx.store.update_location, cc, location, value)
    ctx.audit.write("setting_updated", **audit, location=location, value=value)
    return json_response({"location": location, "value": value})


async def handle_delete(request: web.Request) -> web.StreamResponse:
    ctx, cc, audit = await _prepare(request)
    if "location" in request.query:
        location = validate_location(request.query["location"])
    else:
        location, _ = _entry_body(await _body(ctx, request), need_value=False)
    await asyncio.to_thread(ctx.store.delete_location, cc, location)
    ctx.audit.write("setting_deleted", **audit, location=location)
    return web.Response(status=204)


async def handle_resolve(request: web.Request) -> web.StreamResponse:
    ctx, cc, audit = await _prepare(request)
    node = request.query.get("nodePath")
    if node is None:
        msg = "query parameter nodePath is required, such as ?nodePath=/US/AK"
        raise RequestError(msg)
    node = validate_location(node)
    found = resolve(await asyncio.to_thread(ctx.store.locations, cc), node)
    ctx.audit.write_limited(
        "settings_read", f"user:{audit['user']}", **audit, node=node, found=found is not None
    )
    if found is None:
        msg = f"no entry for {node}, its ancestors or '/' in contact center {cc}"
        raise NotFoundError(msg)
    return json_response({"nodePath": node, "location": found.location, "value": found.value})
