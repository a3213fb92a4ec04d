"""Run a batch job on Dask: a local cluster by default, or a scheduler's address.

Resumable: a manifest (JSON lines, one per finished file, fsynced) in the
job's state directory records what is done; a restarted job skips those, and
each task also recognises output committed by a run killed before its
manifest line was written, so no file is processed twice.  Per-file failures
are collected into the report and never abort the job.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from recstream import durable
from recstream.batch.archive import list_envelopes, url_to_fs
from recstream.batch.local import run_threads
from recstream.ops import BUSY, FAILED, Outcome

__all__ = ["IN_PROCESS_MAX", "JobReport", "Manifest", "run_job"]

# Up to this many recordings (and no --scheduler or --workers), a job runs on
# threads in this process: a local Dask cluster takes seconds to start, which is
# more than a few hundred recordings take (bench/keystore_batch.py: ~500 files/s).
IN_PROCESS_MAX = 1000


class Manifest:
    """Append-only record of finished files; survives a kill at any point."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill: that file is simply redone
                if rec.get("status") not in (FAILED, BUSY, None):  # those are retried
                    self.done[rec["path"]] = rec
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a")

    def record(self, outcomes: list[Outcome]) -> None:
        """Append finished files and fsync: one sync per Dask task, not per file."""
        self._fh.write("".join(json.dumps(o.to_dict()) + "\n" for o in outcomes))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


@dataclass
class JobReport:
    job: str
    total: int
    resumed: int
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    startup_seconds: float = 0.0  # bringing up the cluster, included in ``seconds``
    workers: int = 0
    in_process: bool = False

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def busy(self) -> list[Outcome]:
        """Recordings left alone: still being recorded, or held by another process."""
        return [o for o in self.outcomes if o.status == BUSY]

    def rate(self) -> float:
        """Files per second once the cluster was up."""
        span = self.seconds - self.startup_seconds
        return len(self.outcomes) / span if span > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "total": self.total,
            "resumed_from_manifest": self.resumed,
            "processed": len(self.outcomes),
            "counts": dict(self.counts),
            "seconds": round(self.seconds, 3),
            "startup_seconds": round(self.startup_seconds, 3),
            "files_per_second": round(self.rate(), 1),
            "workers": self.workers,
            "in_process": self.in_process,
            "busy": [{"path": o.path, "reason": o.detail} for o in self.busy],
            "failures": [{"path": o.path, "reason": o.detail} for o in self.failures],
        }


def state_dir(root_url: str, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    fs, root = url_to_fs(root_url)
    if type(fs).__name__ != "LocalFileSystem":
        return Path.cwd() / ".recstream-batch"
    return Path(root) / ".recstream-batch"


def job_id(job: str, params: Iterable[object]) -> str:
    digest = hashlib.sha256(json.dumps([job, *map(str, params)]).encode()).hexdigest()
    return f"{job}-{digest[:12]}"


def run_job(
    job: str,
    task: Callable[..., Outcome],
    src: str,
    args: tuple[Any, ...],
    *,
    state: Path,
    params: Iterable[object],
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> JobReport:
    """Run ``task(src, rel, *args)`` for every envelope under ``src``.

    Without ``scheduler`` or ``workers``, up to :data:`IN_PROCESS_MAX` recordings run
    on threads in this process; otherwise on Dask.  ``announce`` is told which.
    """
    rels = list(list_envelopes(src))
    manifest = Manifest(state / f"{job_id(job, params)}.jsonl")
    todo = [r for r in rels if r not in manifest.done]
    report = JobReport(job, len(rels), len(rels) - len(todo))
    t0 = time.perf_counter()
    try:
        if todo and scheduler is None and workers is None and len(todo) <= IN_PROCESS_MAX:
            report.in_process, report.workers = True, 1
            if announce is not None:
                announce(
                    f"{len(todo)} recording(s): running in this process (a Dask cluster is "
                    f"started for more than {IN_PROCESS_MAX}, or with --workers/--scheduler)"
                )
            _run_here(task, src, todo, args=args, manifest=manifest, report=report,
                      progress=progress)  # fmt: skip
        elif todo:
            if announce is not None:
                where = scheduler or f"a local Dask cluster ({workers or os.cpu_count()} workers)"
                announce(f"{len(todo)} recording(s): running on {where}")
            with _client(scheduler, workers) as client:
                report.startup_seconds = time.perf_counter() - t0
                report.workers = len(client.scheduler_info()["workers"])
                _drive(
                    client,
                    task,
                    src,
                    todo,
                    args=args,
                    manifest=manifest,
                    report=report,
                    progress=progress,
                )
    finally:
        manifest.close()
    report.seconds = time.perf_counter() - t0
    return report


def _run_here(
    task: Callable[..., Outcome],
    src: str,
    todo: list[str],
    *,
    args: tuple[Any, ...],
    manifest: Manifest,
    report: JobReport,
    progress: Callable[[int, int], None] | None,
) -> None:
    pending: list[Outcome] = []

    def record(outcome: Outcome) -> None:
        pending.append(outcome)
        report.outcomes.append(outcome)
        if len(pending) >= MAX_CHUNK:  # one fsync per chunk, as a Dask task's
            manifest.record(pending)
            pending.clear()
        if progress is not None:
            progress(len(report.outcomes), len(todo))

    # Group commit: run_threads syncs the outputs' directories before ``record``
    # sees an outcome, so the manifest never lists an output that is not durable.
    group = durable.CommitGroup()
    try:
        run_threads([_bind(task, src, rel, args, group) for rel in todo], on_result=record,
                    group=group)  # fmt: skip
    finally:
        if pending:
            manifest.record(pending)


def _bind(
    task: Callable[..., Outcome],
    src: str,
    rel: str,
    args: tuple[Any, ...],
    group: durable.CommitGroup,
) -> Callable[[], Outcome]:
    return lambda: task(src, rel, *args, group=group)


def run_chunk(task: Callable[..., Outcome], src: str, rels: list[str], *args: Any) -> list[Outcome]:
    """One Dask task: a few recordings, each processed (and failing) on its own; their
    outputs' directories fsynced once for the chunk, before the outcomes go back."""
    group = durable.CommitGroup()
    outcomes = [task(src, rel, *args, group=group) for rel in rels]
    group.sync()
    return outcomes


def chunk_size(todo: int, workers: int) -> int:
    """Recordings per task: enough to amortise Dask's ~ms per-task cost, small enough
    that every worker gets many tasks (balance, and little lost with a lost worker)."""
    return max(1, min(MAX_CHUNK, todo // (max(workers, 1) * 16)))


MAX_CHUNK = 32


def _drive(
    client: Any,
    task: Callable[..., Outcome],
    src: str,
    todo: list[str],
    *,
    args: tuple[Any, ...],
    manifest: Manifest,
    report: JobReport,
    progress: Callable[[int, int], None] | None,
) -> None:
    from distributed import as_completed

    size = chunk_size(len(todo), report.workers)
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    futures = client.map(
        run_chunk,
        [task] * len(chunks),
        [src] * len(chunks),
        chunks,
        *[[a] * len(chunks) for a in args],
        pure=False,
    )
    lost = {fut.key: chunk for fut, chunk in zip(futures, chunks, strict=True)}
    done = 0
    for fut in as_completed(futures):  # type: ignore[no-untyped-call]
        try:
            outcomes = fut.result()
        except Exception as exc:  # a worker lost mid-task: report, never abort
            why = f"task failed: {type(exc).__name__}: {exc}"
            outcomes = [Outcome(rel, "failed", why) for rel in lost[fut.key]]
        manifest.record(outcomes)
        report.outcomes.extend(outcomes)
        done += len(outcomes)
        if progress is not None:
            progress(done, len(todo))


class _client:
    """A Dask client on the given scheduler, or on a local cluster of processes."""

    def __init__(self, scheduler: str | None, workers: int | None) -> None:
        self.scheduler, self.workers = scheduler, workers
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster

        if self.scheduler:
            self.client = Client(self.scheduler, timeout="10s")  # type: ignore[no-untyped-call]
        else:
            n = self.workers or os.cpu_count() or 1
            self.cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=50,
            )
            self.client = Client(self.cluster)  # type: ignore[no-untyped-call]
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
