"""Issue 13, finding 2: a page of another origin cannot change the ops settings (real Chromium).

An ops user whose browser holds Basic credentials for the proxy visits a page
served from another origin (another port on loopback); the page auto-submits a
``text/plain`` form whose body is valid JSON.  Before the fix this created a
settings entry, audited as done by that ops user.
"""

from __future__ import annotations

import html
import http.server
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from recstream.service.store import SettingsStore
from tests.service.conftest import PASSWORDS, ServerThread, wait_for_audit
from tests.service.test_player_browser import CHROMIUM, FLAGS

CC = "0a1b2c"
BASE = f"/api/v2/ops/contact-centers/{CC}/settings/screen-recording"
# The '=' that text/plain form encoding puts between name and value lands inside the URI.
SMUGGLED = "http://127.0.0.1:9/x=y/rcs"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def attacker_site(target: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    name = '{"location":"/US","value":"http://127.0.0.1:9/x'
    value = 'y/rcs"}'
    page = (
        "<!doctype html><title>cat pictures</title>"
        f'<form method="POST" action="{html.escape(target)}" enctype="text/plain">'
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        "</form><script>document.forms[0].submit()</script>"
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/"


def test_cross_origin_form_post_changes_nothing(browser: Any, start_proxy: Any) -> None:
    proxy: ServerThread = start_proxy("/US", CC, upstreams=[SMUGGLED])
    srv, url = attacker_site(proxy.url + BASE)
    context = browser.new_context(
        http_credentials={"username": "olga", "password": PASSWORDS["olga"]}
    )
    try:
        page = context.new_page()
        # Log in once, as the ops user would have (the browser now holds Basic credentials).
        assert page.goto(proxy.url + BASE).status == 200
        with page.expect_response(
            lambda r: BASE in r.url and r.request.method == "POST" and r.status != 401
        ) as info:
            page.goto(url)
        assert info.value.status == 403  # was 201
    finally:
        context.close()
        srv.shutdown()
    store = SettingsStore.open(proxy.config.settings_db)
    try:
        assert store.locations(CC) == {}
    finally:
        store.close()
    rec = wait_for_audit(proxy, lambda a: a["event"] == "refused")
    assert rec["method"] == "POST" and rec["reason"] == "ForbiddenOriginError"
    assert not [a for a in proxy.audit() if a["event"] == "setting_created"]
