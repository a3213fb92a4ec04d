"""Issue 17: muxing an hour to MP4 against WebM, and what a browser fetches to play at 55:00.

Usage (from the repository root)::

    .venv/bin/python bench/mux_seek.py [--minutes 60] [--rounds 1] [--browser] [--json FILE]

Inputs (made here, as in tests/service/test_seek_browser.py): an 8 kHz call (hum, a
beep every 2 s) and a 160x120, 1 frame/s screen recording with a noise strip at
~200 kbit/s, the *same frames* encoded as H.264 (MP4) and as VP8 (WebM).

* **Throughput**: ``mux_files`` on the same call with each screen recording, plain and
  encrypted output; CPU seconds (user + system of this process, FFmpeg's threads
  included) and wall seconds, input MB/s, and the ratios MP4/WebM within the run.  The
  audio is most of the work: WebM re-encodes the call as Opus at 48 kHz, MP4 as AAC at
  the call's own 8 kHz; the video is copied in both.
* **Seek** (``--browser``): the system Chromium opens each plain output from a small
  range-serving HTTP server on loopback that counts the bytes it sends per response,
  seeks to 55:00 and plays; reported are the bytes the server sent before and after the
  seek and what Chromium read (CDP), as fractions of the file.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import Party  # noqa: E402
from tests.media_helpers import write_call, write_screen  # noqa: E402

from recstream.bench.machine import describe_machine, machine_line  # noqa: E402
from recstream.mux import mux_files  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_inputs(d: Path, minutes: int) -> dict[str, Path]:
    seconds = 60 * minutes
    markers = [2.0 * k + 1 for k in range(seconds // 2)]
    write_call(d / "call.wav", seconds, markers)
    for codec, ext in (("h264", "mp4"), ("vp8", "webm")):
        write_screen(d / f"screen.{ext}", seconds, markers, codec=codec, kbps=200)
    return {"call": d / "call.wav", "mp4": d / "screen.mp4", "webm": d / "screen.webm"}


def throughput(d: Path, inputs: dict[str, Path], rounds: int) -> dict[str, Any]:
    party = Party("bench-mux")
    runs: dict[str, list[tuple[float, float]]] = {}
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        for ext in ("mp4", "webm"):
            for enc in (False, True):
                name = f"{ext}-{'encrypted' if enc else 'plain'}"
                out = d / f"out-{name}"
                out.unlink(missing_ok=True)
                c0, w0 = cpu_s(), time.perf_counter()
                mux_files(
                    inputs["call"],
                    inputs[ext],
                    out,
                    recipients=[party.recipient] if enc else (),
                    tenant="bench",
                )
                runs.setdefault(name, []).append((cpu_s() - c0, time.perf_counter() - w0))
                sizes[name] = out.stat().st_size
    in_mb = {ext: (inputs["call"].stat().st_size + inputs[ext].stat().st_size) / 1e6
             for ext in ("mp4", "webm")}  # fmt: skip
    result: dict[str, Any] = {}
    for name, vals in runs.items():
        ext = name.split("-")[0]
        cpu = statistics.median(v[0] for v in vals)
        wall = statistics.median(v[1] for v in vals)
        result[name] = {
            "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2),
            "input_MB": round(in_mb[ext], 1),
            "output_bytes": sizes[name],
            "input_MB_per_cpu_s": round(in_mb[ext] / cpu, 1),
        }
    for enc in ("plain", "encrypted"):
        m, w = result[f"mp4-{enc}"], result[f"webm-{enc}"]
        result[f"ratio_cpu_mp4_over_webm_{enc}"] = round(m["cpu_s"] / w["cpu_s"], 3)
    for ext in ("mp4", "webm"):
        p, e = result[f"{ext}-plain"], result[f"{ext}-encrypted"]
        result[f"ratio_cpu_encrypted_over_plain_{ext}"] = round(e["cpu_s"] / p["cpu_s"], 3)
    return result


class _CountingServer:
    """Serves a directory with Range support on loopback; counts body bytes per response."""

    def __init__(self, root: Path) -> None:
        from aiohttp import web

        self.root = root
        self.sent: list[tuple[str, str, int]] = []  # (file, range, bytes), as each ends
        self.started: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/{name}", self.handle)
        self.port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(30)

    def _run(self) -> None:
        import asyncio

        from aiohttp import web

        async def main() -> None:
            runner = web.AppRunner(self.app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        name = request.match_info["name"]
        path = self.root / name
        if not path.is_file():
            return web.Response(status=404)
        size = path.stat().st_size
        if name.endswith(".html"):
            return web.Response(body=path.read_bytes(), content_type="text/html")
        rng = request.headers.get("Range", "")
        start = int(rng.removeprefix("bytes=").split("-")[0] or 0) if rng else 0
        resp = web.StreamResponse(status=206 if rng else 200)
        resp.content_type = "video/mp4" if name.endswith(".mp4") else "video/webm"
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        resp.content_length = size - start
        self.started.append(name)
        n = 0
        try:
            await resp.prepare(request)
            with path.open("rb") as fh:
                fh.seek(start)
                while chunk := fh.read(64 * 1024):
                    await resp.write(chunk)
                    n += len(chunk)
        except ConnectionError:
            pass  # the browser closed it: what was written is counted
        finally:
            self.sent.append((name, rng or "bytes=0-", n))
        return resp


def seek_figures(d: Path, minutes: int) -> dict[str, Any]:
    seek_to = 55 * minutes  # 55:00 of an hour: the same fraction of a shorter run
    from playwright.sync_api import sync_playwright

    (d / "page.html").write_text("<!doctype html><title>seek</title>")
    server = _CountingServer(d)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--mute-audio",
             "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
    out: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
        for ext in ("mp4", "webm"):
            name = f"out-{ext}-plain"
            os.replace(d / name, d / f"{name}.{ext}")
            name = f"{name}.{ext}"
            size = (d / name).stat().st_size
            page = browser.new_page()
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            read = {"n": 0}
            cdp.on(
                "Network.dataReceived", lambda e: read.__setitem__("n", read["n"] + e["dataLength"])
            )
            page.goto(f"http://127.0.0.1:{server.port}/page.html")
            page.evaluate(
                "(src) => { const v = document.createElement('video'); v.id = 'v'; v.muted = true;"
                " v.preload = 'metadata'; v.src = src; document.body.appendChild(v); }",
                name,
            )
            page.wait_for_function("() => document.getElementById('v').readyState >= 1")
            read_before = read["n"]
            page.evaluate(
                "(t) => { const v = document.getElementById('v'); v.currentTime = t; v.play(); }",
                seek_to,
            )
            page.wait_for_function(
                "(t) => { const v = document.getElementById('v');"
                " return !v.seeking && v.currentTime > t + 0.5 && v.readyState >= 3; }",
                arg=seek_to,
                timeout=120_000,
            )
            read_at_play = read["n"]
            opened = len([r for r in server.started if r == name])
            page.close()
            deadline = time.monotonic() + 30  # each response is counted when it ends
            while len([f for f, _, _ in server.sent if f == name]) < opened:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            total = sum(b for f, _, b in server.sent if f == name)
            out[ext] = {
                "file_bytes": size,
                "server_sent_total": total,
                "server_sent_fraction": round(total / size, 4),
                "browser_read_to_play": read_at_play,
                "browser_read_fraction": round(read_at_play / size, 4),
                "browser_read_after_seek_fraction": round((read_at_play - read_before) / size, 4),
                "responses": [r for f, r, _ in server.sent if f == name],
            }
        browser.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--browser", action="store_true", help="also the Chromium seek figures")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    machine = describe_machine()
    print(machine_line(machine))
    with tempfile.TemporaryDirectory(prefix="mux-seek-") as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        inputs = make_inputs(d, args.minutes)
        sizes = ", ".join(f"{k} {v.stat().st_size / 1e6:.1f} MB" for k, v in inputs.items())
        print(f"inputs: {args.minutes} min, made in {time.perf_counter() - t:.1f} s: {sizes}")
        result: dict[str, Any] = {"machine": machine, "minutes": args.minutes}
        result["throughput"] = throughput(d, inputs, args.rounds)
        print(json.dumps(result["throughput"], indent=1))
        if args.browser:
            result["seek"] = seek_figures(d, args.minutes)
            print(json.dumps(result["seek"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
