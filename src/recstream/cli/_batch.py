"""``recstream decrypt --out-dir DIR FILE...``: the printing side of batch decryption.

The work is :func:`recstream.ops.decrypt_one` (the same operation as ``batch
decrypt``, with the same output names), scheduled on threads by
:mod:`recstream.batch.local`; this module asks for the keys, shows a progress line
on stderr when it is a terminal, prints the summary (done, skipped by
``--skip-existing``, busy, failed with reasons) and turns any failure into exit 7.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from recstream import durable
from recstream.batch.local import expand_inputs, run_threads
from recstream.cli import EXIT_BATCH_FAILURES, UsageError, eprint
from recstream.envelope import KeyRing
from recstream.ops import DONE, SKIPPED, Existing, Outcome, Tree, decrypt_one

__all__ = ["batch_decrypt"]


class _Progress:
    """One self-overwriting stderr line: ``[ 120/300] 118 done, 2 failed`` (and
    ``, 40 skipped`` once a file was skipped)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.failed, self.skipped = total, 0, 0, 0

    def __call__(self, result: Outcome) -> None:
        if result.status == SKIPPED:
            self.skipped += 1
        elif result.ok:
            self.done += 1
        else:
            self.failed += 1
        width = len(str(self.total))
        count = self.done + self.failed + self.skipped
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        sys.stderr.write(
            f"\rdecrypting [{count:>{width}}/{self.total}] {self.done} done, "
            f"{self.failed} failed{skipped}"
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
    items = expand_inputs(inputs)
    if not items:
        msg = "no recordings to decrypt (directories are searched for *.rsv files)"
        raise UsageError(msg)
    keys = get_keys(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(len(items)) if sys.stderr.isatty() else None
    existing: Existing = "replace" if args.force else "skip" if args.skip_existing else "fail"
    dst = Tree(out_dir)
    trees = {root: Tree(root) for root in {root for root, _ in items}}
    # Group commit: a file counts (progress, summary) once its name is durable, and
    # the output directory is fsynced once per batch of files, not once per file.
    group = durable.CommitGroup()

    def work(root: Path, rel: str) -> Callable[[], Outcome]:
        return lambda: _named(
            decrypt_one(trees[root], rel, dst, keys, existing=existing, group=group), root
        )

    start = time.perf_counter()
    try:
        results = run_threads([work(r, rel) for r, rel in items], jobs=args.jobs,
                              on_result=progress, group=group)  # fmt: skip
    finally:
        if progress is not None:
            progress.close()
    elapsed = time.perf_counter() - start
    return _summary(results, out_dir, elapsed)


def _named(outcome: Outcome, root: Path) -> Outcome:
    outcome.path = str(root / outcome.path)  # as the user named it, for the summary
    return outcome


def _summary(results: list[Outcome], out_dir: Path, elapsed: float) -> int:
    good = [r for r in results if r.status == DONE]
    skipped = [r for r in results if r.status == SKIPPED]
    bad = [r for r in results if r.status not in (DONE, SKIPPED)]
    mb = sum(r.envelope_bytes for r in good) / 1e6
    rate = f"{len(good) / elapsed:.0f} files/s, {mb / elapsed:.1f} MB/s" if elapsed > 0 else ""
    eprint(
        f"recstream: decrypted {len(good)} of {len(results)} recordings into {out_dir} "
        f"({mb:.1f} MB in {elapsed:.2f} s; {rate})"
    )
    if skipped:  # before the failures, so that those stay the last thing printed
        eprint(f"recstream: {len(skipped)} skipped, their outputs exist (--skip-existing):")
        for r in skipped:
            eprint(f"  {r.path}: skipped: already decrypted ({out_dir / r.output})")
    if not bad:
        return 0
    eprint(f"recstream: {len(bad)} not decrypted (no output was left for them):")
    for r in bad:
        eprint(f"  {r.path}: {r.detail}")
    return EXIT_BATCH_FAILURES
