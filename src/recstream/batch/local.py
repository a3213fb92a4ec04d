"""The in-process scheduler: per-recording operations on a thread pool.

``decrypt --out-dir`` uses it, and so do ``recstream batch`` jobs small enough that
starting a Dask cluster would cost more than the work.  Threads, not processes:
AES-GCM, RSA and file I/O release the GIL, and the keys are opened once and shared.
Outputs are committed as a group (:class:`recstream.durable.CommitGroup`): the
calling thread makes a batch of them durable with one directory fsync, then
reports them done.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

from recstream import durable
from recstream.ops import Outcome

__all__ = ["DEFAULT_JOBS", "expand_inputs", "run_threads"]

# Files processed at once: RSA unwraps and file I/O overlap across threads;
# beyond 4 the disk, not the CPU, sets the pace.
DEFAULT_JOBS: Final = min(4, os.cpu_count() or 1)
ENVELOPE_GLOB: Final = "*.rsv"


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """(root, relative path) for each input: a file is itself, a directory its ``*.rsv``
    files (recursively, keeping their relative paths).  A missing input is kept (its
    operation reports it)."""
    found: list[tuple[Path, str]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob(ENVELOPE_GLOB) if p.is_file())
            found += [(path, p.relative_to(path).as_posix()) for p in files]
        else:
            found.append((path.parent, path.name))
    return found


def run_threads(
    work: Sequence[Callable[[], Outcome]],
    *,
    jobs: int = DEFAULT_JOBS,
    on_result: Callable[[Outcome], None] | None = None,
    group: durable.CommitGroup | None = None,
) -> list[Outcome]:
    """Run every operation on ``jobs`` threads; outcomes in input order.

    ``on_result`` is called in the calling thread as each finishes.  Operations
    report a bad recording in their outcome; an exception is a bug and propagates
    (after the operations already running have finished: they clean up after
    themselves).

    ``group`` (group commit): the operations commit their outputs into it
    (:class:`recstream.durable.CommitGroup`), and an outcome is reported (to
    ``on_result``, and returned) only after ``group.sync()`` made its output's
    name durable.  The calling thread does those syncs, one per batch of
    outcomes that finished meanwhile, while the workers go on with the next
    files: a crash never leaves a file reported done that is not on disk.
    """
    if jobs < 1:
        msg = "jobs must be at least 1"
        raise ValueError(msg)
    if not work:
        return []
    # Workers take the next index themselves (no future, no executor hand-off per
    # file) and post (index, outcome or exception) to ``finished``.
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(work)):
        todo.put(i)
    finished: queue.SimpleQueue[tuple[int, Outcome | BaseException]] = queue.SimpleQueue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                finished.put((i, work[i]()))
            except BaseException as exc:  # a bug: handed to the calling thread
                finished.put((i, exc))
                return

    threads = [
        threading.Thread(target=worker, name=f"recstream-{k}", daemon=True)
        for k in range(min(jobs, len(work)))
    ]
    for t in threads:
        t.start()
    results: list[Outcome | None] = [None] * len(work)
    try:
        left = len(work)
        while left:
            batch = _next_batch(finished)
            for _, got in batch:
                if isinstance(got, BaseException):
                    raise got
            if group is not None:
                group.sync()  # these outputs' names are durable from here on
            for i, got in batch:
                assert isinstance(got, Outcome)
                results[i] = got
                if on_result is not None:
                    on_result(got)
            left -= len(batch)
    finally:
        # Interrupted (or a bug): operations not started are not started; running
        # ones finish or clean up after themselves (durable) before we return.
        stop.set()
        for t in threads:
            t.join()
    return [r for r in results if r is not None]


def _next_batch(
    finished: queue.SimpleQueue[tuple[int, Outcome | BaseException]],
) -> list[tuple[int, Outcome | BaseException]]:
    """At least one finished operation (waiting for it), and every other one there."""
    while True:
        try:  # a bounded wait, so that a signal is handled promptly on every platform
            batch = [finished.get(timeout=1.0)]
            break
        except queue.Empty:
            continue
    while True:
        try:
            batch.append(finished.get_nowait())
        except queue.Empty:
            return batch
