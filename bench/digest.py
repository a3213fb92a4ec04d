"""Segment digests for signed recordings (issue 16): which hash, measured beside AES-GCM.

Usage::

    .venv/bin/python bench/digest.py [--repeat 7] [--size 16M] [--json OUT.json]

Per round, on the same buffer of random bytes, interleaved (each a CPU-time
measurement in this process; ratios taken per round, median (min-max) shown):

* ``AESGCM.encrypt_into`` per 16 KiB segment (what encryption costs: the reference),
* ``hashlib.sha256`` per 16,400-byte wire segment (the old §10.1 digest),
* ``blake3`` per 16,400-byte wire segment, one thread (the new §10.1 digest),
* ``blake3`` over the whole buffer with ``max_threads=AUTO`` (wall time: the
  tree mode on every core; what one large hash could do, for comparison).

Benchmarks never gate CI.  The header line records the CPU flags and the load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blake3 import blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recstream.bench.fixtures import random_bytes
from recstream.bench.machine import describe_machine, load_average
from recstream.bench.stats import interleave, paired_ratio, parse_size, summarize

SEGMENT = 16384
WIRE = SEGMENT + 16


def cpu_flags() -> list[str]:
    wanted = ("aes", "pclmulqdq", "sha_ni", "avx2", "avx512f", "vaes", "vpclmulqdq")
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in wanted if f in have]
    return []


def cpu_timed(func: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        start = time.process_time()
        func()
        return time.process_time() - start

    return run


def wall_timed(func: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        func()
        return time.perf_counter() - start

    return run


def aesgcm(data: bytes) -> None:
    aead, view, out = AESGCM(bytes(32)), memoryview(data), bytearray(WIRE)
    for i in range(0, len(data) - SEGMENT + 1, SEGMENT):
        aead.encrypt_into(i.to_bytes(12, "big"), view[i : i + SEGMENT], None, out)


def sha256_segments(data: bytes) -> None:
    view, sha = memoryview(data), hashlib.sha256
    for i in range(0, len(data), WIRE):
        sha(view[i : i + WIRE]).digest()


def blake3_segments(data: bytes) -> None:
    view = memoryview(data)
    for i in range(0, len(data), WIRE):
        blake3(view[i : i + WIRE]).digest()


def blake3_whole(data: bytes) -> None:
    blake3(data, max_threads=blake3.AUTO).digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--size", default="16M")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    machine = describe_machine() | {"cpu_flags": cpu_flags()}
    print(
        f"machine: {machine['cpu']}, {machine['usable_cores']} cores, {machine['python']}; "
        f"flags {' '.join(machine['cpu_flags'])}; load {machine['load_average_at_start']}"
    )
    size = parse_size(args.size)
    data = bytes(random_bytes(size))
    runs = interleave({
        "aesgcm": cpu_timed(lambda: aesgcm(data)),
        "sha256": cpu_timed(lambda: sha256_segments(data)),
        "blake3": cpu_timed(lambda: blake3_segments(data)),
        "blake3_whole_wall": wall_timed(lambda: blake3_whole(data)),
    }, args.repeat, warmup=1)  # fmt: skip
    doc: dict[str, Any] = {"machine": machine, "size": size, "repeat": args.repeat}
    print(f"{args.size} of random bytes; CPU time unless marked wall; GB/s = bytes / time")
    for k, label in (
        ("aesgcm", "AESGCM.encrypt_into, 16 KiB segments"),
        ("sha256", "hashlib.sha256, 16,400-byte segments"),
        ("blake3", "blake3, 16,400-byte segments, 1 thread"),
        ("blake3_whole_wall", "blake3 whole buffer, max_threads=AUTO (wall)"),
    ):
        s = summarize(runs[k]).map(lambda t: size / t / 1e9)
        print(f"  {label:<48} {s.median:.2f} GB/s ({s.min:.2f}-{s.max:.2f})")
        doc[k] = summarize(runs[k]).to_json()
    for k in ("sha256", "blake3"):
        r = paired_ratio(runs[k], runs["aesgcm"])
        print(f"  {k} time / AES-GCM time: {r.median:.2f}x ({r.min:.2f}-{r.max:.2f})")
        doc[f"{k}_over_aesgcm"] = r.to_json()
    doc["load_average_at_end"] = load_average()
    print(f"load average at end: {doc['load_average_at_end']}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
