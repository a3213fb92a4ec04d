"""The player page in headless Chromium: it loads, lists the user's recordings, plays and seeks.

Uses Debian's ``chromium`` (/usr/bin/chromium) driven by Playwright for Python with
the system browser (no downloaded browser).  Skipped only when that browser or
Playwright is absent.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.service.conftest import PASSWORDS, ServerThread

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


def open_player(browser: Any, rcs: ServerThread, user: str) -> Any:
    context = browser.new_context(http_credentials={"username": user, "password": PASSWORDS[user]})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(rcs.url + "/")
    page.wait_for_selector("#recordings tbody tr", timeout=10_000)
    page.errors = errors
    return page


def row_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#recordings tbody tr", "rows => rows.map(r => r.dataset.id)")


def test_page_lists_only_the_users_recordings(browser: Any, rcs: ServerThread) -> None:
    page = open_player(browser, rcs, "bob")
    assert row_ids(page) == ["globex/call-9.rsv"]
    assert "1 recording(s)." in page.inner_text("#status")
    page.context.close()


def test_voice_recording_plays_and_seeks(browser: Any, rcs: ServerThread) -> None:
    page = open_player(browser, rcs, "alice")
    ids = row_ids(page)
    assert set(ids) == {"acme/call-1.rsv", "acme/call-1-screen.rsv", "acme/big.rsv"}
    ranges: list[str] = []
    page.on(
        "request",
        lambda req: (
            ranges.append(req.headers.get("range", "")) if "/rcs/recordings/" in req.url else None
        ),
    )
    page.click('#recordings tr[data-id="acme/call-1.rsv"] button.play')
    page.wait_for_function(
        "() => { const a = document.getElementById('audio');"
        " return !a.paused && a.currentTime > 0.3; }",
        timeout=15_000,
    )
    duration = page.evaluate("document.getElementById('audio').duration")
    assert duration == pytest.approx(15.0, abs=0.1)  # samples/call.wav: 15 s
    # Seek near the end; playback continues from there.
    page.evaluate("document.getElementById('audio').currentTime = 12.0")
    page.wait_for_function(
        "() => { const a = document.getElementById('audio'); "
        "return !a.seeking && a.currentTime > 12.2 && a.currentTime < 15.0; }",
        timeout=15_000,
    )
    assert any(r.startswith("bytes=") for r in ranges)  # the media element used Range requests
    assert page.errors == []
    page.context.close()
    plays = [a for a in rcs.audit() if a["event"] == "playback" and a["file"] == "acme/call-1.rsv"]
    assert plays and all(
        a["user"] == "alice" and a["result"] in ("ok", "client_disconnected") for a in plays
    )
    assert any(a.get("range") for a in plays)


def test_screen_recording_plays_in_a_video_element(browser: Any, rcs: ServerThread) -> None:
    page = open_player(browser, rcs, "alice")
    page.click('#recordings tr[data-id="acme/call-1-screen.rsv"] button.play')
    page.wait_for_function(
        "() => { const v = document.getElementById('video');"
        " return v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0; }",
        timeout=15_000,
    )
    assert page.evaluate("document.getElementById('audio').hidden")
    assert page.evaluate("document.getElementById('video').hidden") is False
    page.context.close()


def test_page_with_a_wrong_password_shows_the_refusal(browser: Any, rcs: ServerThread) -> None:
    context = browser.new_context(http_credentials={"username": "alice", "password": "wrong-pw"})
    page = context.new_page()
    page.goto(rcs.url + "/")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('401')", timeout=10_000
    )
    assert page.eval_on_selector_all("#recordings tbody tr", "rows => rows.length") == 0
    context.close()
