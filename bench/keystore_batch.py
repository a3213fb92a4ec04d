"""Keystore figures: the KDF at its default cost, and batch decryption against RSA unwraps.

Usage: python bench/keystore_batch.py [--files 300] [--size 160K] [--dir DIR] [--repeat 3]

Measured in one run:
  kdf      opening a keystore made with DEFAULT_KDF (Argon2id: once per process)
  unwrap   RSA-2048 OAEP-SHA-256 decryptions per second on 1 and 2 threads (the
           per-file floor: each recording needs one)
  batch    recstream.ops.decrypt_one on recstream.batch.local's threads (what
           `decrypt --out-dir` and small `batch decrypt` jobs run) over N envelopes of
           SIZE each, keys from a keystore, on 1 and 2 threads: files/s and MB/s of
           envelope read, and files/s per single-thread unwrap/s (a ratio within the run)
Batch outputs go through recstream.durable (fsync per file), as in the CLI.
Benchmarks never gate CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import __version__ as pyca_version
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from recstream.batch.local import run_threads
from recstream.envelope import EnvelopeEncryptor, Recipient, new_metadata
from recstream.format import MediaKind
from recstream.keystore import DEFAULT_KDF, KdfParams, create, load, update
from recstream.ops import DONE, Tree, decrypt_one

PASSWORD = b"benchmark password"


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    return (
        int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)
    )


def certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def bench_kdf(repeat: int, directory: Path) -> list[float]:
    path = directory / "default-kdf.rsk"
    create(path, PASSWORD, kdf=DEFAULT_KDF)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        load(path, PASSWORD)
        times.append(time.perf_counter() - start)
    return times


def bench_unwrap(key: rsa.RSAPrivateKey, threads: int, n: int) -> float:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = key.public_key().encrypt(os.urandom(32), oaep)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: key.decrypt(wrapped, oaep), range(n)))
    return n / (time.perf_counter() - start)


def make_files(directory: Path, recipient: Recipient, count: int, size: int) -> list[Path]:
    payload = os.urandom(size)
    paths = []
    for i in range(count):
        meta = new_metadata(recording_id=f"r{i}", tenant="acme", media_kind=MediaKind.VOICE,
                            media_type="audio/wav")  # fmt: skip
        enc = EnvelopeEncryptor([recipient], meta)
        path = directory / f"r{i:05d}.wav.rsv"
        path.write_bytes(enc.update(payload) + enc.finalize())
        paths.append(path)
    return paths


def bench_batch(files: list[Path], ks_path: Path, out: Path, jobs: int) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    ks = load(ks_path, PASSWORD)  # fresh: private keys decrypted on first use, as in the CLI
    src, dst = Tree(files[0].parent), Tree(out)
    work = [lambda n=p.name: decrypt_one(src, n, dst, ks, existing="fail") for p in files]
    start = time.perf_counter()
    results = run_threads(work, jobs=jobs)
    elapsed = time.perf_counter() - start
    assert all(r.status == DONE for r in results), [r.detail for r in results][:3]
    wire = sum(r.envelope_bytes for r in results)
    return len(files) / elapsed, wire / elapsed / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--size", default="160K")
    ap.add_argument("--dir", default=None, help="working directory (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = parse_size(args.size)
    print(f"# {platform.python_version()}, cryptography {pyca_version}, {os.cpu_count()} CPUs, "
          f"{platform.machine()}")  # fmt: skip
    key = rsa.generate_private_key(65537, 2048)
    unwrap1 = 0.0
    for threads in (1, 2):
        rates = [bench_unwrap(key, threads, 1000) for _ in range(args.repeat)]
        unwrap1 = unwrap1 or statistics.median(rates)
        print(
            f"unwrap  RSA-2048 OAEP, {threads} thread(s): median {statistics.median(rates):.0f}/s"
        )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        kdf = bench_kdf(args.repeat, root)
        print(f"kdf     open a keystore, {DEFAULT_KDF.describe()}: median "
              f"{statistics.median(kdf):.3f} s (min {min(kdf):.3f}, "
              f"max {max(kdf):.3f})")  # fmt: skip
        ks_path = root / "ks.rsk"
        create(ks_path, PASSWORD, kdf=KdfParams(64 * 1024, 1, 1))
        cert = certificate(key)
        with update(ks_path, PASSWORD) as ks:
            ks.add("acme", MediaKind.VOICE, cert, key, now=datetime.now(UTC))
        (root / "in").mkdir()
        files = make_files(root / "in", Recipient.from_certificate(cert), args.files, size)
        print(f"batch   {args.files} files of {size // 1024} KiB in {root}")
        for jobs in (1, 2, 1, 2):
            res = [bench_batch(files, ks_path, root / "out", jobs) for _ in range(args.repeat)]
            fps = statistics.median(r[0] for r in res)
            mbs = statistics.median(r[1] for r in res)
            print(f"batch   jobs={jobs}: median {fps:.0f} files/s, {mbs:.0f} MB/s "
                  f"({fps / unwrap1:.2f} x the 1-thread unwrap rate)")  # fmt: skip


if __name__ == "__main__":
    main()
