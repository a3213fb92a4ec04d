"""CPU per frame of the live frame path alone: ``RecordingHook.media`` over N calls.

Usage: [PYTHONPATH=OTHER/src] python bench/frame_path.py [--calls 10000] [--frames 100]

Starts N voice recordings on tmpfs, then hands every call a 160-byte frame, round
after round, in a plain loop (no pacing, no ticker): the per-frame cost of the
hook, the writer's copy and the segment sealing, without ``bench live``'s harness.
Run it with ``PYTHONPATH`` pointing at another checkout's ``src`` to compare.
Benchmarks never gate CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

from recstream.aio import RecordingHook
from recstream.bench.fixtures import make_identity
from recstream.envelope import Recipient
from recstream.format import MediaKind


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _run(calls: int, frames: int, directory: str, recipient: Recipient) -> None:
    async with RecordingHook(directory, lambda _t, _k: [recipient]) as hook:
        ids = [f"c{i}" for i in range(calls)]
        for i in range(0, calls, 200):
            await asyncio.gather(*(hook.start(c, tenant="t") for c in ids[i : i + 200]))
        frame, media, voice = os.urandom(160), hook.media, MediaKind.VOICE
        c0, t0 = _cpu(), time.perf_counter()
        for j in range(frames):
            for c in ids:
                media(c, frame, voice)
            if j % 10 == 0:
                await asyncio.sleep(0)  # let the flusher run now and then
        cpu, wall = _cpu() - c0, time.perf_counter() - t0
        n = calls * frames
        print(f"{calls} calls x {frames} frames: {cpu / n * 1e6:.3f} us CPU/frame, "
              f"{wall / n * 1e6:.3f} us wall/frame, load {os.getloadavg()[0]:.1f}")  # fmt: skip
        for c in ids:
            await hook.stop(c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        ident = make_identity(Path(work), 2048)
        recipient = Recipient.from_certificate(ident.cert)
        asyncio.run(_run(args.calls, args.frames, work, recipient))


if __name__ == "__main__":
    main()
