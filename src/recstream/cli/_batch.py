"""``recstream decrypt --out-dir DIR FILE...``: the printing side of batch decryption.

The work is :mod:`recstream.keystore.batch`; this module plans, asks for the keys,
shows a progress line on stderr when it is a terminal, prints the summary (done,
failed with reasons) and turns any failure into exit 7.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from recstream.cli import EXIT_BATCH_FAILURES, UsageError, eprint
from recstream.envelope import KeyRing
from recstream.keystore.batch import Result, plan, run

__all__ = ["batch_decrypt"]


class _Progress:
    """One self-overwriting stderr line: ``[ 120/300] 118 done, 2 failed``."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.failed = total, 0, 0

    def __call__(self, result: Result) -> None:
        if result.ok:
            self.done += 1
        else:
            self.failed += 1
        width = len(str(self.total))
        count = self.done + self.failed
        sys.stderr.write(
            f"\rdecrypting [{count:>{width}}/{self.total}] {self.done} done, {self.failed} failed"
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def batch_decrypt(
    inputs: Sequence[str],
    out_dir: Path,
    args: argparse.Namespace,
    get_keys: Callable[[argparse.Namespace], KeyRing],
) -> int:
    """Decrypt ``inputs`` into ``out_dir``; exit 0, or 7 if any file failed."""
    if out_dir.exists() and not out_dir.is_dir():
        msg = f"--out-dir {out_dir} is not a directory"
        raise UsageError(msg)
    items = plan(inputs, out_dir, force=args.force)
    if not items:
        msg = "no recordings to decrypt (directories are searched for *.rsv files)"
        raise UsageError(msg)
    keys = get_keys(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(len(items)) if sys.stderr.isatty() else None
    start = time.perf_counter()
    try:
        results = run(items, keys, jobs=args.jobs, on_result=progress)
    finally:
        if progress is not None:
            progress.close()
    elapsed = time.perf_counter() - start
    return _summary(results, out_dir, elapsed)


def _summary(results: list[Result], out_dir: Path, elapsed: float) -> int:
    good = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    mb = sum(r.envelope_bytes for r in good) / 1e6
    rate = f"{len(good) / elapsed:.0f} files/s, {mb / elapsed:.1f} MB/s" if elapsed > 0 else ""
    eprint(
        f"recstream: decrypted {len(good)} of {len(results)} recordings into {out_dir} "
        f"({mb:.1f} MB in {elapsed:.2f} s; {rate})"
    )
    if not bad:
        return 0
    eprint(f"recstream: {len(bad)} failed (no output was left for them):")
    for r in bad:
        eprint(f"  {r.item.source}: {r.error}")
    return EXIT_BATCH_FAILURES
