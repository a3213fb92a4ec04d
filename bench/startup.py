"""Start-up cost of one-byte ``encrypt --cert`` and ``decrypt --key``, against references.

Usage: ``.venv/bin/python bench/startup.py [--rounds N] [--json FILE]``

Each round runs, back to back and in a shuffled order, four fresh processes:

* ``ref``         ``python -c "from cryptography import x509; from
                  cryptography.hazmat.primitives.ciphers.aead import AESGCM"``
* ``ref+rsa``     the same plus one RSA-2048 private-key load (PEM, unencrypted)
* ``encrypt``     ``recstream encrypt --cert C.pem ONE ONE.rsv`` (1-byte file)
* ``decrypt``     ``recstream decrypt --key K.pem ONE.rsv OUT``

and reports the medians (min-max) and the per-round ratios encrypt/ref and
decrypt/ref+rsa (targets: 1.5x or less), for wall time (what a user waits,
interpreter start-up included) and for CPU time (user + system, from wait4: far
less sensitive to a loaded machine).  Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import recstream
from recstream.bench.fixtures import make_identity
from recstream.bench.machine import describe_machine, machine_line

PY = sys.executable
RECSTREAM = str(Path(PY).with_name("recstream"))
TARGET = 1.5  # the bound on both ratios
REF = (
    "from cryptography import x509; from cryptography.hazmat.primitives.ciphers.aead import AESGCM"
)


def make_fixtures(d: Path) -> tuple[Path, Path, Path]:
    ident = make_identity(d, bits=2048)
    one = d / "one"
    one.write_bytes(b"x")
    return ident.cert_path, ident.key_path, one


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one process, from wait4's rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    # An installed package has its bytecode compiled at install (pip does it); an
    # editable checkout under PYTHONDONTWRITEBYTECODE=1 would recompile recstream's
    # modules on every run (~80 ms here), which is not what users run.
    compileall.compile_dir(Path(recstream.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        c, k, one = make_fixtures(d)
        ref_rsa = (
            f"{REF}; from cryptography.hazmat.primitives.serialization import "
            f"load_pem_private_key; load_pem_private_key(open({str(k)!r}, 'rb').read(), None)"
        )
        env_rsv = d / "one.rsv"
        subprocess.run(
            [RECSTREAM, "encrypt", "--cert", str(c), str(one), str(env_rsv)],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        subjects = {
            "ref": lambda i: [PY, "-c", REF],
            "ref+rsa": lambda i: [PY, "-c", ref_rsa],
            "encrypt": lambda i: [
                RECSTREAM,
                "encrypt",
                "--cert",
                str(c),
                str(one),
                str(d / f"e{i}.rsv"),
            ],
            "decrypt": lambda i: [
                RECSTREAM,
                "decrypt",
                "--key",
                str(k),
                str(env_rsv),
                str(d / f"d{i}"),
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in subjects}
        cpu: dict[str, list[float]] = {name: [] for name in subjects}
        for name, argv in subjects.items():  # warm the page cache once
            timed(argv(-1))
        for i in range(args.rounds):
            order = list(subjects)
            random.shuffle(order)
            for name in order:
                wall, used = timed(subjects[name](i))
                times[name].append(wall)
                cpu[name].append(used)
    machine = describe_machine()  # with the CPU features /proc/cpuinfo lists
    print(machine_line(machine))
    print(f"CPU features: {' '.join(machine['cpu_features']) or 'unknown'}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}; {args.rounds} rounds")
    report: dict[str, object] = {"machine": machine, "rounds": args.rounds}
    for label, series in (("wall", times), ("cpu", cpu)):
        print(f"{label} time per process, median (min-max):")
        for name, ts in series.items():
            ms = [t * 1000 for t in ts]
            print(f"  {name:<8} {statistics.median(ms):7.1f} ms  ({min(ms):.1f}-{max(ms):.1f})")
        enc = [e / r for e, r in zip(series["encrypt"], series["ref"], strict=True)]
        dec = [e / r for e, r in zip(series["decrypt"], series["ref+rsa"], strict=True)]
        for what, ratio in (("encrypt / ref", enc), ("decrypt / ref+rsa", dec)):
            med = statistics.median(ratio)
            verdict = "met" if med <= TARGET else "NOT met"
            print(f"  {what:<18} {med:.2f}x  ({min(ratio):.2f}-{max(ratio):.2f}); "
                  f"target <= {TARGET}x: {verdict}")  # fmt: skip
        report[label] = {"seconds": series, "encrypt_over_ref": enc, "decrypt_over_ref_rsa": dec}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
