"""``bench small``: many short recordings, where RSA dominates.

A contact centre stores millions of short calls: 60 s of G.711 is 480 KB.  Per
recording the envelope costs one RSA-OAEP wrap to encrypt and one unwrap to
decrypt, besides AES-GCM over the media.  For each RSA key size this measures,
interleaved round by round, over ``--count`` recordings held in memory (the
per-byte file I/O is ``bench bulk``'s subject):

* encrypt: a full envelope per recording (header, wrap, body) into a buffer;
* RSA wrap alone, the same number of times: its share of encrypt;
* decrypt on 1 thread and on ``--threads`` threads;
* RSA unwrap alone on 1 and on ``--threads`` threads: decrypt's bound;
* (issue 20) ``decrypt --out-dir``'s own code over files on disk on
  ``--threads`` threads (:func:`recstream.ops.decrypt_one` on
  :func:`recstream.batch.local.run_threads`: key ring, file reads, durable
  outputs), and the in-memory decrypt with its segments opened by
  ``AESGCM.decrypt_into`` (which releases the GIL) instead of Cobblestone's
  ``update_into`` (which holds it), in the same rounds.

The CPU that the ``--threads``-thread unwraps used (process CPU over wall time,
200% = two cores) shows whether pyca's RSA runs on every core at once.

Issue 8's targets: encrypt bound by the RSA wrap alone (its share is
reported), and decrypt within 10% of the RSA unwrap rate with both cores busy;
issue 20's: many short recordings decrypted on 2 threads within 20% of the
2-thread RSA-3072 unwrap rate.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from recstream import durable
from recstream.batch.local import run_threads
from recstream.bench.fixtures import BenchIdentity, make_identity, random_bytes, work_directory
from recstream.bench.machine import describe_machine
from recstream.bench.modes import Progress
from recstream.bench.report import Column, Report
from recstream.bench.stats import format_size, interleave, paired_ratio, summarize, timed
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, new_metadata
from recstream.format import MediaKind
from recstream.ops import DONE, Tree, decrypt_one
from recstream.parallel import SegmentPool

__all__ = ["SmallConfig", "run_from_args", "run_small"]

G711_BYTES_PER_SECOND = 8000
UNWRAP_TARGET = 0.90  # decrypt within 10% of the RSA unwrap rate
_KEEP = 64  # distinct envelopes kept for the decrypt subjects
_FILES = 256  # distinct files for decrypt --out-dir (60 s of G.711: ~120 MiB per key size)

T = TypeVar("T")

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass(frozen=True, slots=True)
class SmallConfig:
    count: int = 1000
    seconds: float = 60.0
    bits: tuple[int, ...] = (2048, 3072, 4096)
    threads: int = 2
    repeat: int = 3


class _Subjects:
    """Encrypt, decrypt, wrap and unwrap subjects for one key size."""

    def __init__(
        self, cfg: SmallConfig, ident: BenchIdentity, plain: bytearray, work: Path
    ) -> None:
        self.cfg = cfg
        self.recipient = ident.recipient
        self.keys = ident.keys
        self.key = ident.key
        self.plain = plain
        self.out = bytearray(len(plain) * 2 + 65536)
        self.envelopes = [self._encrypt_one(i, keep=True) for i in range(_KEEP)]
        stanza = self.recipient.stanza(os.urandom(32))
        self.wrapped = stanza.wrapped_key
        # One pool of one thread: segments opened with AESGCM.decrypt_into on the
        # caller's thread, the GIL released for each (recstream.parallel).
        self.gil_free = SegmentPool(1)
        self.unwrap_cpu: list[float] = []  # CPU % of each multi-thread unwrap run
        # Process CPU seconds per recording of each run of the subjects compared in
        # issue 20's table: under load the wall-clock rates say little, the CPU a
        # recording costs says what the rate would be with both cores to ourselves.
        self.cpu_per: dict[str, list[float]] = {}
        # decrypt --out-dir's inputs: up to _FILES distinct files (the kept envelopes
        # written under distinct names), decrypted in passes until ``count`` are done.
        self.src = work / f"in-{ident.bits}"
        self.dst = work / f"out-{ident.bits}"
        self.fresh = work / f"new-{ident.bits}"  # the CLI's default: into a new directory
        self.src.mkdir()
        self.dst.mkdir()
        self.names = [f"r{i:05d}.rsv" for i in range(min(cfg.count, _FILES))]
        for i, name in enumerate(self.names):
            (self.src / name).write_bytes(self.envelopes[i % _KEEP])

    def _encrypt_one(self, i: int, keep: bool = False) -> bytes:
        enc = EnvelopeEncryptor(
            [self.recipient],
            new_metadata(
                recording_id=f"call-{i}",
                tenant="bench",
                media_kind=MediaKind.VOICE,
                media_type="audio/basic",
            ),
        )
        n = enc.update_into(self.plain, self.out)
        tail = enc.finalize()
        return bytes(self.out[:n]) + tail if keep else b""

    def encrypt(self) -> None:
        for i in range(self.cfg.count):
            self._encrypt_one(i)

    def wrap(self) -> None:
        for _ in range(self.cfg.count):
            self.recipient.stanza(os.urandom(32))  # RSA-OAEP wrap, through the public API

    def _decrypt_range(self, start: int, stop: int, pool: SegmentPool | None = None) -> None:
        out = bytearray(len(self.plain) + 65536)
        for i in range(start, stop):
            dec = EnvelopeDecryptor(self.keys, pool=pool)
            dec.update_into(self.envelopes[i % _KEEP], out)
            dec.finalize()

    def _decrypt_gil_free(self, start: int, stop: int) -> None:
        self._decrypt_range(start, stop, self.gil_free)

    def batch_decrypt(self, threads: int) -> Callable[[], None]:
        """``decrypt --out-dir``'s work: every file, ``threads`` at a time, outputs replaced."""
        src, dst = Tree(self.src), Tree(self.dst)

        def run() -> None:
            left = self.cfg.count
            group = durable.CommitGroup()  # as the CLI: group commit
            while left > 0:  # a pass decrypts each file at most once: no two at once
                names = self.names[:left]
                left -= len(names)
                work = [
                    lambda name=name: decrypt_one(
                        src, name, dst, self.keys, existing="replace", group=group
                    )
                    for name in names
                ]
                for outcome in run_threads(work, jobs=threads, group=group):
                    if outcome.status != DONE:
                        msg = f"bench: decrypting {outcome.path} failed: {outcome.detail}"
                        raise RuntimeError(msg)

        return run

    def batch_decrypt_fresh(self, threads: int, name: str) -> Callable[[], float]:
        """``decrypt --out-dir`` as the CLI runs by default: outputs created exclusively in
        a directory that does not exist yet (one per pass).  Removing the previous
        run's outputs is neither timed nor counted in the CPU: the subject returns
        its own wall time."""
        src = Tree(self.src)

        def decrypt_all() -> float:
            start = time.perf_counter()
            left, n = self.cfg.count, 0
            group = durable.CommitGroup()
            while left > 0:
                names = self.names[:left]
                left -= len(names)
                dst = Tree(self.fresh / f"pass-{n}")
                n += 1
                work = [
                    lambda name=name, dst=dst: decrypt_one(
                        src, name, dst, self.keys, existing="fail", group=group
                    )
                    for name in names
                ]
                for outcome in run_threads(work, jobs=threads, group=group):
                    if outcome.status != DONE:
                        msg = f"bench: decrypting {outcome.path} failed: {outcome.detail}"
                        raise RuntimeError(msg)
            return time.perf_counter() - start

        measured = self.cpu_of(name, decrypt_all)

        def run() -> float:
            shutil.rmtree(self.fresh, ignore_errors=True)
            return measured()

        return run

    def cpu_of(self, name: str, func: Callable[[], T]) -> Callable[[], T]:
        """``func``, noting the process CPU it used per recording, and for the unwraps
        the CPU over wall time (200% = 2 cores)."""

        def run() -> T:
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            result = func()
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            self.cpu_per.setdefault(name, []).append(cpu / self.cfg.count)
            if name.startswith("rsa unwrap"):
                self.unwrap_cpu.append(100 * cpu / (t1 - t0))
            return result

        return run

    def _unwrap_range(self, start: int, stop: int) -> None:
        for _ in range(start, stop):
            # The machine's limit: pyca's OAEP decryption, what every file open costs.
            self.key.decrypt(self.wrapped, _OAEP)

    def threaded(self, func: Callable[[int, int], None], threads: int) -> Callable[[], None]:
        def run() -> None:
            if threads == 1:
                func(0, self.cfg.count)
                return
            step = -(-self.cfg.count // threads)
            with ThreadPoolExecutor(threads) as pool:
                futures = [
                    pool.submit(func, i, min(i + step, self.cfg.count))
                    for i in range(0, self.cfg.count, step)
                ]
                for f in futures:
                    f.result()

        return run

    def all(self) -> dict[str, Callable[[], float]]:
        """Every subject, each returning its wall time in seconds."""
        t = self.cfg.threads
        subjects = {
            "encrypt": self.encrypt,
            "rsa wrap": self.wrap,
            "decrypt 1 thread": self.threaded(self._decrypt_range, 1),
            "rsa unwrap 1 thread": self.threaded(self._unwrap_range, 1),
        }
        unwrap = f"rsa unwrap {t} threads" if t > 1 else "rsa unwrap 1 thread"
        if t > 1:
            subjects[f"decrypt {t} threads"] = self.threaded(self._decrypt_range, t)
            subjects[unwrap] = self.threaded(self._unwrap_range, t)
        subjects[f"decrypt {t} threads, AES off the GIL"] = self.threaded(self._decrypt_gil_free, t)
        subjects[f"decrypt --out-dir {t} threads"] = self.batch_decrypt(t)
        measured = {
            unwrap,
            f"decrypt {t} threads, AES off the GIL",
            f"decrypt --out-dir {t} threads",
        }
        timed_subjects = {
            name: timed(self.cpu_of(name, func) if name in measured else func)
            for name, func in subjects.items()
        }
        fresh = f"decrypt --out-dir {t} threads, new directory"
        timed_subjects[fresh] = self.batch_decrypt_fresh(t, fresh)
        return timed_subjects


def run_small(
    cfg: SmallConfig, progress: Progress = lambda _: None, directory: Path | None = None
) -> Report:
    """Run the small-recordings benchmark; return its report."""
    size = int(cfg.seconds * G711_BYTES_PER_SECOND)
    report = Report(
        "small",
        describe_machine(),
        {
            "count": cfg.count,
            "recording": f"{cfg.seconds:g} s of G.711 = {size:,} bytes",
            "bits": ",".join(map(str, cfg.bits)),
            "threads": cfg.threads,
            "repeat": cfg.repeat,
        },
    )
    plain = random_bytes(size)
    results: dict[int, dict[str, list[float]]] = {}
    cpu: dict[int, list[float]] = {}
    cpu_per: dict[int, dict[str, list[float]]] = {}
    with work_directory(directory) as work:
        for bits in cfg.bits:
            progress(f"RSA-{bits}: key, then {cfg.count} recordings per subject")
            subjects = _Subjects(cfg, make_identity(work, bits), plain, work)
            results[bits] = interleave(subjects.all(), cfg.repeat, progress=progress)
            cpu[bits] = subjects.unwrap_cpu
            cpu_per[bits] = subjects.cpu_per
        report.parameters["work directory"] = f"{work.parent} ({filesystem_of(work)})"
    _tabulate(report, cfg, size, results, cpu=cpu, cpu_per=cpu_per)
    report.check_noise()
    return report


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (``tmpfs``, ``ext4``...), from
    /proc/mounts: the longest mount point that contains it."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:  # pragma: no cover - not Linux
        return kind
    target = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:  # pragma: no cover
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _per_second(count: int, seconds: Sequence[float]) -> list[float]:
    return [count / s for s in seconds]


def _tabulate(
    report: Report,
    cfg: SmallConfig,
    size: int,
    results: dict[int, dict[str, list[float]]],
    *,
    cpu: dict[int, list[float]],
    cpu_per: dict[int, dict[str, list[float]]],
) -> None:
    t = cfg.threads
    table = report.table(
        f"{cfg.count} recordings of {format_size(size)} ({cfg.seconds:g} s G.711) per run, "
        "recordings/s",
        Column("bits", "key"),
        Column("encrypt", "encrypt"),
        Column("wrap", "RSA wrap"),
        Column("wrap_share", "wrap share", 2),
        Column("decrypt_1", "decrypt 1T"),
        Column("unwrap_1", "unwrap 1T"),
        Column("unwrap_share", "unwrap share", 2),
        Column("decrypt_n", f"decrypt {t}T"),
        Column("unwrap_n", f"unwrap {t}T"),
        Column("decrypt_to_unwrap", f"dec/unwrap {t}T", 2),
    )
    files = report.table(
        f"issue 20: {t} threads, the same rounds: decrypt --out-dir over files and the "
        "in-memory decrypt with AES off the GIL, against the RSA unwraps alone; recordings/s",
        Column("bits", "key"),
        Column("unwrap_n", f"unwrap {t}T"),
        Column("unwrap_cpu", f"unwrap {t}T CPU %", noise_floor=10),
        Column("batch", f"--out-dir {t}T"),
        Column("batch_to_unwrap", f"--out-dir/unwrap {t}T", 2),
        Column("fresh", f"--out-dir new dir {t}T"),
        Column("fresh_to_unwrap", f"new dir/unwrap {t}T", 2),
        Column("gil_free", f"decrypt {t}T off GIL"),
        Column("gil_free_to_unwrap", f"off GIL/unwrap {t}T", 2),
        Column("gil_free_to_decrypt", "off GIL/decrypt", 2),
    )
    cpu_table = report.table(
        f"issue 20: process CPU per recording (ms) on {t} threads, user + system, the same "
        "runs; 'bound' = unwrap CPU / the subject's: its rate over the unwrap rate with "
        "every core busy",
        Column("bits", "key"),
        Column("unwrap", f"unwrap {t}T", 3),
        Column("gil_free", "decrypt off GIL", 3),
        Column("batch", "--out-dir", 3),
        Column("batch_bound", "--out-dir bound", 2),
        Column("fresh", "--out-dir new dir", 3),
        Column("fresh_bound", "new dir bound", 2),
    )
    for bits, res in results.items():
        many = t > 1
        dec_n = res[f"decrypt {t} threads"] if many else res["decrypt 1 thread"]
        unw_n = res[f"rsa unwrap {t} threads"] if many else res["rsa unwrap 1 thread"]
        table.add(
            bits=f"RSA-{bits}",
            encrypt=summarize(_per_second(cfg.count, res["encrypt"])),
            wrap=summarize(_per_second(cfg.count, res["rsa wrap"])),
            wrap_share=paired_ratio(res["rsa wrap"], res["encrypt"]),
            decrypt_1=summarize(_per_second(cfg.count, res["decrypt 1 thread"])),
            unwrap_1=summarize(_per_second(cfg.count, res["rsa unwrap 1 thread"])),
            unwrap_share=paired_ratio(res["rsa unwrap 1 thread"], res["decrypt 1 thread"]),
            decrypt_n=summarize(_per_second(cfg.count, dec_n)) if many else None,
            unwrap_n=summarize(_per_second(cfg.count, unw_n)) if many else None,
            decrypt_to_unwrap=paired_ratio(unw_n, dec_n),
        )
        batch, free = (
            res[f"decrypt --out-dir {t} threads"],
            res[f"decrypt {t} threads, AES off the GIL"],
        )
        fresh = res[f"decrypt --out-dir {t} threads, new directory"]
        files.add(
            bits=f"RSA-{bits}",
            unwrap_n=summarize(_per_second(cfg.count, unw_n)),
            unwrap_cpu=summarize(cpu[bits]) if cpu.get(bits) else None,
            batch=summarize(_per_second(cfg.count, batch)),
            batch_to_unwrap=paired_ratio(unw_n, batch),
            fresh=summarize(_per_second(cfg.count, fresh)),
            fresh_to_unwrap=paired_ratio(unw_n, fresh),
            gil_free=summarize(_per_second(cfg.count, free)),
            gil_free_to_unwrap=paired_ratio(unw_n, free),
            gil_free_to_decrypt=paired_ratio(dec_n, free),
        )
        per = {name: [1000 * c for c in v] for name, v in cpu_per[bits].items()}
        unwrap_cpu = per[f"rsa unwrap {t} threads" if many else "rsa unwrap 1 thread"]
        out_cpu = per[f"decrypt --out-dir {t} threads"]
        fresh_cpu = per[f"decrypt --out-dir {t} threads, new directory"]
        cpu_table.add(
            bits=f"RSA-{bits}",
            unwrap=summarize(unwrap_cpu),
            gil_free=summarize(per[f"decrypt {t} threads, AES off the GIL"]),
            batch=summarize(out_cpu),
            batch_bound=paired_ratio(unwrap_cpu, out_cpu),
            fresh=summarize(fresh_cpu),
            fresh_bound=paired_ratio(unwrap_cpu, fresh_cpu),
        )
    report.notes += [
        "wrap share = time of the RSA-OAEP wraps alone / time of the whole encrypts, per "
        "round; unwrap share likewise for 1-thread decrypt.  A share near 1 means RSA is "
        "the bound.",
        f"dec/unwrap = decrypt rate / RSA unwrap rate on {t} threads; the target is "
        f">= {UNWRAP_TARGET:.2f} (decrypt within 10% of what RSA alone allows).",
        "Recordings are held in memory (the encrypt subject writes into a reused buffer); "
        "per-byte file I/O is what 'bench bulk' measures.",
        f"--out-dir {t}T: decrypt --out-dir's code (recstream.ops.decrypt_one on "
        f"recstream.batch.local.run_threads, jobs={t}): {cfg.count} decryptions of up to "
        f"{_FILES} files in the work directory (passes over them), outputs replaced (as "
        "--force), group commit (one directory fsync per batch); the issue 20 target is "
        "--out-dir/unwrap >= 0.80 at RSA-3072.",
        f"--out-dir new dir {t}T: the same into directories that do not exist yet, outputs "
        "created exclusively (the CLI's default); removing the last run's outputs is not "
        "timed.",
        "CPU per recording: process user + system time (kernel work for the page cache "
        "included; on a disk, writeback by kernel threads and waits for the disk are not "
        "in it); under load the rates above are noisy, the CPU a recording costs is not.",
        "off GIL: the in-memory decrypt with segments opened by AESGCM.decrypt_into on the "
        "calling thread (recstream.parallel.SegmentPool(1), GIL released per segment) "
        "instead of Cobblestone's update_into (GIL held); off GIL/decrypt > 1 means it "
        "pays on this many threads.",
    ]


def run_from_args(ns: argparse.Namespace, progress: Progress) -> Report:
    if ns.seconds <= 0:
        msg = "--seconds must be positive"
        raise ValueError(msg)
    if any(b < 2048 for b in ns.bits):
        msg = "recstream refuses RSA keys under 2048 bits"
        raise ValueError(msg)
    cfg = SmallConfig(
        count=ns.count, seconds=ns.seconds, bits=ns.bits, threads=ns.threads, repeat=ns.repeat
    )
    return run_small(cfg, progress, ns.dir)
