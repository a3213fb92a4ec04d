"""Playback tickets: how ``<audio>`` and ``<video>`` play with a bearer token.

A media element cannot send an ``Authorization`` header, and the player page
keeps its token in JavaScript memory only (no cookie, no storage).  So the page
asks ``POST /rcs/playback-tickets {"id": NAME}`` (with its token) for a ticket
and gives the element ``/rcs/play/TICKET``: a URL good for **one recording, one
user, a few minutes**, which the element can Range-request as it seeks.

A ticket is ``base64url(claims) "." base64url(HMAC-SHA256(secret, claims))``
under a random per-process secret (a restart ends every ticket, as it ends
every token); the claims name the recording, the user, their credential
version, the SHA-256 of the bearer token it was issued under and an expiry
(at most :data:`TICKET_SECONDS`, never past the token's own).  Checked on every
request: the MAC (constant time), the expiry, the token still live (a sign-out
ends the tickets at once), the user's credential version unchanged, and then
the recording's tenant exactly as a direct playback (another tenant's is a
404).  Each issue is audited (``ticket_issued``) and each playback as usual
(``auth: "ticket"``); the server keeps no access log, and the audit and error
log never write a ticket (the path is written as ``/rcs/play/…``).

A failed ticket is a 403 ``invalid_ticket``, not a 401: a 401's Basic challenge
on a media request would make the browser prompt for a password.  The page
renews a ticket before it expires (and after a 403) and resumes where it was.

We chose tickets over a service worker that adds the header: a worker is
stopped by the browser when idle (the token in its memory goes with it), it
must rebuild media requests in ``same-origin`` mode to carry the header, and it
only exists in secure contexts; a ticket works in every browser and every tool.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from recstream.service.archive import check_name, missing_message
from recstream.service.context import CONTEXT
from recstream.service.decrypt import play_recording
from recstream.service.errors import (
    NotFoundError,
    PermissionDeniedError,
    RequestError,
    TicketError,
)
from recstream.service.http import json_response, read_json
from recstream.service.proxy import FORWARDER

__all__ = ["PLAY_PREFIX", "TICKET_SECONDS", "Ticket", "TicketSigner", "add_routes"]

TICKET_SECONDS: Final = 600  # long enough to start and seek; the page renews it
MAX_TICKET_CHARS: Final = 4096
PLAY_PREFIX: Final = "/rcs/play/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    # strict: urlsafe_b64decode would skip characters outside the alphabet
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a ticket grants: ``user`` (at ``credential``) may play ``name`` until ``expires``."""

    name: str
    user: str
    credential: str
    token_digest: bytes
    expires: float  # on the signer's clock


class TicketSigner:
    """Issues and checks tickets (pure but for the default secret and clock)."""

    def __init__(
        self, secret: bytes | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._clock = clock

    def issue(self, ticket: Ticket) -> str:
        claims = json.dumps(
            {
                "n": ticket.name,
                "u": ticket.user,
                "c": ticket.credential,
                "t": _b64(ticket.token_digest),
                "e": round(ticket.expires, 3),
            },
            ensure_ascii=True,
            separators=(",", ":"),
        ).encode()
        return f"{_b64(claims)}.{_b64(self._mac(claims))}"

    def expiry(self, seconds: float) -> float:
        """When a ticket issued now for ``seconds`` expires, on this signer's clock."""
        return self._clock() + seconds

    def verify(self, text: str) -> Ticket:
        """The ticket's claims.

        Raises:
            TicketError: malformed, not made by this server (MAC), or expired.
        """
        part, dot, mac = text.partition(".")
        try:
            if not dot or len(text) > MAX_TICKET_CHARS:
                raise ValueError
            claims, tag = _unb64(part), _unb64(mac)
        except (binascii.Error, ValueError):
            raise TicketError("malformed playback ticket") from None
        if not hmac.compare_digest(tag, self._mac(claims)):
            raise TicketError("this playback ticket was not issued by this server")
        raw = json.loads(claims)  # ours: the MAC matched
        if raw["e"] <= self._clock():
            raise TicketError("the playback ticket has expired; ask for a new one")
        return Ticket(raw["n"], raw["u"], raw["c"], _unb64(raw["t"]), raw["e"])

    def _mac(self, claims: bytes) -> bytes:
        return hmac.digest(self._secret, b"recstream playback ticket\0" + claims, "sha256")


SIGNER = web.AppKey("recstream_ticket_signer", TicketSigner)


def add_routes(app: web.Application, signer: TicketSigner | None = None) -> None:
    app[SIGNER] = signer or TicketSigner()
    app.router.add_post("/rcs/playback-tickets", handle_issue)
    app.router.add_get(PLAY_PREFIX + "{ticket}", handle_play)


async def handle_issue(request: web.Request) -> web.StreamResponse:
    """``POST /rcs/playback-tickets {"id": NAME}`` with a bearer token:
    ``201 {"url": "/rcs/play/TICKET", "expires_in": SECONDS}``.

    Raises (as HTTP errors): 401 without a live token; 403 for Basic (use the
    recording URL directly); 400 for a bad body; 404 for a recording that is
    not listed for the caller (missing or another tenant's, alike).
    """
    ctx = request.app[CONTEXT]
    who = await ctx.authenticate(request)
    if who.method != "bearer":
        msg = "playback tickets are issued for a bearer token (POST /rcs/tokens first)"
        raise PermissionDeniedError(msg)
    server = ctx.config.server
    body = await read_json(request, server.max_json_bytes, server.read_timeout)
    name = body.get("id") if isinstance(body, dict) else None
    if not isinstance(name, str) or set(body) != {"id"}:
        msg = 'the body must be {"id": "<the recording\'s id from the listing>"}'
        raise RequestError(msg)
    check_name(name)
    if ctx.index is None and ctx.config.proxy is None:
        msg = "this server has no recordings archive ([recordings] root)"
        raise NotFoundError(msg)
    if ctx.index is not None:  # an RCS; a proxy has no index: its RCS checks on playback
        entry = ctx.index.get(name)
        if entry is None or not who.user.may_decrypt(entry.tenant):
            hidden = None if entry is None else "other_tenant"
            raise NotFoundError(missing_message(name), hidden_reason=hidden)
    token = request.headers["Authorization"].partition(" ")[2].strip()
    signer = request.app[SIGNER]
    seconds = min(float(TICKET_SECONDS), ctx.auth.token_left(token))
    expires = signer.expiry(seconds)
    ticket = Ticket(name, who.name, who.user.credential, ctx.auth.tokens.digest(token), expires)
    text = signer.issue(ticket)
    ctx.audit.write("ticket_issued", **ctx.audit_base(request, who), file=name)
    body_out = {"url": PLAY_PREFIX + text, "expires_in": int(seconds)}
    return json_response(body_out, status=201, headers={"Cache-Control": "no-store"})


async def handle_play(request: web.Request) -> web.StreamResponse:
    """``GET /rcs/play/TICKET``: the ticket's recording, with Range, as a direct playback."""
    ctx = request.app[CONTEXT]
    ticket = request.app[SIGNER].verify(request.match_info["ticket"])
    who = await ctx.auth.ticket_holder(ticket.user, ticket.credential, ticket.token_digest)
    if ctx.config.proxy is not None:  # forwarded as the ticket's user, as=wav passed on
        return await request.app[FORWARDER].forward(request, who=who, play=(ticket.name, "wav"))
    # for the browser's media elements: raw G.711 comes as WAV (service/wavwrap.py)
    return await play_recording(request, ctx, who, ticket.name, as_wav=True)
