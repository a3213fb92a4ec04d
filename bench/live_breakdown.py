"""Where `bench live`'s CPU goes: the event-loop thread per frame, the seals, the flusher.

Usage: [PYTHONPATH=OTHER/src] python bench/live_breakdown.py [--calls 10000] [--duration 5]

Runs one ``bench live`` step in this process with thread CPU clocks around the
ticker's run (the event-loop thread: the harness, ``RecordingHook.media`` and
everything the loop does meanwhile), around each segment seal and around the
flusher thread's write batches.  ``time.thread_time`` costs a system call, so
the seal figure includes ~1 us of measuring per segment.  Run it with
``PYTHONPATH`` pointing at another checkout's ``src`` to compare (the seal is
found as ``RecordingWriter._seal`` in both).  Benchmarks never gate CI.
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from pathlib import Path
from typing import Any

import recstream.bench.live as live
from recstream.aio import flusher as flusher_mod
from recstream.aio import writer as writer_mod

spent: collections.Counter[str] = collections.Counter()
count: collections.Counter[str] = collections.Counter()


def _clocked(func: Any, key: str) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        t = time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            spent[key] += time.thread_time() - t
            count[key] += 1

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = p.parse_args()
    writer_mod.RecordingWriter._seal = _clocked(writer_mod.RecordingWriter._seal, "seal")
    flusher_mod._write_batch = _clocked(flusher_mod._write_batch, "flusher thread writes")
    ticker_run = live._Ticker.run

    async def run(self: Any, duration: float) -> None:
        spent.clear()
        count.clear()
        t = time.thread_time()
        await ticker_run(self, duration)
        loop_cpu = time.thread_time() - t
        frames = self.sent
        print(f"{args.calls} calls, {frames} frames, load {os.getloadavg()[0]:.1f}")
        print(f"  event-loop thread {loop_cpu:6.2f} s  {loop_cpu / frames * 1e6:.3f} us/frame")
        for key in ("seal", "flusher thread writes"):
            print(
                f"  {key:22s}{spent[key]:6.2f} s  {spent[key] / frames * 1e6:.3f} us/frame"
                f"  ({count[key]} calls, {spent[key] / max(1, count[key]) * 1e6:.1f} us each)"
            )

    live._Ticker.run = run  # type: ignore[method-assign]
    cfg = live.LiveConfig(
        calls=(args.calls,), duration=args.duration, directory=Path(args.dir) if args.dir else None
    )
    live.run_live(cfg)


if __name__ == "__main__":
    main()
