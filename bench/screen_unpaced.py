"""Bulk screen capture, unpaced, through the live pipeline vs raw AES-GCM (issue 3).

Usage: python bench/screen_unpaced.py [--size 1G] [--chunk 64K] [--streams 1] [--repeat 3]

Feeds SIZE bytes of "screen capture" per stream as fast as the pipeline takes
them (``await RecordingWriter.write(chunk)``, so back-pressure applies) on
uvloop, with the default flush interval and fdatasync, into /dev/shm; and, in
the same rounds, raw single-thread ``AESGCM.encrypt_into`` over the same
bytes at 16 KiB.  Reports MB/s (median, min, max) and the ratio per round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tests.conftest import Party

from recstream.aio import Flusher, RecordingWriter
from recstream.aio.run import loop_name, run
from recstream.bench.stats import parse_size
from recstream.envelope import new_metadata
from recstream.format import MediaKind


async def pipeline(work: Path, party: Party, data: memoryview, chunk: int, streams: int) -> float:
    async def one(i: int, flusher: Flusher) -> None:
        md = new_metadata(recording_id=f"screen-{i}", tenant="bench",
                          media_kind=MediaKind.SCREEN, media_type="video/webm")
        w = await RecordingWriter.open(work / f"s{i}.rsv", [party.recipient], md, flusher)
        for off in range(0, len(data), chunk):
            await w.write(data[off : off + chunk])
        await w.close()

    t = time.perf_counter()
    async with Flusher() as flusher, asyncio.TaskGroup() as tg:
        for i in range(streams):
            tg.create_task(one(i, flusher))
    return time.perf_counter() - t


def raw(data: memoryview) -> float:
    aead = AESGCM(AESGCM.generate_key(256))
    out = bytearray(16384 + 16)
    nonce = b"\0" * 12
    whole = len(data) // 16384 * 16384
    t = time.perf_counter()
    for off in range(0, whole, 16384):
        aead.encrypt_into(nonce, data[off : off + 16384], None, out)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--chunk", default="64K")
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk)
    data = memoryview(os.urandom(size))
    party = Party("screen-bench")
    pipe_rates, raw_rates = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
            dt = run(pipeline(Path(tmp), party, data, chunk, args.streams))
        pipe_rates.append(size * args.streams / dt / 1e6)
        raw_rates.append(size / raw(data) / 1e6)
    ratios = [p / r for p, r in zip(pipe_rates, raw_rates, strict=True)]

    def fmt(xs: list[float], d: int = 0) -> str:
        return f"{statistics.median(xs):,.{d}f} ({min(xs):,.{d}f}-{max(xs):,.{d}f})"

    print(f"screen capture unpaced: {args.streams} stream(s) x {args.size} in {args.chunk} "
          f"chunks, {loop_name()}, flush interval 1 s, fdatasync on, /dev/shm; "
          f"{args.repeat} rounds, median (min-max)")
    print(f"  pipeline           {fmt(pipe_rates)} MB/s")
    print(f"  raw AES-GCM 16 KiB {fmt(raw_rates)} MB/s")
    print(f"  pipeline / raw     {fmt(ratios, 2)}")


if __name__ == "__main__":
    main()
