"""``bench bulk``: encrypt and decrypt a large file, against the limits of the machine.

Subjects, interleaved round by round over the same file on tmpfs:

* ``cat IN > OUT``: the kernel's own copy (``copy_file_range``), the I/O limit.
* ``recstream encrypt`` / ``decrypt``: whole CLI processes, with peak RSS.
* library encrypt / decrypt: :class:`~recstream.envelope.EnvelopeEncryptor` and
  :class:`~recstream.envelope.EnvelopeDecryptor` through :func:`recstream.files.pump`
  in this process.
* raw ``AESGCM.encrypt_into`` / ``decrypt_into``, one thread, over the same bytes
  at the format's 16 KiB segment size; only the AEAD calls are timed, so this
  is the crypto limit with no I/O at all.

Issue 2's targets: CLI encrypt and decrypt at 75% of ``cat`` or better, and peak
RSS under 64 MiB whatever the file size.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recstream.bench.fixtures import (
    BenchError,
    BenchIdentity,
    file_sha256,
    make_identity,
    work_directory,
    write_random_file,
)
from recstream.bench.machine import describe_machine
from recstream.bench.modes import Progress
from recstream.bench.proc import run_measured
from recstream.bench.report import Column, Report
from recstream.bench.stats import (
    Summary,
    format_size,
    interleave,
    paired_ratio,
    rate,
    summarize,
)
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, new_metadata
from recstream.files import pump
from recstream.format import SEGMENT_SIZE, TAG_BYTES, MediaKind
from recstream.parallel import MIN_PARALLEL_BYTES, THREADS_ENV, default_pool

__all__ = ["BulkConfig", "Run", "raw_aesgcm", "run_bulk", "run_from_args"]

CAT_TARGET = 0.75  # issue 2: CLI at 75% of `cat` or better
RSS_TARGET_MIB = 64  # issue 2: peak RSS under 64 MiB for a 2 GiB file
FIXED = ", 1 byte"  # suffix of the subjects that measure a CLI process's fixed cost
_RAW_CHUNK = 16 << 20  # bytes read per untimed read in the raw AES-GCM subject
ONE_THREAD = ", 1 thread"  # suffix of the subjects on the single-thread bulk path (issue 20)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class BulkConfig:
    size: int = 1 << 30
    repeat: int = 5
    warmup: int = 1
    directory: Path | None = None
    rsa_bits: int = 3072
    cli: bool = True
    library: bool = True


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    rss_kib: int | None = None
    rss_method: str | None = None
    cpu: float | None = None  # user + system seconds, all threads


def raw_aesgcm(path: Path, segment: int = SEGMENT_SIZE) -> tuple[float, float]:
    """Seconds spent in single-thread ``encrypt_into`` and in ``decrypt_into`` over the file.

    The file is read in untimed 16 MiB chunks; each chunk is sealed segment by
    segment, then opened again, into preallocated buffers.
    """
    aead = AESGCM(AESGCM.generate_key(256))
    nonce = bytes(12)  # one nonce for every segment: fine for a timing, never for data
    plain = bytearray(_RAW_CHUNK)
    sealed = bytearray(_RAW_CHUNK + (_RAW_CHUNK // segment + 1) * TAG_BYTES)
    opened = bytearray(_RAW_CHUNK)
    t_enc = t_dec = 0.0
    with (
        open(path, "rb", buffering=0) as fh,
        memoryview(plain) as pv,
        memoryview(sealed) as sv,
        memoryview(opened) as ov,
    ):
        while n := fh.readinto(plain):
            bounds = [(off, min(segment, n - off)) for off in range(0, n, segment)]
            start = time.perf_counter()
            for i, (off, m) in enumerate(bounds):
                c = off + i * TAG_BYTES
                aead.encrypt_into(nonce, pv[off : off + m], None, sv[c : c + m + TAG_BYTES])
            mid = time.perf_counter()
            for i, (off, m) in enumerate(bounds):
                c = off + i * TAG_BYTES
                aead.decrypt_into(nonce, sv[c : c + m + TAG_BYTES], None, ov[off : off + m])
            t_enc += mid - start
            t_dec += time.perf_counter() - mid
    return t_enc, t_dec


class _Bench:
    """The files and subjects of one bulk run."""

    def __init__(self, cfg: BulkConfig, work: Path, ident: BenchIdentity) -> None:
        self.cfg = cfg
        self.work = work
        self.ident = ident
        self.recipient = ident.recipient
        self.keys = ident.keys
        self.src = work / "input.bin"
        self.ref = work / "reference.rsv"  # what the decrypt subjects read
        self.tiny = work / "tiny.bin"  # one byte: a CLI process's fixed cost
        self.tiny_ref = work / "tiny.rsv"
        self.out = work / "output"
        self.digest = ""
        self.verified: set[str] = set()

    def prepare(self, progress: Progress) -> None:
        progress(f"writing {format_size(self.cfg.size)} of random input to {self.src}")
        write_random_file(self.src, self.cfg.size)
        self.digest = file_sha256(self.src)
        self._library_encrypt(self.ref)
        self.tiny.write_bytes(b"\x00")
        self._library_encrypt(self.tiny_ref, self.tiny)

    def _library_encrypt(self, out: Path, src: Path | None = None, *, pool: bool = True) -> None:
        size = (src or self.src).stat().st_size
        enc = EnvelopeEncryptor(
            [self.recipient],
            new_metadata(
                recording_id="bench",
                tenant="bench",
                media_kind=MediaKind.SCREEN,
                media_type="application/octet-stream",
            ),
            pool=default_pool() if pool and size >= MIN_PARALLEL_BYTES else None,
        )
        with open(src or self.src, "rb", buffering=0) as fin, open(out, "wb", buffering=0) as fout:
            pump(fin, fout, enc)

    def _library_decrypt(self, out: Path, *, pool: bool = True) -> None:
        dec = EnvelopeDecryptor(self.keys, pool=default_pool() if pool else None)
        with open(self.ref, "rb", buffering=0) as fin, open(out, "wb", buffering=0) as fout:
            pump(fin, fout, dec)

    def _finish(self, name: str, check: bool) -> None:
        """Check a decrypted output once, then remove the output (untimed)."""
        if check and name not in self.verified:
            if file_sha256(self.out) != self.digest:
                msg = f"{name}: the output differs from the input"
                raise BenchError(msg)
            self.verified.add(name)
        self.out.unlink(missing_ok=True)

    def _in_process(self, name: str, func: Callable[[Path], None], check: bool) -> Run:
        self.out.unlink(missing_ok=True)
        start, cpu = time.perf_counter(), _cpu_seconds()
        func(self.out)
        run = Run(time.perf_counter() - start, cpu=_cpu_seconds() - cpu)
        self._finish(name, check)
        return run

    def _process(self, name: str, cmd: list[str], check: bool, *, stdout: bool = False) -> Run:
        self.out.unlink(missing_ok=True)
        # `cat IN > OUT` writes to its stdout; the recstream commands take OUT last.
        res = run_measured(cmd, stdout=self.out) if stdout else run_measured([*cmd, str(self.out)])
        self._finish(name, check)
        return Run(res.wall, res.peak_rss_kib, res.rss_method, res.cpu)

    def _to_null(self, cmd: list[str]) -> Run:
        """``cmd`` writing to its stdout, which is ``/dev/null`` (OUT is ``-``)."""
        res = run_measured(cmd, stdout=Path(os.devnull))
        return Run(res.wall, res.peak_rss_kib, res.rss_method, res.cpu)

    def _cli_subjects(self) -> dict[str, Callable[[], object]]:
        """The CLI on the multi-core bulk path and, in the same run, on one thread."""
        cli = [sys.executable, "-m", "recstream"]
        enc = [*cli, "encrypt", "--cert", str(self.ident.cert_path), str(self.src)]
        dec = [*cli, "decrypt", "--key", str(self.ident.key_path), str(self.ref)]
        subjects: dict[str, Callable[[], object]] = {}
        # The multi-core path is forced (pool_for would leave it aside on a loaded
        # machine), so both paths are measured whatever the load.
        cores = ["env", f"{THREADS_ENV}={default_pool().threads}"]
        for label, env in (("", cores), (ONE_THREAD, ["env", f"{THREADS_ENV}=1"])):
            subjects[f"cli encrypt{label}"] = partial(
                self._process, f"cli encrypt{label}", [*env, *enc], False
            )
            subjects[f"cli decrypt{label}"] = partial(
                self._process, f"cli decrypt{label}", [*env, *dec], True
            )
            subjects[f"cli encrypt > null{label}"] = partial(self._to_null, [*env, *enc, "-"])
            subjects[f"cli decrypt > null{label}"] = partial(self._to_null, [*env, *dec, "-"])
        return subjects

    def subjects(self) -> dict[str, Callable[[], object]]:
        cli = [sys.executable, "-m", "recstream"]
        subjects: dict[str, Callable[[], object]] = {
            "cat": lambda: self._process("cat", ["cat", str(self.src)], True, stdout=True),
        }
        subjects["cat > null"] = lambda: self._to_null(["cat", str(self.src)])
        if self.cfg.cli:
            subjects.update(self._cli_subjects())
            subjects[f"cli encrypt{FIXED}"] = lambda: self._process(
                "", [*cli, "encrypt", "--cert", str(self.ident.cert_path), str(self.tiny)], False
            )
            subjects[f"cli decrypt{FIXED}"] = lambda: self._process(
                "", [*cli, "decrypt", "--key", str(self.ident.key_path), str(self.tiny_ref)], False
            )
        if self.cfg.library:
            subjects["library encrypt"] = lambda: self._in_process(
                "library encrypt", self._library_encrypt, False
            )
            subjects["library decrypt"] = lambda: self._in_process(
                "library decrypt", self._library_decrypt, True
            )
            subjects[f"library encrypt{ONE_THREAD}"] = lambda: self._in_process(
                "library encrypt", partial(self._library_encrypt, pool=False), False
            )
            subjects[f"library decrypt{ONE_THREAD}"] = lambda: self._in_process(
                "library decrypt", partial(self._library_decrypt, pool=False), True
            )
        subjects["aesgcm"] = lambda: raw_aesgcm(self.src)
        return subjects


def run_bulk(cfg: BulkConfig, progress: Progress = lambda _: None) -> Report:
    """Run the bulk benchmark; return its report."""
    report = Report(
        "bulk",
        describe_machine(),
        {
            "size": format_size(cfg.size),
            "repeat": cfg.repeat,
            "warmup": cfg.warmup,
            "rsa_bits": cfg.rsa_bits,
            "segment_size": format_size(SEGMENT_SIZE),
        },
    )
    with work_directory(cfg.directory, need_bytes=int(cfg.size * 3.2) + (64 << 20)) as work:
        report.parameters["directory"] = str(work.parent)
        bench = _Bench(cfg, work, make_identity(work, cfg.rsa_bits))
        bench.prepare(progress)
        results = interleave(bench.subjects(), cfg.repeat, warmup=cfg.warmup, progress=progress)
    _tabulate(report, cfg, results)
    report.check_noise()
    return report


def _tabulate(report: Report, cfg: BulkConfig, results: dict[str, list[object]]) -> None:
    raw = [r for r in results.pop("aesgcm") if isinstance(r, tuple)]
    seconds: dict[str, list[float]] = {
        name: [r.seconds for r in runs if isinstance(r, Run)] for name, runs in results.items()
    }
    fixed = {k: seconds.pop(k) for k in list(seconds) if k.endswith(FIXED)}
    seconds["AES-GCM encrypt_into"] = [e for e, _ in raw]
    seconds["AES-GCM decrypt_into"] = [d for _, d in raw]
    table = report.table(
        f"bulk: {format_size(cfg.size)} in {report.parameters['directory']}, "
        f"{cfg.repeat} interleaved rounds",
        Column("subject", "subject"),
        Column("mb_s", "MB/s"),
        Column("seconds", "seconds", 3),
        Column("peak_rss_mib", "peak RSS MiB", 1),
        Column("cpu_ns_b", "CPU ns/B", 3),
        Column("to_cat", "x cat", 2),
        Column("to_aesgcm", "x AES-GCM", 2),
        Column("to_one_thread", "x 1 thread", 2),
    )
    for name, secs in seconds.items():
        runs = [r for r in results.get(name, []) if isinstance(r, Run)]
        rss = [r.rss_kib / 1024 for r in runs if r.rss_kib]
        cpu = [r.cpu / cfg.size * 1e9 for r in runs if r.cpu is not None]
        single = seconds.get(name + ONE_THREAD)
        baseline = "AES-GCM decrypt_into" if "decrypt" in name else "AES-GCM encrypt_into"
        table.add(
            subject=name,
            mb_s=rate(cfg.size, secs),
            seconds=summarize(secs),
            peak_rss_mib=summarize(rss) if rss else None,
            cpu_ns_b=summarize(cpu) if cpu else None,
            to_one_thread=paired_ratio(single, secs) if single else None,
            to_cat=paired_ratio(seconds["cat"], secs) if name != "cat" else None,
            to_aesgcm=paired_ratio(seconds[baseline], secs) if "AES" not in name else None,
        )
    _fixed_costs(report, results, seconds, fixed)
    _targets(report, results, seconds)
    report.notes += [
        "MB/s counts plaintext bytes (10^6 bytes/s). 'x cat' and 'x AES-GCM' are ratios of "
        "throughput taken per round (subjects measured back to back), median (min-max).",
        "'x 1 thread' is the subject's throughput over the same subject on the single-thread "
        f"bulk path ({THREADS_ENV}=1, or no pool in-process), per round; the rows without "
        f"it force the multi-core path ({THREADS_ENV}=cores), which the CLI itself leaves "
        "aside when the load average says the other cores are busy. 'CPU ns/B' is user + "
        "system CPU per plaintext byte, all threads: the figure a loaded machine distorts least.",
        "Peak RSS of whole processes comes from GNU time (%M): a child forked from this "
        "Python process would inherit its high-water mark in ru_maxrss.",
        "AES-GCM rows time only the AEAD calls over the same bytes, one thread, "
        f"{format_size(SEGMENT_SIZE)} segments: the crypto limit, with no I/O.",
    ]


def _fixed_costs(
    report: Report,
    results: dict[str, list[object]],
    seconds: dict[str, list[float]],
    fixed: dict[str, list[float]],
) -> None:
    """What a CLI process costs before its first byte: start-up, imports, keys."""
    if not fixed:
        return
    table = report.table(
        "CLI fixed cost per process (the same commands on a 1-byte file)",
        Column("subject", "subject"),
        Column("seconds", "seconds", 3, noise_floor=0.05),
        Column("peak_rss_mib", "peak RSS MiB", 1),
        Column("share", "share of the big file's CLI time", 2),
    )
    for name, secs in fixed.items():
        rss = [r.rss_kib / 1024 for r in results[name] if isinstance(r, Run) and r.rss_kib]
        table.add(
            subject=name,
            seconds=summarize(secs),
            peak_rss_mib=summarize(rss) if rss else None,
            share=paired_ratio(secs, seconds[name.removesuffix(FIXED)]),
        )


def _targets(
    report: Report, results: dict[str, list[object]], secs: dict[str, list[float]]
) -> None:
    table = report.table(
        "targets",
        Column("target", "target"),
        Column("measured", "measured", 2),
        Column("met", "met"),
    )
    for name in ("cli encrypt", "cli decrypt"):
        if name not in secs:
            continue
        ratio: Summary = paired_ratio(secs["cat"], secs[name])
        table.add(
            target=f"{name} >= {CAT_TARGET:.0%} of cat",
            measured=ratio,
            met="yes" if ratio.median >= CAT_TARGET else "no",
        )
        rss = [r.rss_kib / 1024 for r in results[name] if isinstance(r, Run) and r.rss_kib]
        if rss:
            table.add(
                target=f"{name} peak RSS < {RSS_TARGET_MIB} MiB",
                measured=max(rss),
                met="yes" if max(rss) < RSS_TARGET_MIB else "no",
            )


def run_from_args(ns: argparse.Namespace, progress: Progress) -> Report:
    if ns.warmup < 0:
        msg = "--warmup cannot be negative"
        raise ValueError(msg)
    cfg = BulkConfig(
        size=ns.size,
        repeat=ns.repeat,
        warmup=ns.warmup,
        directory=ns.dir,
        rsa_bits=ns.rsa_bits,
        cli=not ns.no_cli,
        library=not ns.no_library,
    )
    return run_bulk(cfg, progress)
