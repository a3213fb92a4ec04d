"""The in-process scheduler: per-recording operations on a thread pool.

``decrypt --out-dir`` uses it, and so do ``recstream batch`` jobs small enough that
starting a Dask cluster would cost more than the work.  Threads, not processes:
AES-GCM and file I/O release the GIL, and the keys are opened once and shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Final

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
) -> list[Outcome]:
    """Run every operation on ``jobs`` threads; outcomes in input order.

    ``on_result`` is called in the calling thread as each finishes.  Operations
    report a bad recording in their outcome; an exception is a bug and propagates.
    """
    if jobs < 1:
        msg = "jobs must be at least 1"
        raise ValueError(msg)
    results: dict[int, Outcome] = {}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="recstream") as pool:
        futures = {pool.submit(fn): i for i, fn in enumerate(work)}
        try:
            for fut in as_completed(futures):
                outcome = fut.result()
                results[futures[fut]] = outcome
                if on_result is not None:
                    on_result(outcome)
        except BaseException:
            # Interrupted (or a bug): operations not started are not started; running
            # ones finish or clean up after themselves (durable) before we return.
            for fut in futures:
                fut.cancel()
            raise
    return [results[i] for i in range(len(work))]
