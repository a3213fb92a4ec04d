"""End-to-end bulk benchmark: `recstream encrypt`/`decrypt` through the CLI vs `cat`.

Usage: python bench/bulk.py [--size 2G] [--dir /dev/shm] [--repeat 5] [--json FILE]

Measured in one run, interleaved so that machine noise hits every subject alike:
  cat      `cat IN > OUT` of the same file (the page-cache copy limit)
  encrypt  `recstream encrypt --cert C IN OUT` (a fresh process each time)
  decrypt  `recstream decrypt --key K IN OUT`
  aesgcm   raw single-thread AESGCM.encrypt_into over the same bytes, 16 KiB segments
Reports MB/s (median, min, max), the ratios to cat and to raw AES-GCM, and each
process's peak RSS.  Benchmarks never gate CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import __version__ as pyca_version
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography import x509
from cryptography.x509.oid import NameOID

SEG = 16384


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


GNU_TIME = "/usr/bin/time"


def run_timed(cmd: list[str], stdout: int | None = None) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS in KiB).

    Peak RSS comes from GNU time (a tiny launcher), because a child forked from
    this Python process would inherit its high-water mark in ``ru_maxrss``.
    """
    wrapped = [GNU_TIME, "-f", "%M", *cmd] if os.path.exists(GNU_TIME) else cmd
    t = time.perf_counter()
    proc = subprocess.run(wrapped, stdout=stdout, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}: {proc.stderr.decode()[-500:]}")
    lines = proc.stderr.decode().strip().splitlines()
    peak = int(lines[-1]) if wrapped is not cmd and lines and lines[-1].isdigit() else 0
    return wall, peak


def raw_aesgcm(path: Path) -> float:
    """Seconds for single-thread AESGCM.encrypt_into over the file, 16 KiB segments."""
    key = AESGCM(AESGCM.generate_key(256))
    nonce = b"\x00" * 12
    out = bytearray(SEG + 16)
    buf = bytearray(64 << 20)
    elapsed = 0.0
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            view = memoryview(buf)[:n]
            whole = n // SEG * SEG
            t = time.perf_counter()
            for off in range(0, whole, SEG):
                key.encrypt_into(nonce, view[off : off + SEG], None, out)
            if n > whole:
                key.encrypt_into(nonce, view[whole:], None, bytearray(n - whole + 16))
            elapsed += time.perf_counter() - t
            view.release()
    return elapsed


def make_identity(workdir: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    c, k = workdir / "bench.cert.pem", workdir / "bench.key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def summary(samples: list[float], size: int) -> dict[str, float]:
    rates = [size / s / 1e6 for s in samples]
    return {"median_mb_s": statistics.median(rates), "min_mb_s": min(rates), "max_mb_s": max(rates),
            "median_s": statistics.median(samples)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G")
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    size = parse_size(args.size)
    recstream = [sys.executable, "-m", "recstream"]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        cert, key = make_identity(work)
        src = work / "in.bin"
        with open(src, "wb") as fh:
            block = os.urandom(1 << 20)
            for _ in range(size // len(block)):
                fh.write(block)
            fh.write(os.urandom(size % len(block)))
        enc, dec, out = work / "in.rsv", work / "out.bin", work / "cat.out"
        results: dict[str, list[float]] = {"cat": [], "encrypt": [], "decrypt": [], "aesgcm": []}
        rss: dict[str, int] = {"encrypt": 0, "decrypt": 0}
        for _ in range(args.repeat):
            with open(out, "wb") as fh:
                results["cat"].append(run_timed(["cat", str(src)], stdout=fh.fileno())[0])
            out.unlink()
            enc.unlink(missing_ok=True)
            wall, peak = run_timed([*recstream, "encrypt", "--cert", str(cert), str(src), str(enc)])
            results["encrypt"].append(wall)
            rss["encrypt"] = max(rss["encrypt"], peak)
            dec.unlink(missing_ok=True)
            wall, peak = run_timed([*recstream, "decrypt", "--key", str(key), str(enc), str(dec)])
            results["decrypt"].append(wall)
            rss["decrypt"] = max(rss["decrypt"], peak)
            results["aesgcm"].append(raw_aesgcm(src))
        if dec.read_bytes()[:1 << 20] != src.read_bytes()[:1 << 20]:
            raise SystemExit("decrypted output differs")
    report = {
        "size_bytes": size,
        "repeat": args.repeat,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "cryptography": pyca_version,
                    "openssl": backend.openssl_version_text()},
        "results": {k: summary(v, size) for k, v in results.items()},
        "peak_rss_kib": rss,
    }
    r = report["results"]
    report["ratios"] = {
        f"{op}_to_cat": r[op]["median_mb_s"] / r["cat"]["median_mb_s"] for op in ("encrypt", "decrypt")
    } | {f"{op}_to_aesgcm": r[op]["median_mb_s"] / r["aesgcm"]["median_mb_s"] for op in ("encrypt", "decrypt")}
    print(f"bulk: {size / 2**30:.2f} GiB in {args.dir}, {args.repeat} interleaved runs "
          f"({report['machine']['openssl']}, Python {report['machine']['python']})")
    print(f"{'subject':<10}{'median MB/s':>12}{'min':>9}{'max':>9}")
    for k, v in r.items():
        print(f"{k:<10}{v['median_mb_s']:>12.0f}{v['min_mb_s']:>9.0f}{v['max_mb_s']:>9.0f}")
        if v["max_mb_s"] > 1.5 * v["min_mb_s"]:
            print(f"  warning: {k} varied by more than 50% between runs; the machine was noisy")
    for k, v in report["ratios"].items():
        print(f"{k:<20}{v:>6.2f}")
    print(f"peak RSS (GNU time): encrypt {rss['encrypt'] / 1024:.1f} MiB, decrypt {rss['decrypt'] / 1024:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
