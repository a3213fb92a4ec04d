"""Batch jobs on a local Dask cluster: recordings per second, 1 and 2 workers.

Usage: python bench/batch_jobs.py [--count 3000] [--size 48000] [--dir /dev/shm]

Makes COUNT recordings of SIZE bytes (default: 3 s of G.711) for one RSA-2048
certificate in the archive layout, then times `recstream batch audit`,
`audit --unwrap`, `rewrap` (to a second certificate, into a copy) and
`decrypt`, each with 1 and 2 worker processes, and the time spent in RSA unwrap
(from the tasks' own measurements) against the whole.  Cluster start-up is
timed separately and excluded from the rates.  Never part of the test run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import Party

from recstream.batch import jobs
from recstream.batch.runner import run_job
from recstream.envelope import EnvelopeEncryptor, new_metadata
from recstream.format import MediaKind
from recstream.keysource import KeySource
from recstream.ops import AddCertificates


def make_archive(root: Path, count: int, size: int, party: Party) -> None:
    data = os.urandom(size)
    for i in range(count):
        md = new_metadata(
            recording_id=f"r{i:06d}",
            tenant=f"t{i % 4}",
            media_kind=MediaKind.VOICE,
            media_type="audio/basic",
            created_ms=1_760_000_000_000,
        )
        enc = EnvelopeEncryptor([party.recipient], md)
        d = root / "cc01" / md.tenant / "2025-10-09" / md.recording_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "voice.rsv").write_bytes(enc.update(data) + enc.finalize())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--size", type=int, default=48_000)
    ap.add_argument("--dir", default="/dev/shm")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        a, b = Party("bench-a"), Party("bench-b")
        cert_a, key_a = a.write(work)
        cert_b, _ = b.write(work)
        src = work / "src"
        t = time.perf_counter()
        make_archive(src, args.count, args.size, a)
        print(
            f"made {args.count} recordings of {args.size} bytes in {time.perf_counter() - t:.1f} s"
        )
        spec = KeySource(key_files=(str(key_a),), cert_files=(str(cert_a),))
        pem_b = cert_b.read_bytes()
        print(f"{'job':<14}{'workers':>8}{'files/s':>10}{'MB/s':>8}{'unwrap share':>14}")
        for workers in (1, 2):
            for name, task, extra, root in (
                ("audit", jobs.audit_task, (spec, False, time.time()), src),
                ("audit-unwrap", jobs.audit_task, (spec, True, time.time()), src),
                (
                    "rewrap",
                    jobs.rewrap_task,
                    (str(work / f"rw{workers}"), spec, AddCertificates((pem_b,)), frozenset()),
                    work / f"rw{workers}",
                ),
                (
                    "decrypt",
                    jobs.decrypt_task,
                    (str(work / f"pt{workers}"), spec),
                    work / f"pt{workers}",
                ),
            ):
                report = run_job(
                    name,
                    task,
                    str(src),
                    extra,
                    state=work / "state" / name / str(workers),
                    params=[name, workers],
                    workers=workers,
                )
                busy = sum(o.seconds for o in report.outcomes)
                unwrap = sum(o.unwrap_seconds for o in report.outcomes)
                # Rates over the job's wall time after the cluster was up:
                span = report.seconds - report.startup_seconds
                rate = len(report.outcomes) / span
                mb = rate * args.size / 1e6 if name in ("rewrap", "decrypt") else 0.0
                share = f"{unwrap / busy:.0%}" if busy and unwrap else "-"
                print(f"{name:<14}{workers:>8}{rate:>10.0f}{mb:>8.0f}{share:>14}", flush=True)


if __name__ == "__main__":
    main()
