"""The player page: ``GET /`` lists the caller's recordings and plays them in the browser.

The page, its script and its style are static and hold no data; the list
comes from ``GET /rcs/recordings`` and the media from ``GET
/rcs/recordings/{name}`` (Range requests: the browser's own ``<audio>`` and
``<video>`` elements seek by asking for the bytes they need, and the server
decrypts only those segments).  The browser authenticates with HTTP Basic (it
asks once and resends the credentials with every request, media included).
Names from headers reach the page only as ``textContent``, never as HTML, and
the Content-Security-Policy allows scripts and media from this origin only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

__all__ = ["add_routes"]

PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recstream player</title>
<link rel="stylesheet" href="/player.css">
<script src="/player.js" defer></script>
</head>
<body>
<header><h1>Recordings</h1><p id="status" role="status">Loading…</p></header>
<main>
<table id="recordings" hidden>
<thead><tr><th>Created</th><th>Tenant</th><th>Recording</th><th>Kind</th><th>Type</th>
<th>Size</th><th></th></tr></thead>
<tbody></tbody>
</table>
<section id="player" hidden>
<h2 id="now-playing"></h2>
<audio id="audio" controls preload="metadata" hidden></audio>
<video id="video" controls preload="metadata" hidden></video>
</section>
</main>
</body>
</html>
"""

SCRIPT: Final = r"""'use strict';
(function () {
  const statusEl = document.getElementById('status');
  const table = document.getElementById('recordings');
  const body = table.querySelector('tbody');
  const audio = document.getElementById('audio');
  const video = document.getElementById('video');

  function mediaUrl(id) {
    return '/rcs/recordings/' + id.split('/').map(encodeURIComponent).join('/');
  }

  function cell(row, text) {
    const td = document.createElement('td');
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function play(rec) {
    const el = rec.media_kind === 'screen' ? video : audio;
    const other = el === audio ? video : audio;
    other.pause();
    other.removeAttribute('src');
    other.hidden = true;
    el.hidden = false;
    el.src = mediaUrl(rec.id);
    document.getElementById('now-playing').textContent = rec.recording_id + ' (' + rec.tenant + ')';
    document.getElementById('player').hidden = false;
    window.recstreamPlayer.current = el;
    el.play().catch(function (err) { statusEl.textContent = 'Playback failed: ' + err.message; });
  }

  function show(recordings) {
    body.textContent = '';
    for (const rec of recordings) {
      const row = document.createElement('tr');
      row.dataset.id = rec.id;
      cell(row, new Date(rec.created_ms).toISOString().replace('T', ' ').slice(0, 19));
      cell(row, rec.tenant);
      cell(row, rec.recording_id);
      cell(row, rec.media_kind);
      cell(row, rec.media_type);
      cell(row, rec.size === null ? 'incomplete' : String(rec.size));
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'play';
      button.textContent = 'Play';
      button.addEventListener('click', function () { play(rec); });
      cell(row, '').appendChild(button);
      body.appendChild(row);
    }
    table.hidden = recordings.length === 0;
    statusEl.textContent = recordings.length === 0
      ? 'No recordings of your tenants.' : recordings.length + ' recording(s).';
  }

  window.recstreamPlayer = { current: null, play: play };
  fetch('/rcs/recordings', { credentials: 'same-origin', cache: 'no-store' })
    .then(function (r) {
      if (!r.ok) { throw new Error('the server answered ' + r.status); }
      return r.json();
    })
    .then(function (data) { show(data.recordings); })
    .catch(function (err) { statusEl.textContent = 'Cannot list recordings: ' + err.message; });
})();
"""

STYLE: Final = """body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #ddd; text-align: left; }
video { max-width: 100%; }
"""


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", _static(PAGE, "text/html"))
    app.router.add_get("/player.js", _static(SCRIPT, "text/javascript"))
    app.router.add_get("/player.css", _static(STYLE, "text/css"))


def _static(text: str, content_type: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=text,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    return handler
