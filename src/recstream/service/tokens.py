"""Bearer tokens: ``POST /rcs/tokens`` (with Basic) issues one, ``DELETE /rcs/tokens`` revokes it.

See :mod:`recstream.service.auth` for how they are kept.  The answer follows
RFC 6749 §5.1's shape: ``{"access_token", "token_type": "Bearer", "expires_in"}``.
"""

from __future__ import annotations

from aiohttp import web

from recstream.service.context import CONTEXT
from recstream.service.errors import PermissionDeniedError
from recstream.service.http import json_response

__all__ = ["add_routes"]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/rcs/tokens", handle_issue)
    app.router.add_delete("/rcs/tokens", handle_revoke)


async def handle_issue(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    who = await ctx.authenticate(request)
    if who.method != "basic":
        msg = "tokens are issued for a user name and password (HTTP Basic), not for a token"
        raise PermissionDeniedError(msg)
    token, ttl = ctx.auth.issue_token(who)
    ctx.audit.write("token_issued", **ctx.audit_base(request, who), expires_in=int(ttl))
    body = {"access_token": token, "token_type": "Bearer", "expires_in": int(ttl)}
    return json_response(body, status=201, headers={"Cache-Control": "no-store"})


async def handle_revoke(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    who = await ctx.authenticate(request)
    if who.method != "bearer":
        msg = "send the token to revoke as 'Authorization: Bearer TOKEN'"
        raise PermissionDeniedError(msg)
    token = request.headers["Authorization"].partition(" ")[2].strip()
    ctx.auth.tokens.revoke(token)
    ctx.audit.write("token_revoked", **ctx.audit_base(request, who))
    return web.Response(status=204)
