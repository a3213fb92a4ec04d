"""Issue 18: the uploader's throughput to S3 (moto) and WebDAV (wsgidav) on loopback,
against a plain fsspec ``put_file`` of the same bytes with the same client.

Usage: python bench/upload.py [--files 8] [--size-mib 16] [--rounds 5] [--json OUT]

Each round, per store, back to back: (a) the reference, ``fs.put_file`` of every file to a
fresh prefix (parent directories made beforehand, untimed); (b) ``Uploader.drain`` of a
spool holding the same files (recording directories with their recording.json), which
includes the uploader's whole protocol: the check-before-commit lookup, the temporary
name, the size/ETag verification, the commit (S3 copy + delete; WebDAV MOVE), and the
removal from the spool.  Servers are reached directly (not through the tests' outage
gate).  Reported: MB/s of each, the per-round ratio (reference time / uploader time),
and CPU seconds of this process per GiB.  Never part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stores import StoreServer, running_server

from recstream.bench.machine import describe_machine, machine_line
from recstream.storage import open_store
from recstream.upload import Uploader


def cpu_flags() -> list[str]:
    wanted = {"aes", "avx", "avx2", "avx512f", "sha_ni", "vaes", "vpclmulqdq", "pclmulqdq"}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return sorted(wanted & set(line.split(":", 1)[1].split()))
    return []


def make_source(root: Path, files: int, size: int) -> list[str]:
    rels = []
    for i in range(files):
        d = root / "cc1" / "acme" / "2026-01-01" / f"r{i}"
        d.mkdir(parents=True)
        (d / "voice.rsv").write_bytes(os.urandom(size))
        media = {"voice": {"file": "voice.rsv"}}
        (d / "recording.json").write_text(json.dumps({"recording_id": f"r{i}", "media": media}))
        rels += [f"{d.relative_to(root)}/voice.rsv", f"{d.relative_to(root)}/recording.json"]
    return rels


def direct_url(server: StoreServer) -> str:
    if server.kind == "s3":
        return server.url
    return server.url.replace(f":{server.port}/", f":{server.backend_port}/")


def one_round(server: StoreServer, source: Path, rels: list[str], work: Path) -> dict[str, float]:
    base = f"{direct_url(server)}/bench-{uuid.uuid4().hex[:8]}"
    total = sum((source / r).stat().st_size for r in rels)
    # (a) the reference: plain fsspec put_file, same client as the uploader's
    ref = open_store(f"{base}/plain")
    for d in {r.rsplit("/", 1)[0] for r in rels}:
        if ref.kind != "s3":
            ref.fs.makedirs(ref.path(d), exist_ok=True)
    c0, t0 = time.process_time(), time.perf_counter()
    for r in rels:
        ref.fs.put_file(str(source / r), ref.path(r))
    t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
    # (b) the uploader, from a spool holding the same files
    spool = work / uuid.uuid4().hex
    shutil.copytree(source, spool)
    up = Uploader(spool, f"{base}/up")
    c0, t0 = time.process_time(), time.perf_counter()
    stats = up.drain(deadline=time.monotonic() + 600)
    t_up, c_up = time.perf_counter() - t0, time.process_time() - c0
    assert stats.pending == 0 and stats.uploaded == len(rels) // 2, stats
    shutil.rmtree(spool)
    ref.fs.rm(ref.root, recursive=True)
    up.store.fs.rm(up.store.root, recursive=True)
    gib = total / 2**30
    return {
        "ref_mb_s": total / t_ref / 1e6,
        "up_mb_s": total / t_up / 1e6,
        "ratio": t_ref / t_up,
        "ref_cpu_s_per_gib": c_ref / gib,
        "up_cpu_s_per_gib": c_up / gib,
    }


def summary(rows: list[dict[str, float]], key: str) -> str:
    vals = [r[key] for r in rows]
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--size-mib", type=float, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--stores", default="s3,webdav", help="comma-separated: s3, webdav")
    args = ap.parse_args()
    machine = {**describe_machine(), "cpu_flags": cpu_flags()}
    print(machine_line(machine))
    print(f"cpu flags: {' '.join(machine['cpu_flags'])}; load at start: {os.getloadavg()}")
    out: dict[str, Any] = {"machine": machine, "args": vars(args), "stores": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "source"
        rels = make_source(source, args.files, int(args.size_mib * 2**20))
        for kind in args.stores.split(","):
            with running_server(kind, versioned=False) as server:
                os.environ.update(server.env)
                os.environ["AWS_ENDPOINT_URL_S3"] = server.direct_endpoint
                one_round(server, source, rels, work)  # warm-up: clients, server caches
                rows = [one_round(server, source, rels, work) for _ in range(args.rounds)]
            out["stores"][kind] = rows
            print(
                f"{kind:7s} plain put {summary(rows, 'ref_mb_s')} MB/s, uploader "
                f"{summary(rows, 'up_mb_s')} MB/s, ratio {summary(rows, 'ratio')}; "
                f"CPU s/GiB plain {summary(rows, 'ref_cpu_s_per_gib')}, "
                f"uploader {summary(rows, 'up_cpu_s_per_gib')}"
            )
    out["load_at_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
