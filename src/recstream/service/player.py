"""The player page: ``GET /`` is what a quality supervisor uses to find and play calls.

The page (``static/player.html``), its script and its style are static and hold
no data; they are package files, served from memory with a CSP that allows
nothing from another origin (the page works offline).  What the page does:

* **Sign-in** with a user name and password, exchanged once for a bearer token
  (``POST /rcs/tokens``) that stays in the script's memory only (no cookie, no
  web storage, so no CSRF surface and nothing left behind); sign-out revokes it
  (``DELETE /rcs/tokens``).  401 goes back to the form; 403, 429 (with its
  ``Retry-After``) and network errors get their own messages and a Retry.
* **Interactions** from ``GET /rcs/interactions``
  (:mod:`recstream.service.interactions`): search by recording ID, filter by
  tenant, date range and media, paged on the server.  Local times with the
  zone, human sizes, durations, and the recordings' signature status when the
  listing carries one.
* **Playback** through playback tickets (:mod:`recstream.service.tickets`): the
  call and its screen recording on one timeline (the call's clock; the video
  follows it, shifted by the difference of their start times, jumping when
  more than 0.3 s off and easing its playback rate when 0.04-0.3 s off), a
  click-to-seek waveform decoded in the browser from the decrypted call audio,
  and keys: Space, ←/→ (±5 s).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final

from aiohttp import web

__all__ = ["PAGE", "SCRIPT", "STYLE", "add_routes"]

_STATIC: Final = resources.files("recstream.service").joinpath("static")
PAGE: Final = _STATIC.joinpath("player.html").read_text("utf-8")
SCRIPT: Final = _STATIC.joinpath("player.js").read_text("utf-8")
STYLE: Final = _STATIC.joinpath("player.css").read_text("utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", _static(PAGE, "text/html"))
    app.router.add_get("/player.js", _static(SCRIPT, "text/javascript"))
    app.router.add_get("/player.css", _static(STYLE, "text/css"))


def _static(text: str, content_type: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    body = text.encode("utf-8")

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    return handler
