"""Start-up cost of one-byte ``encrypt --cert`` and ``decrypt --key``, against references.

Usage: ``.venv/bin/python bench/startup.py [--rounds N] [--json FILE]``

Each round runs, back to back and in a shuffled order, four fresh processes:

* ``ref``         ``python -c "from cryptography import x509; from
                  cryptography.hazmat.primitives.ciphers.aead import AESGCM"``
* ``ref+rsa``     the same plus one RSA-2048 private-key load (PEM, unencrypted)
* ``encrypt``     ``recstream encrypt --cert C.pem ONE ONE.rsv`` (1-byte file)
* ``decrypt``     ``recstream decrypt --key K.pem ONE.rsv OUT``

and reports the medians (min-max) and the per-round ratios encrypt/ref and
decrypt/ref+rsa (targets: 1.5x or less).  Wall time of each whole process,
interpreter start-up included, as a user sees it.  Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from recstream.bench.machine import describe_machine, machine_line

PY = sys.executable
RECSTREAM = str(Path(PY).with_name("recstream"))
REF = (
    "from cryptography import x509; "
    "from cryptography.hazmat.primitives.ciphers.aead import AESGCM"
)


def make_fixtures(d: Path) -> tuple[Path, Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "startup bench")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    c, k, one = d / "c.pem", d / "k.pem", d / "one"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    one.write_bytes(b"x")
    return c, k, one


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        c, k, one = make_fixtures(d)
        ref_rsa = (
            f"{REF}; from cryptography.hazmat.primitives.serialization import "
            f"load_pem_private_key; load_pem_private_key(open({str(k)!r}, 'rb').read(), None)"
        )
        env_rsv = d / "one.rsv"
        subprocess.run([RECSTREAM, "encrypt", "--cert", str(c), str(one), str(env_rsv)], check=True,
                       stderr=subprocess.DEVNULL)
        subjects = {
            "ref": lambda i: [PY, "-c", REF],
            "ref+rsa": lambda i: [PY, "-c", ref_rsa],
            "encrypt": lambda i: [RECSTREAM, "encrypt", "--cert", str(c), str(one),
                                  str(d / f"e{i}.rsv")],
            "decrypt": lambda i: [RECSTREAM, "decrypt", "--key", str(k), str(env_rsv),
                                  str(d / f"d{i}")],
        }
        times: dict[str, list[float]] = {name: [] for name in subjects}
        for name, argv in subjects.items():  # warm the page cache once
            timed(argv(-1))
        for i in range(args.rounds):
            order = list(subjects)
            random.shuffle(order)
            for name in order:
                times[name].append(timed(subjects[name](i)))
    enc_ratio = [e / r for e, r in zip(times["encrypt"], times["ref"], strict=True)]
    dec_ratio = [e / r for e, r in zip(times["decrypt"], times["ref+rsa"], strict=True)]
    machine = describe_machine()
    print(machine_line(machine))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}; {args.rounds} rounds")
    for name, ts in times.items():
        ms = [t * 1000 for t in ts]
        print(f"  {name:<8} {statistics.median(ms):7.1f} ms  ({min(ms):.1f}-{max(ms):.1f})")
    for label, ratio, target in (("encrypt / ref", enc_ratio, 1.5),
                                 ("decrypt / ref+rsa", dec_ratio, 1.5)):
        med = statistics.median(ratio)
        print(f"  {label:<18} {med:.2f}x  ({min(ratio):.2f}-{max(ratio):.2f}); target <= "
              f"{target}x: {'met' if med <= target else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "rounds": args.rounds, "seconds": times,
             "encrypt_over_ref": enc_ratio, "decrypt_over_ref_rsa": dec_ratio}, indent=2))


if __name__ == "__main__":
    main()
