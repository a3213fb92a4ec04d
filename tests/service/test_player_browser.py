"""The player page in headless Chromium, used as a quality supervisor uses it.

Uses Debian's ``chromium`` (/usr/bin/chromium) driven by Playwright for Python with
the system browser (no downloaded browser); skipped only when that browser or
Playwright is absent.  A real RCS on loopback serves an archive made here: acme's
call ``call-1`` (15 s WAV) with its screen recording (WebM, started 2 s later),
twelve short IVR recordings on other days, and globex's ``call-9``.

Screenshots at 1280x720 and 390x844 are written under the test's tmp dir and, if
``RECSTREAM_ARTEFACTS`` is set, copied there (``.ci/run`` sets ``artefacts/``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recstream.format import MediaKind
from tests.service.conftest import (
    SAMPLES,
    Keys,
    ServerThread,
    request,
    seal_to,
    shared_rcs,
    wait_for_audit,
)

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium)",
)

DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}
ZONE = "Europe/Berlin"
CALL_START = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
SCREEN_LAG_MS = 2000
IVR_CALLS = 12


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright for Python is not installed (pip install playwright)",
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def player_archive(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    root = tmp_path_factory.mktemp("player-archive")
    start = int(CALL_START.timestamp() * 1000)
    voice, screen = MediaKind.VOICE, MediaKind.SCREEN
    seal_to(root, "acme/call-1.rsv", keys.acme, (SAMPLES / "call.wav").read_bytes(),
          recording_id="call-1", tenant="acme", media_kind=voice, media_type="audio/wav",
          created_ms=start)  # fmt: skip
    seal_to(root, "acme/call-1-screen.rsv", keys.acme, (SAMPLES / "screen.webm").read_bytes(),
          recording_id="call-1", tenant="acme", media_kind=screen, media_type="video/webm",
          created_ms=start + SCREEN_LAG_MS)  # fmt: skip
    for i in range(IVR_CALLS):  # 8-19 November, one a day, 8 s of mu-law each
        t = int(dt.datetime(2026, 11, 8 + i, 14, tzinfo=dt.UTC).timestamp() * 1000) + 1
        seal_to(root, f"acme/ivr/ivr-{i:03}.rsv", keys.acme, b"\xff" * 64_000,
              recording_id=f"ivr-{i:03}", tenant="acme", media_kind=voice,
              media_type="audio/basic", created_ms=t)  # fmt: skip
    seal_to(root, "globex/call-9.rsv", keys.globex, (SAMPLES / "call.wav").read_bytes(),
          recording_id="call-9", tenant="globex", media_kind=voice, media_type="audio/wav",
          created_ms=start - 3_600_000)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, player_archive: Path
) -> Iterator[ServerThread]:
    yield from shared_rcs(tmp_path_factory, keys, player_archive, "rcs-player")


def keep(tmp_path: Path, page: Any, name: str) -> Path:
    """A screenshot kept as a test artefact."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    dest = os.environ.get("RECSTREAM_ARTEFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(dest) / name)
    return path


class Session:
    """A browser tab on the player, with what it asked for recorded."""

    def __init__(self, browser: Any, rcs: ServerThread, viewport: dict[str, int] = DESKTOP):
        self.context = browser.new_context(viewport=viewport, timezone_id=ZONE, locale="en-GB")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.tokens: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)
        self.page.on("request", self._request)
        self.rcs = rcs
        resp = self.page.goto(rcs.url + "/")
        assert resp.status == 200
        self.csp = resp.headers["content-security-policy"]

    def _console(self, msg: Any) -> None:
        # the CSP allows nothing the page does not need: a violation is a bug
        if "Content Security Policy" in msg.text:
            self.errors.append(msg.text)

    def _request(self, req: Any) -> None:
        self.urls.append(req.url)
        auth = req.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            self.tokens.append(auth.removeprefix("Bearer "))

    def sign_in(self, user: str, password: str) -> None:
        self.page.fill("#user", user)
        self.page.fill("#password", password)
        self.page.click("#sign-in-button")

    def signed_in(self, user: str) -> None:
        from tests.service.conftest import PASSWORDS

        self.sign_in(user, PASSWORDS[user])
        self.page.wait_for_selector("#interactions tbody tr", timeout=20_000)

    def rows(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#interactions tbody tr", "rows => rows.map(r => r.dataset.id)"
        )

    def wait_rows(self, pred: str) -> None:
        """Wait until the rows (array of ids, ``ids``) satisfy ``pred`` after a reload."""
        self.page.wait_for_function(
            "() => { const s = document.getElementById('status').textContent;"
            " if (s.startsWith('Loading')) return false;"
            " const ids = Array.from(document.querySelectorAll('#interactions tbody tr'))"
            f".map(r => r.dataset.id); return {pred}; }}",
            timeout=20_000,
        )

    def close(self) -> None:
        assert self.errors == []
        assert all(u.startswith(self.rcs.url) for u in self.urls), self.urls  # nothing external
        self.context.close()


def test_sign_in_refuses_a_wrong_password_then_lists(
    browser: Any, server: ServerThread, tmp_path: Path
) -> None:
    s = Session(browser, server)
    page = s.page
    assert "default-src 'none'" in s.csp and "script-src 'self'" in s.csp
    assert page.is_visible("#sign-in-form") and not page.is_visible("#browse")
    keep(tmp_path, page, "sign-in-1280x720.png")
    s.sign_in("alice", "not-her-password")
    page.wait_for_function(
        "() => document.getElementById('sign-in-error').textContent.includes('Wrong')",
        timeout=20_000,
    )
    assert not page.is_visible("#browse")
    s.signed_in("alice")
    assert s.rows()[0] == "acme/call-1"  # newest first; grouped: one row for call + screen
    assert len(s.rows()) == 1 + IVR_CALLS
    assert "globex/call-9" not in s.rows()
    row = page.locator('#interactions tr[data-id="acme/call-1"]')
    text = row.inner_text()
    # 09:30 UTC is 10:30 in Berlin, shown with its zone
    assert "20 Nov 2026" in text and "10:30:00" in text and ("CET" in text or "GMT+1" in text)
    assert "Call" in text and "Screen" in text and "2 files" in text
    assert "244 KiB" in text or "243 KiB" in text  # 240,044 + 9,645 bytes, not raw bytes
    ivr = page.locator('#interactions tr[data-id="acme/ivr-011"]').inner_text()
    assert "0:08" in ivr and "62.5 KiB" in ivr  # duration from the header: 64,000 B of mu-law
    assert ZONE in page.inner_text("#zone-note")
    # the token lives in the page's memory only
    assert page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]") == [
        0,
        0,
        "",
    ]
    # no signature field in this listing: no badge, nothing odd
    assert page.locator("#interactions .sig").count() == 0
    assert "undefined" not in page.inner_text("#interactions")
    keep(tmp_path, page, "list-1280x720.png")
    s.close()


def test_search_filter_and_page(browser: Any, server: ServerThread) -> None:
    s = Session(browser, server)
    page = s.page
    s.signed_in("mo")  # both tenants
    assert len(s.rows()) == 1 + IVR_CALLS + 1
    # search: a substring of the recording ID
    page.fill("#f-q", "VR-01")
    page.click("#f-search")
    s.wait_rows("ids.length === 2")
    assert sorted(s.rows()) == ["acme/ivr-010", "acme/ivr-011"]
    page.click("#f-clear")
    s.wait_rows("ids.length === 14")
    # tenant filter (the select offers the user's tenants)
    options = page.eval_on_selector_all("#f-tenant option", "os => os.map(o => o.value)")
    assert options == ["", "acme", "globex"]
    page.select_option("#f-tenant", "globex")
    s.wait_rows("ids.length === 1")
    assert s.rows() == ["globex/call-9"]
    page.select_option("#f-tenant", "")
    s.wait_rows("ids.length === 14")
    # date range: local days 12-14 November (Berlin)
    page.fill("#f-from", "2026-11-12")
    page.fill("#f-to", "2026-11-14")
    page.click("#f-search")
    s.wait_rows("ids.length === 3")
    assert sorted(s.rows()) == ["acme/ivr-004", "acme/ivr-005", "acme/ivr-006"]
    # media kind: only call-1 has a screen recording
    page.click("#f-clear")
    s.wait_rows("ids.length === 14")
    page.select_option("#f-kind", "screen")
    s.wait_rows("ids.length === 1")
    assert s.rows() == ["acme/call-1"]
    page.select_option("#f-kind", "")
    s.wait_rows("ids.length === 14")
    # pages of 10: server-side, with Next and Previous
    page.select_option("#page-size", "10")
    s.wait_rows("ids.length === 10")
    first = s.rows()
    assert page.is_disabled("#prev") and not page.is_disabled("#next")
    page.click("#next")
    s.wait_rows("ids.length === 4")
    second = s.rows()
    assert not set(first) & set(second) and len(set(first + second)) == 14
    assert page.is_disabled("#next") and "Page 2" in page.inner_text("#page-no")
    page.click("#prev")
    s.wait_rows("ids.length === 10")
    assert s.rows() == first
    asked = [u for u in s.urls if "/rcs/interactions" in u]
    assert any("limit=10" in u and "cursor=" in u for u in asked)
    s.close()


def _playing(page: Any, seconds: float) -> None:
    page.wait_for_function(
        "() => { const a = document.getElementById('audio');"
        f" return !a.paused && a.currentTime > {seconds}; }}",
        timeout=30_000,
    )


def _in_step(page: Any) -> None:
    """The screen recording is within 0.3 s of where the call's clock puts it."""
    page.wait_for_function(
        "() => { const v = document.getElementById('video');"
        " const d = window.recstreamPlayer.drift();"
        " return !v.paused && !v.seeking && v.readyState >= 2 && Math.abs(d) < 0.3; }",
        timeout=30_000,
    )


def test_open_play_seek_and_sign_out(browser: Any, server: ServerThread, tmp_path: Path) -> None:
    s = Session(browser, server)
    page = s.page
    s.signed_in("alice")
    page.click('#interactions tr[data-id="acme/call-1"] button.open')
    page.wait_for_selector("#player:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "player-title"
    assert page.locator("#members li").count() == 2
    page.wait_for_function("() => !document.getElementById('play').disabled", timeout=20_000)
    # the waveform, decoded in the page from the decrypted call audio
    page.wait_for_function(
        "() => { const p = window.recstreamPlayer.peaks; return p && Math.max(...p) > 0.01; }",
        timeout=30_000,
    )
    # Space plays (focus is on the player's heading, not a button)
    page.keyboard.press("Space")
    _playing(page, 2.5)  # past the 2 s the screen recording starts later
    assert page.evaluate("document.getElementById('audio').duration") == pytest.approx(15, abs=0.1)
    _in_step(page)
    assert page.get_attribute("#play", "aria-label") == "Pause"
    assert page.evaluate("document.getElementById('video').muted")  # the call is the sound
    # the WAV's length is not in the listing: the page shows it once the audio has it
    row = page.locator('#interactions tr[data-id="acme/call-1"] td[data-label="Duration"]')
    assert row.inner_text() == "0:15"
    keep(tmp_path, page, "playing-1280x720.png")
    # click the timeline at 60 %: the call jumps to ~9 s, the screen to ~7 s
    box = page.locator("#wave").bounding_box()
    page.locator("#wave").click(position={"x": box["width"] * 0.6, "y": box["height"] / 2})
    at = page.evaluate("document.getElementById('audio').currentTime")
    assert 8.6 < at < 9.8, at
    _in_step(page)
    video_at = page.evaluate("document.getElementById('video').currentTime")
    assert 6.3 < video_at < 8.2, video_at
    # keyboard: ← 5 s back, → 5 s forward (focus on the timeline slider)
    page.focus("#timeline")
    before = page.evaluate("document.getElementById('audio').currentTime")
    page.keyboard.press("ArrowLeft")
    after = page.evaluate("document.getElementById('audio').currentTime")
    assert before - 5.6 < after < before - 4.4, (before, after)
    page.keyboard.press("ArrowRight")
    again = page.evaluate("document.getElementById('audio').currentTime")
    assert after + 4.4 < again < after + 5.6, (after, again)
    _in_step(page)
    now = page.get_attribute("#timeline", "aria-valuenow")
    assert now is not None and 3 <= int(now) <= 15
    page.keyboard.press("Space")  # pause
    page.wait_for_function("() => document.getElementById('audio').paused", timeout=10_000)
    page.wait_for_function("() => document.getElementById('video').paused", timeout=10_000)
    # media went through tickets (Range), never with the token or Basic
    plays = [a for a in server.audit() if a["event"] == "playback" and a["user"] == "alice"]
    assert plays and {a["auth"] for a in plays} == {"ticket"}
    assert {a["file"] for a in plays} == {"acme/call-1.rsv", "acme/call-1-screen.rsv"}
    # sign out: the token is revoked and forgotten; the list no longer loads
    token = s.tokens[-1]
    page.click("#sign-out")
    page.wait_for_selector("#sign-in-form", state="visible")
    assert "Signed out" in page.inner_text("#sign-in-error")
    assert page.locator("#interactions tbody tr").count() == 0
    assert page.is_hidden("#player")
    r = request(
        server.url, "GET", "/rcs/interactions", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status == 401
    status = page.evaluate(
        "() => fetch('/rcs/interactions', {credentials: 'omit'}).then(r => r.status)"
    )
    assert status == 401
    s.close()


def test_too_many_failed_sign_ins_say_when_to_retry(
    browser: Any, start_rcs: Any, player_archive: Path
) -> None:
    st: ServerThread = start_rcs(
        root=player_archive, extra="max_failures = 1\nfailure_window = 600"
    )
    s = Session(browser, st)
    page = s.page
    s.sign_in("alice", "wrong-1")
    page.wait_for_function(
        "() => document.getElementById('sign-in-error').textContent.includes('Wrong')",
        timeout=20_000,
    )
    s.sign_in("alice", "wrong-2")  # over the limit: 429 with Retry-After
    page.wait_for_function(
        "() => /Try again in \\d+ seconds/"
        ".test(document.getElementById('sign-in-error').textContent)",
        timeout=20_000,
    )
    assert not page.is_visible("#browse")
    s.close()


def test_messages_after_sign_in(browser: Any, server: ServerThread) -> None:
    s = Session(browser, server)
    page = s.page
    s.signed_in("alice")
    # a network failure: a message and a Retry that works once the network is back
    page.route("**/rcs/interactions*", lambda route: route.abort("connectionrefused"))
    page.click("#f-search")
    page.wait_for_selector("#message:not([hidden])")
    assert "network" in page.inner_text("#message-text")
    assert page.is_visible("#retry")
    page.unroute("**/rcs/interactions*")
    page.click("#retry")
    s.wait_rows("ids.length === 13")
    assert page.is_hidden("#message")
    # a 403 is explained, and the session stays
    page.route(
        "**/rcs/interactions*",
        lambda route: route.fulfill(
            status=403,
            content_type="application/json",
            body=json.dumps({"error": "forbidden", "message": "you may not see tenant 'x'"}),
        ),
    )
    page.click("#f-search")
    page.wait_for_function(
        "() => document.getElementById('message-text').textContent.includes('Not allowed')",
        timeout=20_000,
    )
    assert page.is_visible("#browse")
    page.unroute("**/rcs/interactions*")
    # the token revoked elsewhere (or expired): the next request goes back to the form
    token = s.tokens[-1]
    r = request(
        server.url, "DELETE", "/rcs/tokens", headers={"Authorization": f"Bearer {token}"}, user=None
    )
    assert r.status == 204
    page.click("#f-search")
    page.wait_for_selector("#sign-in-form", state="visible")
    assert "sign in again" in page.inner_text("#sign-in-error")
    s.errors.clear()
    s.context.close()


def test_a_refused_ticket_is_renewed_and_playback_resumes(
    browser: Any, server: ServerThread
) -> None:
    s = Session(browser, server)
    page = s.page
    s.signed_in("alice")
    refused: list[str] = []

    def once(route: Any) -> None:
        # the first media element's request is answered as an expired ticket would be
        if not refused and route.request.resource_type == "media":
            refused.append(route.request.url)
            route.fulfill(
                status=403,
                content_type="application/json",
                body='{"error":"invalid_ticket","message":"the playback ticket has expired"}',
            )
        else:
            route.continue_()

    page.route("**/rcs/play/**", once)
    page.click('#interactions tr[data-id="acme/ivr-011"] button.open')
    page.wait_for_selector("#player:not([hidden])")
    page.wait_for_function("() => !document.getElementById('play').disabled", timeout=20_000)
    page.wait_for_function("() => document.getElementById('audio').readyState >= 1", timeout=20_000)
    assert refused
    # raw mu-law plays (served as WAV) and has a waveform; its length came from the header
    assert page.evaluate("document.getElementById('audio').duration") == pytest.approx(8, abs=0.1)
    page.wait_for_function("() => window.recstreamPlayer.peaks !== null", timeout=20_000)
    tickets = [u for u in s.urls if "/rcs/play/" in u]
    assert len(set(tickets)) >= 2  # a new ticket after the refusal
    page.unroute("**/rcs/play/**")
    s.errors.clear()
    s.context.close()


def _with_signatures(route: Any) -> None:
    """The signid branch's field, injected at the API level."""
    resp = route.fetch()
    body = resp.json()
    statuses = ["valid", "invalid", "unsigned", "unchecked"]
    for n, it in enumerate(body["interactions"]):
        for rec in it["recordings"]:
            rec["signature"] = {
                "status": statuses[n % 4],
                "signer": "CN=QA Signer,O=acme",
                "cert_id": "ab" * 32,
            }
    route.fulfill(response=resp, body=json.dumps(body))


def test_signature_status_and_signer_are_shown_when_the_listing_has_them(
    browser: Any, server: ServerThread, tmp_path: Path
) -> None:
    s = Session(browser, server)
    page = s.page
    page.route("**/rcs/interactions*", _with_signatures)
    s.signed_in("alice")
    first = page.locator('#interactions tr[data-id="acme/call-1"] .sig')
    assert first.get_attribute("class") == "badge sig sig-valid"
    assert first.inner_text() == "Signature valid by CN=QA Signer,O=acme"
    second = page.locator("#interactions tbody tr").nth(1).locator(".sig")
    assert "INVALID" in second.inner_text()
    third = page.locator("#interactions tbody tr").nth(2).locator(".sig")
    assert third.inner_text() == "Unsigned"  # no signer to name
    page.click('#interactions tr[data-id="acme/call-1"] button.open')
    page.wait_for_selector("#player:not([hidden])")
    assert page.locator("#members .sig-valid").count() == 2
    keep(tmp_path, page, "signatures-1280x720.png")
    s.close()


def test_keyboard_only_and_a_phone_screen(
    browser: Any, server: ServerThread, tmp_path: Path
) -> None:
    from tests.service.conftest import PASSWORDS

    s = Session(browser, server, PHONE)
    page = s.page
    # keyboard only: the user field has focus; type, Tab, type, Enter
    assert page.evaluate("document.activeElement.id") == "user"
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORDS["alice"])
    page.keyboard.press("Enter")
    page.wait_for_selector("#interactions tbody tr", timeout=20_000)
    # no horizontal scrolling on a phone
    wide = page.evaluate(
        "() => Array.from(document.querySelectorAll('body *')).filter(e =>"
        " e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName + '#' + e.id"
        " + '.' + e.className).slice(0, 8)"
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], wide
    keep(tmp_path, page, "list-390x844.png")
    # Tab to the first "Open" button and press Enter
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('open')"):
            break
    else:
        pytest.fail("no Open button reachable with Tab")
    label = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert label == "Open interaction call-1 of acme"
    page.keyboard.press("Enter")
    page.wait_for_selector("#player:not([hidden])")
    page.wait_for_function("() => !document.getElementById('play').disabled", timeout=20_000)
    page.keyboard.press("Space")
    _playing(page, 0.5)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.locator("#player").scroll_into_view_if_needed()
    keep(tmp_path, page, "player-390x844.png")
    # every form control has a label
    unlabelled = page.evaluate(
        "() => Array.from(document.querySelectorAll('input, select'))"
        ".filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"
    )
    assert unlabelled == []
    s.close()


def test_the_page_through_a_decryption_proxy(
    browser: Any, start_rcs: Any, start_proxy: Any, player_archive: Path
) -> None:
    """Signed in at the proxy: its interactions and its own tickets, played at the RCS."""
    rcs: ServerThread = start_rcs(root=player_archive)
    proxy: ServerThread = start_proxy("/US/AK", "0a1b2c", {"/": rcs.url + "/rcs"})
    s = Session(browser, proxy)
    page = s.page
    s.signed_in("alice")
    assert len(s.rows()) == 1 + IVR_CALLS
    page.click('#interactions tr[data-id="acme/ivr-000"] button.open')
    page.wait_for_function("() => !document.getElementById('play').disabled", timeout=20_000)
    page.keyboard.press("Space")
    _playing(page, 0.5)  # raw mu-law, as WAV from the RCS through the proxy
    page.wait_for_function("() => window.recstreamPlayer.peaks !== null", timeout=20_000)
    play = wait_for_audit(rcs, lambda a: a["event"] == "playback")  # written as it ends
    assert (play["user"], play["auth"], play["file"]) == ("alice", "proxy", "acme/ivr/ivr-000.rsv")
    s.close()
