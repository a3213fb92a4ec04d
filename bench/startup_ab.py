"""Start-up of `encrypt --cert` and `decrypt --key` on a tiny file, two builds interleaved.

    .venv/bin/python bench/startup_ab.py BASE/.venv/bin/recstream .venv/bin/recstream \
        --rounds 10

Makes a throwaway RSA-3072 key and certificate and a 1,000-byte file in a temporary
directory, then runs each command of each build once per round, interleaved, and
prints the median and minimum wall and CPU (user + system) time of each.  Byte-code
is written (PYTHONDONTWRITEBYTECODE is dropped), as for a user's installation.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _identity(d: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(65537, 3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "startup bench")])
    now = datetime.now(UTC)
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(usage, critical=True).sign(key, hashes.SHA256())
    )  # fmt: skip
    k, c = d / "k.pem", d / "c.pem"
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return k, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="+", help="recstream executables to compare")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        key, cert = _identity(d)
        (d / "tiny").write_bytes(os.urandom(1000))
        first = args.builds[0]
        subprocess.run([first, "encrypt", "--cert", cert, d / "tiny", d / "tiny.rsv"],
                       env=env, check=True, capture_output=True)  # fmt: skip
        commands = {
            "encrypt --cert": ["encrypt", "--force", "--cert", cert, d / "tiny", d / "t.rsv"],
            "decrypt --key": ["decrypt", "--force", "--key", key, d / "tiny.rsv", d / "t.out"],
        }
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for build in args.builds:
                for what, argv in commands.items():
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    subprocess.run([build, *argv], env=env, check=True, capture_output=True)
                    wall = time.perf_counter() - start
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                    results.setdefault((what, build), []).append((wall, cpu))
    for (what, build), runs in sorted(results.items()):
        walls, cpus = [r[0] * 1e3 for r in runs], [r[1] * 1e3 for r in runs]
        print(
            f"{what:15s} {build}: wall {statistics.median(walls):.0f} ms (min {min(walls):.0f}), "
            f"CPU {statistics.median(cpus):.0f} ms (min {min(cpus):.0f})"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
