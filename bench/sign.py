"""What signing recordings costs (issue 16): encrypt overhead, per recording, and verify vs cat.

Usage::

    .venv/bin/python bench/sign.py [--repeat 7] [--verify-size 256M] [--json OUT.json]

Figures (each subject interleaved with its reference, round by round; ratios are
taken per round, then the median (min-max) of the rounds is shown):

1. Encrypting a 16 MiB recording in memory, one thread (``EnvelopeEncryptor``,
   no pool): CPU seconds signed (ECDSA P-256, Ed25519) / unsigned.  Target: <= 1.02.
2. The same through the command line, ``recstream encrypt`` of a 16 MiB file on
   tmpfs with and without ``--sign-key/--sign-cert``: wall time ratio (start-up, the
   file I/O and fsync included, as a user runs it).
3. A 60-second G.711 recording (480,000 bytes), sealed a segment at a time like the
   live writer: CPU ms per recording signed minus unsigned.  Target: <= 1 ms.
4. ``recstream verify`` of a large file on tmpfs against ``cat FILE > /dev/null``
   (both whole processes): throughput ratio verify / cat.  Target: >= 0.80.  The
   same runs by CPU time (the child's user + sys: what a loaded machine distorts
   least), and ``verify_file`` in this process (no interpreter start-up), by CPU.

Benchmarks never gate CI.  The machine line records the CPU flags that matter here
(aes, pclmulqdq, sha_ni, avx2) and the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blake3 import blake3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from recstream.bench.fixtures import make_identity, random_bytes
from recstream.bench.machine import describe_machine, load_average
from recstream.bench.stats import Summary, interleave, paired_ratio, parse_size, summarize
from recstream.envelope import EnvelopeEncryptor, Recipient, new_metadata
from recstream.format import SEGMENT_SIZE, MediaKind
from recstream.signing import Signer, verify_file

MiB = 1 << 20
SIXTY_SECONDS_G711 = 60 * 8000  # 8 kHz, one byte a sample


def cpu_flags() -> list[str]:
    wanted = ("aes", "pclmulqdq", "sha_ni", "avx2", "avx512f", "vaes", "vpclmulqdq")
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in wanted if f in have]
    return []


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_signers(directory: Path) -> tuple[dict[str, Signer], Path, tuple[Path, Path]]:
    """A throwaway CA and P-256 / Ed25519 signers (the P-256 one also as files)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    signers: dict[str, Signer] = {}
    files: tuple[Path, Path] | None = None
    for kind in ("p256", "ed25519"):
        key = ec.generate_private_key(ec.SECP256R1()) if kind == "p256" else (
            ed25519.Ed25519PrivateKey.generate())  # fmt: skip
        cert = (
            x509.CertificateBuilder().subject_name(_name(f"bench {kind}"))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(usage, critical=True).sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        signers[kind] = Signer.from_objects(key, cert)
        if kind == "p256":
            kp, cp = directory / "sign.key.pem", directory / "sign.cert.pem"
            kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))  # fmt: skip
            cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            files = (kp, cp)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    assert files is not None
    return signers, ca_path, files


def _cpu() -> float:
    return time.process_time()


def cpu_timed(func: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        start = _cpu()
        func()
        return _cpu() - start

    return run


def wall_timed(cmd: list[str]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start

    return run


def process_timed(cmd: list[str]) -> Callable[[], tuple[float, float]]:
    """Wall time and CPU time (user + sys of the child) of one run of ``cmd``."""

    def run() -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    return run


def encrypt_once(recipient: Recipient, data: bytes | bytearray, signer: Signer | None) -> None:
    md = new_metadata(recording_id="bench", tenant="t", media_kind=MediaKind.VOICE,
                      media_type="audio/basic", created_ms=0)  # fmt: skip
    enc = EnvelopeEncryptor([recipient], md, signer=signer)
    out = bytearray(enc.output_size(len(data)))
    enc.update_into(data, out)
    enc.finalize()


def live_recording(recipient: Recipient, data: bytes, signer: Signer | None, n: int) -> None:
    """``n`` 60-second recordings, sealed a 16 KiB segment at a time (the live writer's way)."""
    md = new_metadata(recording_id="bench", tenant="t", media_kind=MediaKind.VOICE,
                      media_type="audio/basic", created_ms=0)  # fmt: skip
    for _ in range(n):
        enc = EnvelopeEncryptor([recipient], md, signer=signer, file_key=bytes(32))
        enc.take_header()
        for i in range(0, len(data), SEGMENT_SIZE):
            enc.update(data[i : i + SEGMENT_SIZE])
        enc.finalize()


def raw_sha256(data: bytes) -> None:
    """What signing added before (§10.1 in SHA-256): SHA-256 of every 16,400-byte segment."""
    view, step = memoryview(data), SEGMENT_SIZE + 16
    for i in range(0, len(data), step):
        hashlib.sha256(view[i : i + step]).digest()


def raw_blake3(data: bytes) -> None:
    """What signing adds now (FORMAT.md §10.1): BLAKE3 of every 16,400-byte wire segment."""
    view, step = memoryview(data), SEGMENT_SIZE + 16
    for i in range(0, len(data), step):
        blake3(view[i : i + step]).digest()


def raw_aesgcm(data: bytes) -> None:
    """The baseline of the encryption itself: AESGCM.encrypt_into per 16 KiB segment."""
    aead, view = AESGCM(bytes(32)), memoryview(data)
    out = bytearray(SEGMENT_SIZE + 16)
    for i in range(0, len(data) - SEGMENT_SIZE + 1, SEGMENT_SIZE):
        aead.encrypt_into(i.to_bytes(12, "big"), view[i : i + SEGMENT_SIZE], None, out)


def show(label: str, s: Summary, unit: str = "", fmt: str = "{:.3f}") -> str:
    noisy = "  (noisy: rounds disagree by >20%)" if s.noisy else ""
    lo, mid, hi = fmt.format(s.min), fmt.format(s.median), fmt.format(s.max)
    return f"  {label:<52} {mid}{unit} ({lo}-{hi}){noisy}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--verify-size", default="256M")
    parser.add_argument("--live-count", type=int, default=50, help="recordings per round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    machine = describe_machine() | {"cpu_flags": cpu_flags()}
    print(f"machine: {machine['cpu']}, {machine['usable_cores']} cores, {machine['python']}, "
          f"cryptography {machine['cryptography']}; flags {' '.join(machine['cpu_flags'])}; "
          f"load {machine['load_average_at_start']}")  # fmt: skip
    doc: dict[str, Any] = {"machine": machine, "repeat": args.repeat}
    exe = str(Path(sys.executable).with_name("recstream"))
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        work = Path(tmp)
        rsa = make_identity(work, 3072)
        signers, ca_path, (key_path, cert_path) = make_signers(work)
        recipient = rsa.recipient

        # 1. 16 MiB in memory, CPU
        data = bytes(random_bytes(16 * MiB))
        runs = interleave({
            "unsigned": cpu_timed(lambda: encrypt_once(recipient, data, None)),
            "p256": cpu_timed(lambda: encrypt_once(recipient, data, signers["p256"])),
            "ed25519": cpu_timed(lambda: encrypt_once(recipient, data, signers["ed25519"])),
            "sha256": cpu_timed(lambda: raw_sha256(data)),
            "blake3": cpu_timed(lambda: raw_blake3(data)),
            "aesgcm": cpu_timed(lambda: raw_aesgcm(data)),
        }, args.repeat, warmup=1)  # fmt: skip
        print("1. encrypt 16 MiB in memory, one thread (CPU time)")
        print(show("unsigned", summarize(runs["unsigned"]).map(lambda s: s * 1e3), " ms"))
        r1 = {k: paired_ratio(runs[k], runs["unsigned"]) for k in ("p256", "ed25519")}
        for k, s in r1.items():
            print(show(f"signed {k} / unsigned", s, "x"))
        for k, what in (("aesgcm", "raw AESGCM.encrypt_into"), ("sha256", "raw SHA-256"),
                        ("blake3", "raw BLAKE3")):  # fmt: skip
            print(show(f"baseline: {what}, 16 KiB segments",
                       summarize(runs[k]).map(lambda s: s * 1e3), " ms"))  # fmt: skip
        doc["encrypt_16m_cpu"] = {"unsigned_s": summarize(runs["unsigned"]).to_json(),
                                  "raw_sha256_s": summarize(runs["sha256"]).to_json(),
                                  "raw_aesgcm_s": summarize(runs["aesgcm"]).to_json(),
                                  "raw_blake3_s": summarize(runs["blake3"]).to_json(),
                                  **{f"{k}_ratio": s.to_json() for k, s in r1.items()}}  # fmt: skip

        # 2. 16 MiB through the CLI, wall
        src = work / "in.wav"
        src.write_bytes(data)
        base = [exe, "encrypt", "--force", "--cert", str(rsa.cert_path), "--tenant", "t",
                str(src), str(work / "out.rsv")]  # fmt: skip
        signed = [*base[:-2], "--sign-key", str(key_path), "--sign-cert", str(cert_path),
                  *base[-2:]]  # fmt: skip
        runs = interleave({"unsigned": wall_timed(base), "signed": wall_timed(signed)},
                          args.repeat, warmup=1)  # fmt: skip
        r2 = paired_ratio(runs["signed"], runs["unsigned"])
        print("2. recstream encrypt of a 16 MiB file on tmpfs (wall, whole process)")
        print(show("unsigned", summarize(runs["unsigned"]).map(lambda s: s * 1e3), " ms"))
        print(show("signed p256 / unsigned", r2, "x"))
        doc["encrypt_16m_cli_wall"] = {"unsigned_s": summarize(runs["unsigned"]).to_json(),
                                       "ratio": r2.to_json()}  # fmt: skip

        # 3. 60-second recording, CPU per recording
        live = bytes(random_bytes(SIXTY_SECONDS_G711))
        n = args.live_count
        runs = interleave({
            "unsigned": cpu_timed(lambda: live_recording(recipient, live, None, n)),
            "signed": cpu_timed(lambda: live_recording(recipient, live, signers["p256"], n)),
        }, args.repeat, warmup=1)  # fmt: skip
        extra = summarize([(s - u) / n * 1e3 for s, u in
                           zip(runs["signed"], runs["unsigned"], strict=True)])  # fmt: skip
        print("3. a 60-second G.711 recording (480,000 bytes), sealed segment by segment")
        print(show("unsigned, CPU per recording",
                   summarize(runs["unsigned"]).map(lambda s: s / n * 1e3), " ms"))  # fmt: skip
        print(show("signing adds, CPU per recording", extra, " ms"))
        doc["sixty_second_recording"] = {
            "added_ms": extra.to_json(),
            "unsigned_s": summarize(runs["unsigned"]).to_json(),
        }

        # 4. verify vs cat on a large file
        size = parse_size(args.verify_size)
        big = work / "big.rsv"
        md = new_metadata(recording_id="big", tenant="t", media_kind=MediaKind.SCREEN,
                          media_type="video/webm", created_ms=0)  # fmt: skip
        enc = EnvelopeEncryptor([recipient], md, signer=signers["p256"])
        block = bytes(random_bytes(4 * MiB))
        with big.open("wb") as fh:
            for _ in range(size // len(block)):
                fh.write(enc.update(block))
            fh.write(enc.finalize())
        cat = ["cat", str(big)]
        verify = [exe, "verify", "--ca-file", str(ca_path), str(big)]
        ca_pem = ca_path.read_bytes()
        both = interleave({
            "cat": process_timed(cat), "verify": process_timed(verify),
            "verify_file": lambda: (0.0, cpu_timed(lambda: verify_file(big, ca_pem))()),
        }, args.repeat, warmup=1)  # fmt: skip
        runs = {k: [w for w, _ in v] for k, v in both.items()}
        cpu = {k: [c for _, c in v] for k, v in both.items()}
        r4 = paired_ratio(runs["cat"], runs["verify"])  # throughput verify / cat
        r4cpu = paired_ratio(cpu["cat"], cpu["verify"])
        r4lib = paired_ratio(cpu["cat"], cpu["verify_file"])
        print(f"4. verify vs cat, {args.verify_size} signed file on tmpfs (wall, whole processes)")
        print(show("cat", summarize(runs["cat"]).map(lambda s: size / s / 1e6), " MB/s", "{:.0f}"))
        print(show("verify", summarize(runs["verify"]).map(lambda s: size / s / 1e6), " MB/s",
                   "{:.0f}"))  # fmt: skip
        print(show("verify throughput / cat throughput", r4, "x"))
        print("   the same runs by CPU time (user + sys), and verify_file in this process")
        for k, label in (("cat", "cat"), ("verify", "verify (process)"),
                         ("verify_file", "verify_file (in process, no start-up)")):  # fmt: skip
            print(show(f"{label}, CPU", summarize(cpu[k]).map(lambda s: size / s / 1e6),
                       " MB/s", "{:.0f}"))  # fmt: skip
        print(show("CPU throughput: verify / cat", r4cpu, "x"))
        print(show("CPU throughput: verify_file / cat", r4lib, "x"))
        doc["verify_vs_cat"] = {"size": size, "cat_s": summarize(runs["cat"]).to_json(),
                                "verify_s": summarize(runs["verify"]).to_json(),
                                "ratio": r4.to_json(),
                                "cat_cpu_s": summarize(cpu["cat"]).to_json(),
                                "verify_cpu_s": summarize(cpu["verify"]).to_json(),
                                "verify_file_cpu_s": summarize(cpu["verify_file"]).to_json(),
                                "cpu_ratio": r4cpu.to_json(),
                                "verify_file_cpu_ratio": r4lib.to_json()}  # fmt: skip
    doc["load_average_at_end"] = load_average()
    print(f"load average at end: {doc['load_average_at_end']}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
