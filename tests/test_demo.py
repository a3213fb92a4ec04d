"""The README's main command: the demo, and the demo serving its recordings."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def test_demo_serve_plays_its_recordings(tmp_path: Path) -> None:
    """The README's first command, as a user runs it, once for the whole suite: the demo's
    narration, its files, then its server playing what it made; exit 0, no traceback."""
    work = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recstream",
            "demo",
            "--workdir",
            str(work),
            "--serve",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 90
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"open (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
        assert url, "".join(lines)
        narration = "".join(lines)
        assert "video vp8 from 2.50 s to 14.50 s; audio opus from 0.00 s to 15.00 s" in narration
        assert "refused: segment" in narration
        assert "checked it with the media library" in narration
        assert (work / "playback.webm").exists()
        password = (work / "player.pass").read_text().strip()
        auth = base64.b64encode(f"demo-player:{password}".encode()).decode()
        req = urllib.request.Request(
            f"{url}/rcs/recordings", headers={"Authorization": f"Basic {auth}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            listing = json.load(resp)
        names = sorted(r["id"].rsplit("/", 1)[1] for r in listing["recordings"])
        assert names == ["call+screen.rsv", "screen.rsv", "voice.rsv"]
        muxed = next(r["id"] for r in listing["recordings"] if r["id"].endswith("call+screen.rsv"))
        req = urllib.request.Request(
            f"{url}/rcs/recordings/{muxed}",
            headers={"Authorization": f"Basic {auth}", "Range": "bytes=0-3"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 206
            assert resp.read() == b"\x1a\x45\xdf\xa3"  # EBML magic: a WebM
        with urllib.request.urlopen(url + "/", timeout=10) as resp:
            assert b"player.js" in resp.read()
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
