"""``bench segments``: AES-GCM throughput against segment size, 4 KiB to 4 MiB.

Two kinds of curve over the same in-memory bytes, one thread:

* raw ``AESGCM.encrypt_into`` / ``decrypt_into`` with one AEAD call per
  segment of the given size: what a format with that segment size could reach
  at best.  The per-call cost (nonce, tag, the Python call) is fixed, so small
  segments pay for it; large ones stop gaining once it is amortized.
* ``Cobblestone256Encryptor`` / ``Decryptor`` (the format's body, whose
  segments are fixed at 16 KiB by C2SP chunked encryption) fed by
  ``update_into`` calls of the given size: how the caller's write size matters
  when the segment size cannot change.

The 16 KiB point of the raw curve against its plateau is the price of the
format's segment size; the Cobblestone curve shows what our pump's 1 MiB
blocks buy.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recstream.bench.fixtures import random_bytes
from recstream.bench.machine import describe_machine
from recstream.bench.modes import DEFAULT_SEGMENT_SIZES, Progress
from recstream.bench.report import Column, Report
from recstream.bench.stats import Summary, format_size, interleave, rate
from recstream.format import BODY_PREFIX_BYTES, SEGMENT_SIZE, SEGMENT_WIRE_SIZE, TAG_BYTES

__all__ = ["SegmentsConfig", "run_from_args", "run_segments"]

_NONCE = bytes(12)  # a fixed nonce is fine for timing, never for data


@dataclass(frozen=True, slots=True)
class SegmentsConfig:
    sizes: tuple[int, ...] = DEFAULT_SEGMENT_SIZES
    total: int = 64 << 20
    repeat: int = 5
    warmup: int = 1


def _raw_pair(
    plain: bytearray, opened: bytearray, segment: int
) -> tuple[Callable[[], float], Callable[[], float]]:
    """Timed encrypt and decrypt subjects over ``plain`` in ``segment``-byte AEAD calls."""
    aead = AESGCM(AESGCM.generate_key(256))
    n = len(plain)
    bounds = [(off, min(segment, n - off)) for off in range(0, n, segment)]
    sealed = bytearray(n + len(bounds) * TAG_BYTES)
    pv, sv, ov = memoryview(plain), memoryview(sealed), memoryview(opened)
    slices = [
        (
            pv[off : off + m],
            sv[off + i * TAG_BYTES : off + (i + 1) * TAG_BYTES + m],
            ov[off : off + m],
        )
        for i, (off, m) in enumerate(bounds)
    ]
    for p, s, _ in slices:
        aead.encrypt_into(_NONCE, p, None, s)

    def encrypt() -> float:
        enc = aead.encrypt_into
        start = time.perf_counter()
        for p, s, _ in slices:
            enc(_NONCE, p, None, s)
        return time.perf_counter() - start

    def decrypt() -> float:
        dec = aead.decrypt_into
        start = time.perf_counter()
        for _, s, o in slices:
            dec(_NONCE, s, None, o)
        return time.perf_counter() - start

    return encrypt, decrypt


def _wire_size(n: int) -> int:
    full = n // SEGMENT_SIZE
    return BODY_PREFIX_BYTES + full * SEGMENT_WIRE_SIZE + (n - full * SEGMENT_SIZE) + TAG_BYTES


def _cobblestone_body(plain: bytearray, key: bytes, context: bytes) -> bytes:
    body = bytearray(_wire_size(len(plain)) + SEGMENT_WIRE_SIZE)
    enc = Cobblestone256Encryptor(key, context)
    m = enc.update_into(plain, body)
    tail = enc.finalize()
    body[m : m + len(tail)] = tail
    return bytes(body[: m + len(tail)])


def _cobblestone_pair(
    plain: bytearray, sealed: bytes, key: bytes, context: bytes, feed: int
) -> tuple[Callable[[], float], Callable[[], float]]:
    """Timed Cobblestone-256 encrypt and decrypt of ``plain``, ``feed`` bytes per call."""
    n = len(plain)
    out = bytearray(max(feed, SEGMENT_WIRE_SIZE) + 2 * SEGMENT_WIRE_SIZE + BODY_PREFIX_BYTES)
    pv, sv, ov = memoryview(plain), memoryview(sealed), memoryview(out)

    def encrypt() -> float:
        start = time.perf_counter()
        e = Cobblestone256Encryptor(key, context)
        for off in range(0, n, feed):
            e.update_into(pv[off : off + feed], ov)
        e.finalize()
        return time.perf_counter() - start

    def decrypt() -> float:
        start = time.perf_counter()
        d = Cobblestone256Decryptor(key, context)
        for off in range(0, len(sealed), feed):
            d.update_into(sv[off : off + feed], ov)
        d.finalize()
        return time.perf_counter() - start

    return encrypt, decrypt


def run_segments(cfg: SegmentsConfig, progress: Progress = lambda _: None) -> Report:
    """Run the segment-size sweep; return its report."""
    report = Report(
        "segments",
        describe_machine(),
        {
            "sizes": f"{format_size(min(cfg.sizes))}..{format_size(max(cfg.sizes))}",
            "total": format_size(cfg.total),
            "repeat": cfg.repeat,
        },
    )
    progress(f"preparing {format_size(cfg.total)} of input")
    plain = random_bytes(cfg.total)
    opened = bytearray(cfg.total)
    key, context = os.urandom(32), b"recstream bench"
    sealed = _cobblestone_body(plain, key, context)
    subjects: dict[str, Callable[[], float]] = {}
    for size in cfg.sizes:
        label = format_size(size)
        enc, dec = _raw_pair(plain, opened, size)
        subjects[f"aesgcm encrypt {label}"], subjects[f"aesgcm decrypt {label}"] = enc, dec
        enc, dec = _cobblestone_pair(plain, sealed, key, context, size)
        subjects[f"cobblestone encrypt {label}"] = enc
        subjects[f"cobblestone decrypt {label}"] = dec
    results = interleave(subjects, cfg.repeat, warmup=cfg.warmup)
    _tabulate(report, cfg, {k: rate(cfg.total, v) for k, v in results.items()})
    report.check_noise()
    return report


def _tabulate(report: Report, cfg: SegmentsConfig, rates: dict[str, Summary]) -> None:
    table = report.table(
        f"throughput against segment size ({format_size(cfg.total)} in memory, one thread, MB/s)",
        Column("size", "size"),
        Column("aesgcm_encrypt", "AES-GCM encrypt_into"),
        Column("aesgcm_decrypt", "AES-GCM decrypt_into"),
        Column("cobblestone_encrypt", "Cobblestone enc (feed)"),
        Column("cobblestone_decrypt", "Cobblestone dec (feed)"),
    )
    curve = report.curve(
        "AES-256-GCM throughput against segment size (one thread)",
        "segment size (raw AES-GCM) or update_into size (Cobblestone, 16 KiB segments), bytes",
        "MB/s",
        logx=True,
        x_is_size=True,
    )
    for size in cfg.sizes:
        label = format_size(size)
        row = {
            f"{kind}_{op}": rates[f"{kind} {op} {label}"]
            for kind in ("aesgcm", "cobblestone")
            for op in ("encrypt", "decrypt")
        }
        table.add(size=label, **row)
        for key, value in row.items():
            kind, op = key.split("_")
            name = f"AES-GCM {op}_into" if kind == "aesgcm" else f"Cobblestone-256 {op} (feed)"
            curve.point(name, size, value)
    best = max(rates[f"aesgcm encrypt {format_size(s)}"].median for s in cfg.sizes)
    if SEGMENT_SIZE in cfg.sizes:
        at16 = rates[f"aesgcm encrypt {format_size(SEGMENT_SIZE)}"].median
        report.notes.append(
            f"the format's {format_size(SEGMENT_SIZE)} segments reach {at16 / best:.0%} of the "
            f"best raw AES-GCM encrypt_into rate measured here ({best:,.0f} MB/s)."
        )
    report.notes.append(
        "Cobblestone's segments are always 16 KiB; its x axis is the size of each "
        "update_into call.  All in memory: no file I/O."
    )


def run_from_args(ns: argparse.Namespace, progress: Progress) -> Report:
    if max(ns.sizes) > ns.total:
        msg = "--total must be at least the largest --sizes entry"
        raise ValueError(msg)
    cfg = SegmentsConfig(sizes=tuple(sorted(set(ns.sizes))), total=ns.total, repeat=ns.repeat)
    return run_segments(cfg, progress)
