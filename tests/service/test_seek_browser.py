"""A one-hour muxed recording seeks in Chromium after fetching only a small part of it.

A synthetic 60-minute call (a tone, 8 kHz) and screen recording (160x120 VP8, one frame
a second, a keyframe every 2 s) are made in the test, muxed into an encrypted WebM for
acme, and served by a real RCS on loopback.  The system Chromium opens it in a
``<video>``, reads the duration from the header, seeks to 55:00 and plays from there;
what Chromium read after the seek (CDP network events) must be a small fraction of the
file; it jumps straight to the cluster the Cues name.  The bytes the server sent in all
(its audit log's ``bytes`` of every playback response) are reported too: they include
the browser's read-ahead on the first request and what sat in loopback socket buffers.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from recstream.mux import mux_files
from tests.service.conftest import Keys, ServerThread
from tests.service.test_player_browser import browser  # noqa: F401 - the shared fixture
from tests.service.test_player_browser import pytestmark as _needs_chromium

pytestmark = [_needs_chromium, pytest.mark.slow, pytest.mark.timeout(900)]

SECONDS = 3600
SEEK_TO = 55 * 60


def long_call(path: Path) -> None:
    """60 minutes of a 200 Hz tone at 8 kHz, written a minute at a time."""
    minute = (np.sin(np.arange(8000 * 60) * 2 * np.pi * 200 / 8000) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        for _ in range(SECONDS // 60):
            w.writeframes(minute.tobytes())


def long_screen(path: Path) -> None:
    """60 minutes of a moving bar, 160x120 at one frame a second, a keyframe every 2 s."""
    with av.open(str(path), "w", format="webm") as out:
        s = out.add_stream("libvpx", rate=1)
        s.width, s.height, s.pix_fmt, s.bit_rate = 160, 120, "yuv420p", 20_000
        s.options = {"g": "2", "deadline": "realtime", "cpu-used": "8"}
        img = np.zeros((120, 160, 3), np.uint8)
        for i in range(SECONDS):
            img[:] = 0
            img[:, i % 156 : i % 156 + 4] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


@pytest.fixture(scope="module")
def long_archive(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    work = tmp_path_factory.mktemp("long-src")
    long_call(work / "call.wav")
    long_screen(work / "screen.webm")
    root = tmp_path_factory.mktemp("long-archive")
    (root / "acme").mkdir()
    mux_files(
        work / "call.wav",
        work / "screen.webm",
        root / "acme" / "long.rsv",
        recipients=[keys.acme.recipient],
        tenant="acme",
        recording_id="long-1",
    )
    return root


def test_an_hour_long_mux_seeks_after_fetching_a_small_fraction(
    browser: Any,  # noqa: F811
    start_rcs: Any,
    long_archive: Path,
    tmp_path: Path,
) -> None:
    rcs: ServerThread = start_rcs(root=long_archive)
    context = browser.new_context(http_credentials={"username": "alice", "password": "alice-pw-1"})
    page = context.new_page()
    asked: list[str] = []
    page.on(
        "request",
        lambda r: asked.append(r.headers.get("range", "")) if "long.rsv" in r.url else None,
    )
    # What Chromium actually read off the sockets for the file (CDP network events).
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    phase = ["load"]  # which requests were made before the seek and which after
    ids: dict[str, str] = {}
    got = {"load": 0, "seek": 0}

    size = (long_archive / "acme" / "long.rsv").stat().st_size

    def sent_req(e: dict[str, Any]) -> None:
        # "seek": a request made after the seek for bytes past 85 % of the file; Chromium
        # may also go on preloading the start in the background ("load")
        if "long.rsv" in e["request"]["url"]:
            rng = e["request"]["headers"].get("Range", "bytes=0-")
            start = int(rng.removeprefix("bytes=").split("-")[0] or 0)
            ids[e["requestId"]] = "seek" if phase[0] == "seek" and start > size * 0.85 else "load"

    def data(e: dict[str, Any]) -> None:
        if e["requestId"] in ids:
            got[ids[e["requestId"]]] += e["dataLength"]  # body bytes

    answered: set[str] = set()  # responses that started (the server audits each of them)

    def response(e: dict[str, Any]) -> None:
        if e["requestId"] in ids:
            answered.add(e["requestId"])

    cdp.on("Network.requestWillBeSent", sent_req)
    cdp.on("Network.responseReceived", response)
    cdp.on("Network.dataReceived", data)
    page.goto(rcs.url + "/")
    page.evaluate(
        "() => { const v = document.createElement('video'); v.id = 'long'; v.muted = true;"
        " v.preload = 'metadata'; v.src = '/rcs/recordings/acme/long.rsv';"
        " document.body.appendChild(v); }"
    )
    page.wait_for_function("() => document.getElementById('long').readyState >= 1", timeout=60_000)
    duration = page.evaluate("document.getElementById('long').duration")
    assert duration == pytest.approx(SECONDS, abs=1.0)  # from the header, not by reading it all
    phase[0] = "seek"
    page.evaluate(
        f"() => {{ const v = document.getElementById('long'); v.currentTime = {SEEK_TO};"
        " v.play(); }"
    )
    page.wait_for_function(
        f"() => {{ const v = document.getElementById('long'); return !v.seeking &&"
        f" v.currentTime > {SEEK_TO + 0.5} && v.readyState >= 3; }}",
        timeout=120_000,
    )
    at_play = dict(got)  # what had been read when playback at 55:00 was under way
    # Audio and video in step after the seek: both tracks have data at the playhead.
    at = page.evaluate(
        "() => { const v = document.getElementById('long'); const t = v.currentTime;"
        " const b = v.buffered; for (let i = 0; i < b.length; i++)"
        " if (b.start(i) <= t && t <= b.end(i)) return [t, b.start(i), b.end(i)];"
        " return [t, -1, -1]; }"
    )
    assert at[1] >= 0, at
    page.screenshot(path=str(tmp_path / "seek-55min.png"))
    context.close()

    def plays() -> list[dict[str, Any]]:
        return [a for a in rcs.audit() if a["event"] == "playback" and a["file"] == "acme/long.rsv"]

    # each response is audited when it ends (the browser closing counts): wait for those
    # that started (a request Chromium cancels before any answer may leave no record)
    deadline = time.monotonic() + 60
    while len(plays()) < len(answered) and time.monotonic() < deadline:
        time.sleep(0.05)
    done = plays()
    assert len(done) >= len(answered) >= 2, (done, asked)
    sent = sum(int(a.get("bytes", 0)) for a in done)
    print(
        f"\nseek to 55:00 of a 60:00 mux ({size} bytes): from the seek to playing, Chromium "
        f"read {at_play['seek']} bytes ({100 * at_play['seek'] / size:.1f} %) for 55:00 on; "
        f"the metadata load and read-ahead of the start {at_play['load']} "
        f"({100 * at_play['load'] / size:.1f} %); "
        f"the server sent {sent} in all ({100 * sent / size:.1f} %, counting what sat unread "
        f"in loopback socket buffers) in {len(done)} responses; ranges asked: {asked}"
    )
    # Straight from the start to the Cues' cluster for 55:00 (not a read of everything
    # before it), and the browser read a small part of the file.
    assert asked[0] == "bytes=0-" and len(asked) >= 2
    assert any(int(r.removeprefix("bytes=").split("-")[0]) > size * 0.85 for r in asked), asked
    # 55:00 of 60:00 leaves ~8 % of the file to play; what was read after the seek is
    # that (plus a re-read margin), never the 90 % before it
    assert 0 < at_play["seek"] < size // 8, (at_play, size)
    assert sent < size, (sent, size)
